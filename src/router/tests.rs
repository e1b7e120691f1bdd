//! Router tests over real TCP on 127.0.0.1: small hyper backends started
//! here, clients speaking HTTP/1.1 with keep-alive.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;

use super::{serve, Router};

type TestBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn boxed<B>(b: B) -> TestBody
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    b.map_err(Into::into).boxed_unsync()
}

fn text(s: impl Into<Bytes>) -> TestBody {
    boxed(Full::new(s.into()))
}

/// A web instance: answers with its name, and a few test endpoints.
struct TestBackend {
    name: String,
    addr: SocketAddr,
    /// Opened by the test to let `/stream` send past its first chunk.
    gate: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl TestBackend {
    async fn start(name: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Arc::new(Notify::new());
        let (n, g) = (name.to_string(), gate.clone());
        let task = tokio::spawn(async move {
            // Dropping this set (when the task is aborted) kills every
            // connection: a stopped container.
            let mut conns = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let (n, g) = (n.clone(), g.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        backend_handle(n.clone(), g.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), svc)
                        .with_upgrades()
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        TestBackend {
            name: name.to_string(),
            addr,
            gate,
            task,
        }
    }

    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn backend_handle(
    name: String,
    gate: Arc<Notify>,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    if req.headers().contains_key(hyper::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(up) = on.await else { return };
            let mut io = TokioIo::new(up);
            let mut buf = [0u8; 4096];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("x-backend", name)
            .body(text(""))
            .unwrap();
        return Ok(resp);
    }
    let body = match req.uri().path() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            text(name)
        }
        "/headers" => text(format!(
            "xff={} proto={} xhost={} host={} secret={} conn={}",
            header("x-forwarded-for"),
            header("x-forwarded-proto"),
            header("x-forwarded-host"),
            header("host"),
            header("x-secret"),
            header("connection"),
        )),
        "/echo" => boxed(req.into_body()),
        "/stream" => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; CHUNK]);
                let _ = tx.send(Ok(Frame::data(chunk.clone()))).await;
                // The rest only once the client has seen the first chunk
                // through the router: a buffering proxy never gets here.
                if tokio::time::timeout(Duration::from_secs(10), gate.notified())
                    .await
                    .is_err()
                {
                    return;
                }
                for _ in 1..(20 * MIB / CHUNK) {
                    if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                        return;
                    }
                }
            });
            boxed(StreamBody::new(tokio_stream_from(rx)))
        }
        _ => text(name),
    };
    Ok(Response::new(body))
}

/// mpsc receiver → `Stream`, without pulling in tokio-stream.
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

struct TestRouter {
    router: Router,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_router(trusted: Option<&str>) -> TestRouter {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new();
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(serve(
        listener,
        router.clone(),
        trusted.map(str::to_string),
        rx,
        2,
        Default::default(),
    ));
    TestRouter {
        router,
        addr,
        shutdown,
        task,
    }
}

/// One keep-alive client connection.
struct Client {
    send: hyper::client::conn::http1::SendRequest<TestBody>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client { send }
    }

