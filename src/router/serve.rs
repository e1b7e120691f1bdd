//! The router's accept loops (HTTP, and HTTPS when a listener is given):
//! connection cap, header read and handshake timeouts, graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::cidr::Cidrs;
use super::proxy::{handle, Ctx, MetricsApp};
use super::Router;
use crate::listener::{self, Cap};

/// Client connections (and WebSocket tunnels) open at once. Each may hold a
/// backend connection too, so this is about half the file descriptors a
/// default `ulimit -n` of 65536 allows, with room for everything else.
const MAX_CONNECTIONS: usize = 10_000;

/// The router's bounds against slow and many clients (`[router]`).
#[derive(Debug, Clone, Copy)]
pub struct RouterLimits {
    /// Connections one client address may hold open at once (HTTP and
    /// HTTPS together).
    pub max_connections_per_ip: usize,
    /// Time a client gets to send a request's headers, counted from when
    /// the connection starts waiting for them: it also bounds how long an
    /// idle keep-alive connection is kept.
    pub header_timeout: Duration,
}

impl Default for RouterLimits {
    fn default() -> Self {
        RouterLimits {
            max_connections_per_ip: 256,
            header_timeout: Duration::from_secs(5),
        }
    }
}

/// The answer to a plain-HTTP client over its address's connection limit
/// (a TLS client cannot read it: its connection is just closed).
const PER_IP_REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 39\r\n\r\ntoo many connections from your address\n";

/// How often an idle HTTP/2 connection is pinged, and how long a ping may
/// go unanswered.
const H2_KEEPALIVE: Duration = Duration::from_secs(30);

/// Time a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests one HTTP/2 connection may have in flight at once (each holds a
/// backend connection): the same order as the browsers' own limit.
const MAX_H2_STREAMS: u32 = 128;

/// After shutdown, how long running requests get to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// After shutdown, a keep-alive connection gets `Connection: close` on its
/// next response (and closes after it), as HTTP/1.1 clients expect; one
/// that sends nothing for this long is closed. Closing an idle connection
/// at once would race a client sending its next request on it just then.
const CLOSE_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Serves HTTP/1.1 on `listener` until `shutdown` becomes true (or its
/// sender is dropped), then lets running requests finish within a grace
/// period. `trusted_proxy` is a CIDR block (or a comma-separated list):
/// peers inside it keep their `X-Forwarded-*` headers.
///
/// Runs on `threads` dedicated OS threads (0: one per CPU), each with a
/// single-threaded tokio runtime of its own, all accepting on the one
/// listener: a connection and everything it spawns stay on the thread that
/// accepted it, so a request costs no wake-up of another worker thread
/// (about half the context switches of a multi-thread runtime). The
/// routing table, the connection cap and the backend pools are shared.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    trusted_proxy: Option<String>,
    shutdown: watch::Receiver<bool>,
    threads: usize,
    limits: RouterLimits,
) -> anyhow::Result<()> {
    let listeners = Listeners {
        http: listener,
        https: None,
    };
    serve_listeners(listeners, router, trusted_proxy, shutdown, threads, limits).await
}

/// The router's listeners: plain HTTP, and HTTPS (TLS with the router's
/// certificates, ALPN h2 and http/1.1) when given.
pub struct Listeners {
    pub http: TcpListener,
    pub https: Option<TcpListener>,
}

