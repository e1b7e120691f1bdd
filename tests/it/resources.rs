//! Resources: real Postgres and Redis (the test images scripts/test builds
//! from Debian's packages, honouring the official images' contract), run
//! by the real binary, linked into apps whose images carry the clients.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::builds::{docker, require_docker};
use crate::git::work;
use crate::harness::{Key, Out, Rack};

fn image(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

fn pg_image() -> String {
    image("RACK_TEST_POSTGRES_IMAGE", "rack-test/postgres:15")
}

fn redis_image() -> String {
    image("RACK_TEST_REDIS_IMAGE", "rack-test/redis:7")
}

/// The test images are local (Docker Hub is out of reach): scripts/test
/// builds them.
fn require_images() {
    require_docker();
    for i in [pg_image(), redis_image()] {
        assert!(
            docker(&["image", "inspect", &i]).code == 0,
            "these tests need the {i} image; run scripts/test --setup-only (it builds it \
             from Debian's packages)"
        );
    }
}

fn rack_with(extra: &str) -> Rack {
    Rack::start_with(&format!(
        "[resources]\nbackup_keep = 2\n{extra}\n[resources.images]\npostgres = \"{}\"\nredis = \"{}\"\n",
        pg_image(),
        redis_image()
    ))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 100000)
}

/// An app whose image is `from` (it has the clients) with one worker type
/// at 0: releases roll out nothing, `run` has a release to run.
fn deploy_client_app(rack: &Rack, app: &str, from: &str) {
    let a = &rack.admin;
    rack.ssh(a, &format!("apps:create {app}")).ok();
    let w = work(rack, a, &format!("w-{app}"));
    std::fs::write(w.dir.join("Procfile"), "worker: sleep 1000000\n").unwrap();
    w.commit("Dockerfile", &format!("FROM {from}\n"));
    w.git(&["push", &rack.git_url(app), "main"]).ok();
}

/// `run APP -- LINE` and its stdout, trimmed; fails the test on a non-zero
/// exit.
fn run(rack: &Rack, app: &str, line: &str) -> String {
    let out = rack.ssh(&rack.admin, &format!("run {app} -- {line}"));
    out.ok();
    out.stdout.trim().to_string()
}

fn psql(rack: &Rack, app: &str, sql: &str) -> String {
    run(
        rack,
        app,
        &format!("psql -qtA \"$DATABASE_URL\" -c \"{sql}\""),
    )
}

