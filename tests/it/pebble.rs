//! The ACME test server: Debian's `pebble` and `pebble-challtestsrv`,
//! started per test (pebble's HTTP-01 port is fixed per process: it is the
//! port the test's rack serves HTTP on). `scripts/test` installs them.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Pebble {
    pebble: Child,
    dns: Child,
    pub dir: tempfile::TempDir,
    /// The ACME directory URL.
    pub directory: String,
    /// What pebble's own HTTPS is trusted by (the rack's `ca_bundle`).
    pub tls_root: PathBuf,
    /// The root pebble issues certificates under (curl's `--cacert`).
    pub issuing_root: PathBuf,
    dns_mgmt: u16,
    log: Arc<Mutex<String>>,
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require(bin: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{bin} is not installed: run scripts/test --setup-only (it installs Debian's pebble package)"
    );
}

fn wait_port(port: u16, what: &str, log: &Arc<Mutex<String>>) {
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "{what} did not listen on {port}; log:\n{}",
        log.lock().unwrap()
    );
}

fn capture(child: &mut Child, log: &Arc<Mutex<String>>) {
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
}

impl Pebble {
    /// Pebble validating HTTP-01 on `http_port`, resolving every name to
    /// 127.0.0.1 through its own challtestsrv.
    pub fn start(http_port: u16) -> Pebble {
        require("pebble");
        require("pebble-challtestsrv");
        let dir = tempfile::tempdir().unwrap();
        // Pebble's own HTTPS: a certificate for 127.0.0.1.
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let (acme, mgmt, dns, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": cert_path,
            "privateKey": key_path,
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut dns_child = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        capture(&mut dns_child, &log);
        let mut child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        capture(&mut child, &log);
        wait_port(dns_mgmt, "pebble-challtestsrv", &log);
        wait_port(acme, "pebble", &log);
        wait_port(mgmt, "pebble's management API", &log);
        let issuing_root = dir.path().join("root.pem");
        let out = Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(&cert_path)
            .arg(format!("https://127.0.0.1:{mgmt}/roots/0"))
            .output()
            .unwrap();
        assert!(out.status.success(), "pebble's /roots/0: {:?}", out);
        std::fs::write(&issuing_root, &out.stdout).unwrap();
        Pebble {
            pebble: child,
            dns: dns_child,
            directory: format!("https://127.0.0.1:{acme}/dir"),
            tls_root: cert_path,
            issuing_root,
            dir,
            dns_mgmt,
            log,
        }
    }

    /// `[acme]` for a rack using this pebble.
    pub fn rack_toml(&self) -> String {
        format!(
            "[acme]\ndirectory = \"{}\"\nca_bundle = \"{}\"\nemail = \"ops@rack.test\"\nretry_secs = 3600\n",
            self.directory,
            self.tls_root.display()
        )
    }

    /// Orders pebble received so far.
    pub fn orders(&self) -> usize {
        self.log.lock().unwrap().matches("POST /order-plz").count()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Resolves `host` to `ip` from now on (the default is 127.0.0.1).
    pub fn map(&self, host: &str, ip: &str) {
        let body = serde_json::json!({ "host": host, "addresses": [ip] }).to_string();
        let out = Command::new("curl")
            .args(["-sSf", "-X", "POST", "-d", &body])
            .arg(format!("http://127.0.0.1:{}/add-a", self.dns_mgmt))
            .output()
            .unwrap();
        assert!(out.status.success(), "challtestsrv /add-a: {out:?}");
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in [&mut self.pebble, &mut self.dns] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