/// `serve` on both listeners: every router thread accepts on each, under
/// one connection cap.
pub async fn serve_listeners(
    listeners: Listeners,
    router: Router,
    trusted_proxy: Option<String>,
    shutdown: watch::Receiver<bool>,
    threads: usize,
    limits: RouterLimits,
) -> anyhow::Result<()> {
    let trusted = trusted_proxy
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Cidrs::parse)
        .transpose()?;
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let (stop_tx, stop) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let https_port = match &listeners.https {
        Some(l) => Some(l.local_addr()?.port()),
        None => None,
    };
    let tls = match listeners.https {
        Some(_) => Some(super::tls::server_config(router.tls())?),
        None => None,
    };
    let ctx = Arc::new(Ctx {
        router,
        trusted,
        stop,
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        https_port,
        per_ip: crate::listener::PerIp::new(limits.max_connections_per_ip),
        header_timeout: limits.header_timeout,
    });
    // Everything fallible before the first thread starts.
    let listener = listeners.http.into_std()?;
    let https = listeners.https.map(|l| l.into_std()).transpose()?;
    let mut workers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let https = match (&https, &tls) {
            (Some(l), Some(c)) => Some((l.try_clone()?, c.clone())),
            _ => None,
        };
        workers.push((runtime, listener.try_clone()?, https));
    }
    drop(listener);
    drop(https);
    // Stops the threads already running if starting another fails.
    let (abort_tx, abort) = watch::channel(false);
    let mut done = Vec::with_capacity(threads);
    let mut failed = None;
    for (i, (runtime, listener, https)) in workers.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        let (ctx, stop_tx) = (ctx.clone(), stop_tx.clone());
        let (shutdown, abort) = (shutdown.clone(), abort.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("rack-router-{i}"))
            .spawn(move || {
                let r = runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    let https = match https {
                        Some((l, c)) => Some((TcpListener::from_std(l)?, TlsAcceptor::from(c))),
                        None => None,
                    };
                    tokio::spawn(super::watchdog::tick());
                    accept_loop(listener, https, ctx, shutdown, abort, &stop_tx).await;
                    anyhow::Ok(())
                });
                // Dropping the runtime here cancels what the grace period
                // left running (and tasks that outlived their connection).
                drop(runtime);
                let _ = tx.send(r);
            });
        match spawned {
            Ok(_) => done.push(rx),
            Err(e) => {
                failed = Some(anyhow::Error::new(e).context("starting a router thread"));
                abort_tx.send_replace(true);
                break;
            }
        }
    }
    let mut result = failed.map_or(Ok(()), Err);
    for rx in done {
        let r = match rx.await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("a router thread panicked")),
        };
        if let (Err(e), true) = (r, result.is_ok()) {
            result = Err(e);
        }
    }
    drop(abort_tx);
    result
}