    async fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        body: TestBody,
    ) -> anyhow::Result<Response<Incoming>> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .body(body)?;
        self.send.ready().await?;
        Ok(self.send.send_request(req).await?)
    }

    /// GET, whole body as a string.
    async fn get(&mut self, host: &str, path: &str) -> anyhow::Result<(StatusCode, String)> {
        let resp = self.request("GET", host, path, text("")).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

async fn get_once(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, String) {
    Client::connect(addr).await.get(host, path).await.unwrap()
}

fn hosts(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn routes_by_host_case_and_port_insensitive() {
    let r = start_router(None).await;
    let (a, b) = (TestBackend::start("A").await, TestBackend::start("B").await);
    r.router.set_app(
        "a",
        hosts(&["a.localhost", "WWW.Example.com"]),
        vec![a.addr],
    );
    r.router.set_app("b", hosts(&["b.localhost"]), vec![b.addr]);
    let mut c = Client::connect(r.addr).await;
    for (host, body) in [
        ("a.localhost", "A"),
        ("A.LocalHost:8080", "A"),
        ("www.example.com.", "A"),
        ("b.localhost:1", "B"),
    ] {
        assert_eq!(
            c.get(host, "/").await.unwrap(),
            (StatusCode::OK, body.into()),
            "{host}"
        );
    }
    assert_eq!(r.router.backends("a"), vec![a.addr]);

    let (status, body) = c.get("nope.localhost:8080", "/").await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("nope.localhost"),
        "404 names the host: {body}"
    );

    r.router.set_app("c", hosts(&["c.localhost"]), vec![]);
    let (status, body) = c.get("c.localhost", "/").await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    // domains:add / domains:remove keep the backends.
    r.router
        .set_hosts("b", hosts(&["b.localhost", "api.example.org"]));
    assert_eq!(
        c.get("api.example.org", "/").await.unwrap(),
        (StatusCode::OK, "B".into())
    );
    r.router.set_hosts("b", hosts(&["b.localhost"]));
    assert_eq!(
        c.get("api.example.org", "/").await.unwrap().0,
        StatusCode::NOT_FOUND
    );

    r.router.remove_app("a");
    assert_eq!(
        c.get("a.localhost", "/").await.unwrap().0,
        StatusCode::NOT_FOUND
    );
    assert!(r.router.backends("a").is_empty());
    assert_eq!(
        c.get("b.localhost", "/").await.unwrap(),
        (StatusCode::OK, "B".into()),
        "the client connection survived all that"
    );

    r.shutdown.send_replace(true);
    tokio::time::timeout(Duration::from_secs(15), r.task)
        .await
        .expect("serve stops on shutdown")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn round_robin_over_three_backends() {
    let r = start_router(None).await;
    let bs = [
        TestBackend::start("b0").await,
        TestBackend::start("b1").await,
        TestBackend::start("b2").await,
    ];
    r.router.set_app(
        "rr",
        hosts(&["rr.localhost"]),
        bs.iter().map(|b| b.addr).collect(),
    );
    let mut c = Client::connect(r.addr).await;
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for _ in 0..30 {
        let (status, body) = c.get("rr.localhost", "/").await.unwrap();
        assert_eq!(status, StatusCode::OK);
        *seen.entry(body).or_default() += 1;
    }
    for b in &bs {
        assert_eq!(seen.get(&b.name), Some(&10), "{seen:?}");
    }
}

#[tokio::test]
async fn streams_20_mib_both_ways_without_buffering() {
    let r = start_router(None).await;
    let b = TestBackend::start("s").await;
    r.router.set_app("s", hosts(&["s.localhost"]), vec![b.addr]);

    // Response: the first chunk must arrive before the backend sends the rest.
    let mut c = Client::connect(r.addr).await;
    let resp = c
        .request("GET", "s.localhost", "/stream", text(""))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk streamed through")
        .unwrap()
        .unwrap();
    let mut total = first.into_data().unwrap().len();
    b.gate.notify_one();
    while let Some(frame) = body.frame().await {
        total += frame.unwrap().into_data().map_or(0, |d| d.len());
    }
    assert_eq!(total, 20 * MIB);

    // Request: the backend echoes what it has read so far; we see the echo
    // of the first chunk before sending the second.
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let resp = c
        .request(
            "POST",
            "s.localhost",
            "/echo",
            boxed(StreamBody::new(tokio_stream_from(rx))),
        )
        .await;
    let chunk = Bytes::from(vec![b'y'; CHUNK]);
    tx.send(Ok(Frame::data(chunk.clone()))).await.unwrap();
    let resp = resp.unwrap();
    let mut body = resp.into_body();
    let mut echoed = 0;
    while echoed < CHUNK {
        let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("echo of the first chunk before the rest is sent")
            .unwrap()
            .unwrap();
        echoed += f.into_data().map_or(0, |d| d.len());
    }
    let sender = tokio::spawn(async move {
        for _ in 1..(20 * MIB / CHUNK) {
            tx.send(Ok(Frame::data(chunk.clone()))).await.unwrap();
        }
    });
    while let Some(frame) = body.frame().await {
        echoed += frame.unwrap().into_data().map_or(0, |d| d.len());
    }
    sender.await.unwrap();
    assert_eq!(echoed, 20 * MIB);
}

/// Which generation a backend name (`gN-i`) belongs to.
fn generation(name: &str) -> Option<usize> {
    name.strip_prefix('g')?.split('-').next()?.parse().ok()
}

#[tokio::test]
async fn twenty_switches_under_load_fail_nothing() {
    const SWITCHES: usize = 20;
    let r = start_router(None).await;
    let router = r.router.clone();
    let start_set = |g: usize| async move {
        vec![
            TestBackend::start(&format!("g{g}-0")).await,
            TestBackend::start(&format!("g{g}-1")).await,
        ]
    };
    let first = start_set(0).await;
    router.set_app(
        "z",
        hosts(&["z.localhost"]),
        first.iter().map(|b| b.addr).collect(),
    );
    // `done` moves after set_app returns, `begun` before it is called: a
    // response is correct when its generation lies between `done` read
    // before the request and `begun` read after it.
    let begun = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let served = Arc::new(AtomicUsize::new(0));

    let mut clients = JoinSet::new();
    for _ in 0..8 {
        let (begun, done, stop, errors, served, addr) = (
            begun.clone(),
            done.clone(),
            stop.clone(),
            errors.clone(),
            served.clone(),
            r.addr,
        );
        clients.spawn(async move {
            let mut c = Client::connect(addr).await;
            while !stop.load(Ordering::SeqCst) {
                let lo = done.load(Ordering::SeqCst);
                match c.get("z.localhost", "/").await {
                    Ok((StatusCode::OK, name)) => {
                        let hi = begun.load(Ordering::SeqCst);
                        match generation(&name) {
                            Some(g) if (lo..=hi).contains(&g) => {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => errors
                                .lock()
                                .unwrap()
                                .push(format!("{name} outside generations {lo}..={hi}")),
                        }
                    }
                    Ok((status, body)) => errors.lock().unwrap().push(format!("{status}: {body}")),
                    Err(e) => {
                        errors.lock().unwrap().push(format!("transport: {e:#}"));
                        c = Client::connect(addr).await;
                    }
                }
            }
        });
    }
    let addr = r.addr;
    let slow = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        let t = Instant::now();
        let got = c.get("z.localhost", "/slow").await;
        (got, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut old = first;
    let mut drains = JoinSet::new();
    let mut check = Client::connect(r.addr).await;
    for g in 1..=SWITCHES {
        let new = start_set(g).await;
        begun.store(g, Ordering::SeqCst);
        router.set_app(
            "z",
            hosts(&["z.localhost"]),
            new.iter().map(|b| b.addr).collect(),
        );
        done.store(g, Ordering::SeqCst);
        // The new version is served right after the switch.
        let (status, name) = check.get("z.localhost", "/").await.unwrap();
        assert_eq!(
            (status, generation(&name)),
            (StatusCode::OK, Some(g)),
            "{name}"
        );
        // As the runtime does: drain the old set, then stop it.
        let retired = std::mem::replace(&mut old, new);
        let router = router.clone();
        drains.spawn(async move {
            let t = Instant::now();
            router
                .drain(
                    &retired.iter().map(|b| b.addr).collect::<Vec<_>>(),
                    Duration::from_secs(10),
                )
                .await;
            let waited = t.elapsed();
            for b in &retired {
                b.stop();
            }
            (g - 1, waited)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (got, took) = slow.await.unwrap();
    let (status, name) = got.expect("slow request survives every switch");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        generation(&name),
        Some(0),
        "the slow request finished on the backend it started on: {name}"
    );
    assert!(took >= Duration::from_secs(2));
    while let Some(d) = drains.join_next().await {
        let (g, waited) = d.unwrap();
        if g == 0 {
            assert!(
                waited >= Duration::from_millis(1500),
                "drain of the first set waited for the slow request ({waited:?})"
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    while clients.join_next().await.is_some() {}
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} failed requests: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert!(
        served.load(Ordering::Relaxed) > 100,
        "load was applied: {}",
        served.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn drain_waits_for_in_flight_then_gives_up_at_max() {
    let r = start_router(None).await;
    let (a, b) = (TestBackend::start("A").await, TestBackend::start("B").await);
    r.router.set_app("d", hosts(&["d.localhost"]), vec![a.addr]);
    // Warm a pooled connection to A; drain must drop it.
    assert_eq!(get_once(r.addr, "d.localhost", "/").await.1, "A");

    let addr = r.addr;
    let slow = tokio::spawn(async move { get_once(addr, "d.localhost", "/slow").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    r.router.set_app("d", hosts(&["d.localhost"]), vec![b.addr]);
    assert_eq!(get_once(r.addr, "d.localhost", "/").await.1, "B");

    // With a short max, drain returns at max although A is busy.
    let t = Instant::now();
    r.router.drain(&[a.addr], Duration::from_millis(300)).await;
    let short = t.elapsed();
    assert!(
        short >= Duration::from_millis(300) && short < Duration::from_millis(1200),
        "{short:?}"
    );

    let t = Instant::now();
    r.router.drain(&[a.addr], Duration::from_secs(10)).await;
    let waited = t.elapsed();
    // The backend's part is over: the client gets its answer at once.
    let got = tokio::time::timeout(Duration::from_millis(500), slow)
        .await
        .expect("drain returned only after the slow response was read");
    assert_eq!(got.unwrap(), (StatusCode::OK, "A".into()));
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // Nothing pooled to A survives the drain: a fresh drain returns at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    r.router.drain(&[a.addr], Duration::from_secs(10)).await;
    assert!(t.elapsed() < Duration::from_millis(100));
    assert!(
        r.router
            .inner
            .registry
            .lock()
            .unwrap()
            .get(&a.addr)
            .and_then(std::sync::Weak::upgrade)
            .is_none(),
        "nothing holds backend A any more"
    );
}

#[tokio::test]
async fn refused_connection_is_retried_on_another_backend() {
    let r = start_router(None).await;
    let live = TestBackend::start("live").await;
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    r.router
        .set_app("x", hosts(&["x.localhost"]), vec![dead, live.addr]);
    let mut c = Client::connect(r.addr).await;
    for _ in 0..6 {
        assert_eq!(
            c.get("x.localhost", "/").await.unwrap(),
            (StatusCode::OK, "live".into())
        );
        // Not idempotent, but never sent: retried too.
        let resp = c
            .request("POST", "x.localhost", "/echo", text("payload"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.into_body().collect().await.unwrap().to_bytes(),
            "payload"
        );
    }
    // Only a dead backend: 502, and the router keeps going.
    r.router.set_app("x", hosts(&["x.localhost"]), vec![dead]);
    assert_eq!(
        c.get("x.localhost", "/").await.unwrap().0,
        StatusCode::BAD_GATEWAY
    );
}

#[tokio::test]
async fn websocket_upgrade_round_trip_and_drain_closes_tunnel() {
    let r = start_router(None).await;
    let (ws, other) = (
        TestBackend::start("ws").await,
        TestBackend::start("other").await,
    );
    r.router
        .set_app("w", hosts(&["w.localhost"]), vec![ws.addr]);
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: w.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            s.read(&mut byte).await.unwrap(),
            1,
            "response head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("upgrade: websocket") && head.contains("connection: upgrade"),
        "{head}"
    );
    for msg in [
        &b"hello through the router"[..],
        &[0x81, 0x02, b'h', b'i'][..],
    ] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }

    // A switch leaves the tunnel up; a drain that runs out closes it.
    r.router
        .set_app("w", hosts(&["w.localhost"]), vec![other.addr]);
    s.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    s.read_exact(&mut back).await.unwrap();
    let t = Instant::now();
    r.router.drain(&[ws.addr], Duration::from_millis(300)).await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest))
        .await
        .expect("tunnel closed after the drain timeout");
    assert_eq!(n.unwrap_or(0), 0);
}

#[tokio::test]
async fn forwarded_headers_replaced_unless_trusted() {
    let b = TestBackend::start("h").await;
    for (trusted, want_xff, want_proto) in [
        (None, "127.0.0.1", "http"),
        (Some("127.0.0.0/8"), "6.6.6.6, 127.0.0.1", "https"),
    ] {
        let r = start_router(trusted).await;
        r.router.set_app("h", hosts(&["h.localhost"]), vec![b.addr]);
        let mut c = Client::connect(r.addr).await;
        let req = Request::builder()
            .uri("/headers")
            .header("host", "h.localhost:8080")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-proto", "https")
            .header("connection", "x-secret")
            .header("x-secret", "1")
            .body(text(""))
            .unwrap();
        c.send.ready().await.unwrap();
        let resp = c.send.send_request(req).await.unwrap();
        let body = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        assert!(
            body.contains(&format!("xff={want_xff} ")),
            "{trusted:?}: {body}"
        );
        assert!(
            body.contains(&format!("proto={want_proto} ")),
            "{trusted:?}: {body}"
        );
        assert!(
            body.contains("xhost=h.localhost:8080 host=h.localhost:8080 "),
            "{body}"
        );
        assert!(
            body.contains("secret=-"),
            "hop-by-hop header named in Connection is stripped: {body}"
        );
    }
}

#[tokio::test]
async fn bad_requests_get_4xx_and_the_router_keeps_serving() {
    let r = start_router(None).await;
    let b = TestBackend::start("ok").await;
    r.router
        .set_app("ok", hosts(&["ok.localhost"]), vec![b.addr]);
    for garbage in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: ok.localhost\r\nContent-Length: nope\r\n\r\n",
        &[0u8, 255, 13, 10, 13, 10][..],
    ] {
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .expect("bad request answered and closed");
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.is_empty() || out.starts_with("HTTP/1.1 4") || out.starts_with("HTTP/1.0 4"),
            "{out}"
        );
    }
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(&vec![b'a'; 1024 * 1024]).await.ok();
    drop(s);
    assert_eq!(
        get_once(r.addr, "ok.localhost", "/").await,
        (StatusCode::OK, "ok".into())
    );
}

/// Like busybox httpd: one request per connection, `Connection: close`.
async fn closing_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve_closing(listener);
    addr
}

fn serve_closing(listener: TcpListener) {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nclose",
                    )
                    .await;
                // Let the client close first, as wrk and the router do with
                // busybox httpd.
                let _ = s.read(&mut buf).await;
            });
        }
    });
}

