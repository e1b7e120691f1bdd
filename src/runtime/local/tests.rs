//! Against the real Docker engine with the test busybox image. Each test
//! uses its own app names (with the pid) and cleans up even when it fails.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bollard::Docker;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::health::http_get;
use super::{LocalOptions, LocalRuntime};
use crate::progress::Progress;
use crate::release::SecretEnv;
use crate::router::Router;
use crate::runtime::{
    HealthCheck, HealthKind, LogLine, LogOptions, OneOff, OneOffIo, ProcessSpec, ReleaseSpec,
    Runtime, RuntimeError,
};

const IMAGE: &str = "rack-test/busybox:latest";
const DOCKER_DOWN: &str = "Docker engine not reachable: run scripts/test (it starts dockerd)";
const NS: &str = "racktest";

async fn docker() -> Docker {
    let docker = match crate::build::connect_docker(None).await {
        Ok(d) => d,
        Err(e) => panic!("{DOCKER_DOWN} ({e})"),
    };
    if let Err(e) = docker.ping().await {
        panic!("{DOCKER_DOWN} ({e})");
    }
    if docker.inspect_image(IMAGE).await.is_err() {
        panic!("test image {IMAGE} missing: run scripts/test (it builds it)");
    }
    docker
}

fn options(ns: &str) -> LocalOptions {
    LocalOptions {
        stop_grace: Duration::from_secs(3),
        drain_max: Duration::from_secs(3),
        namespace: ns.to_string(),
        settle: Duration::from_secs(1),
        ..LocalOptions::default()
    }
}

async fn runtime(ns: &str) -> (LocalRuntime, Router) {
    let router = Router::new();
    let rt = LocalRuntime::with_options(docker().await, router.clone(), options(ns));
    (rt, router)
}

