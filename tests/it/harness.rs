//! Starts the real `rack` binary on port 0 with a fresh data dir and drives
//! it with the real OpenSSH client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const RACK: &str = env!("CARGO_BIN_EXE_rack");

#[derive(Clone)]
pub struct Key {
    pub name: String,
    pub path: PathBuf,
}

impl Key {
    pub fn public(&self) -> String {
        std::fs::read_to_string(self.path.with_extension("pub")).unwrap()
    }
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success; stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    /// Asserts a clean command failure: non-zero, one `error:` line.
    #[track_caller]
    pub fn err(&self, contains: &str) -> &Self {
        assert!(
            self.code != 0 && self.code != 255,
            "expected a command failure, got {}; stdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.starts_with("error: ") && self.stderr.contains(contains),
            "stderr {:?} should be an error line containing {contains:?}",
            self.stderr
        );
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub struct Rack {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    pub http_port: u16,
    /// The router's HTTPS port when `--https` is among `server_args`.
    pub https_port: u16,
    logs: Arc<Mutex<String>>,
    pub admin: Key,
    /// The Docker namespace this rack owns (cleaned up on drop).
    pub ns: String,
    /// Extra environment of the server process (the aws provider's).
    pub env: Vec<(String, String)>,
    /// Extra arguments of `rack server` (kept across restarts until
    /// changed), such as the hidden `--test-pause-at`.
    pub server_args: Vec<String>,
    /// Processes that replaced the server (`rack update`): killed with it.
    pub successors: Vec<i32>,
}

pub fn keygen(dir: &Path, name: &str) -> Key {
    let path = dir.join(format!("key-{name}"));
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen (OpenSSH client) must be installed");
    assert!(st.success());
    Key {
        name: name.into(),
        path,
    }
}

impl Rack {
    /// A rack with one admin key, optionally with a `rack.toml`.
    pub fn start_with(toml: &str) -> Rack {
        Rack::start_with_env(toml, Vec::new())
    }

    /// Same, with extra environment for the server process (kept across
    /// restarts until `env` is changed).
    pub fn start_with_env(toml: &str, env: Vec<(String, String)>) -> Rack {
        Rack::start_with_env_args(toml, env, Vec::new())
    }

    /// Same, with extra arguments for `rack server`.
    pub fn start_with_args(toml: &str, args: Vec<String>) -> Rack {
        Rack::start_with_env_args(toml, Vec::new(), args)
    }

    fn start_with_env_args(toml: &str, env: Vec<(String, String)>, args: Vec<String>) -> Rack {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // Tests run many racks on one Docker engine at once: each owns
        // its own namespace, as two production racks on one engine would.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let ns = format!(
            "t{}-{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        std::fs::write(
            data.join("rack.toml"),
            format!("namespace = \"{ns}\"\n{toml}"),
        )
        .unwrap();
        let ns_kept = ns.clone();
        let admin = keygen(dir.path(), "admin");
        let out = rack_cli(
            &data,
            &["keys", "add", "admin", "--admin"],
            admin.public().as_bytes(),
        );
        out.ok();
        let mut rack = Rack {
            dir,
            child: None,
            port: 0,
            http_port: 0,
            https_port: 0,
            logs: Arc::new(Mutex::new(String::new())),
            admin,
            ns: ns_kept,
            env,
            server_args: args,
            successors: Vec::new(),
        };
        rack.spawn();
        rack
    }

    /// A data dir with its admin key, server not started (for set-up that
    /// must happen first, such as `rack install aws`).
    pub fn unstarted(toml: &str, env: Vec<(String, String)>) -> Rack {
        let mut r = Rack::start_with(toml);
        r.kill9();
        r.env = env;
        r
    }

    /// A server on a data dir made elsewhere (`DIR/data`, e.g. by `rack
    /// restore`), in Docker namespace `ns`, administered with `admin`.
    pub fn adopt(dir: tempfile::TempDir, admin: Key, ns: String) -> Rack {
        let mut rack = Rack {
            dir,
            child: None,
            port: 0,
            http_port: 0,
            https_port: 0,
            logs: Arc::new(Mutex::new(String::new())),
            admin,
            ns,
            env: Vec::new(),
            server_args: Vec::new(),
            successors: Vec::new(),
        };
        rack.spawn();
        rack
    }

    pub fn start() -> Rack {
        Rack::start_with("")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let has = |flag: &str| self.server_args.iter().any(|a| a == flag);
        // A test that needs a fixed HTTP port (ACME's HTTP-01) gives its own.
        let http: &[&str] = if has("--http") {
            &[]
        } else {
            &["--http", "127.0.0.1:0"]
        };
        let listeners = if has("--https") { 3 } else { 2 };
        let mut child = Command::new(RACK)
            .args(["server", "--log-format", "json", "--listen", "127.0.0.1:0"])
            .args(http)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.server_args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = self.logs.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let f = &v["fields"];
                    if let (Some("ssh listening"), Some(addr)) =
                        (f["message"].as_str(), f["addr"].as_str())
                    {
                        let _ = tx.send(("ssh", addr.to_string()));
                    }
                    if let (Some("http listening"), Some(addr)) =
                        (f["message"].as_str(), f["addr"].as_str())
                    {
                        let _ = tx.send(("http", addr.to_string()));
                    }
                    if let (Some("https listening"), Some(addr)) =
                        (f["message"].as_str(), f["addr"].as_str())
                    {
                        let _ = tx.send(("https", addr.to_string()));
                    }
                }
                let mut l = logs.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        for _ in 0..listeners {
            let (kind, addr) = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("rack server did not start; logs:\n{}", self.logs()));
            let port = addr.rsplit(':').next().unwrap().parse().unwrap();
            match kind {
                "ssh" => self.port = port,
                "https" => self.https_port = port,
                _ => self.http_port = port,
            }
        }
        self.child = Some(child);
        // Pin the host key as a user would: from `rack host-key`.
        // With the server's environment: on aws the host key is in the
        // bucket.
        let mut c = Command::new(RACK);
        c.args(["host-key", "--data-dir"])
            .arg(self.data_dir())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let line = run_with_stdin(c, b"").ok().stdout.clone();
        let key = line
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::write(
            self.known_hosts(),
            format!("[127.0.0.1]:{} {key}\n", self.port),
        )
        .unwrap();
    }

    /// `rack update --binary BINARY` on the rack's machine; on success the
    /// new process is remembered (and killed when the rack is dropped).
    pub fn update(&mut self, binary: &Path) -> Out {
        let mut c = Command::new(RACK);
        c.args(["update", "--binary"])
            .arg(binary)
            .arg("--data-dir")
            .arg(self.data_dir());
        let out = run_with_stdin(c, b"");
        if out.code == 0 {
            let pid = out
                .stdout
                .split("(pid ")
                .nth(1)
                .and_then(|s| s.split(')').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no pid in {:?}", out.stdout));
            self.successors.push(pid);
        }
        out
    }

    /// Whether the first server process (the one this harness started)
    /// has exited, e.g. after handing over.
    pub fn first_process_exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_some(),
            None => true,
        }
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// SIGTERM, wait for a clean exit, start again on the same data dir.
    pub fn restart(&mut self) {
        let code = self.stop();
        assert_eq!(
            code,
            Some(0),
            "rack should exit 0 on SIGTERM; logs:\n{}",
            self.logs()
        );
        self.spawn();
    }

    /// kill -9, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same data dir (after `kill9` or `stop`).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        child.wait().unwrap().code()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// The server process's id (panics when it is not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("rack server running").id()
    }

    /// Whether the server process is still running (not exited, not killed).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Waits until the server's log has a line containing `needle`.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while !self.logs().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} in the server log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ssh_args(&self, key: &Key) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            key.path.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts().display()),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ]
    }

    /// `ssh ... git@127.0.0.1 CMD` (CMD goes to the server as one string).
    pub fn ssh(&self, key: &Key, cmd: &str) -> Out {
        self.ssh_in(key, cmd, b"")
    }

    pub fn ssh_in(&self, key: &Key, cmd: &str, stdin: &[u8]) -> Out {
        self.ssh_opts(key, &[], cmd, stdin)
    }

    pub fn ssh_opts(&self, key: &Key, extra: &[&str], cmd: &str, stdin: &[u8]) -> Out {
        let mut c = Command::new("ssh");
        c.args(self.ssh_args(key)).args(extra).arg("git@127.0.0.1");
        if !cmd.is_empty() {
            c.arg(cmd);
        }
        run_with_stdin(c, stdin)
    }

    /// A new key registered over SSH by the admin with `scope` (`--admin`
    /// or `--app A`).
    pub fn add_key(&self, name: &str, scope: &str) -> Key {
        let key = keygen(self.dir.path(), name);
        self.ssh_in(
            &self.admin,
            &format!("keys:add {name} {scope}"),
            key.public().as_bytes(),
        )
        .ok();
        key
    }

    /// Environment for `git` to reach this rack with `key`.
    pub fn git_ssh_command(&self, key: &Key) -> String {
        format!("ssh {}", self.ssh_args(key).join(" "))
    }

    pub fn git_url(&self, app: &str) -> String {
        format!("ssh://git@127.0.0.1:{}/{app}", self.port)
    }
}

