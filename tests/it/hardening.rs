//! Issue 13: one client (a deploy key, or nobody at all) must not take the
//! rack down. Each test performs an attack for real against the real
//! binary, then checks that the rack is still up (SSH answers, the router
//! serves another app), that its memory stayed bounded where memory was the
//! target, and that the attacker got a clear refusal.

use crate::builds::{add_fixture, require_docker};
use crate::git::{server_ref, work, Work};
use crate::harness::{Key, Rack};
use crate::http;

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 100000)
}

/// A peer app deployed from the `procfile-web` fixture: what must keep
/// being served while another app's key attacks.
fn deploy_bystander(rack: &Rack) -> String {
    let app = unique("by");
    rack.ssh(&rack.admin, &format!("apps:create {app}")).ok();
    let w = work(rack, &rack.admin, "bystander");
    add_fixture(&w, "procfile-web");
    w.git(&["push", "-q", &rack.git_url(&app), "main"]).ok();
    app
}

/// The rack is still the same process, answers SSH and its router serves
/// `bystander`.
#[track_caller]
fn assert_still_up(rack: &mut Rack, bystander: &str) {
    assert!(
        rack.running(),
        "the rack process died; logs:\n{}",
        rack.logs()
    );
    rack.ssh(&rack.admin, "apps").ok();
    let r = http::get(rack.http_port, &format!("{bystander}.localhost"), "/").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("version 1 "), "{}", r.body);
}

/// Peak resident memory of the rack process (VmHWM), in KiB.
fn peak_rss_kib(rack: &Rack) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", rack.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// An app of its own and a deploy key for it: the attacker.
fn attacker(rack: &Rack, prefix: &str) -> (String, Key) {
    let app = unique(prefix);
    rack.ssh(&rack.admin, &format!("apps:create {app}")).ok();
    let key = rack.add_key(&format!("{prefix}-ci"), &format!("--app {app}"));
    (app, key)
}

/// Commits a tree nested `levels` directories deep (`d/d/d/.../f`) on top
/// of HEAD, written with libgit2 straight into the checkout's objects.
fn commit_deep_tree(w: &Work, levels: usize) -> String {
    let repo = git2::Repository::open(&w.dir).unwrap();
    let blob = repo.blob(b"deep\n").unwrap();
    let mut tb = repo.treebuilder(None).unwrap();
    tb.insert("f", blob, 0o100644).unwrap();
    let mut tree = tb.write().unwrap();
    for _ in 0..levels {
        let mut tb = repo.treebuilder(None).unwrap();
        tb.insert("d", tree, 0o040000).unwrap();
        tree = tb.write().unwrap();
    }
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    let mut tb = repo.treebuilder(Some(&head.tree().unwrap())).unwrap();
    tb.insert("deep", tree, 0o040000).unwrap();
    let root = repo.find_tree(tb.write().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.org").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "deep", &root, &[&head])
        .unwrap()
        .to_string()
}

#[test]
fn a_deeply_nested_tree_is_refused_and_the_rack_stays_up() {
    require_docker();
    let mut rack = Rack::start();
    let bystander = deploy_bystander(&rack);
    let (app, key) = attacker(&rack, "deep");
    let w = work(&rack, &key, "deep");
    add_fixture(&w, "procfile-web");
    w.git(&["push", "-q", &rack.git_url(&app), "main"]).ok();
    let deployed = server_ref(&rack, &app, "refs/heads/main");

    commit_deep_tree(&w, 20_000);
    // The client's own git stops at its core.maxTreeDepth: lift it, as an
    // attacker would.
    let out = w.git(&[
        "-c",
        "core.maxTreeDepth=100000",
        "push",
        &rack.git_url(&app),
        "main",
    ]);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("[remote rejected] main -> main (tree ")
            && out.stderr.contains("nests deeper than 2048 levels"),
        "{}",
        out.stderr
    );
    assert_still_up(&mut rack, &bystander);
    // Nothing moved, and the app still deploys a normal tree.
    assert_eq!(server_ref(&rack, &app, "refs/heads/main"), deployed);
    // A tree just under git's limit goes through the same checks.
    w.git(&["reset", "-q", "--hard", "HEAD~1"]).ok();
    commit_deep_tree(&w, 2000);
    let out = w.git(&["push", "-o", "skip-deploy", &rack.git_url(&app), "main"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_still_up(&mut rack, &bystander);
}

/// What the rack's peak resident memory may reach in the memory tests:
/// well above a debug build's working set with a few deploys (under 40
/// MiB here), far below what the attacks grew it to without their fixes
/// (300 MB lines: over 300 MiB).
const RSS_BOUND_KIB: u64 = 128 * 1024;

#[test]
fn output_without_newlines_keeps_the_rack_small() {
    require_docker();
    let mut rack = Rack::start();
    let bystander = deploy_bystander(&rack);
    let (app, key) = attacker(&rack, "zero");
    let w = work(&rack, &key, "zero");
    add_fixture(&w, "procfile-web");
    // 300 MB without a newline from a build step, and from the release
    // phase.
    let dockerfile = w.dir.join("Dockerfile");
    let mut text = std::fs::read_to_string(&dockerfile).unwrap();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    text.push_str(&format!(
        "RUN echo {nonce} && head -c 300000000 /dev/zero | tr '\\0' x\n"
    ));
    std::fs::write(&dockerfile, text).unwrap();
    let procfile = w.dir.join("Procfile");
    let mut text = std::fs::read_to_string(&procfile).unwrap();
    text.push_str("release: head -c 300000000 /dev/zero | tr '\\0' y\n");
    std::fs::write(&procfile, text).unwrap();
    w.git(&["commit", "-qam", "no newlines"]).ok();
    let out = w.git(&["push", &rack.git_url(&app), "main"]);
    assert_eq!(
        out.code,
        0,
        "{}",
        &out.stderr[out.stderr.len().saturating_sub(2000)..]
    );
    // The lines arrived, cut at 64 KiB.
    for letter in ['x', 'y'] {
        let cut = out.stderr.lines().any(|l| {
            let text = l.trim_start_matches("remote:").trim();
            text.len() == 64 * 1024 && text.chars().all(|c| c == letter)
        });
        assert!(cut, "no 64 KiB line of {letter}");
    }
    let peak = peak_rss_kib(&rack);
    assert!(
        peak < RSS_BOUND_KIB,
        "the rack grew to {peak} KiB (bound {RSS_BOUND_KIB} KiB)"
    );
    assert_still_up(&mut rack, &bystander);
    let r = http::get(rack.http_port, &format!("{app}.localhost"), "/").unwrap();
    assert!(r.body.starts_with("version 1 "), "{}", r.body);
}