fn app_name(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

/// Removes what a test created, through the docker CLI so it also runs
/// while a failed test unwinds.
/// A fresh app name (from `name`), its cleanup guard, and a runtime in
/// the tests' namespace with its router.
async fn app_runtime(name: &str) -> (String, Cleanup, LocalRuntime, Router) {
    let app = app_name(name);
    let cleanup = Cleanup::new(NS, &[&app]);
    let (rt, router) = runtime(NS).await;
    (app, cleanup, rt, router)
}

struct Cleanup {
    ns: String,
    apps: Vec<String>,
}

impl Cleanup {
    fn new(ns: &str, apps: &[&str]) -> Cleanup {
        Cleanup {
            ns: ns.to_string(),
            apps: apps.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        use std::process::Command;
        for app in &self.apps {
            let out = Command::new("docker")
                .args(["ps", "-aq", "--filter"])
                .arg(format!("label=rack.app={app}"))
                .args(["--filter"])
                .arg(format!("label=rack.ns={}", self.ns))
                .output();
            if let Ok(out) = out {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker")
                        .args(["rm", "-f"])
                        .args(&ids)
                        .output();
                }
            }
            let _ = Command::new("docker")
                .args(["network", "rm"])
                .arg(format!("{}-{app}", self.ns))
                .output();
        }
    }
}

/// A web process serving `hello vN` with busybox httpd on `$PORT`.
const WEB: &str = "mkdir -p /www && echo \"hello $RACK_RELEASE\" > /www/index.html && exec httpd -f -p $PORT -h /www";

fn spec(app: &str, version: i64, deploy: &str, procs: &[(&str, &str, u32)]) -> ReleaseSpec {
    ReleaseSpec {
        app: app.to_string(),
        version,
        deploy_id: deploy.to_string(),
        build_id: "b-test".into(),
        image: IMAGE.into(),
        env: SecretEnv::empty(),
        port: None,
        processes: procs
            .iter()
            .map(|(kind, cmd, count)| ProcessSpec {
                kind: kind.to_string(),
                command: Some(cmd.to_string()),
                count: *count,
                memory_bytes: Some(64 * 1024 * 1024),
                nano_cpus: Some(500_000_000),
            })
            .collect(),
        health: HealthCheck {
            kind: HealthKind::Http { path: "/".into() },
            timeout: Duration::from_secs(20),
        },
        hosts: vec![format!("{app}.localhost")],
        volumes: Vec::new(),
    }
}

fn progress() -> (Progress, mpsc::UnboundedReceiver<String>) {
    Progress::channel()
}

fn drain_lines(rx: &mut mpsc::UnboundedReceiver<String>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(l) = rx.try_recv() {
        out.push(l);
    }
    out
}

async fn page(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, None, "/", Duration::from_secs(3), true)
        .await
        .expect("GET /");
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).trim().to_string()
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn start_switch_then_a_second_rollout_replaces_the_first() {
    let (app, _c, rt, router) = app_runtime("roll").await;
    let (p, mut prx) = progress();

    let s1 = spec(&app, 1, "d1", &[("web", WEB, 1)]);
    let t = Instant::now();
    let started = rt.start(&s1, &p).await.expect("v1 starts");
    let first_start = t.elapsed();
    eprintln!("start-to-ready, 1 busybox httpd: {first_start:?}");
    assert!(drain_lines(&mut prx)
        .iter()
        .any(|l| l == "-----> web: 1/1 healthy"));
    assert_eq!(LocalRuntime::started_containers(&started).len(), 1);
    assert!(router.backends(&app).is_empty(), "start switches nothing");
    rt.switch(&s1, started, &p).await.unwrap();
    let b1 = router.backends(&app);
    assert_eq!(b1.len(), 1);
    assert_eq!(b1[0].port(), 5000);
    assert_eq!(page(b1[0]).await, "hello v1");

    // The container as created: labels, env, init, limits, no ports.
    let list = rt.list(Some(&app)).await.unwrap();
    let info = rt
        .docker()
        .inspect_container(&list[0].id, None)
        .await
        .unwrap();
    let labels = info.config.as_ref().unwrap().labels.clone().unwrap();
    for (k, v) in [
        ("rack.app", app.as_str()),
        ("rack.release", "1"),
        ("rack.deploy", "d1"),
        ("rack.type", "web"),
        ("rack.number", "1"),
        ("rack.managed", "1"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    let env = info.config.as_ref().unwrap().env.clone().unwrap();
    for e in ["PORT=5000", &format!("RACK_APP={app}"), "RACK_RELEASE=v1"] {
        assert!(env.iter().any(|x| x == e), "env {e} in {env:?}");
    }
    let hc = info.host_config.unwrap();
    assert_eq!(hc.init, Some(true));
    assert_eq!(hc.memory, Some(64 * 1024 * 1024));
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(
        hc.log_config
            .unwrap()
            .config
            .unwrap()
            .get("max-size")
            .map(String::as_str),
        Some("10m")
    );
    assert!(hc.port_bindings.unwrap_or_default().is_empty());
    assert!(hc.binds.unwrap_or_default().is_empty());
    assert_eq!(
        info.name.as_deref(),
        Some(format!("/{NS}-{app}-web-1-d1").as_str())
    );

    // v2 with two instances replaces v1.
    let s2 = spec(&app, 2, "d2", &[("web", WEB, 2)]);
    let t = Instant::now();
    let started = rt.start(&s2, &p).await.expect("v2 starts");
    eprintln!("start-to-ready, 2 busybox httpd: {:?}", t.elapsed());
    let lines = drain_lines(&mut prx);
    assert!(
        lines.iter().any(|l| l == "-----> web: 2/2 healthy"),
        "{lines:?}"
    );
    assert_eq!(
        router.backends(&app),
        b1,
        "old release serves until the switch"
    );
    let t = Instant::now();
    rt.switch(&s2, started, &p).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "switch does not wait for the cleanup"
    );
    let b2 = router.backends(&app);
    assert_eq!(b2.len(), 2);
    assert!(!b2.contains(&b1[0]));
    for b in &b2 {
        assert_eq!(page(*b).await, "hello v2");
    }
    let t = Instant::now();
    wait_until("v1 removed", Duration::from_secs(20), || async {
        rt.list(Some(&app))
            .await
            .unwrap()
            .iter()
            .all(|i| i.deploy == "d2")
    })
    .await;
    eprintln!(
        "old instance drained, stopped and removed in {:?}",
        t.elapsed()
    );

    let ps = rt.processes(&app).await.unwrap();
    let names: Vec<&str> = ps.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web.1", "web.2"]);
    assert!(ps
        .iter()
        .all(|p| p.release == 2 && p.state == "running" && p.started_at.is_some()));

    rt.destroy(&app).await.unwrap();
    assert!(rt.list(Some(&app)).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_release_that_never_gets_ready_is_removed_and_the_old_one_keeps_serving() {
    let (app, _c, rt, router) = app_runtime("never").await;
    let p = Progress::discard();

    let s1 = spec(&app, 1, "d1", &[("web", WEB, 1)]);
    let started = rt.start(&s1, &p).await.unwrap();
    rt.switch(&s1, started, &p).await.unwrap();
    let b1 = router.backends(&app);

    // Listens nowhere: times out with its output.
    let mut s2 = spec(
        &app,
        2,
        "d2",
        &[(
            "web",
            "echo booting-but-never-listening; exec sleep 1000",
            2,
        )],
    );
    s2.health.timeout = Duration::from_secs(3);
    let t = Instant::now();
    let err = rt.start(&s2, &p).await.expect_err("never ready");
    let RuntimeError::NotReady(msg) = err else {
        panic!("not NotReady: {err}")
    };
    assert!(
        t.elapsed() >= Duration::from_secs(3) && t.elapsed() < Duration::from_secs(8),
        "{:?}",
        t.elapsed()
    );
    assert!(msg.contains("was not ready within 3s"), "{msg}");
    assert!(msg.contains("HTTP GET / on port 5000"), "{msg}");
    assert!(msg.contains("booting-but-never-listening"), "{msg}");
    eprintln!("NotReady message:\n{msg}");

    // Crashes: fails fast with its exit status and output.
    let s3 = spec(
        &app,
        3,
        "d3",
        &[("web", "echo about-to-crash >&2; exit 3", 1)],
    );
    let t = Instant::now();
    let RuntimeError::NotReady(msg) = rt.start(&s3, &p).await.expect_err("crashes") else {
        panic!()
    };
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "crash detected fast: {:?}",
        t.elapsed()
    );
    // Under load Docker may restart the container before a probe sees it
    // exited; either report is right.
    assert!(
        msg.contains("status 3") || msg.contains("crashed and was restarted"),
        "{msg}"
    );
    assert!(msg.contains("about-to-crash"), "{msg}");

    // A missing image.
    let mut s4 = spec(&app, 4, "d4", &[("web", WEB, 1)]);
    s4.image = "rack/does-not-exist:nope".into();
    assert!(matches!(
        rt.start(&s4, &p).await,
        Err(RuntimeError::NotFound(_))
    ));

    let left = rt.list(Some(&app)).await.unwrap();
    assert!(
        left.iter().all(|i| i.deploy == "d1"),
        "nothing of the failed rollouts is left: {left:?}"
    );
    assert_eq!(left.len(), 1);
    assert_eq!(router.backends(&app), b1);
    assert_eq!(page(b1[0]).await, "hello v1");
    rt.destroy(&app).await.unwrap();
}

#[tokio::test]
async fn workers_are_ready_after_five_seconds_and_scaling_is_a_new_rollout() {
    let app = app_name("scale");
    let _c = Cleanup::new(NS, &[&app]);
    let router = Router::new();
    let mut opts = options(NS);
    opts.settle = LocalOptions::default().settle;
    let rt = LocalRuntime::with_options(docker().await, router.clone(), opts);
    let (p, mut prx) = progress();
    let worker = "while true; do echo tick; sleep 1; done";

    // Release 1 at a given scale of web and worker (clock never runs).
    let scaled = |deploy: &str, web: u32, workers: u32| {
        spec(
            &app,
            1,
            deploy,
            &[
                ("web", WEB, web),
                ("worker", worker, workers),
                ("clock", "sleep 1000", 0),
            ],
        )
    };
    let s1 = scaled("d1", 1, 1);
    let t = Instant::now();
    let started = rt.start(&s1, &p).await.unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(9),
        "{took:?}"
    );
    let lines = drain_lines(&mut prx);
    assert!(
        lines.contains(&"-----> worker: 1/1 running".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"-----> web: 1/1 healthy".to_string()),
        "{lines:?}"
    );
    rt.switch(&s1, started, &p).await.unwrap();
    let ps = rt.processes(&app).await.unwrap();
    let names: Vec<&str> = ps.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web.1", "worker.1"]);

    // ps:scale web=3 worker=0: a new rollout of the same release.
    let s2 = scaled("d2", 3, 0);
    let t = Instant::now();
    let started = rt.start(&s2, &p).await.unwrap();
    eprintln!("start-to-ready, 3 busybox httpd: {:?}", t.elapsed());
    rt.switch(&s2, started, &p).await.unwrap();
    assert_eq!(router.backends(&app).len(), 3);
    wait_until("scaled", Duration::from_secs(20), || async {
        let ps = rt.processes(&app).await.unwrap();
        ps.iter().map(|p| p.name.as_str()).collect::<Vec<_>>() == ["web.1", "web.2", "web.3"]
    })
    .await;

    // A worker that crashes after a second never gets ready.
    let s3 = spec(
        &app,
        2,
        "d3",
        &[("web", WEB, 1), ("worker", "sleep 1; exit 1", 1)],
    );
    let RuntimeError::NotReady(msg) = rt.start(&s3, &p).await.expect_err("crashing worker") else {
        panic!()
    };
    assert!(msg.contains("worker.1"), "{msg}");
    assert!(rt
        .list(Some(&app))
        .await
        .unwrap()
        .iter()
        .all(|i| i.deploy == "d2"));
    rt.destroy(&app).await.unwrap();
}

async fn collect_until(
    rx: &mut mpsc::Receiver<LogLine>,
    want: &str,
    limit: Duration,
) -> Vec<LogLine> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(l)) => {
                let done = l.text.contains(want);
                got.push(l);
                if done {
                    return got;
                }
            }
            _ => panic!(
                "no log line with {want:?}; got {:?}",
                got.iter().map(|l| (&l.source, &l.text)).collect::<Vec<_>>()
            ),
        }
    }
}

