use super::*;
use std::collections::BTreeMap;
use std::io::Read;

/// Builds a commit from `(path, content, kind)` entries without a work
/// tree: kind is `f` (file), `x` (executable), `l` (symlink, content =
/// target), `s` (submodule, content ignored).
pub(crate) fn commit_entries(
    repo: &Repository,
    entries: &[(&str, &[u8], char)],
    parent: Option<Oid>,
) -> Oid {
    let files = entries
        .iter()
        .map(|(path, content, kind)| {
            let mode = match kind {
                'f' => MODE_BLOB,
                'x' => MODE_BLOB_EXEC,
                'l' => MODE_LINK,
                's' => MODE_COMMIT,
                _ => panic!("unknown kind {kind}"),
            };
            (path.to_string(), content.to_vec(), mode)
        })
        .collect();
    commit_files(repo, files, parent)
}

/// Builds a commit from `(path, content, git file mode)` entries.
pub(crate) fn commit_files(
    repo: &Repository,
    entries: Vec<(String, Vec<u8>, i32)>,
    parent: Option<Oid>,
) -> Oid {
    // Nested map of directories, written bottom-up.
    #[derive(Default)]
    struct Dir {
        files: BTreeMap<String, (Oid, i32)>,
        dirs: BTreeMap<String, Dir>,
    }
    fn write(repo: &Repository, d: &Dir) -> Oid {
        let mut tb = repo.treebuilder(None).expect("treebuilder");
        for (name, (oid, mode)) in &d.files {
            tb.insert(name, *oid, *mode).expect("insert");
        }
        for (name, sub) in &d.dirs {
            let oid = write(repo, sub);
            tb.insert(name, oid, MODE_TREE).expect("insert tree");
        }
        tb.write().expect("write tree")
    }
    let mut root = Dir::default();
    for (path, content, mode) in entries {
        let mut parts: Vec<&str> = path.split('/').collect();
        let file = parts.pop().expect("non-empty path");
        let mut d = &mut root;
        for p in parts {
            d = d.dirs.entry(p.to_string()).or_default();
        }
        let oid = if mode == MODE_COMMIT {
            Oid::from_str("1111111111111111111111111111111111111111").expect("oid")
        } else {
            repo.blob(&content).expect("blob")
        };
        d.files.insert(file.to_string(), (oid, mode));
    }
    let tree_id = write(repo, &root);
    let tree = repo.find_tree(tree_id).expect("tree");
    let sig = git2::Signature::new("t", "t@example.com", &git2::Time::new(1_700_000_000, 0))
        .expect("sig");
    let parents: Vec<git2::Commit<'_>> = parent
        .into_iter()
        .map(|p| repo.find_commit(p).expect("parent"))
        .collect();
    let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
    repo.commit(None, &sig, &sig, "test", &tree, &parent_refs)
        .expect("commit")
}

/// The files of a directory on disk as `commit_files` entries (symlinks
/// as links, the owner's x bit as 100755).
pub(crate) fn dir_entries(dir: &Path) -> Vec<(String, Vec<u8>, i32)> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>, i32)>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        for p in names {
            let rel = p
                .strip_prefix(base)
                .expect("under base")
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&p).expect("metadata");
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).expect("read_link");
                out.push((rel, target.as_os_str().as_bytes().to_vec(), MODE_LINK));
            } else if meta.is_dir() {
                walk(base, &p, out);
            } else {
                let mode = if meta.permissions().mode() & 0o100 != 0 {
                    MODE_BLOB_EXEC
                } else {
                    MODE_BLOB
                };
                out.push((rel, std::fs::read(&p).expect("read"), mode));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: tar::EntryType,
    mode: u32,
    mtime: u64,
    uid: u64,
    content: Vec<u8>,
    link: Option<String>,
}

fn read_tar(bytes: &[u8]) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        let h = e.header().clone();
        let link = e
            .link_name()
            .expect("link")
            .map(|l| l.to_string_lossy().into_owned());
        let mut content = Vec::new();
        e.read_to_end(&mut content).expect("read");
        out.insert(
            path,
            Entry {
                kind: h.entry_type(),
                mode: h.mode().expect("mode"),
                mtime: h.mtime().expect("mtime"),
                uid: h.uid().expect("uid"),
                content,
                link,
            },
        );
    }
    out
}

