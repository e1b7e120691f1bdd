//! Persistent volumes end to end: the real binary, git, OpenSSH, Docker
//! and the router. The fixture `volume-web` writes and reads `/data`
//! through CGI scripts of its web process.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::builds::{add_fixture, docker, require_docker};
use crate::git::{work, Work};
use crate::harness::{Key, Rack};
use crate::http;

fn host(app: &str) -> String {
    format!("{app}.localhost")
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 100000)
}

#[track_caller]
fn page(rack: &Rack, app: &str, path: &str) -> String {
    let r = http::get(rack.http_port, &host(app), path).expect("router answers");
    assert_eq!(r.status, 200, "GET {path} on {app}: {}", r.body);
    dechunk(&r.body)
}

/// A CGI answer comes chunked (the test client leaves the framing in).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 || after.len() < n {
            return out;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
}

/// `apps:create`, then a push of the fixture (v1).
fn deploy(rack: &Rack, app: &str) -> Work {
    rack.ssh(&rack.admin, &format!("apps:create {app}")).ok();
    let w = work(rack, &rack.admin, &format!("w-{app}"));
    add_fixture(&w, "volume-web");
    w.git(&["push", &rack.git_url(app), "main"]).ok();
    w
}

fn push_version(rack: &Rack, w: &Work, app: &str, n: u32) {
    std::fs::write(w.dir.join("VERSION"), format!("{n}\n")).unwrap();
    w.git(&["commit", "-qam", "bump"]).ok();
    w.git(&["push", &rack.git_url(app), "main"]).ok();
}

/// The note the app wrote into its volume, as its web process reads it.
fn note(rack: &Rack, app: &str) -> String {
    let body = page(rack, app, "/cgi-bin/read");
    body.lines().nth(1).unwrap_or_default().to_string()
}

/// `ssh ... CMD` with raw bytes in and out (tars).
fn ssh_bytes(rack: &Rack, key: &Key, cmd: &str, stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let mut c = Command::new("ssh");
    c.args(rack.ssh_args(key))
        .arg("git@127.0.0.1")
        .arg(cmd)
        .stdin(Stdio::piped())
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
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn release_count(rack: &Rack, app: &str) -> usize {
    rack.ssh(&rack.admin, &format!("releases {app} --json"))
        .ok()
        .json()
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn volume_data_survives_deploys_config_restart_rollback_and_a_crash() {
    require_docker();
    let mut rack = Rack::start();
    let a = rack.admin.clone();
    let app = unique("vkeep");
    let w = deploy(&rack, &app);
    let out = rack.ssh(&a, &format!("volumes:create {app} data --path /data"));
    out.ok();
    assert!(out.stdout.contains("v2 mounts it"), "{}", out.stdout);
    assert_eq!(page(&rack, &app, "/cgi-bin/write").trim(), "wrote");
    assert_eq!(note(&rack, &app), "written by v2");

    push_version(&rack, &w, &app, 2);
    assert!(page(&rack, &app, "/").starts_with("version 2 v3"));
    assert_eq!(note(&rack, &app), "written by v2", "after a push");
    rack.ssh(&a, &format!("config:set {app} GREETING=hi")).ok();
    assert_eq!(note(&rack, &app), "written by v2", "after config:set");
    rack.ssh(&a, &format!("ps:restart {app}")).ok();
    assert_eq!(note(&rack, &app), "written by v2", "after ps:restart");
    rack.ssh(&a, &format!("releases:rollback {app}")).ok();
    assert!(page(&rack, &app, "/").starts_with("version 2 v5"));
    assert_eq!(note(&rack, &app), "written by v2", "after a rollback");
    rack.kill9();
    rack.start_again();
    assert_eq!(
        note(&rack, &app),
        "written by v2",
        "after kill -9 and a restart"
    );
    // One-offs see the same volume.
    let out = rack.ssh(&a, &format!("run {app} -- cat /data/note.txt"));
    assert_eq!(out.ok().stdout.trim(), "written by v2");

    let list = rack.ssh(&a, &format!("volumes {app} --json")).ok().json();
    assert_eq!(list[0]["name"], "data");
    assert_eq!(list[0]["path"], "/data");
    assert_eq!(list[0]["types"], serde_json::json!(["web"]));
    assert_eq!(list[0]["shared"], false);
    assert!(list[0]["size_bytes"].as_u64().unwrap() > 0, "{list}");
    let table = rack.ssh(&a, &format!("volumes {app}")).ok().stdout.clone();
    assert!(table.contains("NAME") && table.contains("/data"), "{table}");

    // Audit events name each change.
    let events = rack.ssh(&a, &format!("events {app} --json")).ok().json();
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&format!("volumes:create {app} data --path /data --type web").as_str()),
        "{actions:?}"
    );
}

