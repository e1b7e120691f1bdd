//! Client mode: `rack COMMAND` from inside an app's checkout, through the
//! real binary, git, OpenSSH and Docker (issue 19's acceptance).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::builds::{add_fixture, require_docker};
use crate::git::work;
use crate::harness::{run_with_stdin, Out, Rack, RACK};

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 100000)
}

/// `rack ARGS` in `dir`, reaching the rack through `ssh_cmd` as git would.
fn client(dir: &Path, ssh_cmd: &str, args: &[&str]) -> Out {
    let mut c = Command::new(RACK);
    c.args(args)
        .current_dir(dir)
        .env("GIT_SSH_COMMAND", ssh_cmd)
        .env_remove("RACK_HOST");
    run_with_stdin(c, b"")
}

#[test]
fn client_commands_from_a_checkout() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let app = unique("cli");
    rack.ssh(a, &format!("apps:create {app}")).ok();
    let w = work(&rack, a, "checkout");
    add_fixture(&w, "procfile-web");
    w.git(&["remote", "add", "rack", &rack.git_url(&app)]).ok();
    w.git(&["push", "rack", "main"]).ok();
    let ssh = rack.git_ssh_command(a);
    let rack_cmd = |args: &[&str]| client(&w.dir, &ssh, args);

    rack_cmd(&["config:set", "GREETING=hi"]).ok();
    let out = rack_cmd(&["run", "--", "echo $GREETING"]);
    assert_eq!(out.ok().stdout, "hi\n", "{}", out.stderr);
    let out = rack_cmd(&["run", "--", "echo", "$GREETING"]);
    assert_eq!(out.ok().stdout, "hi\n", "{}", out.stderr);
    assert_eq!(rack_cmd(&["run", "--", "exit 7"]).code, 7);
    let out = rack_cmd(&["run", "--exec", "--", "printf", "%s|", "a b", "$X"]);
    assert_eq!(out.ok().stdout, "a b|$X|");
    let logs = rack_cmd(&["logs", "-n", "5"]);
    logs.ok();
    assert!(logs.stdout.lines().count() <= 5, "{}", logs.stdout);
    assert!(
        logs.stdout.lines().all(|l| l.starts_with("web.")),
        "{}",
        logs.stdout
    );

    // Values survive the trip byte for byte.
    let values = [
        ("SPACES", "a  b c "),
        ("QUOTES", r#"it's "quoted" \ back"#),
        ("DOLLAR", "$HOME $(id) `id`"),
        ("SEMI", "a; rm -rf /; echo b"),
        ("LINES", "line one\nline two\n\ttabbed"),
    ];
    let pairs: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec!["config:set", "--no-restart"];
    args.extend(pairs.iter().map(String::as_str));
    rack_cmd(&args).ok();
    let config = rack_cmd(&["config", "--json"]).ok().json();
    for (k, v) in values {
        assert_eq!(config[k].as_str(), Some(v), "{k}: {config}");
        let got = rack_cmd(&["config:get", k]);
        assert_eq!(got.ok().stdout, format!("{v}\n"), "{k}");
    }
    // The server's own failure and status come back as they are.
    let missing = rack_cmd(&["config:get", "NOPE"]);
    missing.err("NOPE is not set");
    assert_eq!(missing.code, 1);

    // -a OTHER: another app on the same rack.
    let other = unique("oth");
    rack_cmd(&["apps:create", &other]).ok();
    rack_cmd(&["-a", &other, "config:set", "ONLY=there", "--no-restart"]).ok();
    assert_eq!(
        rack_cmd(&["config:get", "ONLY", "-a", &other]).ok().stdout,
        "there\n"
    );
    rack_cmd(&["config:get", "ONLY"]).err("ONLY is not set");
    let apps = rack_cmd(&["apps", "--json"]).ok().json();
    assert_eq!(apps.as_array().unwrap().len(), 2, "{apps}");

    // Outside a checkout, without -a: one line saying what is needed.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = client(elsewhere.path(), &ssh, &["config"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: ") && out.stderr.contains("-a APP"),
        "{}",
        out.stderr
    );
    // ... and with -a and RACK_HOST it works from anywhere.
    let mut c = Command::new(RACK);
    c.args(["config:get", "GREETING", "-a", &app])
        .current_dir(elsewhere.path())
        .env("GIT_SSH_COMMAND", &ssh)
        .env("RACK_HOST", format!("127.0.0.1:{}", rack.port));
    assert_eq!(run_with_stdin(c, b"").ok().stdout, "hi\n");

    // rack help lists both kinds of commands.
    let help = rack_cmd(&["help"]).ok().stdout.clone();
    for want in [
        "server",
        "remote",
        "completions",
        "rack config:set KEY=VAL",
        "rack run",
    ] {
        assert!(help.contains(want), "{want}: {help}");
    }

    // Completion: commands, and the rack's app names after -a.
    let complete = |line: &str| -> Vec<String> {
        let script = format!(
            "source <({RACK} completions bash); COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; _rack; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let mut c = Command::new("bash");
        c.args(["-c", &script])
            .current_dir(&w.dir)
            .env("GIT_SSH_COMMAND", &ssh)
            .env("PATH", path_with_rack());
        run_with_stdin(c, b"")
            .ok()
            .stdout
            .lines()
            .map(str::to_string)
            .collect()
    };
    let got = complete("rack -a ");
    assert!(got.contains(&app) && got.contains(&other), "{got:?}");
    assert_eq!(complete("rack config:u"), vec!["unset".to_string()]);
    assert!(complete("rack rem").contains(&"remote".to_string()));
    // zsh: the script's logic, with compadd standing in for the widget's.
    let zsh = |words: &str| -> Vec<String> {
        let script = format!(
            "compdef() {{ :; }}; compadd() {{ if [[ $1 == -a ]]; then print -l -- ${{(P)2}}; else shift; print -l -- \"$@\"; fi }}; \
             source <({RACK} completions zsh); words=({words}); CURRENT=${{#words}}; _rack"
        );
        let mut c = Command::new("zsh");
        c.args(["-c", &script])
            .current_dir(&w.dir)
            .env("GIT_SSH_COMMAND", &ssh)
            .env("PATH", path_with_rack());
        let out = run_with_stdin(c, b"");
        out.ok().stdout.lines().map(str::to_string).collect()
    };
    let got = zsh("rack -a ''");
    assert!(got.contains(&app) && got.contains(&other), "{got:?}");
    assert!(zsh("rack ''").contains(&"config:set".to_string()));
}

