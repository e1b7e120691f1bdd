//! HTTPS end to end: certificates issued by a real ACME server (Debian's
//! pebble) through the router's HTTP-01 answers, served by SNI over
//! HTTP/1.1 and h2 to the real curl, renewed and replaced under keep-alive
//! load, kept across restarts; `certs:add` bundles checked and served;
//! redirects and HSTS per app.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::builds::{add_fixture, require_docker};
use crate::git::work;
use crate::harness::{Out, Rack};
use crate::http::{self, read_head};
use crate::pebble::{free_port, Pebble};

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 100000)
}

/// `curl` over HTTPS to `host` at the rack's HTTPS port, trusting `root`.
fn curl(rack: &Rack, root: &Path, host: &str, extra: &[&str], path: &str) -> Out {
    let port = rack.https_port;
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "30", "--cacert"])
        .arg(root)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"));
    crate::harness::run_with_stdin(c, b"")
}

fn tls_config(root: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_connect(port: u16, host: &str, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(30)))?;
    let name = ServerName::try_from(host.to_string()).unwrap();
    let conn =
        rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// The leaf certificate a new handshake for `host` gets.
fn served_leaf(port: u16, host: &str, config: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let s = tls_connect(port, host, config).expect("handshake");
    s.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

/// A keep-alive HTTPS/1.1 client.
struct KeepAlive {
    r: BufReader<Tls>,
    host: String,
}

impl KeepAlive {
    fn connect(port: u16, host: &str, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Self> {
        Ok(KeepAlive {
            r: BufReader::new(tls_connect(port, host, config)?),
            host: host.to_string(),
        })
    }

    fn get(&mut self, path: &str) -> std::io::Result<http::Response> {
        write!(
            self.r.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.host
        )?;
        self.r.get_mut().flush()?;
        let (status, len) = read_head(&mut self.r)?;
        let n = len.ok_or_else(|| std::io::Error::other("no Content-Length"))?;
        let mut body = vec![0; n];
        self.r.read_exact(&mut body)?;
        Ok(http::Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Polls `certs APP --json` until `host` has `status` (the ACME loop
/// works in the background); returns its entry.
fn wait_cert(rack: &Rack, app: &str, host: &str, status: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let certs = rack
            .ssh(&rack.admin, &format!("certs {app} --json"))
            .ok()
            .json();
        let entry = certs
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["host"] == host)
            .cloned()
            .unwrap_or_else(|| panic!("{host} not in certs: {certs}"));
        if entry["status"] == status {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "{host} never became {status}: {entry}\nrack log:\n{}",
            rack.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_rack(toml: &str, http_port: u16) -> Rack {
    Rack::start_with_args(
        toml,
        vec![
            "--http".into(),
            format!("127.0.0.1:{http_port}"),
            "--https".into(),
            "127.0.0.1:0".into(),
        ],
    )
}

/// Issuance through pebble's full ACME flow, h2, a failing domain that
/// leaves HTTP serving, redirect and HSTS, a restart that orders nothing,
/// and a forced renewal plus deploys under keep-alive HTTPS load with zero
/// failed requests.
#[test]
fn acme_issues_renews_and_serves_https_without_downtime() {
    require_docker();
    let http_port = free_port();
    let pebble = Pebble::start(http_port);
    let mut rack = start_rack(&pebble.rack_toml(), http_port);
    let a = rack.admin.clone();
    let app = unique("tls");
    rack.ssh(&a, &format!("apps:create {app}")).ok();
    let w = work(&rack, &a, &format!("w-{app}"));
    add_fixture(&w, "procfile-web");
    w.git(&["push", &rack.git_url(&app), "main"]).ok();
    let host = format!("{app}.rack.test");
    let broken = format!("{app}-broken.rack.test");
    // Pebble resolves the broken name where nothing listens.
    pebble.map(&broken, "127.0.0.2");
    rack.ssh(&a, &format!("domains:add {app} {host}")).ok();
    rack.ssh(&a, &format!("domains:add {app} {broken}")).ok();

    let issued = wait_cert(&rack, &app, &host, "issued");
    assert!(
        issued["issuer"].as_str().unwrap().contains("Pebble"),
        "{issued}"
    );
    assert!(!issued["not_after"].as_str().unwrap().is_empty());
    let root = pebble.issuing_root.clone();
    let page = curl(&rack, &root, &host, &[], "/");
    assert!(page.ok().stdout.starts_with("version 1"), "{}", page.stdout);
    let h2 = curl(
        &rack,
        &root,
        &host,
        &["--http2", "-o", "/dev/null", "-w", "%{http_version}"],
        "/",
    );
    assert_eq!(h2.ok().stdout, "2", "ALPN negotiates h2");
    let h1 = curl(
        &rack,
        &root,
        &host,
        &["--http1.1", "-o", "/dev/null", "-w", "%{http_version}"],
        "/",
    );
    assert_eq!(h1.ok().stdout, "1.1");

    // The unanswerable challenge: recorded, shown, HTTP still serves.
    let failed = wait_cert(&rack, &app, &broken, "failed");
    assert!(
        failed["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    let plain = http::get(rack.http_port, &broken, "/").unwrap();
    assert_eq!(plain.status, 200);
    assert!(plain.body.starts_with("version 1"));
    let events = rack.ssh(&a, &format!("events {app} --json")).ok().json();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == format!("certs:issue {broken}")
                && e["outcome"].as_str().unwrap().starts_with("failed")),
        "{events}"
    );
    let text = rack.ssh(&a, &format!("certs {app}")).ok().stdout.clone();
    assert!(text.contains(&broken) && text.contains("failed"), "{text}");

    // Redirect and HSTS take effect without a deploy.
    rack.ssh(
        &a,
        &format!("apps:set {app} https.redirect=true https.hsts=300"),
    )
    .ok();
    let r = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .args(["-H", &format!("Host: {host}")])
        .arg(format!("http://127.0.0.1:{}/a/b?c=d", rack.http_port))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        format!("308 https://{host}:{}/a/b?c=d", rack.https_port)
    );
    let challenge = http::get(rack.http_port, &host, "/.well-known/acme-challenge/nope").unwrap();
    assert_ne!(challenge.status, 308, "challenges are never redirected");
    let head = curl(&rack, &root, &host, &["-D", "-", "-o", "/dev/null"], "/");
    assert!(
        head.ok()
            .stdout
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=300"),
        "{}",
        head.stdout
    );
    rack.ssh(&a, &format!("apps:unset {app} https.redirect"))
        .ok();
    assert_eq!(http::get(rack.http_port, &host, "/").unwrap().status, 200);

    // Keep-alive HTTPS clients across a forced renewal and deploys.
    let config = tls_config(&root);
    let before = served_leaf(rack.https_port, &host, &config);
    let orders = pebble.orders();
    assert!(orders >= 1, "pebble log:\n{}", pebble.log());
    let port = rack.https_port;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut threads = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures, h, config) = (
            stop.clone(),
            ok.clone(),
            failures.clone(),
            host.clone(),
            config.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut conn = KeepAlive::connect(port, &h, &config).unwrap();
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
                        conn = KeepAlive::connect(port, &h, &config).unwrap();
                    }
                }
            }
        }));
    }
    rack.ssh(&a, &format!("certs:renew {app} {host}")).ok();
    let deadline = Instant::now() + Duration::from_secs(180);
    while served_leaf(port, &host, &config) == before {
        assert!(
            Instant::now() < deadline,
            "renewal never served; log:\n{}",
            rack.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pebble.orders() > orders, "the renewal is a new order");
    std::fs::write(w.dir.join("VERSION"), "2\n").unwrap();
    w.git(&["commit", "-qam", "v2"]).ok();
    let pushed = w.git(&["push", &rack.git_url(&app), "main"]);
    assert_eq!(
        pushed.code,
        0,
        "{}\nrack log:\n{}",
        pushed.stderr,
        rack.logs()
    );
    rack.ssh(&a, &format!("config:set {app} GREETING=hi")).ok();
    rack.ssh(&a, &format!("ps:scale {app} web=2")).ok();
    rack.ssh(&a, &format!("releases:rollback {app}")).ok();
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
    assert!(ok.load(Ordering::SeqCst) > 50);

    // A restart keeps the certificate: the same leaf, no new order.
    let renewed = served_leaf(rack.https_port, &host, &config);
    let orders = pebble.orders();
    rack.restart();
    assert_eq!(served_leaf(rack.https_port, &host, &config), renewed);
    let page = curl(&rack, &root, &host, &[], "/");
    assert!(page.ok().stdout.starts_with("version"), "{}", page.stdout);
    assert_eq!(wait_cert(&rack, &app, &host, "issued")["status"], "issued");
    assert_eq!(pebble.orders(), orders, "no new order after a restart");
}

