//! Release phase, logs and one-off runs (interface §3 logs/run, §5).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use crate::builds::{add_fixture, require_docker};
use crate::git::work;
use crate::harness::Rack;
use crate::http;

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 100000)
}

#[test]
fn release_phase_runs_before_rollout_and_can_reject() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let app = unique("rp");
    rack.ssh(a, &format!("apps:create {app}")).ok();
    let w = work(&rack, a, "w");
    add_fixture(&w, "release-phase");
    let out = w.git(&["push", &rack.git_url(&app), "main"]);
    out.ok();
    let e = &out.stderr;
    let migrate = e
        .find("migrating database for v1")
        .unwrap_or_else(|| panic!("{e}"));
    let rollout = e.find("Rolling out").unwrap();
    assert!(
        migrate < rollout,
        "the release phase runs before the rollout: {e}"
    );
    assert_eq!(
        http::get(rack.http_port, &format!("{app}.localhost"), "/")
            .unwrap()
            .body,
        "release v1\n"
    );

    // A failing release command rejects the change; v1 keeps serving.
    rack.ssh(a, &format!("config:set {app} RELEASE_EXIT=1 --no-restart"))
        .ok();
    w.commit("note", "x");
    let out = w.git(&["push", &rack.git_url(&app), "main"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("[remote rejected] main -> main (release failed)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("migrating database for v2"),
        "{}",
        out.stderr
    );
    assert_eq!(
        http::get(rack.http_port, &format!("{app}.localhost"), "/")
            .unwrap()
            .body,
        "release v1\n"
    );
    // The release phase never stays around as a process.
    let ps = rack.ssh(a, &format!("ps {app} --json")).ok().json();
    assert!(
        ps.as_array().unwrap().iter().all(|p| p["type"] == "web"),
        "{ps}"
    );
}

#[test]
fn logs_follow_instances_across_a_deploy() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let app = unique("lg");
    rack.ssh(a, &format!("apps:create {app}")).ok();
    let w = work(&rack, a, "w");
    add_fixture(&w, "procfile-web");
    w.git(&["push", &rack.git_url(&app), "main"]).ok();
    rack.ssh(a, &format!("ps:scale {app} web=2")).ok();

    let mut child = Command::new("ssh")
        .args(rack.ssh_args(a))
        .arg("git@127.0.0.1")
        .arg(format!("logs {app} -f"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |pred: &dyn Fn(&[String]) -> bool, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !pred(&seen) {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => seen.push(l),
                Err(_) => panic!("logs never showed {what}; saw:\n{}", seen.join("\n")),
            }
        }
    };
    wait_for(
        &|s| {
            s.iter().any(|l| l.starts_with("web.1 | web listening"))
                && s.iter().any(|l| l.starts_with("web.2 | web listening"))
        },
        "both web instances",
    );
    // A deploy replaces the instances; following picks up the new ones.
    rack.ssh(a, &format!("config:set {app} GREETING=again"))
        .ok();
    wait_for(
        &|s| s.iter().filter(|l| l.contains("web listening")).count() >= 4,
        "the new instances after a deploy",
    );
    let _ = child.kill();
    let _ = child.wait();

    let tail = rack.ssh(a, &format!("logs {app} -n 5")).ok().stdout.clone();
    let lines: Vec<&str> = tail.lines().collect();
    assert!(!lines.is_empty() && lines.len() <= 5, "{tail}");
    assert!(lines.iter().all(|l| l.starts_with("web.")), "{tail}");
}

#[test]
fn run_passes_config_stdin_and_exit_status() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let app = unique("run");
    rack.ssh(a, &format!("apps:create {app}")).ok();
    let w = work(&rack, a, "w");
    add_fixture(&w, "procfile-web");
    w.git(&["push", &rack.git_url(&app), "main"]).ok();
    rack.ssh(a, &format!("config:set {app} 'KEY=a value'")).ok();
    let out = rack.ssh(
        a,
        &format!("run {app} -- sh -c 'echo \"$KEY\"; echo oops >&2; exit 3'"),
    );
    assert_eq!(out.code, 3, "{} {}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "a value\n");
    assert!(out.stderr.contains("oops"), "{}", out.stderr);
    let out = rack.ssh_in(a, &format!("run {app} -- cat"), b"through stdin\n");
    out.ok();
    assert_eq!(out.stdout, "through stdin\n");
    // No one-off container is left behind.
    let left = crate::builds::docker(&[
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("label=rack.app={app}"),
        "--filter",
        "label=rack.oneoff=1",
    ]);
    assert_eq!(left.stdout.trim(), "");
}

/// `ssh -t ... run APP -- sh` under a real terminal (tmux).
#[test]
fn run_with_a_terminal() {
    require_docker();
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for the terminal test: scripts/test installs it");
    }
    let rack = Rack::start();
    let a = &rack.admin;
    let app = unique("tty");
    rack.ssh(a, &format!("apps:create {app}")).ok();
    let w = work(&rack, a, "w");
    add_fixture(&w, "procfile-web");
    w.git(&["push", &rack.git_url(&app), "main"]).ok();

    let session = format!("rack-tty-{}", std::process::id());
    let ssh = format!(
        "ssh -tt {} git@127.0.0.1 run {app} -- sh",
        rack.ssh_args(a).join(" ")
    );
    let st = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "30",
            "-s",
            &session,
            &ssh,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().unwrap();
    let screen = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).into_owned()
    };
    let wait_screen = |text: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = screen();
            if s.contains(text) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "terminal never showed {text:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_screen("#");
    tmux(&[
        "send-keys",
        "-t",
        &session,
        "echo tty-$((40+2)) $(tty)",
        "Enter",
    ]);
    let s = wait_screen("tty-42 /dev/");
    assert!(s.contains("/dev/pts") || s.contains("/dev/console"), "{s}");
    tmux(&["send-keys", "-t", &session, "sleep 1000", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux(&["send-keys", "-t", &session, "C-c", ""]);
    tmux(&["send-keys", "-t", &session, "echo after-$((1+1))", "Enter"]);
    wait_screen("after-2");
    tmux(&["send-keys", "-t", &session, "exit", "Enter"]);
    let _ = tmux(&["kill-session", "-t", &session]);
}