/// PATH with this build's `rack` first.
fn path_with_rack() -> String {
    let dir = Path::new(RACK).parent().unwrap();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `rack run -- sh` under a real terminal (tmux): a shell, and its exit
/// status.
#[test]
fn client_run_with_a_terminal() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let app = unique("clt");
    rack.ssh(a, &format!("apps:create {app}")).ok();
    let w = work(&rack, a, "checkout");
    add_fixture(&w, "procfile-web");
    w.git(&["remote", "add", "rack", &rack.git_url(&app)]).ok();
    w.git(&["push", "rack", "main"]).ok();
    let session = format!("rack-client-tty-{}", std::process::id());
    let cmd = format!(
        "cd {} && GIT_SSH_COMMAND='{}' {RACK} run -- sh; echo client-exit-$?; sleep 60",
        w.dir.display(),
        rack.git_ssh_command(a)
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
            &cmd,
        ])
        .status()
        .expect("tmux is needed for the terminal test: scripts/test installs it");
    assert!(st.success());
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().unwrap();
    let wait_screen = |text: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = tmux(&["capture-pane", "-p", "-t", &session]);
            let s = String::from_utf8_lossy(&s.stdout).into_owned();
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
    tmux(&["send-keys", "-t", &session, "exit 3", "Enter"]);
    wait_screen("client-exit-3");
    let _ = tmux(&["kill-session", "-t", &session]);
}

/// `rack remote add` shows the fingerprint, pins the key where ssh looks,
/// adds the remote; a changed host key then makes ssh (and so the client)
/// refuse, with ssh's own warning.
#[test]
fn remote_add_pins_the_host_key() {
    let mut rack = Rack::start();
    let a = &rack.admin;
    rack.ssh(a, "apps:create pinned").ok();
    let dir = rack.dir.path().join("pinned");
    std::fs::create_dir_all(&dir).unwrap();
    let git = |args: &[&str]| -> Out {
        Command::new("git")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap()
            .into()
    };
    git(&["init", "-q", "-b", "main"]).ok();
    let kh = rack.dir.path().join("client_known_hosts");
    let ssh = format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
        a.path.display(),
        kh.display()
    );
    let host = format!("127.0.0.1:{}", rack.port);
    // Not pinned yet: ssh refuses.
    client(&dir, &ssh, &["apps", "-r", "x"]).err("no git remote named x");

    // Without --yes (and no terminal to ask on) nothing changes.
    let out = client(&dir, &ssh, &["remote", "add", &host]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert!(!kh.exists());
    assert_ne!(git(&["remote"]).stdout.trim(), "rack");
    client(
        &dir,
        &ssh,
        &["remote", "add", &host, "--fingerprint", "SHA256:nope"],
    );
    assert!(!kh.exists());

    // The fingerprint the rack's machine shows.
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!(
        "{RACK} host-key --data-dir {} | ssh-keygen -lf -",
        rack.data_dir().display()
    ));
    let fp = run_with_stdin(c, b"")
        .ok()
        .stdout
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(fp.starts_with("SHA256:"), "{fp}");
    let out = client(
        &dir,
        &ssh,
        &["remote", "add", &host, "pinned", "--fingerprint", &fp],
    );
    out.ok();
    assert!(
        out.stderr.contains(&fp),
        "the fingerprint is shown: {}",
        out.stderr
    );
    let pinned = std::fs::read_to_string(&kh).unwrap();
    assert!(
        pinned.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", rack.port)),
        "{pinned}"
    );
    assert_eq!(
        git(&["remote", "get-url", "rack"]).ok().stdout.trim(),
        format!("ssh://git@127.0.0.1:{}/pinned", rack.port)
    );
    assert!(client(&dir, &ssh, &["apps"]).ok().stdout.contains("pinned"));
    client(&dir, &ssh, &["remote", "add", &host, "pinned", "--yes"]).ok();
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), pinned, "pinned once");

    // The rack's host key changes: a new key file, a restart (on a new
    // port, so the pin and the remote follow the port, as they would if
    // the rack had kept its address).
    let old_port = rack.port;
    rack.stop();
    std::fs::remove_file(rack.data_dir().join("ssh_host_ed25519_key")).unwrap();
    rack.start_again();
    let moved = |s: &str| s.replace(&format!(":{old_port}"), &format!(":{}", rack.port));
    std::fs::write(&kh, moved(&pinned)).unwrap();
    let url = git(&["remote", "get-url", "rack"]).stdout;
    git(&["remote", "set-url", "rack", moved(url.trim()).as_str()]).ok();
    let host = format!("127.0.0.1:{}", rack.port);
    let out = client(&dir, &ssh, &["apps"]);
    assert_eq!(out.code, 255, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || out.stderr.contains("Host key verification failed"),
        "{}",
        out.stderr
    );
    let out = client(&dir, &ssh, &["remote", "add", &host, "pinned", "--yes"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("already has another key"),
        "{}",
        out.stderr
    );
}