impl Drop for Rack {
    fn drop(&mut self) {
        for pid in self.successors.drain(..) {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A killed rack leaves its host firewall rules: remove them.
        remove_firewall_rules(&self.ns);
        // Leave the engine as we found it: this rack's containers,
        // volumes and networks go (images stay: they are the build cache).
        // And what its resources left (containers, networks, volumes).
        remove_resources(&self.ns);
        let ids = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=rack.ns={}", self.ns),
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
        if let Ok(o) = Command::new("docker")
            .args([
                "volume",
                "ls",
                "-q",
                "--filter",
                &format!("label=rack.ns={}", self.ns),
            ])
            .output()
        {
            let vols: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !vols.is_empty() {
                let _ = Command::new("docker")
                    .args(["volume", "rm", "-f"])
                    .args(&vols)
                    .output();
            }
        }
        if let Ok(o) = Command::new("docker")
            .args(["network", "ls", "--format", "{{.Name}}"])
            .output()
        {
            let prefix = format!("{}-", self.ns);
            let nets: Vec<String> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|n| n.starts_with(&prefix))
                .map(str::to_string)
                .collect();
            if !nets.is_empty() {
                let _ = Command::new("docker")
                    .args(["network", "rm"])
                    .args(&nets)
                    .output();
            }
        }
    }
}

