//! Releases and the local runtime end to end: push → build → release →
//! rollout behind the router, with real git, Docker and HTTP.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::builds::{add_fixture, docker, require_docker};
use crate::git::{work, Work};
use crate::harness::Rack;
use crate::http;

pub(crate) fn host(app: &str) -> String {
    format!("{app}.localhost")
}

pub(crate) fn page(rack: &Rack, app: &str, path: &str) -> String {
    let r = http::get(rack.http_port, &host(app), path).expect("router answers");
    assert_eq!(r.status, 200, "GET {path} on {app}: {}", r.body);
    r.body
}

fn containers(app: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("label=rack.app={app}"),
    ]);
    out.stdout.lines().map(str::to_string).collect()
}

pub(crate) fn deploy_fixture(rack: &Rack, app: &str) -> Work {
    rack.ssh(&rack.admin, &format!("apps:create {app}")).ok();
    let w = work(rack, &rack.admin, &format!("w-{app}"));
    add_fixture(&w, "procfile-web");
    let out = w.git(&["push", &rack.git_url(app), "main"]);
    out.ok();
    assert!(
        out.stderr
            .contains(&format!("remote: -----> Deployed {app} v1 in")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("http://{app}.localhost:")),
        "{}",
        out.stderr
    );
    w
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 100000)
}

#[test]
fn push_deploys_and_config_rollback_scale_work() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let app = unique("rel");
    let w = deploy_fixture(&rack, &app);
    assert!(page(&rack, &app, "/").starts_with("version 1 v1"));

    // Config reaches the containers exactly, through a new release.
    let tricky = "two words, 'quotes' \"dq\" and\nnewline";
    rack.ssh_in(
        a,
        &format!("config:set {app} GREETING --stdin"),
        tricky.as_bytes(),
    )
    .ok();
    assert_eq!(page(&rack, &app, "/greeting.txt"), tricky);
    assert!(page(&rack, &app, "/").ends_with("v2\n"));
    // --no-restart records the value without rolling.
    rack.ssh(a, &format!("config:set {app} GREETING=later --no-restart"))
        .ok();
    assert_eq!(page(&rack, &app, "/greeting.txt"), tricky);

    // A new build.
    std::fs::write(w.dir.join("VERSION"), "2\n").unwrap();
    w.git(&["commit", "-qam", "v2"]).ok();
    w.git(&["push", &rack.git_url(&app), "main"]).ok();
    assert!(page(&rack, &app, "/").starts_with("version 2 v3"));
    assert_eq!(page(&rack, &app, "/greeting.txt"), "later");

    // Rollback to v2: old build, old config, as a new release v4.
    let out = rack.ssh(a, &format!("releases:rollback {app} v2"));
    out.ok();
    assert!(
        out.stdout.contains("GREETING"),
        "changed keys are listed: {}",
        out.stdout
    );
    assert!(page(&rack, &app, "/").starts_with("version 1 v4"));
    assert_eq!(page(&rack, &app, "/greeting.txt"), tricky);
    let rels = rack.ssh(a, &format!("releases {app} --json")).ok().json();
    assert_eq!(rels[0]["name"], "v4");
    assert_eq!(rels[0]["description"], "Rollback to v2");
    assert_eq!(rels[0]["current"], true);
    assert_eq!(
        rels[3]["description"].as_str().unwrap().split(' ').next(),
        Some("Deploy")
    );
    let info = rack
        .ssh(a, &format!("releases:info {app} v4 --json"))
        .ok()
        .json();
    assert_eq!(info["config_keys"][0], "GREETING");

    // Scaling: three web instances share the traffic, a worker runs.
    rack.ssh(a, &format!("ps:scale {app} web=3 worker=1")).ok();
    let ps = rack.ssh(a, &format!("ps {app} --json")).ok().json();
    let names: Vec<&str> = ps
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web.1", "web.2", "web.3", "worker.1"], "{ps}");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        seen.insert(page(&rack, &app, "/host.txt"));
    }
    assert_eq!(
        seen.len(),
        3,
        "requests spread over the three instances: {seen:?}"
    );
    rack.ssh(a, &format!("ps:scale {app} worker=0 web=1")).ok();
    let ps = rack.ssh(a, &format!("ps {app} --json")).ok().json();
    assert_eq!(ps.as_array().unwrap().len(), 1, "{ps}");
    // Old instances drain and stop in the background; wait for Docker to
    // show them gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while containers(&app).len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "old instances are removed: {:?}",
            containers(&app)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // An extra domain is routed.
    rack.ssh(a, &format!("domains:add {app} www.example.test"))
        .ok();
    let r = http::get(rack.http_port, "www.example.test", "/").unwrap();
    assert!(r.body.starts_with("version 1"), "{}", r.body);
    assert_eq!(
        http::get(rack.http_port, "nobody.localhost", "/")
            .unwrap()
            .status,
        404
    );

    rack.ssh(a, &format!("apps:destroy {app} --confirm {app}"))
        .ok();
    assert!(containers(&app).is_empty());
}

