//! Issue 13: one client (a deploy key, or nobody at all) must not take the
//! rack down. Each test performs an attack for real against the real
//! binary, then checks that the rack is still up (SSH answers, the router
//! serves another app), that its memory stayed bounded where memory was the
//! target, and that the attacker got a clear refusal.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::builds::{add_fixture, docker, require_docker, Push};
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

/// `docker inspect` of the one container of `rack`'s namespace matching
/// `filter` (a label filter): its memory, NanoCpus and pids limits.
fn limits_of(rack: &Rack, filter: &str) -> (String, String) {
    let ns = format!("label=rack.ns={}", rack.ns);
    let ids = docker(&["ps", "-q", "--filter", &ns, "--filter", filter]);
    let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
    assert_eq!(ids.len(), 1, "one container with {filter}: {ids:?}");
    let f = "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}";
    let out = docker(&["inspect", "-f", f, ids[0]]);
    (ids[0].to_string(), out.stdout.trim().to_string())
}

#[test]
fn every_container_runs_under_limits() {
    require_docker();
    let rack = Rack::start_with("[containers]\nmemory = \"300m\"\ncpus = 0.5\npids = 300\n");
    let a = &rack.admin;
    let app = unique("lim");
    rack.ssh(a, &format!("apps:create {app}")).ok();
    rack.ssh(
        a,
        &format!("apps:set {app} resources.web.memory=200m resources.release.cpu=0.25"),
    )
    .ok();
    let w = work(&rack, a, "lim");
    add_fixture(&w, "procfile-web");
    // The release phase waits until the test has looked at its container.
    let procfile = w.dir.join("Procfile");
    let mut text = std::fs::read_to_string(&procfile).unwrap();
    text.push_str(
        "release: sh -c 'echo ready-$RACK_RELEASE; while [ ! -e /tmp/go ]; do sleep 0.1; done'\n",
    );
    std::fs::write(&procfile, text).unwrap();
    w.git(&["commit", "-qam", "release phase"]).ok();
    let mut push = Push::start(
        &w,
        &["push", &rack.git_url(&app), "main"],
        &rack.git_ssh_command(a),
    );
    push.wait_for("ready-v1");
    // The app's limits reach the release phase: its own CPU, web's memory
    // (no resources.release.memory), the rack's pids.
    let (id, limits) = limits_of(&rack, "label=rack.release-phase");
    assert_eq!(limits, format!("{} 250000000 300", 200 << 20));
    docker(&["exec", &id, "touch", "/tmp/go"]).ok();
    push.finish().ok();
    let (_, limits) = limits_of(&rack, "label=rack.type=web");
    assert_eq!(limits, format!("{} 500000000 300", 200 << 20));

    // A type without resources gets the rack's defaults.
    rack.ssh(a, &format!("ps:scale {app} worker=1")).ok();
    let (_, limits) = limits_of(&rack, "label=rack.type=worker");
    assert_eq!(limits, format!("{} 500000000 300", 300 << 20));

    // A one-off: web's memory, the default CPU.
    let mut run = Command::new("ssh")
        .args(rack.ssh_args(a))
        .arg("git@127.0.0.1")
        .arg(format!(
            "run {app} -- echo run-ready; while [ ! -e /tmp/go ]; do sleep 0.1; done"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(run.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "run-ready\n");
    let (id, limits) = limits_of(&rack, "label=rack.oneoff");
    assert_eq!(limits, format!("{} 500000000 300", 200 << 20));
    docker(&["exec", &id, "touch", "/tmp/go"]).ok();
    assert!(run.wait().unwrap().success());
}

/// Sends `count` ref updates naming refs of `name_len` bytes to
/// receive-pack over real SSH, as fast as the rack takes them; returns how
/// many bytes went out before the rack hung up, and the ssh's stderr.
fn announce_refs(
    rack: &Rack,
    key: &Key,
    app: &str,
    count: usize,
    name_len: usize,
) -> (u64, String) {
    use std::io::{Read, Write};
    let mut ssh = Command::new("ssh")
        .args(rack.ssh_args(key))
        .arg("git@127.0.0.1")
        .arg(format!("git-receive-pack '{app}'"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = ssh.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let zero = "0".repeat(40);
        let one = "1".repeat(40);
        let mut sent = 0u64;
        for i in 0..count {
            let caps = if i == 0 {
                "\0report-status side-band-64k"
            } else {
                ""
            };
            let suffix = format!("-{i}");
            let pad = "a".repeat(name_len - "refs/heads/".len() - suffix.len());
            let data = format!("{zero} {one} refs/heads/{pad}{suffix}{caps}\n");
            let pkt = format!("{:04x}{data}", data.len() + 4);
            if stdin.write_all(pkt.as_bytes()).is_err() {
                break;
            }
            sent += pkt.len() as u64;
        }
        sent
    });
    let mut stderr = String::new();
    ssh.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = ssh.wait().unwrap();
    assert!(!status.success(), "{stderr}");
    (writer.join().unwrap(), stderr)
}

#[test]
fn a_push_announcing_huge_ref_names_is_refused_as_it_is_read() {
    require_docker();
    let mut rack = Rack::start();
    let bystander = deploy_bystander(&rack);
    let (app, key) = attacker(&rack, "refs");
    // 10,000 ref names of 60 KiB: 600 MB of commands.
    let (sent, stderr) = announce_refs(&rack, &key, &app, 10_000, 60_000);
    assert!(
        stderr.contains("error: a ref name is longer than 1024 bytes"),
        "{stderr}"
    );
    assert!(
        sent < 64 << 20,
        "the rack read {sent} bytes before refusing"
    );
    // Short names, but 20 MB of them.
    let (sent, stderr) = announce_refs(&rack, &key, &app, 20_000, 1000);
    assert!(
        stderr.contains("error: the push's ref updates exceed 1048576 bytes"),
        "{stderr}"
    );
    assert!(
        sent < 20_000_000,
        "the rack read {sent} bytes before refusing"
    );
    let peak = peak_rss_kib(&rack);
    assert!(
        peak < RSS_BOUND_KIB,
        "the rack grew to {peak} KiB (bound {RSS_BOUND_KIB} KiB)"
    );
    assert_still_up(&mut rack, &bystander);
    // Nothing arrived, and the refusals are in the audit trail.
    assert_eq!(server_ref(&rack, &app, "refs/heads/main"), None);
    let events = rack
        .ssh(&rack.admin, &format!("events {app} --json"))
        .ok()
        .json();
    let refused = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["outcome"]
                .as_str()
                .unwrap_or("")
                .contains("longer than 1024")
        })
        .count();
    assert_eq!(refused, 1, "{events}");

    // A push within the bounds that names 300 long refs: accepted, and its
    // audit line is cut rather than 300 KB long.
    let w = work(&rack, &key, "refs");
    w.commit("f", "x");
    let dir = "d".repeat(200);
    let updates: String = (0..300)
        .map(|i| format!("create refs/heads/{dir}/{dir}/{dir}/{dir}/{i:0>150} HEAD\n"))
        .collect();
    let mut c = Command::new("git");
    c.args(["update-ref", "--stdin"]).current_dir(&w.dir);
    crate::harness::run_with_stdin(c, updates.as_bytes()).ok();
    w.git(&[
        "push",
        "-q",
        "-o",
        "skip-deploy",
        &rack.git_url(&app),
        "refs/heads/*:refs/heads/*",
    ])
    .ok();
    let events = rack
        .ssh(&rack.admin, &format!("events {app} -n 1 --json"))
        .ok()
        .json();
    let action = events[0]["action"].as_str().unwrap();
    assert!(action.starts_with("git push refs/heads/"), "{action}");
    assert!(
        action.len() < 4200 && action.ends_with(" more bytes)"),
        "{} bytes: {}",
        action.len(),
        &action[action.len() - 100..]
    );
}

