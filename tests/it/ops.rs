//! Operating the rack: schema versions, `rack update`, backup and restore,
//! metrics.

use std::process::Command;

use crate::harness::{rack_cli, Rack, RACK};

fn sqlite(db: &std::path::Path, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().expect(
        "sqlite3 (Debian package sqlite3) must be installed: bash scripts/test --setup-only",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Everything in the database, as text: what "nothing changed" compares.
fn dump(db: &std::path::Path) -> String {
    format!(
        "{}\n{}",
        sqlite(db, "PRAGMA user_version"),
        sqlite(db, ".dump")
    )
}

#[test]
fn a_database_migrated_by_a_newer_rack_refuses_this_binary() {
    let mut rack = Rack::start();
    rack.ssh(&rack.admin, "apps:create keepme").ok();
    assert_eq!(rack.stop(), Some(0));
    let db = rack.data_dir().join("state.db");
    let ours: i64 = sqlite(&db, "PRAGMA user_version").parse().unwrap();
    // What a newer rack would have done: one more migration.
    sqlite(
        &db,
        &format!(
            "CREATE TABLE from_the_future (x TEXT); PRAGMA user_version = {};",
            ours + 1
        ),
    );
    let before = dump(&db);
    let bytes = std::fs::read(&db).unwrap();
    let out = crate::harness::run_with_stdin(
        {
            // `timeout`: without the refusal the server would start and
            // serve; the test must then fail, not hang.
            let mut c = Command::new("timeout");
            c.args([
                "60",
                RACK,
                "server",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(rack.data_dir());
            c
        },
        b"",
    );
    assert_ne!(out.code, 0, "the server must refuse: {}", out.stderr);
    let expect = format!(
        "schema version {}, newer than this rack binary knows (version {ours})",
        ours + 1
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains(&expect)),
        "{}",
        out.stderr
    );
    // The offline commands refuse it the same way.
    rack_cli(&rack.data_dir(), &["keys", "list"], b"").err(&expect);
    assert_eq!(dump(&db), before, "the database must not change");
    assert_eq!(std::fs::read(&db).unwrap(), bytes);
}

/// An executable script in the rack's temp dir.
fn script(rack: &Rack, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = rack.dir.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn version_over_ssh(rack: &Rack) -> String {
    let out = rack.ssh(&rack.admin, "version");
    out.ok();
    out.stdout.trim().to_string()
}

#[test]
fn update_hands_over_with_no_failed_request_and_sessions_finish() {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use crate::http;
    use crate::releases::{deploy_fixture, host, page, push_until, unique};

    crate::builds::require_docker();
    let mut rack = Rack::start();
    let app = unique("upd");
    let w = deploy_fixture(&rack, &app);
    let old_version = version_over_ssh(&rack);

    // A new binary that cannot start: the old process goes on, the
    // command fails with the reason.
    let broken = script(
        &rack,
        "broken-rack",
        "echo 'error: this build cannot start (test)' >&2\nexit 3",
    );
    let out = rack.update(&broken);
    out.err("exited (exit status: 3) before it was ready: error: this build cannot start (test)");
    assert_eq!(version_over_ssh(&rack), old_version);
    assert!(page(&rack, &app, "/").starts_with("version "));
    assert!(!rack.first_process_exited());

    // Keep-alive clients through the router for the whole update.
    let port = rack.http_port;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures, h) = (stop.clone(), ok.clone(), failures.clone(), host(&app));
        clients.push(std::thread::spawn(move || {
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

    // A long `logs -f` on the old process.
    let mut logs = Command::new("ssh")
        .args(rack.ssh_args(&rack.admin))
        .arg("git@127.0.0.1")
        .arg(format!("logs {app} -f"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs_out = logs.stdout.take().unwrap();
    let mut first = [0u8; 1];
    logs_out.read_exact(&mut first).unwrap(); // it is following

    // A push in progress: its build takes a few seconds.
    std::fs::write(w.dir.join("VERSION"), "2\n").unwrap();
    let dockerfile = std::fs::read_to_string(w.dir.join("Dockerfile")).unwrap();
    std::fs::write(
        w.dir.join("Dockerfile"),
        format!("{dockerfile}RUN sleep 4 # {}\n", unique("n")),
    )
    .unwrap();
    w.git(&["commit", "-qam", "v2, slow build"]).ok();
    let mut push = push_until(&rack, &w, &app, "RUN sleep 4");

    let new = script(
        &rack,
        "new-rack",
        &format!(
            "RACK_TEST_VERSION_SUFFIX=+new exec {} \"$@\"",
            crate::harness::RACK
        ),
    );
    let out = rack.update(&new);
    out.ok();
    assert!(
        push.try_wait().unwrap().is_none(),
        "the push should still be running when the update is done"
    );
    let new_version = format!("{old_version}+new");
    assert!(out.stdout.contains(&new_version), "{}", out.stdout);

    // The push that was in progress completes (on the old process).
    let pushed = push.wait_with_output().unwrap();
    let push_err = String::from_utf8_lossy(&pushed.stderr);
    assert!(pushed.status.success(), "the push failed:\n{push_err}");
    // `logs -f` ended normally, saying why.
    let logs_status = logs.wait().unwrap();
    let mut logs_err = String::new();
    logs.stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs_err)
        .unwrap();
    assert_eq!(logs_status.code(), Some(0), "logs -f: {logs_err}");
    assert!(logs_err.contains("run logs -f again"), "{logs_err}");

    // The new binary answers SSH, and the old process exits once its
    // sessions are over and the new one serves HTTP.
    assert_eq!(version_over_ssh(&rack), new_version);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !rack.first_process_exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old process did not exit:\n{}",
            rack.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(page(&rack, &app, "/").starts_with("version 2 "));
    // Requests go on against the new process alone for a while.
    let served = ok.load(Ordering::SeqCst);
    while ok.load(Ordering::SeqCst) < served + 200 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );

    // The new process deploys.
    std::fs::write(w.dir.join("VERSION"), "3\n").unwrap();
    w.git(&["commit", "-qam", "v3"]).ok();
    w.git(&["push", &rack.git_url(&app), "main"]).ok();
    assert!(page(&rack, &app, "/").starts_with("version 3 "));
}

/// The address the server logged for `what` ("metrics listening").
fn logged_addr(rack: &Rack, what: &str) -> String {
    rack.wait_for_log(what, std::time::Duration::from_secs(60));
    rack.logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == what)
        .and_then(|v| v["fields"]["addr"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no address in the {what:?} log line"))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One instant-query value from Prometheus' HTTP API (None: no series).
fn prom_query(port: u16, query: &str) -> Option<f64> {
    let r = crate::http::get(
        port,
        "127.0.0.1",
        &format!("/api/v1/query?query={}", percent_encode(query)),
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn prometheus_scrapes_the_metrics_endpoint() {
    use crate::releases::{deploy_fixture, host, unique};
    crate::builds::require_docker();
    let rack = Rack::start_with_args("", vec!["--metrics".into(), "127.0.0.1:0".into()]);
    let addr = logged_addr(&rack, "metrics listening");
    let metrics_port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let app = unique("met");
    deploy_fixture(&rack, &app);
    for _ in 0..5 {
        let r = crate::http::get(rack.http_port, &host(&app), "/").unwrap();
        assert_eq!(r.status, 200);
    }
    let r = crate::http::get(rack.http_port, &host(&app), "/no-such-page").unwrap();
    assert_eq!(r.status, 404);
    // A host no app serves counts under one label, never its own.
    let r = crate::http::get(rack.http_port, "nobody-serves-this.example", "/").unwrap();
    assert_eq!(r.status, 404);

    let text = crate::http::get(metrics_port, "127.0.0.1", "/metrics").unwrap();
    assert_eq!(text.status, 200);
    assert!(!text.body.contains("nobody-serves-this"), "{}", text.body);
    // promtool accepts the exposition.
    let mut c = Command::new("promtool");
    c.args(["check", "metrics"]);
    let out = crate::harness::run_with_stdin(c, text.body.as_bytes());
    assert_eq!(
        out.code, 0,
        "promtool check metrics:\n{}{}\n{}",
        out.stdout, out.stderr, text.body
    );

    // A real Prometheus scrapes it.
    let dir = rack.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: rack\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus) must be installed: bash scripts/test --setup-only");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _prom = Kill(prom);
    let queries = [
        ("up{job=\"rack\"}".to_string(), 1.0),
        (
            format!("rack_router_requests_total{{app=\"{app}\",method=\"GET\",status=\"2xx\"}}"),
            5.0,
        ),
        (
            format!("rack_router_requests_total{{app=\"{app}\",method=\"GET\",status=\"4xx\"}}"),
            1.0,
        ),
        (
            "rack_router_requests_total{app=\"(unknown)\",method=\"GET\",status=\"4xx\"}"
                .to_string(),
            1.0,
        ),
        (
            format!("rack_deploys_total{{app=\"{app}\",outcome=\"succeeded\"}}"),
            1.0,
        ),
        (
            "rack_deploy_stage_duration_seconds_count{stage=\"build\"}".to_string(),
            1.0,
        ),
        (
            "rack_deploy_stage_duration_seconds_count{stage=\"rollout\"}".to_string(),
            1.0,
        ),
        (
            "rack_deploy_stage_duration_seconds_count{stage=\"receive\"}".to_string(),
            1.0,
        ),
        (
            format!("rack_router_request_duration_seconds_count{{app=\"{app}\"}}"),
            6.0,
        ),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    for (q, want) in &queries {
        loop {
            let got = prom_query(prom_port, q);
            if got.is_some_and(|g| g >= *want) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{q}: {got:?}, expected at least {want}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// A tar with one hostile entry after a valid manifest.
fn hostile_tar(kind: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let manifest = br#"{"format":1,"rack_version":"rack 0","schema_version":1,"created_at":"x","master_key_included":true}"#;
    let mut h = tar::Header::new_gnu();
    h.set_size(manifest.len() as u64);
    h.set_mode(0o600);
    h.set_cksum();
    b.append_data(&mut h, "rack-backup.json", &manifest[..])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o600);
    match kind {
        "dotdot" | "absolute" => {
            let name: &[u8] = if kind == "dotdot" {
                b"../escaped"
            } else {
                b"/tmp/escaped"
            };
            // Written raw: the tar crate refuses to write such names itself.
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
            h.set_size(2);
            h.set_cksum();
            b.append(&h, &b"hi"[..]).unwrap();
        }
        "symlink" => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "repos", "/etc").unwrap();
        }
        _ => unreachable!(),
    }
    b.into_inner().unwrap()
}

#[test]
fn backup_while_pushing_then_restore_serves_everything_again() {
    use crate::git::work;
    use crate::releases::{deploy_fixture, page, push_until, unique};
    crate::builds::require_docker();
    let mut rack = Rack::start();
    let a = rack.admin.clone();
    let app = unique("bak");
    let w = deploy_fixture(&rack, &app);
    rack.ssh(&a, &format!("config:set {app} SECRET=s3cret --no-restart"))
        .ok();
    rack.ssh(&a, &format!("domains:add {app} {app}.example.org"))
        .ok();
    rack.add_key("ci", &format!("--app {app}"));
    // A certificate for the domain (its key sealed in the store).
    let ca = crate::https::TestCa::new("Backup Test CA");
    let (cert, cert_key) = ca.leaf(&[&format!("{app}.example.org")], false);
    rack.ssh_in(
        &a,
        &format!("certs:add {app} {app}.example.org"),
        format!("{cert}{}", cert_key.serialize_pem()).as_bytes(),
    )
    .ok();
    let certs_before = rack.ssh(&a, &format!("certs {app} --json")).ok().json();

    // A push in progress while the backup is taken.
    std::fs::write(w.dir.join("VERSION"), "2\n").unwrap();
    let dockerfile = std::fs::read_to_string(w.dir.join("Dockerfile")).unwrap();
    std::fs::write(
        w.dir.join("Dockerfile"),
        format!("{dockerfile}RUN sleep 3 # {}\n", unique("n")),
    )
    .unwrap();
    w.git(&["commit", "-qam", "v2"]).ok();
    let push = push_until(&rack, &w, &app, "RUN sleep 3");
    let file = rack.dir.path().join("backup.tar");
    rack_cli(
        &rack.data_dir(),
        &["backup", "--output", file.to_str().unwrap()],
        b"",
    )
    .ok();
    assert!(push.wait_with_output().unwrap().status.success());
    // The backup is a tar without the master key.
    let names = Command::new("tar").arg("tf").arg(&file).output().unwrap();
    let names = String::from_utf8_lossy(&names.stdout);
    assert!(names.starts_with("rack-backup.json\n"), "{names}");
    assert!(
        names.contains("state.db\n") && names.contains("ssh_host_ed25519_key\n"),
        "{names}"
    );
    assert!(names.contains(&format!("repos/{app}.git/")), "{names}");
    assert!(!names.contains("master.key"), "{names}");

    let restored = tempfile::tempdir().unwrap();
    let target = restored.path().join("data");
    let restore = |extra: &[&str], input: &std::path::Path| {
        let mut args = vec!["restore", "--input", input.to_str().unwrap()];
        args.extend_from_slice(extra);
        rack_cli(&target, &args, b"")
    };
    // Without the master key, or with a wrong one, or hostile: refused,
    // and nothing is left in the target.
    restore(&[], &file).err("does not include the master key: pass --master-key FILE");
    assert!(!target.exists());
    let wrong = rack.dir.path().join("wrong.key");
    std::fs::write(&wrong, [7u8; 32]).unwrap();
    restore(&["--master-key", wrong.to_str().unwrap()], &file).err("does not open the config");
    assert!(!target.exists());
    for kind in ["dotdot", "absolute", "symlink"] {
        let bad = rack.dir.path().join(format!("{kind}.tar"));
        std::fs::write(&bad, hostile_tar(kind)).unwrap();
        restore(&[], &bad).err("refused entry");
        assert!(!target.exists(), "{kind}");
        assert!(!restored.path().join("escaped").exists());
    }
    let key = rack.data_dir().join("master.key");
    let out = restore(&["--master-key", key.to_str().unwrap()], &file);
    out.ok();
    assert!(out.stdout.contains("Restored 1 app(s)"), "{}", out.stdout);
    // With --include-master-key the backup restores by itself.
    let with_key = rack.dir.path().join("with-key.tar");
    rack_cli(
        &rack.data_dir(),
        &[
            "backup",
            "--include-master-key",
            "--output",
            with_key.to_str().unwrap(),
        ],
        b"",
    )
    .ok();
    let other = tempfile::tempdir().unwrap();
    let mut c = Command::new(RACK);
    c.args([
        "restore",
        "--input",
        with_key.to_str().unwrap(),
        "--data-dir",
    ])
    .arg(other.path().join("data"));
    crate::harness::run_with_stdin(c, b"").ok();
    assert_eq!(
        std::fs::read(other.path().join("data/master.key")).unwrap(),
        std::fs::read(&key).unwrap()
    );
    // Not into a dir that has something in it.
    restore(&["--master-key", key.to_str().unwrap()], &file).err("is not empty");

    // The old rack goes away with its containers (a new machine with the
    // same engine's images); the restored one serves again.
    assert_eq!(rack.stop(), Some(0));
    let ids = crate::builds::docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=rack.ns={}", rack.ns),
    ]);
    for id in ids.stdout.split_whitespace() {
        crate::builds::docker(&["rm", "-f", id]);
    }
    let rack2 = Rack::adopt(restored, a.clone(), rack.ns.clone());
    let info = rack2.ssh(&a, &format!("releases {app} --json")).json();
    assert_eq!(info[0]["name"], "v1", "{info}");
    assert_eq!(
        rack2
            .ssh(&a, &format!("config:get {app} SECRET"))
            .stdout
            .trim(),
        "s3cret"
    );
    assert!(rack2.ssh(&a, "keys").stdout.contains("ci"));
    assert!(rack2
        .ssh(&a, &format!("domains {app}"))
        .stdout
        .contains(&format!("{app}.example.org")));
    assert!(page(&rack2, &app, "/").starts_with("version "));
    // The certificate is there, with its key (it opens: status issued).
    let certs_after = rack2.ssh(&a, &format!("certs {app} --json")).ok().json();
    assert_eq!(certs_after, certs_before);
    assert!(
        certs_after
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["host"] == format!("{app}.example.org").as_str() && c["status"] == "issued"),
        "{certs_after}"
    );
    // The git history is there, and a push deploys.
    let w2 = work(&rack2, &a, "w2");
    w2.git(&["pull", "-q", &rack2.git_url(&app), "main"]).ok();
    let log = w2.git(&["log", "--oneline"]);
    assert!(
        log.stdout.contains("fixture procfile-web"),
        "{}",
        log.stdout
    );
    std::fs::write(w2.dir.join("VERSION"), "9\n").unwrap();
    w2.git(&["commit", "-qam", "after restore"]).ok();
    w2.git(&["push", &rack2.git_url(&app), "main"]).ok();
    assert!(page(&rack2, &app, "/").starts_with("version 9 "));
}