/// The kernel's count of SYNs dropped because an accept queue was full.
fn listen_overflows() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next().unwrap(), tcp_ext.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap()
}

/// A listener whose accept queue is full (backlog 0, one connection
/// waiting): the kernel drops every further SYN, as it does for busybox
/// httpd (backlog 9) under load. Returns the waiting connection too.
async fn full_listener() -> (TcpListener, TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let waiting = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    (listener, waiting)
}

#[tokio::test]
async fn dropped_syns_are_hedged_and_a_backend_never_accepting_times_out() {
    let r = start_router(None).await;
    let (slow, _slow_waiting) = full_listener().await;
    let (stuck, _stuck_waiting) = full_listener().await;
    r.router.set_app(
        "slow",
        hosts(&["slow.localhost"]),
        vec![slow.local_addr().unwrap()],
    );
    r.router.set_app(
        "stuck",
        hosts(&["stuck.localhost"]),
        vec![stuck.local_addr().unwrap()],
    );
    let dropped_before = listen_overflows();
    let t0 = Instant::now();
    let slow_req = tokio::spawn(get_once(r.addr, "slow.localhost", "/"));
    let stuck_req = tokio::spawn(get_once(r.addr, "stuck.localhost", "/"));
    // Both first SYNs dropped; then `slow` makes room and serves.
    while listen_overflows() < dropped_before + 2 {
        assert!(t0.elapsed() < Duration::from_secs(2), "no SYN was dropped");
        tokio::task::yield_now().await;
    }
    serve_closing(slow);
    assert_eq!(slow_req.await.unwrap(), (StatusCode::OK, "close".into()));
    let hedged = t0.elapsed();
    // The kernel resends a dropped SYN after 1 s; the router's second
    // connect goes out after 250 ms.
    assert!(
        hedged < Duration::from_millis(900),
        "served after {hedged:?}: the connect was not hedged"
    );
    assert_eq!(stuck_req.await.unwrap().0, StatusCode::BAD_GATEWAY);
    let gave_up = t0.elapsed();
    assert!(
        gave_up >= Duration::from_millis(2900) && gave_up < Duration::from_secs(5),
        "a backend that never accepts answered 502 after {gave_up:?}, not after the 3 s connect timeout"
    );
}