/// `ssh ... CMD` with stdout as raw bytes (dumps are binary).
fn ssh_bytes(
    rack: &Rack,
    key: &Key,
    cmd: &str,
    stdin: Option<&std::path::Path>,
) -> (i32, Vec<u8>, String) {
    let mut c = Command::new("ssh");
    c.args(rack.ssh_args(key)).arg("git@127.0.0.1").arg(cmd);
    c.stdin(match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    });
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        o.stdout,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Waits until `resources:info NAME` says running (the rack re-creates a
/// removed container by itself).
fn wait_running(rack: &Rack, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let info = rack.ssh(&rack.admin, &format!("resources:info {name} --json"));
        if info.code == 0 && info.json()["status"] == "running" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never came back: {}{}\nlogs:\n{}",
            info.stdout,
            info.stderr,
            rack.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Every file under `dir`, read whole (the data dir is small in tests).
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

#[test]
fn postgres_is_linked_kept_backed_up_and_walled_off() {
    require_images();
    let mut rack = rack_with("max_import_bytes = 1048576");
    let a = rack.admin.clone();
    let (app, other) = (unique("pg"), unique("pgo"));
    let db = "db";

    let out = rack.ssh(&a, &format!("resources:create {db} postgres"));
    out.ok();
    assert!(
        out.stdout.contains("Created db (postgres 15)"),
        "{}",
        out.stdout
    );
    rack.ssh(&a, "resources:create db redis")
        .err("already exists");
    rack.ssh(&a, "resources:create Bad_Name postgres").err("");
    rack.ssh(&a, "resources:create x mysql")
        .err("unknown resource type");
    let info = rack.ssh(&a, "resources:info db --json").ok().json();
    assert_eq!(info["type"], "postgres");
    assert_eq!(info["status"], "running");
    assert_eq!(info["port"], 5432);
    assert_eq!(info["host"], "db.resource");

    deploy_client_app(&rack, &app, &pg_image());
    deploy_client_app(&rack, &other, &pg_image());
    let out = rack.ssh(&a, &format!("resources:link db {app}"));
    out.ok();
    assert!(out.stdout.contains("released as v2"), "{}", out.stdout);
    let url = rack
        .ssh(&a, &format!("config:get {app} DATABASE_URL"))
        .ok()
        .stdout
        .clone();
    let password = rack
        .ssh(&a, "resources:url db")
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(url.trim(), password);
    let password = password
        .strip_prefix("postgres://rack:")
        .and_then(|r| r.split('@').next())
        .unwrap()
        .to_string();
    assert_eq!(password.len(), 32);

    // Deploy keys of the linked app get nothing: resources are admin's.
    let dk = rack.add_key("dk", &format!("--app {app}"));
    for cmd in [
        "resources",
        "resources:url db",
        "resources:info db",
        "resources:export db",
    ] {
        rack.ssh(&dk, cmd).err("permission denied");
    }
    rack.ssh(&dk, &format!("resources:unlink db {app}"))
        .err("permission denied");

    psql(
        &rack,
        &app,
        "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept')",
    );
    assert_eq!(psql(&rack, &app, "SELECT body FROM notes"), "kept");

    // A redeploy, a crash of the rack, the container's removal: the row stays.
    rack.ssh(&a, &format!("apps:deploy {app}")).ok();
    assert_eq!(psql(&rack, &app, "SELECT body FROM notes"), "kept");
    rack.kill9();
    rack.start_again();
    wait_running(&rack, db);
    assert_eq!(psql(&rack, &app, "SELECT body FROM notes"), "kept");
    docker(&["rm", "-f", &format!("{}-res.db", rack.ns)]).ok_docker();
    wait_running(&rack, db);
    assert_eq!(psql(&rack, &app, "SELECT body FROM notes"), "kept");

    // An app that is not linked has no route to it, by name or address;
    // the linked one reaches the same addresses (positive control).
    let ips = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        &format!("{}-res.db", rack.ns),
    ]);
    let ips: Vec<String> = ips.stdout.split_whitespace().map(str::to_string).collect();
    assert_eq!(
        ips.len(),
        2,
        "its own network and the linked app's: {ips:?}"
    );
    let probe = |who: &str, host: &str| {
        rack.ssh(
            &a,
            &format!("run {who} -- timeout 3 bash -c '</dev/tcp/{host}/5432' && echo open"),
        )
    };
    assert!(ips.iter().any(|ip| probe(&app, ip).stdout.contains("open")));
    assert!(probe(&app, "db.resource").stdout.contains("open"));
    for host in ips.iter().map(String::as_str).chain(["db.resource"]) {
        let o = probe(&other, host);
        assert!(
            !o.stdout.contains("open") && o.code != 0,
            "{other} reached {host}"
        );
    }

    // Backup, change, restore: the data is the backup's.
    let id = rack
        .ssh(&a, "resources:backup db")
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(id.starts_with("b-"), "{id}");
    psql(
        &rack,
        &app,
        "DELETE FROM notes; INSERT INTO notes VALUES ('changed')",
    );
    let list = rack.ssh(&a, "resources:backups db --json").ok().json();
    assert_eq!(list[0]["id"], id.as_str());
    assert!(list[0]["bytes"].as_u64().unwrap() > 0);
    assert!(list[0]["created"].as_str().unwrap().ends_with('Z'));
    rack.ssh(&a, "resources:restore db b-nope").err("no backup");
    rack.ssh(&a, "resources:restore db ../../etc")
        .err("no backup");
    rack.ssh(&a, &format!("resources:restore db {id}")).ok();
    assert_eq!(psql(&rack, &app, "SELECT body FROM notes"), "kept");
    // backup_keep = 2: the oldest goes.
    for _ in 0..2 {
        rack.ssh(&a, "resources:backup db").ok();
    }
    let list = rack.ssh(&a, "resources:backups db --json").ok().json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["id"] != id.as_str()));

    // Export, then import into a fresh resource: the same rows.
    let (code, dump, err) = ssh_bytes(&rack, &a, "resources:export db", None);
    assert_eq!(code, 0, "{err}");
    assert!(dump.starts_with(b"PGDMP"), "a pg_dump custom-format dump");
    let dump_path = rack.dir.path().join("db.dump");
    std::fs::write(&dump_path, &dump).unwrap();
    rack.ssh(&a, "resources:create db2 postgres").ok();
    let (code, _, err) = ssh_bytes(&rack, &a, "resources:import db2", Some(&dump_path));
    assert_eq!(code, 0, "{err}");
    rack.ssh(&a, &format!("resources:link db2 {other}")).ok();
    assert_eq!(psql(&rack, &other, "SELECT body FROM notes"), "kept");
    // The console: psql in the resource, fed from stdin without a terminal.
    let out = rack.ssh_in(
        &a,
        "resources:console db2",
        b"SELECT 'got-' || body FROM notes;\n",
    );
    out.ok();
    assert!(out.stdout.contains("got-kept"), "{}", out.stdout);
    // Hostile imports: another type's dump, garbage, over the limit: one
    // error line, the data unchanged.
    let bad = rack.dir.path().join("bad.dump");
    for (body, says) in [
        (b"REDIS0010rest".to_vec(), "a Redis dump"),
        (b"hello world".to_vec(), "not a Postgres dump"),
    ] {
        std::fs::write(&bad, body).unwrap();
        let (code, _, err) = ssh_bytes(&rack, &a, "resources:import db2", Some(&bad));
        assert!(
            code != 0 && err.starts_with("error: ") && err.contains(says),
            "{err}"
        );
        assert_eq!(psql(&rack, &other, "SELECT body FROM notes"), "kept");
    }
    // A real dump over max_import_bytes (1 MiB here) is refused and the
    // import rolled back.
    psql(
        &rack,
        &app,
        "CREATE TABLE big AS SELECT md5(random()::text) || md5(random()::text) AS x \
         FROM generate_series(1, 60000)",
    );
    let (code, big, err) = ssh_bytes(&rack, &a, "resources:export db", None);
    assert_eq!(code, 0, "{err}");
    assert!(big.len() > 1 << 20, "{} bytes", big.len());
    std::fs::write(&bad, big).unwrap();
    let (code, _, err) = ssh_bytes(&rack, &a, "resources:import db2", Some(&bad));
    assert!(
        code != 0 && err.contains("max_import_bytes (1048576 bytes)"),
        "{err}"
    );
    assert_eq!(
        psql(
            &rack,
            &other,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'big'"
        ),
        "0"
    );
    assert_eq!(psql(&rack, &other, "SELECT body FROM notes"), "kept");

    // Unlink and destroy.
    rack.ssh(&a, "resources:destroy db --confirm db")
        .err("linked to");
    let out = rack.ssh(&a, &format!("resources:unlink db {app}"));
    out.ok();
    assert!(out.stdout.contains("released as"), "{}", out.stdout);
    let cfg = rack.ssh(&a, &format!("config {app} --json")).ok().json();
    assert!(cfg.get("DATABASE_URL").is_none(), "{cfg}");
    let rel = rack.ssh(&a, &format!("releases {app} --json")).ok().json();
    assert!(
        rel[0]["description"]
            .as_str()
            .unwrap()
            .contains("DATABASE_URL"),
        "{rel}"
    );
    rack.ssh(&a, &format!("resources:unlink db {app}"))
        .err("not linked");
    rack.ssh(&a, "resources:destroy db").err("--confirm db");
    rack.ssh(&a, "resources:destroy db --confirm other")
        .err("--confirm db");

    // No password anywhere but sealed: the server log, events, info, the
    // data dir (database, backups, build logs).
    let events = rack.ssh(&a, "events -n 1000 --json").ok().stdout.clone();
    let info = rack.ssh(&a, "resources:info db --json").ok().stdout.clone();
    let builds = rack.ssh(&a, &format!("builds {app} --json")).ok().json();
    for b in builds.as_array().unwrap() {
        let logs = rack.ssh(
            &a,
            &format!("builds:logs {app} {}", b["id"].as_str().unwrap()),
        );
        assert!(!logs.stdout.contains(&password));
    }
    assert!(
        !rack.logs().contains(&password),
        "password in the server log"
    );
    assert!(!events.contains(&password), "password in events");
    assert!(!info.contains(&password), "password in resources:info");
    let hits = files_containing(&rack.data_dir(), password.as_bytes());
    assert!(hits.is_empty(), "password in {hits:?}");
    for action in [
        "resources:create db postgres",
        &format!("resources:link db {app}"),
        "resources:backup db",
        &format!("resources:restore db {id}"),
        "resources:export db",
        "resources:import db2",
        &format!("resources:unlink db {app}"),
    ] {
        assert!(events.contains(action), "no event {action}: {events}");
    }

    rack.ssh(&a, "resources:destroy db --confirm db").ok();
    let object = format!("{}-res.db", rack.ns);
    assert_ne!(docker(&["inspect", &object]).code, 0, "container gone");
    assert_ne!(
        docker(&["volume", "inspect", &object]).code,
        0,
        "volume gone"
    );
    assert!(!rack.data_dir().join("backups/db").exists(), "backups gone");
    rack.ssh(&a, "resources:info db")
        .err("no resource named 'db'");
    let list = rack.ssh(&a, "resources --json").ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[test]