#[test]
fn a_release_that_never_gets_ready_is_rejected_and_the_old_one_serves() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let app = unique("nr");
    let w = deploy_fixture(&rack, &app);
    rack.ssh(a, &format!("apps:set {app} healthcheck.timeout=4"))
        .ok();
    std::fs::remove_file(w.dir.join("Procfile")).unwrap();
    std::fs::write(
        w.dir.join("Dockerfile"),
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/apps/never-ready/Dockerfile"
        ))
        .unwrap(),
    )
    .unwrap();
    w.git(&["commit", "-qam", "broken"]).ok();
    let before = containers(&app);
    let out = w.git(&["push", &rack.git_url(&app), "main"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("[remote rejected] main -> main (rollout failed)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("never-ready-fixture starting"),
        "the failing log is shown: {}",
        out.stderr
    );
    assert!(page(&rack, &app, "/").starts_with("version 1 v1"));
    assert_eq!(containers(&app), before, "no new container is left behind");
    let rels = rack.ssh(a, &format!("releases {app} --json")).ok().json();
    assert_eq!(rels[0]["status"], "failed");
    assert_eq!(rels[1]["current"], true);
}

/// 8 keep-alive clients and a 2-second request in flight across every
/// switch of 20 deploys mixing pushes, config:set, ps:scale and rollback.
#[test]
fn zero_downtime_across_twenty_deploys() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let app = unique("zd");
    let w = deploy_fixture(&rack, &app);
    let port = rack.http_port;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut threads = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failures, h) = (stop.clone(), ok.clone(), failures.clone(), host(&app));
        threads.push(std::thread::spawn(move || {
            let mut conn = http::KeepAlive::connect(port, &h).unwrap();
            while !stop.load(Ordering::SeqCst) {
                match conn.get("/") {
                    Ok(r) if r.status == 200 && r.body.starts_with("version") => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", r.status, r.body)),
                    Err(e) => {
                        failures.lock().unwrap().push(format!("transport: {e}"));
                        conn = http::KeepAlive::connect(port, &h).unwrap();
                    }
                }
            }
        }));
    }
    {
        let (stop, ok, failures, h) = (stop.clone(), ok.clone(), failures.clone(), host(&app));
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match http::get(port, &h, "/cgi-bin/slow") {
                    Ok(r) if r.status == 200 && r.body.contains("slow done") => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("slow: {} {}", r.status, r.body)),
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("slow transport: {e}")),
                }
            }
        }));
    }
    let mut expected_version = 1;
    for i in 0..20 {
        match i % 4 {
            0 => {
                expected_version += 1;
                std::fs::write(w.dir.join("VERSION"), format!("{expected_version}\n")).unwrap();
                w.git(&["commit", "-qam", "bump"]).ok();
                w.git(&["push", &rack.git_url(&app), "main"]).ok();
            }
            1 => {
                rack.ssh(a, &format!("config:set {app} GREETING=g{i}")).ok();
            }
            2 => {
                rack.ssh(a, &format!("ps:scale {app} web={}", 1 + i % 3))
                    .ok();
            }
            _ => {
                rack.ssh(a, &format!("releases:rollback {app}")).ok();
                rack.ssh(a, &format!("releases:rollback {app}")).ok();
            }
        }
        if i % 4 == 0 {
            assert!(page(&rack, &app, "/").starts_with(&format!("version {expected_version} ")));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(ok.load(Ordering::SeqCst) > 100);
}

#[test]
fn restart_and_kill_keep_apps_served() {
    require_docker();
    let mut rack = Rack::start();
    let app = unique("rs");
    deploy_fixture(&rack, &app);
    let before = containers(&app);
    rack.restart();
    assert!(page(&rack, &app, "/").starts_with("version 1 v1"));
    assert_eq!(
        containers(&app),
        before,
        "a restart keeps the running containers"
    );
    rack.kill9();
    // A stray container from an interrupted rollout, and a missing one.
    docker(&["rm", "-f", &before[0]]).ok();
    rack.start_again();
    assert!(page(&rack, &app, "/").starts_with("version 1 v1"));
    assert_eq!(containers(&app).len(), 1);
    let rels = rack
        .ssh(&rack.admin, &format!("releases {app} --json"))
        .ok()
        .json();
    assert_eq!(
        rels.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["current"] == true)
            .count(),
        1
    );
}