fn fixture() -> (tempfile::TempDir, Oid) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repository::init_bare(dir.path()).expect("init");
    let long = format!("deep/{}/file.txt", "d".repeat(120));
    let long_leak: &'static str = Box::leak(long.into_boxed_str());
    let oid = commit_entries(
        &repo,
        &[
            ("Dockerfile", b"FROM scratch\n", 'f'),
            (
                ".dockerignore",
                b"*.log\nsecrets/\ncache\n!cache/keep.txt\n",
                'f',
            ),
            ("bin/start", b"#!/bin/sh\necho hi\n", 'x'),
            ("public/index.html", b"<h1>hi</h1>\n", 'f'),
            ("public/latest.html", b"index.html", 'l'),
            ("debug.log", b"noise\n", 'f'),
            ("secrets/key.txt", b"k\n", 'f'),
            ("cache/blob", b"b\n", 'f'),
            ("cache/keep.txt", b"keep\n", 'f'),
            ("vendor/lib", b"", 's'),
            (long_leak, b"long\n", 'f'),
        ],
        None,
    );
    (dir, oid)
}

/// A bare repo with one commit of `entries`, and its whole tree as the
/// context (no ignore rules, no extra files).
fn plain_spec(entries: &[(&str, &[u8], char)]) -> (tempfile::TempDir, ContextSpec) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repository::init_bare(dir.path()).expect("init");
    let oid = commit_entries(&repo, entries, None);
    let s = ContextSpec {
        repo_path: dir.path().into(),
        commit: oid,
        ignore: DockerIgnore::default(),
        extra_files: vec![],
        max_bytes: u64::MAX,
    };
    (dir, s)
}

fn spec(dir: &Path, oid: Oid, extra: Vec<ExtraFile>) -> ContextSpec {
    let info = inspect_commit(dir, oid).expect("inspect");
    let mut ignore =
        DockerIgnore::parse(info.dockerignore.as_deref().unwrap_or("")).expect("ignore");
    ignore.keep("Dockerfile");
    ignore.keep(".dockerignore");
    ContextSpec {
        repo_path: dir.to_path_buf(),
        commit: oid,
        ignore,
        extra_files: extra,
        max_bytes: u64::MAX,
    }
}

#[test]
fn tar_from_tree() {
    let (dir, oid) = fixture();
    let warnings = std::sync::Mutex::new(Vec::new());
    let (summary, bytes) = write_context_to(&spec(dir.path(), oid, vec![]), Vec::new(), &|w| {
        warnings.lock().unwrap().push(w)
    })
    .expect("tar");
    assert_eq!(summary.bytes, bytes.len() as u64);
    assert_eq!(summary.skipped_submodules, vec!["vendor/lib".to_string()]);
    assert!(warnings.lock().unwrap()[0].contains("submodule vendor/lib"));
    let entries = read_tar(&bytes);
    let names: Vec<&str> = entries.keys().map(|s| s.as_str()).collect();
    let long = format!("deep/{}/file.txt", "d".repeat(120));
    let want_long_dir = format!("deep/{}", "d".repeat(120));
    let mut want = vec![
        ".dockerignore",
        "Dockerfile",
        "bin",
        "bin/start",
        "cache/keep.txt",
        "deep",
        want_long_dir.as_str(),
        long.as_str(),
        "public",
        "public/index.html",
        "public/latest.html",
        "vendor",
    ];
    want.sort();
    assert_eq!(names, want);
    let start = &entries["bin/start"];
    assert_eq!((start.kind, start.mode), (tar::EntryType::Regular, 0o755));
    assert_eq!(start.content, b"#!/bin/sh\necho hi\n");
    let index = &entries["public/index.html"];
    assert_eq!(
        (index.mode, index.mtime, index.uid),
        (0o644, CONTEXT_MTIME, 0)
    );
    let link = &entries["public/latest.html"];
    assert_eq!(link.kind, tar::EntryType::Symlink);
    assert_eq!(link.link.as_deref(), Some("index.html"));
    assert_eq!(entries["bin"].kind, tar::EntryType::Directory);
    assert_eq!(entries["bin"].mode, 0o755);
    assert_eq!(entries[long.as_str()].content, b"long\n");
}