fn redis_keys_are_backed_up_restored_exported_and_imported() {
    require_images();
    let rack = rack_with("");
    let a = &rack.admin;
    let app = unique("rd");
    rack.ssh(a, "resources:create cache redis").ok();
    deploy_client_app(&rack, &app, &redis_image());
    rack.ssh(a, &format!("resources:link cache {app} --as CACHE"))
        .ok();
    let cli = |cmd: &str| {
        run(
            &rack,
            &app,
            &format!("redis-cli -u \"$CACHE_URL\" --no-auth-warning {cmd}"),
        )
    };
    assert_eq!(cli("SET greeting kept"), "OK");

    let id = rack
        .ssh(a, "resources:backup cache")
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(cli("SET greeting changed"), "OK");
    assert_eq!(cli("SET extra 1"), "OK");
    rack.ssh(a, &format!("resources:restore cache {id}")).ok();
    assert_eq!(cli("GET greeting"), "kept");
    assert_eq!(cli("EXISTS extra"), "0");

    let (code, dump, err) = ssh_bytes(&rack, a, "resources:export cache", None);
    assert_eq!(code, 0, "{err}");
    assert!(dump.starts_with(b"REDIS"), "an RDB");
    let path = rack.dir.path().join("cache.rdb");
    std::fs::write(&path, &dump).unwrap();
    rack.ssh(a, "resources:create cache2 redis").ok();
    let (code, _, err) = ssh_bytes(&rack, a, "resources:import cache2", Some(&path));
    assert_eq!(code, 0, "{err}");
    rack.ssh(a, &format!("resources:link cache2 {app}")).ok();
    let cli2 = |cmd: &str| {
        run(
            &rack,
            &app,
            &format!("redis-cli -u \"$REDIS_URL\" --no-auth-warning {cmd}"),
        )
    };
    assert_eq!(cli2("GET greeting"), "kept");
    // The imported keys survive the container's restart (AOF rewritten).
    docker(&["restart", &format!("{}-res.cache2", rack.ns)]).ok_docker();
    wait_running(&rack, "cache2");
    let deadline = Instant::now() + Duration::from_secs(60);
    while rack
        .ssh(
            a,
            &format!("run {app} -- redis-cli -u \"$REDIS_URL\" --no-auth-warning ping"),
        )
        .stdout
        .trim()
        != "PONG"
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(cli2("GET greeting"), "kept");

    // The console: redis-cli, without and with a terminal (ssh -t).
    let out = rack.ssh_in(a, "resources:console cache", b"GET greeting\n");
    out.ok();
    assert!(out.stdout.contains("kept"), "{}", out.stdout);
    console_with_a_terminal(&rack);

    // A dump of the other type is refused, by import and by restore.
    let pg = rack.dir.path().join("pg.dump");
    std::fs::write(&pg, b"PGDMP\x01\x0e\x00").unwrap();
    let (code, _, err) = ssh_bytes(&rack, a, "resources:import cache", Some(&pg));
    assert!(code != 0 && err.contains("a Postgres dump"), "{err}");
    let dir = rack.data_dir().join("backups/cache");
    let meta = std::fs::read_to_string(dir.join(format!("{id}.json"))).unwrap();
    let forged = "b-20000101T000000Z-0000";
    std::fs::write(
        dir.join(format!("{forged}.json")),
        meta.replace(&id, forged)
            .replace("\"redis\"", "\"postgres\""),
    )
    .unwrap();
    std::fs::copy(&pg, dir.join(format!("{forged}.dump"))).unwrap();
    rack.ssh(a, &format!("resources:restore cache {forged}"))
        .err("taken from a postgres resource");
    assert_eq!(cli("GET greeting"), "kept");

    // apps:destroy unlinks the app's resources (which stay) first, so its
    // network can go.
    rack.ssh(a, &format!("apps:destroy {app} --confirm {app}"))
        .ok();
    for name in ["cache", "cache2"] {
        let info = rack
            .ssh(a, &format!("resources:info {name} --json"))
            .ok()
            .json();
        assert_eq!(info["linked"], serde_json::json!({}), "{info}");
        assert_eq!(info["status"], "running", "{info}");
    }
}