/// Containers (any state) of the rack's namespace.
fn ns_containers(rack: &Rack) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}} {{.Label \"rack.release\"}}",
        "--filter",
        &format!("label=rack.ns={}", rack.ns),
    ]);
    out.stdout.lines().map(str::to_string).collect()
}

/// `git push` in the background; returns once the push output shows
/// `marker` (the push is then blocked at a test pause point).
pub fn push_until(rack: &Rack, w: &Work, app: &str, marker: &str) -> std::process::Child {
    use std::io::Read;
    let mut child = std::process::Command::new("git")
        .args(["push", &rack.git_url(app), "main"])
        .current_dir(&w.dir)
        .env("GIT_SSH_COMMAND", rack.git_ssh_command(&rack.admin))
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let marker_s = marker.to_string();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let mut sent = false;
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if !sent && String::from_utf8_lossy(&seen).contains(&marker_s) {
                sent = true;
                let _ = tx.send(Ok(()));
            }
        }
        if !sent {
            let _ = tx.send(Err(String::from_utf8_lossy(&seen).into_owned()));
        }
    });
    match rx.recv_timeout(std::time::Duration::from_secs(180)) {
        Ok(Ok(())) => child,
        Ok(Err(out)) => panic!("the push ended without {marker:?}:\n{out}"),
        Err(_) => panic!("no {marker:?} in the push output within 180 s"),
    }
}

/// kill -9 at `point` of v2's rollout, start again, then: exactly one
/// current release (`expect`), served, no stray container, the deploy
/// branch where the commit point says, the repo intact, the app not locked.
fn kill_during_rollout(point: &str, expect: i64) {
    require_docker();
    let args = vec!["--test-pause-at".to_string(), format!("{point}:v2")];
    let mut rack = Rack::start_with_args("", args);
    let app = unique(&format!("k{}", &point[..2]));
    let w = deploy_fixture(&rack, &app);
    let v1_commit = w.head();
    let v2_commit = w.commit("VERSION", "2\n");
    let marker = format!("test pause: {point} v2");
    let mut push = if point == "during_cleanup" {
        // The push itself completes; cleanup runs after it.
        let out = w.git(&["push", &rack.git_url(&app), "main"]);
        out.ok();
        assert!(out.stderr.contains("Deployed"), "{}", out.stderr);
        rack.wait_for_log(&marker, std::time::Duration::from_secs(60));
        None
    } else {
        Some(push_until(&rack, &w, &app, &marker))
    };
    rack.kill9();
    if let Some(p) = push.as_mut() {
        let st = p.wait().unwrap();
        assert!(!st.success(), "a push cut off by kill -9 does not succeed");
    }
    rack.server_args.clear();
    rack.start_again();
    let a = &rack.admin;

    let rels = rack.ssh(a, &format!("releases {app} --json")).ok().json();
    let current: Vec<&serde_json::Value> = rels
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["current"] == true)
        .collect();
    assert_eq!(current.len(), 1, "exactly one current release: {rels}");
    assert_eq!(current[0]["version"], expect, "{rels}");
    let info = rack
        .ssh(a, &format!("releases:info {app} v{expect} --json"))
        .ok()
        .json();
    assert_eq!(info["current"], true);
    assert_eq!(info["status"], "succeeded");
    if expect == 1 {
        let v2 = rack
            .ssh(a, &format!("releases:info {app} v2 --json"))
            .ok()
            .json();
        assert_eq!(v2["status"], "failed", "rolled back: {v2}");
    }
    assert!(
        page(&rack, &app, "/").starts_with(&format!("version {expect} v{expect}")),
        "{}",
        page(&rack, &app, "/")
    );
    let left = ns_containers(&rack);
    assert_eq!(
        left.len(),
        1,
        "only the current release's instance is left: {left:?}"
    );
    assert!(left[0].ends_with(&format!(" {expect}")), "{left:?}");

    // The deploy branch follows the commit point; the repo is intact.
    let repo = rack.data_dir().join("repos").join(format!("{app}.git"));
    let git_dir = format!("--git-dir={}", repo.display());
    let head = std::process::Command::new("git")
        .args([git_dir.as_str(), "rev-parse", "refs/heads/main"])
        .output()
        .unwrap();
    let want = if expect == 1 { &v1_commit } else { &v2_commit };
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), want.as_str());
    let fsck = std::process::Command::new("git")
        .args([git_dir.as_str(), "fsck", "--no-dangling"])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "git fsck: {}",
        String::from_utf8_lossy(&fsck.stderr)
    );

    // Not locked: the next push deploys.
    w.commit("VERSION", "3\n");
    // The restarted rack listens on a new port: a fresh ssh command line.
    let out: crate::harness::Out = std::process::Command::new("git")
        .args(["push", &rack.git_url(&app), "main"])
        .current_dir(&w.dir)
        .env("GIT_SSH_COMMAND", rack.git_ssh_command(&rack.admin))
        .output()
        .unwrap()
        .into();
    out.ok();
    assert!(
        out.stderr
            .contains(&format!("remote: -----> Deployed {app} v3 in")),
        "{}",
        out.stderr
    );
    assert!(page(&rack, &app, "/").starts_with("version 3 v3"));
}

