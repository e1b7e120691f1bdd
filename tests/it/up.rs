//! `scripts/up` followed by the README's steps with the sample app.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::builds::require_docker;
use crate::harness::{Key, Out, RACK};
use crate::http;

#[test]
fn scripts_up_then_the_readme_walkthrough() {
    require_docker();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ns = format!("up{}", std::process::id() % 100_000);
    std::fs::write(data.join("rack.toml"), format!("namespace = \"{ns}\"\n")).unwrap();
    let mut up = Command::new("bash")
        .arg(root.join("scripts/up"))
        .env("HOME", &home)
        .env("RACK_DATA_DIR", &data)
        .env("RACK_LISTEN", "127.0.0.1:0")
        .env("RACK_HTTP", "127.0.0.1:0")
        .env("RACK_LOG_FORMAT", "json")
        .env("RACK_BIN", RACK)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = up.stderr.take().unwrap();
    let stdout = up.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx2.send(l);
        }
    });
    let (mut ssh_port, mut http_port, mut said_key) = (0u16, 0u16, false);
    let mut seen = Vec::new();
    while ssh_port == 0 || http_port == 0 {
        let l = rx
            .recv_timeout(Duration::from_secs(300))
            .unwrap_or_else(|_| {
                panic!("scripts/up never started the server:\n{}", seen.join("\n"))
            });
        said_key |= l.contains("created an SSH key for you");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) {
            let f = &v["fields"];
            let port = || {
                f["addr"]
                    .as_str()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            match f["message"].as_str() {
                Some("ssh listening") => ssh_port = port(),
                Some("http listening") => http_port = port(),
                _ => {}
            }
        }
        seen.push(l);
    }
    assert!(
        said_key,
        "scripts/up says it created a key: {}",
        seen.join("\n")
    );
    let key = Key {
        name: "me".into(),
        path: home.join(".ssh/id_ed25519"),
    };
    let kh = tmp.path().join("known_hosts");
    let line: Out = Command::new(RACK)
        .args(["host-key", "--host", "127.0.0.1", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap()
        .into();
    let line = line
        .stdout
        .replace("[127.0.0.1]:2222", &format!("[127.0.0.1]:{ssh_port}"));
    std::fs::write(&kh, line).unwrap();
    let ssh_cmd = format!(
        "ssh -F /dev/null -p {ssh_port} -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o LogLevel=ERROR",
        key.path.display(),
        kh.display()
    );
    let ssh = |cmd: &str| -> Out {
        Command::new("sh")
            .arg("-c")
            .arg(format!("{ssh_cmd} git@127.0.0.1 \"{cmd}\""))
            .output()
            .unwrap()
            .into()
    };

    // The README: create the app, point BASE_IMAGE at a local image (no
    // pulls here), push the sample app.
    ssh("apps:create sample").ok();
    ssh("config:set sample BASE_IMAGE=rack-test/busybox:latest --no-restart").ok();
    ssh("apps:set sample build_args=BASE_IMAGE").ok();
    let app_dir = tmp.path().join("sample");
    let st = Command::new("cp")
        .arg("-a")
        .arg(root.join("examples/sample-app"))
        .arg(&app_dir)
        .status()
        .unwrap();
    assert!(st.success());
    let git = |args: &[&str]| -> Out {
        Command::new("git")
            .args(args)
            .current_dir(&app_dir)
            .env("GIT_SSH_COMMAND", &ssh_cmd)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.org")
            .output()
            .unwrap()
            .into()
    };
    git(&["init", "-q", "-b", "main"]).ok();
    git(&["add", "-A"]).ok();
    git(&["commit", "-q", "-m", "sample"]).ok();
    git(&[
        "remote",
        "add",
        "rack",
        &format!("ssh://git@127.0.0.1:{ssh_port}/sample"),
    ])
    .ok();
    let push = git(&["push", "rack", "main"]);
    push.ok();
    assert!(
        push.stderr.contains("Deployed sample v1"),
        "{}",
        push.stderr
    );
    assert!(
        push.stderr.contains("http://sample.localhost:"),
        "{}",
        push.stderr
    );
    let page = || http::get(http_port, "sample.localhost", "/").unwrap().body;
    assert!(page().contains("hello from rack, release v1"), "{}", page());

    ssh("config:set sample GREETING=hi").ok();
    assert!(page().contains("hi from rack, release v2"), "{}", page());
    ssh("ps:scale sample web=2 worker=1").ok();
    let ps = ssh("ps sample --json").ok().json();
    assert_eq!(ps.as_array().unwrap().len(), 3, "{ps}");
    let logs = ssh("logs sample -n 20");
    logs.ok();
    assert!(
        logs.stdout
            .lines()
            .all(|l| l.starts_with("web.") || l.starts_with("worker.")),
        "{}",
        logs.stdout
    );
    let run = ssh("run sample -- sh -c 'echo \\$GREETING'");
    run.ok();
    assert_eq!(run.stdout.trim(), "hi");
    ssh("releases:rollback sample v1").ok();
    assert!(page().contains("hello from rack, release v3"), "{}", page());

    unsafe {
        libc::kill(up.id() as i32, libc::SIGTERM);
    }
    let status = up.wait().unwrap();
    assert!(
        status.success(),
        "rack server under scripts/up exits 0 on SIGTERM"
    );
    let ids = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=rack.ns={ns}")])
        .output()
        .unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
    let _ = Command::new("docker")
        .args(["network", "rm", &format!("{ns}-sample")])
        .output();
}