#[test]
fn deterministic_and_extra_files_win() {
    let (dir, oid) = fixture();
    let a = write_context_to(&spec(dir.path(), oid, vec![]), Vec::new(), &|_| {})
        .expect("tar")
        .1;
    let b = write_context_to(&spec(dir.path(), oid, vec![]), Vec::new(), &|_| {})
        .expect("tar")
        .1;
    assert_eq!(a, b, "same tree, same bytes");
    let extra = vec![ExtraFile {
        path: "Dockerfile".into(),
        data: b"FROM busybox\n".to_vec(),
        mode: 0o644,
    }];
    let c = write_context_to(&spec(dir.path(), oid, extra), Vec::new(), &|_| {})
        .expect("tar")
        .1;
    let entries = read_tar(&c);
    assert_eq!(entries["Dockerfile"].content, b"FROM busybox\n");
    let mut ar = tar::Archive::new(c.as_slice());
    let count = ar
        .entries()
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().unwrap() == Path::new("Dockerfile"))
        .count();
    assert_eq!(
        count, 1,
        "the tree's Dockerfile is replaced, not duplicated"
    );
}

#[test]
fn inspect_root() {
    let (dir, oid) = fixture();
    let info = inspect_commit(dir.path(), oid).expect("inspect");
    assert_eq!(info.dockerfile.as_deref(), Some("FROM scratch\n"));
    assert!(info.has_dir("public"));
    assert!(info.has_file("debug.log"));
    assert!(!info.has_file("vendor"));
    assert_eq!(
        read_root_file(dir.path(), oid, "debug.log")
            .unwrap()
            .as_deref(),
        Some("noise\n")
    );
    assert_eq!(read_root_file(dir.path(), oid, "nope").unwrap(), None);
}

#[tokio::test]
async fn streams_in_bounded_chunks() {
    // ~3 MiB of incompressible-ish content in a few files.
    let big: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let (_dir, s) = plain_spec(&[("a.bin", &big, 'f'), ("b.txt", b"b", 'f')]);
    let ctx = stream_context(s, |_| {});
    use futures::StreamExt;
    let chunks: Vec<Bytes> = ctx.body.map(|c| c.expect("chunk")).collect().await;
    let summary = ctx.done.await.expect("join").expect("summary");
    assert!(chunks.iter().all(|c| c.len() <= CHUNK));
    let all: Vec<u8> = chunks.concat();
    assert_eq!(summary.bytes, all.len() as u64);
    assert_eq!(read_tar(&all)["a.bin"].content, big);
}

#[tokio::test]
async fn dropped_receiver_aborts_producer() {
    let big = vec![7u8; 4 * 1024 * 1024];
    let (_dir, s) = plain_spec(&[("a.bin", &big, 'f')]);
    let ctx = stream_context(s, |_| {});
    drop(ctx.body);
    let r = ctx.done.await.expect("join");
    assert!(matches!(r, Err(ContextError::Aborted)), "{r:?}");
}

/// A commit whose tree nests `levels` directories `d/d/.../f`.
fn deep_commit(repo: &Repository, levels: usize) -> Oid {
    let blob = repo.blob(b"x").expect("blob");
    let mut tb = repo.treebuilder(None).expect("treebuilder");
    tb.insert("f", blob, MODE_BLOB).expect("insert");
    let mut tree = tb.write().expect("tree");
    for _ in 0..levels {
        let mut tb = repo.treebuilder(None).expect("treebuilder");
        tb.insert("d", tree, MODE_TREE).expect("insert");
        tree = tb.write().expect("tree");
    }
    let tree = repo.find_tree(tree).expect("tree");
    let sig = git2::Signature::now("t", "t@example.org").expect("sig");
    repo.commit(None, &sig, &sig, "deep", &tree, &[])
        .expect("commit")
}

#[test]
fn deep_trees_are_walked_without_recursion_and_refused_past_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repository::init_bare(dir.path()).expect("init");
    let spec_of = |commit| ContextSpec {
        repo_path: dir.path().into(),
        commit,
        ignore: DockerIgnore::default(),
        extra_files: vec![],
        max_bytes: u64::MAX,
    };
    // 20,000 levels: a recursive walk overflows the test thread's stack.
    let deep = deep_commit(&repo, 20_000);
    let err = write_context_to(&spec_of(deep), io::sink(), &|_| {})
        .map(|_| ())
        .expect_err("too deep");
    assert!(
        matches!(err, ContextError::TooDeep(_)),
        "{err}: should be TooDeep"
    );
    assert!(err.to_string().contains("deeper than 2048 levels"), "{err}");
    // At the limit the whole tree is written.
    let ok = deep_commit(&repo, MAX_DEPTH - 1);
    let (summary, _) = write_context_to(&spec_of(ok), io::sink(), &|_| {}).expect("tar");
    assert_eq!(summary.entries, MAX_DEPTH as u64);
}
