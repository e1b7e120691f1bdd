//! README.md, run: every indented block of the README is taken from the
//! file and run against a real rack, in order, so an example that breaks
//! fails here.
//!
//! How each kind of block runs:
//! - `scripts/up`: in the background, as the quick start says (with this
//!   build as `RACK_BIN`, ports 0 and its own namespace, like `up.rs`);
//! - `[table]` blocks (rack.toml): written as a data dir's `rack.toml` and
//!   read by `rack host-key`, which refuses unknown keys and bad values;
//! - the aws provider's block: against moto (`aws.rs` shows how), with its
//!   own home;
//! - every other block: one bash script, `set -e`, in a fresh `$HOME`, from
//!   the repository's root, blocks in order (a `cd` carries over, as in a
//!   terminal), stdin from /dev/null.
//!
//! What the test changes in the text, and why: the ports 2222 and 8080 are
//! the ones the test's rack got; `$PWD/target/release` is this build's
//! directory; `my/busybox:latest` is the local test image; `--rack prod` is
//! a name of this test run's own (moto is shared); `logs -f` (it follows
//! forever) runs for 5 s. OpenSSH takes `~` from the password database, not
//! `$HOME`, so an `ssh` first on PATH adds `-o UserKnownHostsFile=$HOME/...`
//! and the home's key (unless the command names its own `-i`) and
//! `BatchMode=yes` (an unpinned host fails instead of asking).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::builds::require_docker;
use crate::harness::{run_with_stdin, Out, RACK};

/// The README's indented code blocks, in order.
pub fn blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<&str>> = None;
    let mut prev_blank = true;
    for line in text.lines() {
        let indented = line.starts_with("    ");
        match cur.as_mut() {
            Some(b) if indented || line.trim().is_empty() => b.push(line),
            Some(_) => {
                out.push(finish(cur.take().unwrap()));
            }
            None if indented && prev_blank => cur = Some(vec![line]),
            None => {}
        }
        prev_blank = line.trim().is_empty();
    }
    if let Some(b) = cur {
        out.push(finish(b));
    }
    out
}

fn finish(lines: Vec<&str>) -> String {
    let mut text: String = lines
        .iter()
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or("")))
        .collect();
    while text.ends_with("\n\n") {
        text.pop();
    }
    text
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    ScriptsUp,
    Toml,
    Aws,
    Shell,
}

fn kind(block: &str) -> Kind {
    let first = block.lines().next().unwrap_or("").trim();
    if first == "scripts/up" {
        Kind::ScriptsUp
    } else if first.starts_with('[') {
        Kind::Toml
    } else if block.contains("rack install aws") {
        Kind::Aws
    } else {
        Kind::Shell
    }
}