/// The app's logs without following: the last `tail` lines (all when
/// `None`) of the processes of `kind` (all when `None`).
async fn read_logs(
    rt: &LocalRuntime,
    app: &str,
    tail: Option<usize>,
    kind: Option<&str>,
) -> Vec<LogLine> {
    let (tx, mut rx) = mpsc::channel(100);
    let opts = LogOptions {
        follow: false,
        tail,
        kind: kind.map(str::to_string),
    };
    rt.logs(app, opts, tx).await.unwrap();
    let mut lines = Vec::new();
    while let Some(l) = rx.recv().await {
        lines.push(l);
    }
    lines
}

#[tokio::test]
async fn logs_tail_and_follow_across_a_rollout() {
    let (app, _c, rt, _router) = app_runtime("logs").await;
    let p = Progress::discard();
    let cmd = |tag: &str| {
        format!("for i in 1 2 3 4 5; do echo {tag}-out-$i; done; echo {tag}-err >&2; {WEB}")
    };
    let s1 = spec(&app, 1, "d1", &[("web", &cmd("one"), 2)]);
    let started = rt.start(&s1, &p).await.unwrap();
    rt.switch(&s1, started, &p).await.unwrap();

    // Tail 4 over two instances: the last 4 lines in time order.
    let lines = read_logs(&rt, &app, Some(4), None).await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    let t = |l: &LogLine| {
        time::OffsetDateTime::parse(&l.time, &time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert!(lines.windows(2).all(|w| t(&w[0]) <= t(&w[1])), "time order");
    assert!(lines
        .iter()
        .all(|l| l.source == "web.1" || l.source == "web.2"));

    // All of one type.
    let all = read_logs(&rt, &app, None, Some("web")).await;
    assert_eq!(all.len(), 12);
    assert_eq!(
        all.iter().filter(|l| l.text == "one-err").count(),
        2,
        "stderr included"
    );
    assert_eq!(all.iter().filter(|l| l.source == "web.2").count(), 6);
    assert!(read_logs(&rt, &app, None, Some("worker")).await.is_empty());

    // Follow: the tail, then a new release's lines.
    let (tx, mut rx) = mpsc::channel(100);
    let follower = {
        let rt = rt.clone();
        let app = app.clone();
        tokio::spawn(async move {
            rt.logs(
                &app,
                LogOptions {
                    follow: true,
                    tail: Some(1),
                    kind: None,
                },
                tx,
            )
            .await
        })
    };
    let first = collect_until(&mut rx, "", Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    let s2 = spec(&app, 2, "d2", &[("web", &cmd("two"), 1)]);
    let started = rt.start(&s2, &p).await.unwrap();
    rt.switch(&s2, started, &p).await.unwrap();
    let got = collect_until(&mut rx, "two-err", Duration::from_secs(10)).await;
    // The new instance's lines arrive under its own name. (Which of its
    // first lines arrive depends on when the follower picks it up.)
    assert!(
        got.iter()
            .any(|l| l.text.starts_with("two-") && l.source == "web.1"),
        "{got:?}"
    );
    assert!(
        !got.iter().any(|l| l.text.starts_with("one-")),
        "no repeats of the tail: {got:?}"
    );
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("logs returns once the receiver is gone")
        .unwrap()
        .unwrap();
    rt.destroy(&app).await.unwrap();
}

fn one_off(argv: &[&str]) -> OneOff {
    OneOff {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        tty: None,
        resize: None,
        timeout: Some(Duration::from_secs(30)),
        labels: BTreeMap::new(),
        memory_bytes: None,
        nano_cpus: None,
    }
}

/// Runs a one-off; returns (exit code, stdout, stderr).
async fn run(
    rt: &LocalRuntime,
    spec: &ReleaseSpec,
    cmd: OneOff,
    stdin: Option<&'static [u8]>,
) -> (Result<i64, RuntimeError>, String, String) {
    let (out_w, mut out_r) = tokio::io::duplex(1 << 16);
    let (err_w, mut err_r) = tokio::io::duplex(1 << 16);
    let io = OneOffIo {
        stdin: stdin.map(|b| Box::new(b) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        stdout: Box::new(out_w),
        stderr: Box::new(err_w),
    };
    let code = rt.run(spec, cmd, io).await;
    let (mut out, mut err) = (String::new(), String::new());
    out_r.read_to_string(&mut out).await.unwrap();
    err_r.read_to_string(&mut err).await.unwrap();
    (code, out, err)
}

#[tokio::test]
async fn run_passes_stdin_env_and_the_exit_status_and_always_removes_the_container() {
    let (app, _c, rt, _router) = app_runtime("run").await;
    let mut s = spec(&app, 7, "d1", &[]);
    let tricky = "two words \"quoted\" 'single' $HOME\nsecond line =";
    s.env = SecretEnv::new(vec![
        ("TRICKY".into(), tricky.into()),
        ("PORT".into(), "1".into()),
    ]);

    let t = Instant::now();
    let (code, out, err) = run(
        &rt,
        &s,
        one_off(&["sh", "-c", "cat; echo to-err >&2; exit 7"]),
        Some(b"hello stdin\n"),
    )
    .await;
    eprintln!("one-off round trip: {:?}", t.elapsed());
    assert_eq!(code.unwrap(), 7);
    assert_eq!(out, "hello stdin\n");
    assert_eq!(err, "to-err\n");

    let (code, out, _) = run(
        &rt,
        &s,
        one_off(&[
            "sh",
            "-c",
            "printf '%s|' \"$TRICKY\" \"$PORT\" \"$RACK_APP\" \"$RACK_RELEASE\"",
        ]),
        None,
    )
    .await;
    assert_eq!(code.unwrap(), 0);
    assert_eq!(out, format!("{tricky}|5000|{app}|v7|"));

    // argv stays argv: no shell.
    let (code, out, _) = run(&rt, &s, one_off(&["echo", "$HOME", "a;b"]), None).await;
    assert_eq!(code.unwrap(), 0);
    assert_eq!(out, "$HOME a;b\n");

    // A terminal: stdin and stdout are the tty; input is echoed by it.
    let mut cmd = one_off(&[
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo is-a-tty; read x; echo got-$x",
    ]);
    cmd.tty = Some((100, 30));
    // Like `ssh -t`: stdin stays open while the process runs.
    let (mut keyboard, stdin) = tokio::io::duplex(64);
    tokio::io::AsyncWriteExt::write_all(&mut keyboard, b"abc\n")
        .await
        .unwrap();
    let (out_w, mut out_r) = tokio::io::duplex(1 << 16);
    let (err_w, mut err_r) = tokio::io::duplex(1 << 16);
    let io = OneOffIo {
        stdin: Some(Box::new(stdin)),
        stdout: Box::new(out_w),
        stderr: Box::new(err_w),
    };
    let code = rt.run(&s, cmd, io).await;
    drop(keyboard);
    let (mut out, mut err) = (String::new(), String::new());
    out_r.read_to_string(&mut out).await.unwrap();
    err_r.read_to_string(&mut err).await.unwrap();
    assert_eq!(code.unwrap(), 0);
    assert!(out.contains("is-a-tty"), "{out:?}");
    assert!(out.contains("got-abc"), "{out:?}");
    assert!(err.is_empty());

    // The time limit.
    let mut cmd = one_off(&["sleep", "60"]);
    cmd.timeout = Some(Duration::from_secs(1));
    let t = Instant::now();
    let (code, _, _) = run(&rt, &s, cmd, None).await;
    assert!(code.is_err());
    assert!(t.elapsed() < Duration::from_secs(5));

    // A one-off dropped half-way is removed too.
    let fut = run(&rt, &s, one_off(&["sleep", "60"]), None);
    let _ = tokio::time::timeout(Duration::from_secs(2), fut).await;
    wait_until(
        "dropped one-off removed",
        Duration::from_secs(10),
        || async { rt.list(Some(&app)).await.unwrap().is_empty() },
    )
    .await;
    rt.destroy(&app).await.unwrap();
}

#[tokio::test]
async fn a_container_of_one_app_cannot_reach_another_apps_containers() {
    let a = app_name("iso-a");
    let b = app_name("iso-b");
    let _c = Cleanup::new(NS, &[&a, &b]);
    let (rt, router) = runtime(NS).await;
    let p = Progress::discard();
    for app in [&a, &b] {
        let s = spec(app, 1, "d1", &[("web", WEB, 1)]);
        let started = rt.start(&s, &p).await.unwrap();
        rt.switch(&s, started, &p).await.unwrap();
    }
    let ip_a = router.backends(&a)[0];
    let ip_b = router.backends(&b)[0];
    let s = spec(&a, 1, "d1", &[]);
    // busybox-static's wget crashes here (static NSS): speak HTTP with nc.
    let cmd = |addr: SocketAddr| OneOff {
        argv: vec![
            "sh".into(),
            "-c".into(),
            format!(
                "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {} {}",
                addr.ip(),
                addr.port()
            ),
        ],
        ..one_off(&[])
    };
    let (code, out, _) = run(&rt, &s, cmd(ip_a), None).await;
    assert_eq!(code.unwrap(), 0, "same app reachable");
    assert!(
        out.starts_with("HTTP/1.") && out.trim_end().ends_with("hello v1"),
        "{out}"
    );
    let (code, out, _) = run(&rt, &s, cmd(ip_b), None).await;
    assert_ne!(code.unwrap(), 0, "other app reachable: {out}");
    assert!(out.is_empty());
    for app in [&a, &b] {
        rt.destroy(app).await.unwrap();
    }
}

#[tokio::test]
async fn recover_keeps_the_current_release_recreates_missing_instances_and_removes_strays() {
    let ns = format!("rackrec{}", std::process::id());
    let app = app_name("rec");
    let gone = app_name("gone");
    let _c = Cleanup::new(&ns, &[&app, &gone]);
    let (rt, _) = runtime(&ns).await;
    let p = Progress::discard();

    let cur = spec(
        &app,
        2,
        "d2",
        &[("web", WEB, 2), ("worker", "exec sleep 1000", 1)],
    );
    let started = rt.start(&cur, &p).await.unwrap();
    rt.switch(&cur, started, &p).await.unwrap();
    // Strays: an uncommitted rollout, another app, an orphaned one-off.
    let stray = spec(&app, 3, "d3", &[("web", WEB, 1)]);
    rt.start(&stray, &p).await.unwrap();
    let other = spec(&gone, 1, "d1", &[("web", WEB, 1)]);
    rt.start(&other, &p).await.unwrap();
    let orphan = {
        let rt = rt.clone();
        let s = spec(&app, 2, "d2", &[]);
        tokio::spawn(async move { run(&rt, &s, one_off(&["sleep", "60"]), None).await })
    };
    wait_until("one-off running", Duration::from_secs(10), || async {
        rt.list(Some(&app))
            .await
            .unwrap()
            .iter()
            .any(|i| i.oneoff && i.state == "running")
    })
    .await;
    // Forget the task without letting it clean up (as after kill -9).
    std::mem::forget(orphan);

    let list = rt.list(Some(&app)).await.unwrap();
    let web2 = list
        .iter()
        .find(|i| i.deploy == "d2" && i.kind == "web" && i.number == 2)
        .unwrap();
    rt.force_remove(&web2.id).await;
    let web1 = list
        .iter()
        .find(|i| i.deploy == "d2" && i.kind == "web" && i.number == 1)
        .unwrap();
    rt.docker().stop_container(&web1.id, None).await.unwrap();

    // A new rack process: a fresh router, same namespace.
    let (rt2, router2) = runtime(&ns).await;
    let (p2, mut prx) = progress();
    let t = Instant::now();
    rt2.recover(std::slice::from_ref(&cur), &p2).await.unwrap();
    eprintln!(
        "recover (1 restart, 1 re-create, 3 strays): {:?}",
        t.elapsed()
    );
    eprintln!("{:?}", drain_lines(&mut prx));

    let backends = router2.backends(&app);
    assert_eq!(backends.len(), 2);
    for b in &backends {
        assert_eq!(page(*b).await, "hello v2");
    }
    let mut left: Vec<(String, String, u32, String)> = rt2
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.app, i.kind, i.number, i.deploy))
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            (app.clone(), "web".into(), 1, "d2".into()),
            (app.clone(), "web".into(), 2, "d2".into()),
            (app.clone(), "worker".into(), 1, "d2".into()),
        ]
    );
    assert!(router2.backends(&gone).is_empty());
    rt2.destroy(&app).await.unwrap();
    rt2.destroy(&gone).await.unwrap();
}

