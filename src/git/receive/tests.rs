use std::path::PathBuf;

use super::protocol::{advertisement, parse_caps, parse_command, Advert};
use super::verify::bad_tree_entry;
use super::*;

#[test]
fn tree_entries() {
    fn tree(names: &[&[u8]]) -> Vec<u8> {
        let mut t = Vec::new();
        for n in names {
            t.extend_from_slice(b"100644 ");
            t.extend_from_slice(n);
            t.push(0);
            t.extend_from_slice(&[0x11; 20]);
        }
        t
    }
    assert_eq!(
        bad_tree_entry(&tree(&[b"a", b".gitignore", b".github", b"git"])),
        None
    );
    for bad in [&b".git"[..], b".GIT", b".Git", b".", b"..", b"", b"a/b"] {
        assert!(
            bad_tree_entry(&tree(&[b"ok", bad])).is_some(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(bad_tree_entry(b"100644 a\0short").is_some());
}

#[test]
fn commands_and_caps() {
    let z = "0".repeat(40);
    let a = "a".repeat(40);
    let c = parse_command(format!("{z} {a} refs/heads/main").as_bytes()).unwrap();
    assert!(c.old.is_zero());
    assert_eq!(c.refname, "refs/heads/main");
    assert!(parse_command(b"short").is_err());
    assert!(parse_command(format!("{z} {} refs/heads/main", "g".repeat(40)).as_bytes()).is_err());
    let caps =
        parse_caps(b"report-status-v2 side-band-64k atomic push-options agent=git/2.47").unwrap();
    assert!(caps.report_status && caps.sideband && caps.atomic && caps.push_options && !caps.quiet);
    assert!(parse_caps(b"object-format=sha256").is_err());
}

#[test]
fn err_line() {
    assert_eq!(err_response("no\nway"), b"000fERR no way\n");
}

#[test]
fn empty_repo_advert() {
    let a = advertisement(&Advert {
        refs: vec![],
        shallow: vec![],
    });
    let s = String::from_utf8(a).unwrap();
    assert!(
        s.contains(&format!(
            "{} capabilities^{{}}\0report-status",
            "0".repeat(40)
        )),
        "{s}"
    );
    assert!(!s.contains("push-cert"));
    assert!(s.ends_with("0000"));
}

#[test]
fn receive_pack_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let hook = StoreOnly;
    let req = ReceiveRequest {
        app: "a".into(),
        repo: PathBuf::from("/nonexistent"),
        deploy_branch: None,
        limits: ReceiveLimits::default(),
    };
    let fut = receive_pack(req, tokio::io::empty(), tokio::io::sink(), &hook);
    assert_send(&fut);
}

proptest::proptest! {
    /// Whatever a client sends as command lines, parsing never panics and
    /// never keeps more than its bounds.
    #[test]
    fn prop_command_lines_are_bounded(lines in proptest::collection::vec(
        proptest::collection::vec(proptest::num::u8::ANY, 0..200), 0..20)
    ) {
        let mut list = super::protocol::CommandList::new(64, 1000);
        let mut total = 0;
        for l in &lines {
            total += l.len();
            if list.add_line(l).is_err() {
                break;
            }
            proptest::prop_assert!(total <= 1000 + 1);
        }
        for c in &list.cmds {
            proptest::prop_assert!(c.refname.len() <= 64);
        }
    }

    #[test]
    fn prop_raw_trees_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let _ = bad_tree_entry(&data);
    }
}