#[test]
fn single_writer_scale_is_refused_and_shared_volumes_scale() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let app = unique("vscale");
    deploy(&rack, &app);
    rack.ssh(a, &format!("volumes:create {app} data --path /data"))
        .ok();
    let before = release_count(&rack, &app);
    let ps_before = rack.ssh(a, &format!("ps {app} --json")).ok().json();
    rack.ssh(a, &format!("ps:scale {app} web=2"))
        .err("runs at most 1 instance");
    assert_eq!(release_count(&rack, &app), before, "no new release");
    let ps_after = rack.ssh(a, &format!("ps {app} --json")).ok().json();
    assert_eq!(ps_before, ps_after, "nothing changed");
    let info = rack
        .ssh(a, &format!("releases:info {app} v2 --json"))
        .ok()
        .json();
    assert_eq!(info["formation"]["web"], 1);

    // With --shared both instances mount one volume and see one file.
    let app2 = unique("vshare");
    deploy(&rack, &app2);
    rack.ssh(
        a,
        &format!("volumes:create {app2} files --path /data --type web --shared"),
    )
    .ok();
    rack.ssh(a, &format!("ps:scale {app2} web=2")).ok();
    page(&rack, &app2, "/cgi-bin/write");
    let mut hosts = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let body = page(&rack, &app2, "/cgi-bin/read");
        let mut lines = body.lines();
        hosts.insert(lines.next().unwrap().to_string());
        assert_eq!(lines.next(), Some("written by v2"), "{body}");
    }
    assert_eq!(hosts.len(), 2, "both instances answered: {hosts:?}");
    // A single-writer volume cannot join a type that runs two.
    rack.ssh(a, &format!("volumes:create {app2} solo --path /solo"))
        .err("runs at most 1 instance");
    assert_eq!(
        rack.ssh(a, &format!("volumes {app2} --json"))
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// A tar whose entries are written raw (the tar crate refuses to write
/// hostile names itself).
fn raw_tar(entries: &[(tar::EntryType, &str, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (kind, name, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Names, kinds, link targets and contents of a tar, sorted.
fn listing(tar_bytes: &[u8]) -> Vec<(String, String, String, Vec<u8>)> {
    use std::io::Read;
    let mut a = tar::Archive::new(tar_bytes);
    let mut out: Vec<_> = a
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            let kind = format!("{:?}", e.header().entry_type());
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, kind, link, data)
        })
        .filter(|(n, _, _, _)| !n.is_empty())
        .collect();
    out.sort();
    out
}

#[test]
fn export_import_copies_files_and_hostile_tars_change_nothing() {
    require_docker();
    let rack = Rack::start_with("[volumes]\nmax_import_bytes = 200000\n");
    let a = &rack.admin;
    let (src, dst) = (unique("vsrc"), unique("vdst"));
    deploy(&rack, &src);
    deploy(&rack, &dst);
    rack.ssh(a, &format!("volumes:create {src} data --path /data"))
        .ok();
    rack.ssh(a, &format!("volumes:create {dst} data --path /srv/data"))
        .ok();
    rack.ssh(
        a,
        &format!(
            "run {src} -- mkdir -p /data/sub && echo one > /data/sub/a.txt && printf 'two\\n' > /data/b.txt && ln -s sub/a.txt /data/link"
        ),
    )
    .ok();
    let (code, exported, err) = ssh_bytes(&rack, a, &format!("volumes:export {src} data"), b"");
    assert_eq!(code, 0, "{err}");
    let want = listing(&exported);
    let names: Vec<&str> = want.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["b.txt", "link", "sub", "sub/a.txt"], "{want:?}");

    let (code, _, err) = ssh_bytes(&rack, a, &format!("volumes:import {dst} data"), &exported);
    assert_eq!(code, 0, "{err}");
    let (_, copied, _) = ssh_bytes(&rack, a, &format!("volumes:export {dst} data"), b"");
    assert_eq!(listing(&copied), want, "the same files");
    let out = rack.ssh(a, &format!("run {dst} -- cat /srv/data/link"));
    assert_eq!(out.ok().stdout.trim(), "one");

    use tar::EntryType::{Link, Regular, Symlink};
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            raw_tar(&[
                (Regular, "ok.txt", "", b"x"),
                (Regular, "../escape", "", b"x"),
            ]),
        ),
        ("absolute", raw_tar(&[(Regular, "/etc/evil", "", b"x")])),
        (
            "symlink out",
            raw_tar(&[(Symlink, "out", "../../../etc", b"")]),
        ),
        (
            "absolute symlink",
            raw_tar(&[(Symlink, "out", "/etc/passwd", b"")]),
        ),
        (
            "hard link out",
            raw_tar(&[(Link, "h", "../../etc/passwd", b"")]),
        ),
        (
            "through a link",
            raw_tar(&[(Symlink, "l", "sub", b""), (Regular, "l/x", "", b"x")]),
        ),
        (
            "too large",
            raw_tar(&[(Regular, "big", "", &vec![1u8; 300_000])]),
        ),
    ];
    for (what, t) in hostile {
        let (code, out, err) = ssh_bytes(&rack, a, &format!("volumes:import {dst} data"), &t);
        assert!(code != 0 && code != 255, "{what}: exit {code}");
        assert!(out.is_empty(), "{what}");
        assert!(
            err.starts_with("error: ") && err.lines().count() == 1,
            "{what}: {err:?}"
        );
        let (_, now, _) = ssh_bytes(&rack, a, &format!("volumes:export {dst} data"), b"");
        assert_eq!(listing(&now), want, "{what} changed nothing");
    }
    // An app that never deployed: the volume exists once written into, and
    // apps:destroy removes it.
    let bare = unique("vbare");
    rack.ssh(a, &format!("apps:create {bare}")).ok();
    let out = rack.ssh(a, &format!("volumes:create {bare} data --path /data"));
    assert!(
        out.ok().stdout.contains("the first deploy mounts it"),
        "{}",
        out.stdout
    );
    let (code, _, err) = ssh_bytes(&rack, a, &format!("volumes:import {bare} data"), &exported);
    assert_eq!(code, 0, "{err}");
    let filter = format!("label=rack.app={bare}");
    let vols = docker(&["volume", "ls", "-q", "--filter", &filter]);
    assert_eq!(vols.stdout.split_whitespace().count(), 1, "{}", vols.stdout);
    rack.ssh(a, &format!("apps:destroy {bare} --confirm {bare}"))
        .ok();
    let vols = docker(&["volume", "ls", "-q", "--filter", &filter]);
    assert_eq!(vols.stdout.trim(), "", "apps:destroy removed it");
    // Unknown volume, unknown app: refused before a byte is read.
    let (code, _, err) = ssh_bytes(&rack, a, &format!("volumes:import {dst} nope"), &exported);
    assert!(code == 1 && err.contains("no volume named 'nope'"), "{err}");
}