/// An OpenSSH master connection of `key` (ControlMaster), for sessions
/// multiplexed over one connection as a CI runner or a user's
/// `ControlPersist` would.
struct Master {
    args: Vec<String>,
}

impl Master {
    fn open(rack: &Rack, key: &Key, name: &str) -> Master {
        let path = rack.dir.path().join(format!("cm-{name}"));
        let mut args = rack.ssh_args(key);
        args.extend(["-o".into(), format!("ControlPath={}", path.display())]);
        let st = Command::new("ssh")
            .args(&args)
            .args([
                "-o",
                "ControlMaster=yes",
                "-o",
                "ControlPersist=yes",
                "-f",
                "-N",
            ])
            .arg("git@127.0.0.1")
            .status()
            .unwrap();
        assert!(st.success());
        Master { args }
    }

    /// A command over the master connection.
    fn command(&self, line: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(&self.args)
            .args(["-o", "ControlMaster=no"])
            .arg("git@127.0.0.1")
            .arg(line);
        c
    }

    fn run(&self, line: &str) -> crate::harness::Out {
        crate::harness::run_with_stdin(self.command(line), b"")
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = Command::new("ssh")
            .args(&self.args)
            .args(["-O", "exit", "git@127.0.0.1"])
            .output();
    }
}

/// A receive-pack session held open: it has sent its advertisement and
/// waits for commands until dropped.
struct Held(std::process::Child);

