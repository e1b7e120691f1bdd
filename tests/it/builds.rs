//! Builds from a push: real git, real Docker engine (scripts/test starts it
//! and makes the `rack-test/busybox:latest` base image).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use crate::git::{server_ref, work, Work};
use crate::harness::{Out, Rack};

pub fn require_docker() {
    let out = Command::new("docker")
        .args(["image", "inspect", "rack-test/busybox:latest"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "these tests need a running Docker engine and the rack-test/busybox:latest image; \
             run scripts/test (it starts dockerd and builds the image)"
        ),
    }
}

/// Defeats the layer cache for a step that must really run.
pub fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}-{}", std::process::id(), t.as_nanos())
}

/// Copies a fixture app into the checkout and commits it.
pub fn add_fixture(w: &Work, name: &str) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/apps")
        .join(name);
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(&w.dir)
        .status()
        .unwrap();
    assert!(st.success());
    w.git(&["add", "-A"]).ok();
    w.git(&["commit", "-q", "-m", &format!("fixture {name}")])
        .ok();
    w.head()
}

pub fn docker(args: &[&str]) -> Out {
    Command::new("docker").args(args).output().unwrap().into()
}

/// A `git push` running in the background, its stderr lines on a channel.
pub struct Push {
    child: Child,
    pub lines: Receiver<String>,
    seen: Vec<String>,
}