#[test]
fn another_app_can_never_mount_or_read_a_volume() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let (app_a, app_b) = (unique("vowna"), unique("vownb"));
    deploy(&rack, &app_a);
    deploy(&rack, &app_b);
    rack.ssh(a, &format!("volumes:create {app_a} data --path /data"))
        .ok();
    page(&rack, &app_a, "/cgi-bin/write");
    // The same name in B is B's own, empty volume.
    rack.ssh(a, &format!("volumes:create {app_b} data --path /data"))
        .ok();
    assert!(
        note(&rack, &app_b).contains("No such file"),
        "{}",
        note(&rack, &app_b)
    );
    let (_, b_tar, _) = ssh_bytes(&rack, a, &format!("volumes:export {app_b} data"), b"");
    assert!(listing(&b_tar).is_empty());
    // Names that try to point elsewhere are refused by the name rule.
    let docker_name = format!("{}.{app_a}.data", rack.ns);
    for name in [docker_name.as_str(), "../data", "a/b", "Data"] {
        rack.ssh(a, &format!("volumes:create {app_b} '{name}' --path /x"))
            .err("invalid volume name");
        rack.ssh(a, &format!("volumes:export {app_b} '{name}'"))
            .err("invalid volume name");
    }
    // Hostile paths.
    for path in [
        "data",
        "/",
        "/proc/x",
        "/data/../etc",
        "/etc",
        "/dev/shm",
        "/a:b",
    ] {
        rack.ssh(a, &format!("volumes:create {app_b} other --path '{path}'"))
            .err("invalid volume path");
    }
    // A Docker volume that claims B's name but is labelled as A's is never
    // mounted: the release fails and the volume is not recorded.
    let squat = format!("{}.{app_b}.squat", rack.ns);
    docker(&[
        "volume",
        "create",
        "--label",
        "rack.managed=1",
        "--label",
        &format!("rack.ns={}", rack.ns),
        "--label",
        &format!("rack.app={app_a}"),
        "--label",
        "rack.volume=data",
        &squat,
    ])
    .ok();
    let out = rack.ssh(a, &format!("volumes:create {app_b} squat --path /squat"));
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("refusing to mount it"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.ends_with("error: rollout failed\n"),
        "{}",
        out.stderr
    );
    let vols = rack.ssh(a, &format!("volumes {app_b} --json")).ok().json();
    assert_eq!(vols.as_array().unwrap().len(), 1, "{vols}");
    docker(&["volume", "rm", &squat]);
    // Deploy keys cannot use volume commands, even on their own app.
    let key = rack.add_key("ci", &format!("--app {app_b}"));
    for cmd in [
        format!("volumes {app_a}"),
        format!("volumes:export {app_a} data"),
        format!("volumes:import {app_b} data"),
        format!("volumes:create {app_b} x --path /x"),
    ] {
        rack.ssh(&key, &cmd).err("permission denied");
    }
    // B's containers mount only B's volume.
    let ids = docker(&["ps", "-q", "--filter", &format!("label=rack.app={app_b}")]);
    for id in ids.stdout.split_whitespace() {
        let mounts = docker(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Type}}:{{.Name}} {{end}}",
            id,
        ]);
        for m in mounts.stdout.split_whitespace() {
            assert!(
                m.starts_with(&format!("volume:{}.{app_b}.", rack.ns)),
                "{id} mounts {m}"
            );
        }
    }
    // apps:destroy removes the app's volumes, and only its own.
    rack.ssh(a, &format!("apps:destroy {app_b} --confirm {app_b}"))
        .ok();
    let left = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label=rack.ns={}", rack.ns),
    ]);
    let left: Vec<&str> = left.stdout.split_whitespace().collect();
    assert_eq!(left, [docker_name.as_str()]);
    assert_eq!(note(&rack, &app_a), format!("written by v2"));
}

