use std::io::Cursor;

use tar::{Builder, EntryType, Header};

use super::archive::{sanitize, ArchiveError};
use super::{paths_overlap, validate_name, validate_path};

#[test]
fn paths_must_be_absolute_normalised_and_not_system_directories() {
    for ok in [
        "/data",
        "/app/storage",
        "/var/lib/app",
        "/srv/uploads-1",
        "/home/app/.cache",
    ] {
        assert_eq!(validate_path(ok).unwrap(), ok);
    }
    for bad in [
        "",
        "data",
        "/",
        "//",
        "/data/",
        "/data//x",
        "/data/./x",
        "/data/../etc",
        "/..",
        "/proc",
        "/proc/1",
        "/sys/fs",
        "/dev",
        "/dev/shm",
        "/etc",
        "/etc/passwd",
        "/usr/lib",
        "/data x",
        "/data:rw",
        "/da\nta",
        "/dätä",
    ] {
        assert!(validate_path(bad).is_err(), "{bad:?} should be refused");
    }
    assert!(validate_path(&format!("/{}", "a".repeat(300))).is_err());
    // Not a prefix match on names: /device is fine, /dev/x is not.
    assert!(validate_path("/device").is_ok());
    assert!(validate_path("/etcetera").is_ok());
}

#[test]
fn names_follow_the_app_name_rule() {
    assert!(validate_name("data").is_ok());
    assert!(validate_name("my-data2").is_ok());
    for bad in [
        "",
        "Data",
        "1data",
        "a.b",
        "a_b",
        "../x",
        "a/b",
        &"a".repeat(31),
    ] {
        assert!(validate_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn overlapping_paths() {
    assert!(paths_overlap("/data", "/data"));
    assert!(paths_overlap("/data", "/data/x"));
    assert!(paths_overlap("/data/x", "/data"));
    assert!(!paths_overlap("/data", "/database"));
}

/// A tar built entry by entry, with raw names (the tar crate's own
/// `append_*` refuse `..`, so hostile names are written into the header
/// bytes directly).
struct Tar(Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(Builder::new(Vec::new()))
    }
    fn header(kind: EntryType, name: &str, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        h
    }
    fn file(mut self, name: &str, data: &[u8]) -> Tar {
        let h = Tar::header(EntryType::Regular, name, data.len() as u64);
        self.0.append(&h, data).unwrap();
        self
    }
    fn dir(mut self, name: &str) -> Tar {
        let h = Tar::header(EntryType::Directory, name, 0);
        self.0.append(&h, std::io::empty()).unwrap();
        self
    }
    fn link(mut self, kind: EntryType, name: &str, target: &str) -> Tar {
        let mut h = Tar::header(kind, name, 0);
        let raw = &mut h.as_old_mut().linkname;
        raw[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.0.append(&h, std::io::empty()).unwrap();
        self
    }
    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn check(t: Tar) -> Result<Vec<(String, EntryType, Option<String>)>, ArchiveError> {
    let mut out = Vec::new();
    sanitize(Cursor::new(t.bytes()), &mut out)?;
    let mut a = tar::Archive::new(Cursor::new(out));
    Ok(a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().entry_type(),
                e.link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned()),
            )
        })
        .collect())
}

#[test]
fn a_plain_tar_passes_with_relative_names() {
    let t = Tar::new()
        .dir("./")
        .dir("./sub/")
        .file("./sub/a.txt", b"hello")
        .file("b", b"x")
        .link(EntryType::Symlink, "sub/up", "../b")
        .link(EntryType::Symlink, "cur", "sub/a.txt")
        .link(EntryType::Link, "hard", "./sub/a.txt");
    let got = check(t).unwrap();
    let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["sub", "sub/a.txt", "b", "sub/up", "cur", "hard"]);
    assert_eq!(got[3].2.as_deref(), Some("../b"));
    assert_eq!(got[5].2.as_deref(), Some("sub/a.txt"));
}

#[test]
fn hostile_tars_are_refused() {
    let cases: Vec<(&str, Tar)> = vec![
        ("dotdot", Tar::new().file("../evil", b"x")),
        ("dotdot inside", Tar::new().file("a/../../evil", b"x")),
        ("absolute", Tar::new().file("/etc/passwd", b"x")),
        (
            "absolute symlink",
            Tar::new().link(EntryType::Symlink, "l", "/etc"),
        ),
        (
            "escaping symlink",
            Tar::new().link(EntryType::Symlink, "a/l", "../../x"),
        ),
        (
            "escaping symlink from root",
            Tar::new().link(EntryType::Symlink, "l", ".."),
        ),
        (
            "write through symlink",
            Tar::new()
                .link(EntryType::Symlink, "l", "sub")
                .file("l/x", b"x"),
        ),
        (
            "link through link",
            Tar::new()
                .link(EntryType::Symlink, "a", ".")
                .link(EntryType::Symlink, "b", "a/.."),
        ),
        (
            "link later replaces a walked directory",
            Tar::new()
                .link(EntryType::Symlink, "b", "a/../c")
                .link(EntryType::Symlink, "a", "x/y"),
        ),
        (
            "hardlink outside",
            Tar::new().link(EntryType::Link, "h", "../etc/passwd"),
        ),
        (
            "hardlink absolute",
            Tar::new().link(EntryType::Link, "h", "/etc/passwd"),
        ),
        (
            "hardlink to unknown",
            Tar::new().link(EntryType::Link, "h", "nothing"),
        ),
        (
            "char device",
            Tar({
                let mut b = Builder::new(Vec::new());
                let h = Tar::header(EntryType::Char, "null", 0);
                b.append(&h, std::io::empty()).unwrap();
                b
            }),
        ),
        (
            "fifo",
            Tar({
                let mut b = Builder::new(Vec::new());
                let h = Tar::header(EntryType::Fifo, "p", 0);
                b.append(&h, std::io::empty()).unwrap();
                b
            }),
        ),
    ];
    for (what, t) in cases {
        match check(t) {
            Err(ArchiveError::Refused(_)) => {}
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn long_names_pass_through_gnu_extensions() {
    let long = format!("{}/file", "d".repeat(200));
    let mut b = Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o600);
    b.append_data(&mut h, &long, &b"z"[..]).unwrap();
    let got = check(Tar(b)).unwrap();
    assert_eq!(got[0].0, long);
}

#[tokio::test]
async fn the_stream_limit_is_enforced() {
    let t = Tar::new().file("big", &vec![7u8; 100_000]).bytes();
    let dir = tempfile::tempdir().unwrap();
    let f = std::fs::File::create(dir.path().join("out")).unwrap();
    let r = super::archive::sanitize_stream(Cursor::new(t.clone()), 50_000, f).await;
    assert!(matches!(r, Err(ArchiveError::TooLarge(50_000))), "{r:?}");
    let f = std::fs::File::create(dir.path().join("out2")).unwrap();
    let sum = super::archive::sanitize_stream(Cursor::new(t), 1 << 20, f)
        .await
        .unwrap();
    assert_eq!(sum.bytes, 100_000);
}