/// One router thread: accepts until `shutdown` (or `abort`), then gives its
/// connections the grace period.
async fn accept_loop(
    listener: TcpListener,
    https: Option<(TcpListener, TlsAcceptor)>,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
    mut abort: watch::Receiver<bool>,
    stop_tx: &watch::Sender<bool>,
) {
    let cap = Cap {
        slots: ctx.slots.clone(),
        refusal: b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n\r\ntoo many connections\n",
        backoff: Duration::from_millis(20),
        name: "router",
        quiet: true,
    };
    // A TLS client cannot read a plain-text refusal: close instead.
    let tls_cap = Cap {
        refusal: b"",
        ..cap.clone()
    };
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            (socket, peer, permit) = listener::accept(&listener, &cap) => {
                let Some(ip_slot) = per_ip_slot(&ctx, socket, peer, &mut tasks, PER_IP_REFUSAL) else {
                    continue;
                };
                let ctx = ctx.clone();
                tasks.spawn(async move {
                    let _permit = (permit, ip_slot.1);
                    serve_http(ctx, ip_slot.0, peer).await;
                });
            }
            (socket, peer, permit) = accept_tls(https.as_ref(), &tls_cap) => {
                let Some(ip_slot) = per_ip_slot(&ctx, socket, peer, &mut tasks, b"") else {
                    continue;
                };
                let socket = ip_slot.0;
                let (ctx, acceptor) = (ctx.clone(), https.as_ref().map(|h| h.1.clone()));
                tasks.spawn(async move {
                    let _permit = (permit, ip_slot.1);
                    if let Some(acceptor) = acceptor {
                        serve_https(ctx, acceptor, socket, peer).await;
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = stopped(&mut shutdown) => break,
            _ = stopped(&mut abort) => break,
        }
    }
    drop(listener);
    // Every thread sees `shutdown` at about the same time; the first one
    // here tells all connections (and tunnels) to stop.
    stop_tx.send_replace(true);
    let finish = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, finish).await.is_err() {
        tracing::debug!("router grace period over; closing remaining connections");
        tasks.shutdown().await;
    }
}

/// The next connection on the HTTPS listener; never, without one.
/// The client address's connection slot (none needed for a trusted proxy,
/// whose clients all share its address), or `None` when the address is at
/// its limit: the connection then gets `refusal` and is closed.
fn per_ip_slot(
    ctx: &Ctx,
    mut socket: TcpStream,
    peer: SocketAddr,
    tasks: &mut JoinSet<()>,
    refusal: &'static [u8],
) -> Option<(TcpStream, Option<crate::listener::IpSlot>)> {
    if ctx.trusted.as_ref().is_some_and(|t| t.contains(peer.ip())) {
        return Some((socket, None));
    }
    match ctx.per_ip.take(peer.ip()) {
        Some(slot) => Some((socket, Some(slot))),
        None => {
            tracing::debug!(%peer, "connection refused: too many from its address");
            tasks.spawn(async move {
                use tokio::io::AsyncWriteExt;
                let write = socket.write_all(refusal);
                let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
            });
            None
        }
    }
}

async fn accept_tls(
    https: Option<&(TcpListener, TlsAcceptor)>,
    cap: &Cap,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    match https {
        Some((l, _)) => listener::accept(l, cap).await,
        None => std::future::pending().await,
    }
}

/// `handle`, counted in the metrics; once the router stops, responses
/// say `Connection: close`.
async fn metered(
    ctx: Arc<Ctx>,
    peer: SocketAddr,
    secure: bool,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<super::proxy::RespBody>, std::convert::Infallible> {
    let (start, method) = (std::time::Instant::now(), req.method().clone());
    // `Connection` is an HTTP/1 header (HTTP/2 ends with GOAWAY).
    let h1 = req.version() < hyper::Version::HTTP_2;
    let _in_flight = crate::metrics::GaugeGuard::new(&crate::metrics::get().in_flight);
    let mut resp = handle(ctx.clone(), peer, secure, req).await?;
    let app = resp.extensions_mut().remove::<MetricsApp>();
    let app = app
        .as_ref()
        .map_or(crate::metrics::UNKNOWN_APP, |a| a.0.as_str());
    crate::metrics::request(app, &method, resp.status(), start.elapsed());
    if h1 && *ctx.stop.borrow() {
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    Ok(resp)
}

/// One plain HTTP/1.1 connection (with upgrades).
async fn serve_http(ctx: Arc<Ctx>, socket: TcpStream, peer: SocketAddr) {
    let header_timeout = ctx.header_timeout;
    let mut stop = ctx.stop.clone();
    let service = service_fn(move |req| metered(ctx.clone(), peer, false, req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => tokio::select! {
            r = conn.as_mut() => r,
            _ = tokio::time::sleep(CLOSE_IDLE_AFTER) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        },
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "router connection ended");
    }
}

/// One HTTPS connection: the handshake (bounded in time), then HTTP/2 or
/// HTTP/1.1 as ALPN chose.
async fn serve_https(ctx: Arc<Ctx>, acceptor: TlsAcceptor, socket: TcpStream, peer: SocketAddr) {
    let header_timeout = ctx.header_timeout;
    let mut stop = ctx.stop.clone();
    let stream = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "tls handshake failed");
                return;
            }
            Err(_) => return,
        },
        _ = stopped(&mut stop) => return,
    };
    let service = service_fn(move |req| metered(ctx.clone(), peer, true, req));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .keep_alive_interval(Some(H2_KEEPALIVE))
        .keep_alive_timeout(H2_KEEPALIVE);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "router tls connection ended");
    }
}

/// Resolves once the flag is true or its sender is gone. (Never holds the
/// watch's read guard across an await.)
pub(crate) async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}