impl Held {
    fn start(mut c: Command) -> Held {
        use std::io::Read;
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = [0u8; 4];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
        Held(child)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sessions_are_counted_per_connection_and_per_key() {
    require_docker();
    let mut rack =
        Rack::start_with("[limits]\nmax_sessions_per_connection = 3\nmax_sessions_per_key = 4\n");
    let bystander = deploy_bystander(&rack);
    let (app, key) = attacker(&rack, "mux");
    let master = Master::open(&rack, &key, "mux");
    let receive = format!("git-receive-pack '{app}'");
    // Three sessions running on one connection: its limit.
    let held: Vec<Held> = (0..3)
        .map(|_| Held::start(master.command(&receive)))
        .collect();
    // (OpenSSH then falls back to a connection of its own, where it runs.)
    let out = master.run(&format!("ps {app}"));
    assert!(
        out.stderr.contains("Session open refused by peer"),
        "a fourth session on one connection: {}",
        out.stderr
    );
    // Another connection of the same key: one more, then the key's limit.
    let fourth = Held::start(rack_ssh(&rack, &key, &receive));
    let out = rack.ssh(&key, &format!("ps {app}"));
    out.err("key 'mux-ci' already runs 4 sessions at once");
    // Another key is not affected, and the rack answers.
    assert_still_up(&mut rack, &bystander);
    // Sessions that end give their places back.
    drop(held);
    drop(fourth);
    master.run(&format!("ps {app}")).ok();
    rack.ssh(&key, &format!("ps {app}")).ok();
}

fn rack_ssh(rack: &Rack, key: &Key, line: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args(rack.ssh_args(key)).arg("git@127.0.0.1").arg(line);
    c
}

#[test]
fn a_removed_key_runs_nothing_more_on_an_open_connection() {
    require_docker();
    let mut rack = Rack::start();
    let bystander = deploy_bystander(&rack);
    let (app, key) = attacker(&rack, "gone");
    let admin2 = rack.add_key("admin2", "--admin");
    let deploy = Master::open(&rack, &key, "gone");
    let admin = Master::open(&rack, &admin2, "admin2");
    deploy.run(&format!("ps {app}")).ok();
    admin.run("apps").ok();
    rack.ssh(&rack.admin, "keys:remove gone-ci").ok();
    rack.ssh(&rack.admin, "keys:remove admin2").ok();
    // The connections opened before stay open, but run nothing.
    for (m, line) in [
        (&deploy, format!("ps {app}")),
        (&admin, "keys:add x --admin".into()),
    ] {
        let out = m.run(&line);
        out.err("this key is no longer registered");
    }
    let out =
        crate::harness::run_with_stdin(deploy.command(&format!("git-upload-pack '{app}'")), b"");
    assert!(
        out.stderr.contains("no longer registered"),
        "{}",
        out.stderr
    );
    assert!(!rack.ssh(&rack.admin, "keys").ok().stdout.contains("admin2"));
    assert_still_up(&mut rack, &bystander);
}

#[test]
fn a_destroyed_app_leaves_no_grant_and_no_history() {
    let rack = Rack::start();
    let a = &rack.admin;
    let app = unique("gone");
    rack.ssh(a, &format!("apps:create {app}")).ok();
    let key = rack.add_key("ci", &format!("--app {app}"));
    let w = work(&rack, &key, "gone");
    let old = w.commit("secret-history", "old");
    w.git(&[
        "push",
        "-q",
        "-o",
        "skip-deploy",
        &rack.git_url(&app),
        "main",
    ])
    .ok();
    // A failed delete leaves the repository behind: keep a copy to put back.
    let repo = rack.data_dir().join(format!("repos/{app}.git"));
    let stray = rack.dir.path().join("stray.git");
    assert!(Command::new("cp")
        .args(["-a"])
        .arg(&repo)
        .arg(&stray)
        .status()
        .unwrap()
        .success());
    rack.ssh(a, &format!("apps:destroy {app} --confirm {app}"))
        .ok();
    std::fs::rename(&stray, &repo).unwrap();

    // The key's scope went with the app.
    let keys = rack.ssh(a, "keys --json").ok().json();
    let ci = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .unwrap();
    assert_eq!(ci["apps"], serde_json::json!([]), "{keys}");
    // A new app of the same name: not open to the old key, no old history.
    rack.ssh(a, &format!("apps:create {app}")).ok();
    rack.ssh(&key, &format!("ps {app}")).err("");
    assert_eq!(server_ref(&rack, &app, "refs/heads/main"), None);
    let git = git2::Repository::open_bare(&repo).unwrap();
    assert!(git
        .find_object(git2::Oid::from_str(&old).unwrap(), None)
        .is_err());
    // A key cannot be scoped to an app that does not exist (yet).
    let k = crate::harness::keygen(rack.dir.path(), "early");
    rack.ssh_in(a, "keys:add early --app nosuchapp", k.public().as_bytes())
        .err("no app named 'nosuchapp'");
    rack.ssh(a, "apps").ok();
}

#[test]
fn text_a_deploy_key_controls_reaches_terminals_escaped() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let (app, key) = attacker(&rack, "esc");
    let w = work(&rack, &key, "esc");
    add_fixture(&w, "procfile-web");
    // The app writes a window title, a clear-screen and a carriage return
    // that would hide the line's start.
    let procfile = w.dir.join("Procfile");
    let text = std::fs::read_to_string(&procfile).unwrap().replace(
        "web: sh /app/web.sh",
        "web: printf 'start\\033]0;pwned\\007\\033[2J\\rFORGED\\n'; exec sh /app/web.sh",
    );
    std::fs::write(&procfile, text).unwrap();
    w.git(&["commit", "-qam", "noisy"]).ok();
    // A push option is free text, and lands in the audit trail.
    let evil_option = "x\u{1b}[2K\rforged audit line";
    w.git(&["push", "-q", "-o", evil_option, &rack.git_url(&app), "main"])
        .ok();

    let logs = rack
        .ssh(a, &format!("logs {app} -n 50"))
        .ok()
        .stdout
        .clone();
    assert!(
        logs.contains("start\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\rFORGED"),
        "{logs}"
    );
    let events = rack.ssh(a, &format!("events {app}")).ok().stdout.clone();
    assert!(
        events.contains("x\\u{1b}[2K\\rforged audit line"),
        "{events}"
    );
    for out in [&logs, &events] {
        assert!(
            !out.contains('\u{1b}') && !out.contains('\r') && !out.contains('\u{7}'),
            "{out:?}"
        );
    }
    // Machine output stays exact.
    let json = rack.ssh(a, &format!("events {app} --json")).ok().json();
    let exact = json
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"].as_str().unwrap_or("").contains(evil_option));
    assert!(exact, "{json}");
}

#[test]
fn smaller_gaps_are_closed() {
    use std::os::unix::fs::PermissionsExt;
    require_docker();
    let mut rack = Rack::start();
    let a = &rack.admin.clone();
    let data = rack.data_dir();
    // A data dir left world-readable (as an older scripts/up did) is made
    // private at start-up.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        data.join("state.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    rack.restart();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("state.db")), 0o600);
    assert_eq!(mode(&data.join("rack.toml")), 0o600);

    // A second server on the same data dir refuses to start.
    let out = Command::new(crate::harness::RACK)
        .args(["server", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        // The control socket answers first; the lock stops a server that
        // misses it.
        stderr.contains("another rack server is running")
            || stderr.contains("a rack server already runs on this data dir"),
        "{stderr}"
    );

    // An app cannot take another app's default host, present or future.
    let bystander = deploy_bystander(&rack);
    rack.ssh(a, "apps:create thief").ok();
    for host in [
        format!("{bystander}.localhost"),
        "later.localhost".to_string(),
    ] {
        rack.ssh(a, &format!("domains:add thief {host}"))
            .err("is the default host of app");
    }
    rack.ssh(a, "domains:add thief www.example.com").ok();

    // Reading secrets is audited (names only).
    rack.ssh(
        a,
        &format!("config:set {bystander} TOKEN=s3cret --no-restart"),
    )
    .ok();
    rack.ssh(a, &format!("config {bystander}")).ok();
    rack.ssh(a, &format!("config:get {bystander} TOKEN")).ok();
    let events = rack
        .ssh(a, &format!("events {bystander} --json"))
        .ok()
        .stdout
        .clone();
    assert!(
        events.contains(&format!("\"config {bystander}\"")),
        "{events}"
    );
    assert!(
        events.contains(&format!("\"config:get {bystander} TOKEN\"")),
        "{events}"
    );
    assert!(!events.contains("s3cret"));

    // `--json` after ` -- ` belongs to the command run.
    let out = rack.ssh(a, &format!("run {bystander} -- echo --json"));
    assert_eq!(out.ok().stdout, "--json\n");
    assert_still_up(&mut rack, &bystander);
}

#[test]
fn a_pathological_dockerignore_builds_in_linear_time() {
    require_docker();
    let mut rack = Rack::start();
    let bystander = deploy_bystander(&rack);
    let (app, key) = attacker(&rack, "ign");
    let w = work(&rack, &key, "ign");
    add_fixture(&w, "procfile-web");
    // 40 wildcards against names of 250 `a`s, 12 directories deep: a
    // backtracking matcher never finishes (the build slot stays taken).
    std::fs::write(
        w.dir.join(".dockerignore"),
        format!("{}b\n", "*a".repeat(40)),
    )
    .unwrap();
    let long = "a".repeat(250);
    let deep: std::path::PathBuf = (0..12).map(|_| long.as_str()).collect();
    std::fs::create_dir_all(w.dir.join(&deep)).unwrap();
    std::fs::write(w.dir.join(&deep).join(&long), "x").unwrap();
    w.git(&["add", "-A"]).ok();
    w.git(&["commit", "-qm", "wildcards"]).ok();
    w.git(&["push", "-q", &rack.git_url(&app), "main"]).ok();
    assert_still_up(&mut rack, &bystander);
}

/// A connection to the router from `from` (another loopback address than
/// the legitimate client's 127.0.0.1) that sent half a request.
fn half_request(rt: &tokio::runtime::Runtime, port: u16, from: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let mut s = socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: slow.localhost\r\nX-Slow: ")
            .await
            .unwrap();
        s
    })
}