/// The `iptables -S` rules (of INPUT and DOCKER-USER) tagged `rack:NS`.
pub fn firewall_rules(ns: &str) -> Vec<String> {
    let tag = format!("rack:{ns}");
    let mut rules = Vec::new();
    for chain in ["INPUT", "DOCKER-USER"] {
        let Ok(o) = Command::new("iptables").args(["-w", "-S", chain]).output() else {
            continue;
        };
        rules.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .map(|w| w.trim_matches('"'))
                        .any(|w| w == tag)
                })
                .map(str::to_string),
        );
    }
    rules
}

fn remove_firewall_rules(ns: &str) {
    for rule in firewall_rules(ns) {
        let words: Vec<&str> = rule
            .split_whitespace()
            .map(|w| w.trim_matches('"'))
            .collect();
        if words.first() == Some(&"-A") {
            let _ = Command::new("iptables")
                .args(["-w", "-D"])
                .args(&words[1..])
                .output();
        }
    }
    let chain = format!("RACK-IN-{:06x}", fnv(ns) & 0xff_ffff);
    let _ = Command::new("iptables").args(["-w", "-F", &chain]).output();
    let _ = Command::new("iptables").args(["-w", "-X", &chain]).output();
}

/// The firewall's hash (`src/firewall.rs`).
fn fnv(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

pub fn run_with_stdin(mut c: Command, stdin: &[u8]) -> Out {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut si = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let w = std::thread::spawn(move || {
        let _ = si.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = w.join();
    out.into()
}

/// The offline CLI: `rack ARGS --data-dir DIR`.
pub fn rack_cli(data: &Path, args: &[&str], stdin: &[u8]) -> Out {
    let mut c = Command::new(RACK);
    c.args(args).arg("--data-dir").arg(data);
    run_with_stdin(c, stdin)
}

/// Removes what resources of namespace `ns` left on the engine.
fn remove_resources(ns: &str) {
    let label = format!("label=rack.resource-ns={ns}");
    for (list, rm) in [
        (vec!["ps", "-aq", "--filter", &label], vec!["rm", "-f"]),
        (
            vec!["network", "ls", "-q", "--filter", &label],
            vec!["network", "rm"],
        ),
        (
            vec!["volume", "ls", "-q", "--filter", &label],
            vec!["volume", "rm", "-f"],
        ),
    ] {
        let Ok(o) = Command::new("docker").args(&list).output() else {
            continue;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker").args(&rm).args(&ids).output();
        }
    }
}