// ------------------------------------------------------------ certs:add

pub(crate) struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub(crate) fn new(name: &str) -> TestCa {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().unwrap())
                .unwrap(),
        }
    }

    /// A leaf for `names`, valid `days` around now (negative: expired).
    pub(crate) fn leaf(&self, names: &[&str], expired: bool) -> (String, rcgen::KeyPair) {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = time::OffsetDateTime::now_utc();
        if expired {
            p.not_before = now - time::Duration::days(90);
            p.not_after = now - time::Duration::days(1);
        } else {
            p.not_before = now - time::Duration::hours(1);
            p.not_after = now + time::Duration::days(90);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key)
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

/// `certs:add` refuses a mismatched key, a broken chain, an expired
/// certificate and a name it does not cover, changing nothing; a good
/// bundle is served at once; `certs:remove` stops serving it.
#[test]
fn certs_add_refuses_bad_bundles_and_serves_a_good_one() {
    let mut rack = Rack::start_with_args(
        "[acme]\nenabled = false\n",
        vec!["--https".into(), "127.0.0.1:0".into()],
    );
    let a = rack.admin.clone();
    let app = unique("add");
    let host = format!("{app}.example.com");
    rack.ssh(&a, &format!("apps:create {app}")).ok();
    rack.ssh(&a, &format!("domains:add {app} {host}")).ok();
    let ca = TestCa::new("Rack Test CA");
    let other = TestCa::new("Unrelated CA");
    let (cert, key) = ca.leaf(&[&host], false);
    let (old, old_key) = ca.leaf(&[&host], true);
    let (elsewhere, elsewhere_key) = ca.leaf(&["other.example.com"], false);
    let stranger = rcgen::KeyPair::generate().unwrap();
    let root_path = rack.dir.path().join("ca.pem");
    std::fs::write(&root_path, ca.pem()).unwrap();
    let before = rack.ssh(&a, &format!("certs {app} --json")).ok().json();
    assert_eq!(before[0]["status"], "none", "{before}");
    let cases = [
        (
            format!("{cert}{}", stranger.serialize_pem()),
            "does not match",
        ),
        (
            format!("{cert}{}{}", other.pem(), key.serialize_pem()),
            "broken chain",
        ),
        (format!("{old}{}", old_key.serialize_pem()), "expired"),
        (
            format!("{elsewhere}{}", elsewhere_key.serialize_pem()),
            &*format!("does not cover {host}"),
        ),
        ("not pem at all".to_string(), "no certificate"),
    ];
    for (pem, why) in &cases {
        rack.ssh_in(&a, &format!("certs:add {app} {host}"), pem.as_bytes())
            .err(why);
        assert_eq!(
            rack.ssh(&a, &format!("certs {app} --json")).ok().json(),
            before
        );
        let tls = curl(&rack, &root_path, &host, &[], "/");
        assert!(
            tls.code != 0,
            "no certificate is served yet: {}",
            tls.stdout
        );
    }
    // Another app's host is not this app's to certify.
    rack.ssh(&a, "apps:create intruder").ok();
    rack.ssh_in(
        &a,
        &format!("certs:add intruder {host}"),
        format!("{cert}{}", key.serialize_pem()).as_bytes(),
    )
    .err("not a host of intruder");

    let good = format!("{cert}{}{}", ca.pem(), key.serialize_pem());
    rack.ssh_in(&a, &format!("certs:add {app} {host}"), good.as_bytes())
        .ok();
    let listed = rack.ssh(&a, &format!("certs {app} --json")).ok().json();
    assert_eq!(listed[0]["status"], "issued");
    assert!(listed[0]["issuer"]
        .as_str()
        .unwrap()
        .contains("Rack Test CA"));
    // Served at once (503: the app has no process), and after a restart.
    let served = curl(
        &rack,
        &root_path,
        &host,
        &["-o", "/dev/null", "-w", "%{http_code}"],
        "/",
    );
    assert_eq!(served.ok().stdout, "503");
    // (An app that never deployed is not routed after a restart: 404,
    // over the same verified TLS.)
    rack.restart();
    let served = curl(
        &rack,
        &root_path,
        &host,
        &["-o", "/dev/null", "-w", "%{http_code}"],
        "/",
    );
    assert_eq!(served.ok().stdout, "404");
    // The key is sealed at rest: not in the database file as PEM.
    let db = std::fs::read(rack.data_dir().join("state.db")).unwrap();
    let needle = key.serialize_pem();
    let needle = needle.lines().nth(1).unwrap().as_bytes();
    assert!(
        !db.windows(needle.len()).any(|w| w == needle),
        "private key in plaintext"
    );

    rack.ssh(&a, &format!("certs:renew {app} {host}"))
        .err("does not issue");
    rack.ssh(&a, &format!("certs:remove {app} {host}")).ok();
    assert!(curl(&rack, &root_path, &host, &[], "/").code != 0);
    rack.ssh(&a, &format!("certs:remove {app} {host}"))
        .err("no certificate");
}