#[test]
fn kill9_before_ready_rolls_back() {
    kill_during_rollout("before_ready", 1);
}

#[test]
fn kill9_after_switch_rolls_forward() {
    kill_during_rollout("after_switch", 2);
}

#[test]
fn kill9_during_cleanup_keeps_the_new_release() {
    kill_during_rollout("during_cleanup", 2);
}

#[test]
fn old_images_are_pruned_and_rollback_to_them_is_refused() {
    require_docker();
    let rack = Rack::start_with("[local]\nkeep_releases = 2\n");
    let a = &rack.admin;
    let app = unique("pr");
    let w = deploy_fixture(&rack, &app);
    let image = |v: i64| {
        let info = rack
            .ssh(a, &format!("releases:info {app} v{v} --json"))
            .ok()
            .json();
        format!("rack/{app}:{}", info["build_id"].as_str().unwrap())
    };
    let exists = |img: &str| docker(&["image", "inspect", img]).code == 0;
    let wait_one_container = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while containers(&app).len() != 1 {
            assert!(std::time::Instant::now() < deadline, "old instances go");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    // Another rack on the same engine with an app of the same name: its
    // images are not this rack's to prune.
    let foreign = format!("rack/{app}:b-0another-rack");
    docker(&["tag", "rack-test/busybox:latest", &foreign]).ok();
    for n in 2..=3 {
        w.commit("VERSION", &format!("{n}\n"));
        w.git(&["push", &rack.git_url(&app), "main"]).ok();
        wait_one_container();
    }
    let (i1, i2, i3) = (image(1), image(2), image(3));
    assert!(i1 != i2 && i2 != i3, "three builds");
    // v3's prune runs in the background after its push.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while exists(&i1) {
        assert!(
            std::time::Instant::now() < deadline,
            "v1's image is pruned; logs:\n{}",
            rack.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        exists(&i2) && exists(&i3),
        "the last two releases keep theirs"
    );
    assert!(exists(&foreign), "an image of no build of this rack stays");

    let config_before = rack.ssh(a, &format!("config {app} --json")).ok().json();
    rack.ssh(a, &format!("releases:rollback {app} v1"))
        .err("the image of v1 was pruned");
    let rels = rack.ssh(a, &format!("releases {app} --json")).ok().json();
    assert_eq!(rels.as_array().unwrap().len(), 3, "no new release: {rels}");
    assert_eq!(rels[0]["name"], "v3");
    assert_eq!(rels[0]["current"], true);
    assert_eq!(
        rack.ssh(a, &format!("config {app} --json")).ok().json(),
        config_before
    );
    assert!(page(&rack, &app, "/").starts_with("version 3 v3"));

    rack.ssh(a, &format!("releases:rollback {app} v2")).ok();
    assert!(page(&rack, &app, "/").starts_with("version 2 v4"));

    // Destroying the app removes its images, and only its own.
    rack.ssh(a, &format!("apps:destroy {app} --confirm {app}"))
        .ok();
    assert!(!exists(&i2) && !exists(&i3), "{app}'s images go with it");
    assert!(exists(&foreign), "another rack's image stays");
    docker(&["rmi", &foreign]).ok();
}