#[tokio::test]
async fn destroy_removes_containers_network_images_and_the_route_and_prune_keeps_what_it_is_told() {
    let (app, _c, rt, router) = app_runtime("destroy").await;
    let docker = rt.docker().clone();
    let p = Progress::discard();
    for tag in ["b1", "b2", "b3"] {
        let opts = bollard::query_parameters::TagImageOptionsBuilder::new()
            .repo(&format!("rack/{app}"))
            .tag(tag)
            .build();
        docker.tag_image(IMAGE, Some(opts)).await.unwrap();
    }
    let mut s = spec(&app, 1, "d1", &[("web", WEB, 1)]);
    s.image = format!("rack/{app}:b3");
    let started = rt.start(&s, &p).await.unwrap();
    rt.switch(&s, started, &p).await.unwrap();
    assert_eq!(router.backends(&app).len(), 1);

    let removed = rt
        .prune_images(
            &app,
            &[
                format!("rack/{app}:b1"),
                format!("rack/{app}:b3"),
                format!("rack/{app}:b9"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        removed,
        [format!("rack/{app}:b1")],
        "b3 is in use, b2 not named, b9 not there"
    );
    assert_eq!(
        rt.app_image_tags(&app).await.unwrap(),
        [format!("rack/{app}:b2"), format!("rack/{app}:b3")]
    );

    rt.destroy(&app).await.unwrap();
    assert!(rt.list(Some(&app)).await.unwrap().is_empty());
    assert!(router.backends(&app).is_empty());
    // Images are the caller's to name: b3 is no longer in use.
    assert_eq!(
        rt.app_image_tags(&app).await.unwrap(),
        [format!("rack/{app}:b2"), format!("rack/{app}:b3")]
    );
    let both = [format!("rack/{app}:b2"), format!("rack/{app}:b3")];
    assert_eq!(rt.prune_images(&app, &both).await.unwrap(), both);
    assert!(rt.app_image_tags(&app).await.unwrap().is_empty());
    let nets = docker.list_networks(None).await.unwrap();
    assert!(!nets
        .iter()
        .any(|n| n.name.as_deref() == Some(&rt.network_name(&app))));
    // Idempotent.
    rt.destroy(&app).await.unwrap();
}