impl Push {
    pub fn start(w: &Work, args: &[&str], ssh: &str) -> Push {
        let mut child = Command::new("git")
            .args(args)
            .current_dir(&w.dir)
            .env("GIT_SSH_COMMAND", ssh)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            // git rewrites progress with \r; split on both.
            let mut r = BufReader::new(stderr);
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                for part in String::from_utf8_lossy(&buf).split('\r') {
                    let _ = tx.send(part.trim_end().to_string());
                }
                buf.clear();
            }
        });
        Push {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Blocks until a line containing `text` arrives (or the push ends).
    pub fn wait_for(&mut self, text: &str) {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(120)) {
                Ok(l) => {
                    let hit = l.contains(text);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "push never printed {text:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    pub fn finish(mut self) -> Out {
        let status = self.child.wait().unwrap();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        Out {
            code: status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: self.seen.join("\n"),
        }
    }
}

#[test]
fn dockerfile_app_builds_and_keeps_secrets_out() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create bweb").ok();
    let secret = format!("s3cret-{}-value", std::process::id());
    rack.ssh(
        a,
        &format!("config:set bweb TOKEN={secret} GREETING=hi-there"),
    )
    .ok();
    rack.ssh(a, "apps:set bweb build_args=GREETING").ok();
    let w = work(&rack, a, "w");
    let commit = add_fixture(&w, "dockerfile-httpd");
    let out = w.git(&["push", &rack.git_url("bweb"), "main", "-o", "ci-run=42"]);
    out.ok();
    let e = &out.stderr;
    assert!(
        e.contains(&format!(
            "remote: -----> Building bweb {} (Dockerfile)",
            &commit[..7]
        )),
        "{e}"
    );
    assert!(e.contains("remote:        Step 1/"), "{e}");
    assert!(e.contains("succeeded in"), "{e}");
    assert_eq!(
        server_ref(&rack, "bweb", "refs/heads/main"),
        Some(commit.clone())
    );

    let builds = rack.ssh(a, "builds bweb --json").ok().json();
    let b = &builds[0];
    assert_eq!(b["status"], "succeeded");
    assert_eq!(b["commit"], commit);
    let id = b["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("b-"));
    let info = rack
        .ssh(a, &format!("builds:info bweb {id} --json"))
        .ok()
        .json();
    assert_eq!(info["push_options"][0], "ci-run=42");
    assert!(info["context_bytes"].as_i64().unwrap() > 0);
    let tag = format!("rack/bweb:{id}");
    docker(&["image", "inspect", &tag]).ok();

    // .dockerignore, executable bit and symlink as committed.
    let ls = docker(&[
        "run",
        "--rm",
        &tag,
        "sh",
        "-c",
        "ls -la /app /app/bin /app/docs /app/cache /app/public; cat /app/public/greeting.txt",
    ]);
    ls.ok();
    assert!(
        ls.stdout.contains("hi-there"),
        "declared build arg from build_args: {}",
        ls.stdout
    );
    assert!(!ls.stdout.contains("debug.log"), "{}", ls.stdout);
    assert!(!ls.stdout.contains("secrets"), "{}", ls.stdout);
    assert!(
        ls.stdout.contains("keep.md") && ls.stdout.contains("keep.txt"),
        "{}",
        ls.stdout
    );
    assert!(
        ls.stdout.contains("rwxr-xr-x") && ls.stdout.contains("start"),
        "{}",
        ls.stdout
    );
    assert!(
        ls.stdout.contains(" -> "),
        "a symlink should survive: {}",
        ls.stdout
    );

    // The secret (not in build_args) is nowhere in the build's traces.
    let logs = rack
        .ssh(a, &format!("builds:logs bweb {id}"))
        .ok()
        .stdout
        .clone();
    assert!(logs.contains("Step 1/"), "{logs}");
    assert!(!logs.contains(&secret));
    assert!(!out.stderr.contains(&secret));
    assert!(!docker(&["history", "--no-trunc", &tag])
        .ok()
        .stdout
        .contains(&secret));
    assert!(!docker(&["image", "inspect", &tag])
        .ok()
        .stdout
        .contains(&secret));

    // apps:deploy rebuilds the deploy branch, from the cache.
    let again = rack.ssh(a, "apps:deploy bweb");
    again.ok();
    assert!(again.stderr.contains("Using cache"), "{}", again.stderr);
    assert_eq!(
        rack.ssh(a, "builds bweb --json")
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn failing_build_rejects_the_push() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create bbad").ok();
    let w = work(&rack, a, "w");
    add_fixture(&w, "broken-build");
    let out = w.git(&["push", &rack.git_url("bbad"), "main"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains("[remote rejected] main -> main (build failed)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("this step fails on purpose"),
        "{}",
        out.stderr
    );
    assert_eq!(server_ref(&rack, "bbad", "refs/heads/main"), None);
    let b = rack.ssh(a, "builds bbad --json").ok().json();
    assert_eq!(b[0]["status"], "failed");
    let id = b[0]["id"].as_str().unwrap();
    let logs = rack
        .ssh(a, &format!("builds:logs bbad {id}"))
        .ok()
        .stdout
        .clone();
    assert!(logs.contains("this step fails on purpose"), "{logs}");
    // A Dockerfile needing BuildKit fails fast and says why.
    let w2 = work(&rack, a, "w2");
    add_fixture(&w2, "buildkit-only");
    let out = w2.git(&["push", "-f", &rack.git_url("bbad"), "main"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("classic builder"), "{}", out.stderr);
}

#[test]
fn concurrent_pushes_wait_and_never_overwrite() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create race").ok();
    rack.ssh(a, "apps:create other").ok();
    let w1 = work(&rack, a, "w1");
    std::fs::write(
        w1.dir.join("Dockerfile"),
        format!("ARG BASE_IMAGE=rack-test/busybox:latest\nFROM ${{BASE_IMAGE}}\nCOPY . /app\nRUN echo {} && sleep 3\nCMD [\"sh\", \"-c\", \"mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p $PORT -h /www\"]\n",
            nonce()
        ),
    )
    .unwrap();
    w1.git(&["add", "-A"]).ok();
    w1.git(&["commit", "-q", "-m", "slow"]).ok();
    let first_commit = w1.head();
    let w2 = work(&rack, a, "w2");
    std::fs::write(
        w2.dir.join("Dockerfile"),
        "ARG BASE_IMAGE=rack-test/busybox:latest\nFROM ${BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p $PORT -h /www\"]\n",
    )
    .unwrap();
    w2.git(&["add", "-A"]).ok();
    w2.git(&["commit", "-q", "-m", "fast"]).ok();

    let ssh = rack.git_ssh_command(a);
    let mut p1 = Push::start(&w1, &["push", &rack.git_url("race"), "main"], &ssh);
    p1.wait_for("Building race");
    // Another app builds meanwhile, without waiting for race's lock.
    let other = w2.git(&["push", &rack.git_url("other"), "main"]);
    other.ok();
    assert!(
        !other.stderr.contains("Waiting for the deploy"),
        "{}",
        other.stderr
    );
    // The second push to race waits, then finds the ref moved.
    let mut p2 = Push::start(&w2, &["push", "-f", &rack.git_url("race"), "main"], &ssh);
    p2.wait_for("Waiting for the deploy in progress to finish");
    let r1 = p1.finish();
    assert_eq!(r1.code, 0, "{}", r1.stderr);
    let r2 = p2.finish();
    assert_ne!(r2.code, 0);
    assert!(
        r2.stderr
            .contains("ref moved while waiting; fetch and push again"),
        "{}",
        r2.stderr
    );
    assert_eq!(
        server_ref(&rack, "race", "refs/heads/main"),
        Some(first_commit)
    );
}

#[test]
fn kill_during_build_leaves_nothing_stuck() {
    require_docker();
    let mut rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create crash").ok();
    let w = work(&rack, a, "w");
    std::fs::write(
        w.dir.join("Dockerfile"),
        format!("ARG BASE_IMAGE=rack-test/busybox:latest\nFROM ${{BASE_IMAGE}}\nCOPY . /app\nRUN echo {} && sleep 5\nCMD [\"sh\", \"-c\", \"mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p $PORT -h /www\"]\n",
            nonce()
        ),
    )
    .unwrap();
    w.git(&["add", "-A"]).ok();
    w.git(&["commit", "-q", "-m", "slow"]).ok();
    let mut p = Push::start(
        &w,
        &["push", &rack.git_url("crash"), "main"],
        &rack.git_ssh_command(&rack.admin),
    );
    p.wait_for("Building crash");
    rack.kill9();
    let r = p.finish();
    assert_ne!(r.code, 0);
    rack.start_again();
    let a = &rack.admin;
    let b = rack.ssh(a, "builds crash --json").ok().json();
    assert_eq!(b[0]["status"], "failed", "{b}");
    assert!(b[0]["error"].as_str().unwrap().contains("interrupted"));
    assert_eq!(server_ref(&rack, "crash", "refs/heads/main"), None);
    // Not locked: a new push (a quicker build) goes through.
    std::fs::write(
        w.dir.join("Dockerfile"),
        "ARG BASE_IMAGE=rack-test/busybox:latest\nFROM ${BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p $PORT -h /www\"]\n",
    )
    .unwrap();
    w.commit("x", "y");
    let out = Push::start(
        &w,
        &["push", &rack.git_url("crash"), "main"],
        &rack.git_ssh_command(&rack.admin),
    )
    .finish();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stderr.contains("Waiting for the deploy"),
        "{}",
        out.stderr
    );
}