/// Everything the router sends on `s` until it closes the connection.
fn read_to_close(rt: &tokio::runtime::Runtime, s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    rt.block_on(async {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[test]
fn one_address_holding_half_sent_requests_cannot_starve_the_router() {
    require_docker();
    let mut rack =
        Rack::start_with("[router]\nmax_connections_per_ip = 20\nheader_timeout_secs = 3\n");
    let bystander = deploy_bystander(&rack);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The attacker, on 127.0.0.2, holds its limit of half-sent requests.
    let mut held: Vec<_> = (0..20)
        .map(|_| half_request(&rt, rack.http_port, "127.0.0.2"))
        .collect();
    // One more from there is refused at once, with a reason.
    let mut extra = half_request(&rt, rack.http_port, "127.0.0.2");
    let refusal = read_to_close(&rt, &mut extra);
    assert!(
        refusal.starts_with("HTTP/1.1 503")
            && refusal.contains("too many connections from your address"),
        "{refusal:?}"
    );
    // Everyone else is served meanwhile.
    assert_still_up(&mut rack, &bystander);
    // The held requests are dropped at the header deadline: the router
    // closes them by itself, and the address may connect again.
    for s in held.iter_mut() {
        read_to_close(&rt, s);
    }
    drop(held);
    let mut again = half_request(&rt, rack.http_port, "127.0.0.2");
    let answer = read_to_close(&rt, &mut again);
    assert!(!answer.contains("too many connections"), "{answer:?}");
    assert_still_up(&mut rack, &bystander);
}

#[test]
fn one_address_cannot_hold_the_ssh_slots_before_authenticating() {
    require_docker();
    let mut rack = Rack::start_with("[limits]\nmax_preauth_per_ip = 4\n");
    let bystander = deploy_bystander(&rack);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let connect = || {
        use tokio::io::AsyncReadExt;
        rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut s = socket
                .connect(format!("127.0.0.1:{}", rack.port).parse().unwrap())
                .await
                .unwrap();
            let mut first = [0u8; 8];
            s.read_exact(&mut first).await.unwrap();
            (s, first)
        })
    };
    // Four connections that never authenticate hold their address's budget.
    let held: Vec<_> = (0..4)
        .map(|_| {
            let (s, first) = connect();
            assert_eq!(&first, b"SSH-2.0-");
            s
        })
        .collect();
    let (mut fifth, first) = connect();
    let mut rest = read_to_close(&rt, &mut fifth);
    rest.insert_str(0, &String::from_utf8_lossy(&first));
    assert!(
        rest.contains("too many unauthenticated connections from your address"),
        "{rest:?}"
    );
    // A user on another address is not affected.
    assert_still_up(&mut rack, &bystander);
    drop(held);
}