#[tokio::test]
async fn backend_closing_every_connection_is_fine() {
    let r = start_router(None).await;
    let addr = closing_backend().await;
    r.router.set_app("c", hosts(&["c.localhost"]), vec![addr]);
    let mut c = Client::connect(r.addr).await;
    for _ in 0..20 {
        assert_eq!(
            c.get("c.localhost", "/").await.unwrap(),
            (StatusCode::OK, "close".into()),
            "client side stays keep-alive"
        );
    }
    // The router resets connections the backend asked to close, so they do
    // not pile up in TIME_WAIT (state 06) and exhaust ephemeral ports.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let port = format!(":{:04X}", addr.port());
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    // Only the router's side counts: a backend that closes first keeps its
    // own TIME_WAIT (in its container's network namespace).
    let time_wait: Vec<&str> = tcp
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|remote| remote.ends_with(&port))
        })
        .filter(|l| l.split_whitespace().nth(3) == Some("06"))
        .collect();
    assert!(
        time_wait.is_empty(),
        "router connections to the backend left in TIME_WAIT: {time_wait:?}"
    );
}

/// A held app's requests wait (up to `max_requests` of them; more get 503
/// at once) and go to the backends in place when the hold ends; one held
/// past `timeout` gets 503.
#[tokio::test]
async fn held_requests_wait_for_the_new_backend_within_bounds() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::with_hold_limits(super::HoldLimits {
        max_requests: 2,
        timeout: Duration::from_millis(500),
    });
    let (_shutdown, rx) = watch::channel(false);
    tokio::spawn(serve(
        listener,
        router.clone(),
        None,
        rx,
        1,
        Default::default(),
    ));
    let (old, new) = (
        TestBackend::start("old").await,
        TestBackend::start("new").await,
    );
    router.set_app("h", hosts(&["h.localhost"]), vec![old.addr]);
    assert_eq!(get_once(addr, "h.localhost", "/").await.1, "old");

    let hold = router.hold("h");
    let waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get_once(addr, "h.localhost", "/").await }))
        .collect();
    while hold.waiting() < 2 {
        tokio::task::yield_now().await;
    }
    // The queue is full: refused at once, not queued.
    let (status, body) = get_once(addr, "h.localhost", "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("restarting"), "{body}");
    // Other apps are not held.
    router.set_app("other", hosts(&["o.localhost"]), vec![old.addr]);
    assert_eq!(get_once(addr, "o.localhost", "/").await.1, "old");
    router.set_app("h", hosts(&["h.localhost"]), vec![new.addr]);
    drop(hold);
    for w in waiting {
        assert_eq!(w.await.unwrap(), (StatusCode::OK, "new".to_string()));
    }
    // A hold that outlasts the timeout answers 503.
    let hold = router.hold("h");
    let (status, _) = get_once(addr, "h.localhost", "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    drop(hold);
    assert_eq!(get_once(addr, "h.localhost", "/").await.1, "new");
}