#[test]
fn backups_are_taken_daily_at_the_scheduled_time() {
    require_images();
    // The next minute (UTC) that is at least 20 s away: the resource is
    // created before it, so that day's backup is due once it passes.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = (now + 20) / 60 + 1;
    let hhmm = format!("{:02}:{:02}", (at / 60) % 24, at % 60);
    let rack = rack_with(&format!("backup_schedule = \"{hhmm}\""));
    let a = &rack.admin;
    rack.ssh(a, "resources:create nightly redis").ok();
    assert!(
        now_secs() < at * 60,
        "the resource was created before the scheduled time"
    );
    // Taken once the time passes (the keeper checks every 20 s).
    let deadline = Instant::now() + Duration::from_secs(240);
    let list = loop {
        let list = rack.ssh(a, "resources:backups nightly --json").ok().json();
        if !list.as_array().unwrap().is_empty() {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled backup; logs:\n{}",
            rack.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["trigger"], "scheduled");
    let events = rack.ssh(a, "events --json").ok().json();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "scheduler"
                && e["action"] == "resources:backup nightly"
                && e["outcome"].as_str().unwrap().starts_with("ok")),
        "{events}"
    );
}

/// `ssh -t ... resources:console cache` under a real terminal (tmux):
/// redis-cli's interactive prompt.
fn console_with_a_terminal(rack: &Rack) {
    let session = format!("rack-console-{}", std::process::id());
    let ssh = format!(
        "ssh -tt {} git@127.0.0.1 resources:console cache",
        rack.ssh_args(&rack.admin).join(" ")
    );
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().unwrap();
    let st = tmux(&[
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "30",
        "-s",
        &session,
        &ssh,
    ]);
    assert!(
        st.status.success(),
        "tmux is needed: scripts/test installs it"
    );
    let wait_screen = |text: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout)
                .into_owned();
            if s.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "terminal never showed {text:?}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_screen("127.0.0.1:6379>");
    tmux(&["send-keys", "-t", &session, "GET greeting", "Enter"]);
    wait_screen("\"kept\"");
    tmux(&["send-keys", "-t", &session, "exit", "Enter"]);
    let _ = tmux(&["kill-session", "-t", &session]);
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

trait OkDocker {
    fn ok_docker(&self);
}

impl OkDocker for Out {
    fn ok_docker(&self) {
        assert_eq!(self.code, 0, "docker: {}", self.stderr);
    }
}