/// Keep-alive clients and a 2-second request in flight across 10
/// stop-first deploys of a single-writer web process: none fails, and each
/// is answered by the release serving when it was sent or the next one.
#[test]
fn stop_first_deploys_hold_requests_and_drop_none() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let app = unique("vzd");
    let w = deploy(&rack, &app);
    rack.ssh(a, &format!("volumes:create {app} data --path /data"))
        .ok();
    // The release known to serve: set after each deploy returns.
    let serving = Arc::new(AtomicI64::new(2));
    let port = rack.http_port;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let check = |admitted: i64, body: &str| -> Result<(), String> {
        let v: i64 = body
            .split_whitespace()
            .find_map(|w| w.strip_prefix('v').and_then(|n| n.parse().ok()))
            .ok_or_else(|| format!("no release in {body:?}"))?;
        if v == admitted || v == admitted + 1 {
            Ok(())
        } else {
            Err(format!("admitted under v{admitted}, answered by v{v}"))
        }
    };
    let mut threads = Vec::new();
    for _ in 0..6 {
        let (stop, ok, failures, serving, h) = (
            stop.clone(),
            ok.clone(),
            failures.clone(),
            serving.clone(),
            host(&app),
        );
        threads.push(std::thread::spawn(move || {
            let mut conn = http::KeepAlive::connect(port, &h).unwrap();
            while !stop.load(Ordering::SeqCst) {
                let admitted = serving.load(Ordering::SeqCst);
                match conn.get("/") {
                    Ok(r) if r.status == 200 => match check(admitted, &r.body) {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => failures.lock().unwrap().push(e),
                    },
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
        let (stop, ok, failures, serving, h) = (
            stop.clone(),
            ok.clone(),
            failures.clone(),
            serving.clone(),
            host(&app),
        );
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let admitted = serving.load(Ordering::SeqCst);
                match http::get(port, &h, "/cgi-bin/slow") {
                    Ok(r) if r.status == 200 && r.body.contains("slow done") => {
                        match check(admitted, &r.body) {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => failures.lock().unwrap().push(format!("slow: {e}")),
                        }
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
    let mut version = 1;
    for i in 0..10 {
        let out = match i % 3 {
            0 => {
                version += 1;
                std::fs::write(w.dir.join("VERSION"), format!("{version}\n")).unwrap();
                w.git(&["commit", "-qam", "bump"]).ok();
                w.git(&["push", &rack.git_url(&app), "main"])
            }
            1 => rack.ssh(a, &format!("config:set {app} GREETING=g{i}")),
            _ => rack.ssh(a, &format!("ps:restart {app}")),
        };
        out.ok();
        assert!(
            out.stderr.contains("Stopping web.1 first")
                || out.stdout.contains("Stopping web.1 first"),
            "deploy {i} was not stop-first: {}",
            out.stderr
        );
        // ps:restart keeps the release number; the others make a new one.
        if i % 3 != 2 {
            serving.fetch_add(1, Ordering::SeqCst);
        }
        let now = serving.load(Ordering::SeqCst);
        assert!(page(&rack, &app, "/").contains(&format!(" v{now}")));
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
    assert!(
        ok.load(Ordering::SeqCst) > 100,
        "{}",
        ok.load(Ordering::SeqCst)
    );
    // One web instance ran at a time: never two on the volume.
    let ps = rack.ssh(a, &format!("ps {app} --json")).ok().json();
    assert_eq!(ps.as_array().unwrap().len(), 1, "{ps}");
}

#[test]
fn a_failed_stop_first_rollout_brings_the_old_instance_back() {
    require_docker();
    let rack = Rack::start_with("");
    let a = &rack.admin;
    let app = unique("vfail");
    let w = deploy(&rack, &app);
    rack.ssh(a, &format!("apps:set {app} healthcheck.timeout=5"))
        .ok();
    rack.ssh(a, &format!("volumes:create {app} data --path /data"))
        .ok();
    page(&rack, &app, "/cgi-bin/write");
    std::fs::write(w.dir.join("Procfile"), "web: sh -c 'echo broken; exit 1'\n").unwrap();
    w.git(&["commit", "-qam", "broken"]).ok();
    let out = w.git(&["push", &rack.git_url(&app), "main"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("Stopping web.1 first"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Starting the previous instance again"),
        "{}",
        out.stderr
    );
    // The old instance serves again, on the same volume.
    assert!(page(&rack, &app, "/").starts_with("version 1 v2"));
    assert_eq!(note(&rack, &app), "written by v2");
    let ps = rack.ssh(a, &format!("ps {app} --json")).ok().json();
    let ps = ps.as_array().unwrap();
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0]["state"], "running");
    assert_eq!(ps[0]["release"], "v2");
}

/// kill -9 in the middle of a stop-first rollout (old instance stopped,
/// new one not yet ready): recovery removes the new instance, then starts
/// the current release's again on the same volume, never both at once.
#[test]
fn a_crash_during_a_stop_first_rollout_brings_back_the_old_instance() {
    require_docker();
    let args = vec!["--test-pause-at".to_string(), "before_ready:v3".to_string()];
    let mut rack = Rack::start_with_args("", args);
    let a = rack.admin.clone();
    let app = unique("vcrash");
    let w = deploy(&rack, &app);
    rack.ssh(&a, &format!("volumes:create {app} data --path /data"))
        .ok();
    page(&rack, &app, "/cgi-bin/write");
    let running = || {
        let out = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=rack.app={app}"),
            "--filter",
            "label=rack.type=web",
        ]);
        out.stdout.split_whitespace().count()
    };
    std::fs::write(w.dir.join("VERSION"), "2\n").unwrap();
    w.git(&["commit", "-qam", "bump"]).ok();
    let mut push = crate::releases::push_until(&rack, &w, &app, "test pause: before_ready v3");
    assert_eq!(running(), 1, "only the new instance runs on the volume");
    rack.kill9();
    assert!(!push.wait().unwrap().success());
    rack.server_args.clear();
    rack.start_again();
    assert!(page(&rack, &app, "/").starts_with("version 1 v2"));
    assert_eq!(note(&rack, &app), "written by v2");
    assert_eq!(running(), 1);
}