/// `logs ... -f` lines run for 5 s (they follow until interrupted).
fn bounded(block: &str) -> String {
    block
        .lines()
        .map(|l| {
            let cmd = l.split("  #").next().unwrap_or(l).trim_end();
            if cmd.contains(" logs") && cmd.split_whitespace().any(|w| w == "-f") {
                format!("timeout 5 {cmd} || test $? = 124\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// A home with an `ssh` that uses it (see the module doc) and `rack`.
fn home_with_tools(root: &Path) -> (PathBuf, String) {
    let home = root.join("home");
    let bin = root.join("bin");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let real = Command::new("sh")
        .args(["-c", "command -v ssh"])
        .output()
        .unwrap();
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    assert!(!real.is_empty(), "the OpenSSH client must be installed");
    std::fs::write(
        bin.join("ssh"),
        format!(
            "#!/bin/sh\nid=\"-i $HOME/.ssh/id_ed25519\"\nfor a in \"$@\"; do [ \"$a\" = -i ] && id=; done\n\
             exec {real} -F /dev/null -o UserKnownHostsFile=\"$HOME/.ssh/known_hosts\" -o IdentitiesOnly=yes -o BatchMode=yes $id \"$@\"\n"
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink(RACK, bin.join("rack")).unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(bin.join("ssh"))
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (home, path)
}

#[test]
fn every_readme_block_runs() {
    require_docker();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = blocks(&readme);
    assert!(blocks.len() >= 10, "{blocks:?}");
    assert_eq!(
        kind(&blocks[0]),
        Kind::ScriptsUp,
        "the quick start comes first"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (home, path) = home_with_tools(tmp.path());
    let ns = format!("rd{}", std::process::id() % 100_000);
    let data = home.join(".local/share/rack");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("rack.toml"), format!("namespace = \"{ns}\"\n")).unwrap();
    let _cleanup = Cleanup(ns.clone());

    let mut server = ScriptsUp::start(root, &home, &path);
    let rack_dir = Path::new(RACK).parent().unwrap().display().to_string();
    let image =
        std::env::var("RACK_TEST_BASE_IMAGE").unwrap_or_else(|_| "rack-test/busybox:latest".into());
    let mut script = String::from("set -eo pipefail\nexec 2>&1\n");
    let mut ran = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        match kind(b) {
            Kind::ScriptsUp => assert_eq!(i, 0, "scripts/up runs once, first"),
            Kind::Toml => check_toml(tmp.path(), i, b),
            Kind::Aws => {} // below, against moto
            Kind::Shell => {
                let b = bounded(b)
                    .replace("2222", &server.ssh_port.to_string())
                    .replace("8080", &server.http_port.to_string())
                    .replace("$PWD/target/release", &rack_dir)
                    .replace("my/busybox:latest", &image);
                script.push_str(&format!("echo '::block {i}'\n{b}\n"));
                ran.push(i);
            }
        }
    }
    script.push_str("echo '::done'\n");
    std::fs::write(tmp.path().join("readme.sh"), &script).unwrap();
    let mut c = Command::new("bash");
    c.arg(tmp.path().join("readme.sh"))
        .current_dir(root)
        .env("HOME", &home)
        .env("PATH", &path)
        .env_remove("RACK_DATA_DIR")
        .env_remove("GIT_SSH_COMMAND")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .stdin(Stdio::null());
    let out: Out = c.output().unwrap().into();
    let section = |i: usize| -> String {
        let start = format!("::block {i}\n");
        let s = out.stdout.split(&start).nth(1).unwrap_or("");
        s.split("::block ").next().unwrap_or("").to_string()
    };
    let last = out
        .stdout
        .rsplit("::block ")
        .next()
        .and_then(|s| s.lines().next())
        .unwrap_or("?")
        .to_string();
    assert!(
        out.code == 0 && out.stdout.ends_with("::done\n"),
        "README block {last} failed (exit {}):\n{}\n--- the block:\n{}\n--- server:\n{}",
        out.code,
        out.stdout,
        blocks
            .get(last.parse::<usize>().unwrap_or(0))
            .map(String::as_str)
            .unwrap_or(""),
        server.log()
    );
    println!("{}", out.stdout); // shown with --nocapture
                                // What the README says the blocks print.
    let all: String = ran.iter().map(|i| section(*i)).collect();
    for want in [
        "Deployed sample v1",
        "hello from rack, release v1",
        "\nhi\n",
        "\nhello\n",
        "Removed key alice",
    ] {
        assert!(all.contains(want), "README output lacks {want:?}:\n{all}");
    }
    server.stop();
    // Without the aws feature the binary has no aws provider to run it.
    #[cfg(feature = "aws")]
    if let Some(i) = blocks.iter().position(|b| kind(b) == Kind::Aws) {
        crate::aws::readme_block(tmp.path(), &path, &blocks[i]);
    }
}

/// A rack.toml block must be one the rack accepts.
fn check_toml(tmp: &Path, i: usize, block: &str) {
    let data = tmp.join(format!("toml{i}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("rack.toml"), block).unwrap();
    let mut c = Command::new(RACK);
    c.args(["host-key", "--data-dir"]).arg(&data);
    let out = run_with_stdin(c, b"");
    assert_eq!(
        out.code, 0,
        "README block {i} is not a valid rack.toml: {}\n{block}",
        out.stderr
    );
}

/// `scripts/up` in the background, as the quick start runs it.
struct ScriptsUp {
    child: std::process::Child,
    ssh_port: u16,
    http_port: u16,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ScriptsUp {
    fn start(root: &Path, home: &Path, path: &str) -> ScriptsUp {
        let mut child = Command::new("bash")
            .arg(root.join("scripts/up"))
            .current_dir(root)
            .env("HOME", home)
            .env("PATH", path)
            .env_remove("RACK_DATA_DIR")
            .env("RACK_LISTEN", "127.0.0.1:0")
            .env("RACK_HTTP", "127.0.0.1:0")
            .env("RACK_LOG_FORMAT", "json")
            .env("RACK_BIN", RACK)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<(String, u16)>();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) {
                    let f = &v["fields"];
                    if let (Some(m), Some(addr)) = (f["message"].as_str(), f["addr"].as_str()) {
                        let port = addr.rsplit(':').next().unwrap().parse().unwrap_or(0);
                        let _ = tx.send((m.to_string(), port));
                    }
                }
                let mut g = log2.lock().unwrap();
                g.push_str(&l);
                g.push('\n');
            }
        });
        let (mut ssh_port, mut http_port) = (0, 0);
        while ssh_port == 0 || http_port == 0 {
            let (m, port) = rx
                .recv_timeout(Duration::from_secs(300))
                .unwrap_or_else(|_| {
                    panic!(
                        "scripts/up never started the server:\n{}",
                        log.lock().unwrap()
                    )
                });
            match m.as_str() {
                "ssh listening" => ssh_port = port,
                "http listening" => http_port = port,
                _ => {}
            }
        }
        ScriptsUp {
            child,
            ssh_port,
            http_port,
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn stop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the rack exits 0 on SIGTERM");
    }
}

impl Drop for ScriptsUp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes the namespace's containers and networks.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=rack.ns={}", self.0),
            ])
            .output();
        if let Ok(o) = ids {
            let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("{}-sample", self.0)])
            .output();
    }
}

#[test]
fn blocks_are_found() {
    let text = "intro\n\n    one\n    two\n\n    still\ntext\n    not a block\n\n    three\n";
    assert_eq!(blocks(text), vec!["one\ntwo\n\nstill\n", "three\n"]);
    assert_eq!(
        bounded("rack logs -f   # x\n"),
        "rack logs -f || test $? = 124\n".replace("rack", "timeout 5 rack")
    );
}
