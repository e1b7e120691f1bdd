//! The router's accept loop: connection cap, header read timeout, graceful
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinSet;

use super::cidr::Cidrs;
use super::proxy::{handle, Ctx, MetricsApp};
use super::Router;
use crate::listener::{self, Cap};

/// Client connections (and WebSocket tunnels) open at once. Each may hold a
/// backend connection too, so this is about half the file descriptors a
/// default `ulimit -n` of 65536 allows, with room for everything else.
const MAX_CONNECTIONS: usize = 10_000;

/// Time a client gets to send a request's headers, counted from when the
/// connection starts waiting for them: it also bounds how long an idle
/// keep-alive connection is kept.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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
    let ctx = Arc::new(Ctx {
        router,
        trusted,
        stop,
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    });
    // Everything fallible before the first thread starts.
    let listener = listener.into_std()?;
    let mut workers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        workers.push((runtime, listener.try_clone()?));
    }
    drop(listener);
    // Stops the threads already running if starting another fails.
    let (abort_tx, abort) = watch::channel(false);
    let mut done = Vec::with_capacity(threads);
    let mut failed = None;
    for (i, (runtime, listener)) in workers.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        let (ctx, stop_tx) = (ctx.clone(), stop_tx.clone());
        let (shutdown, abort) = (shutdown.clone(), abort.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("rack-router-{i}"))
            .spawn(move || {
                let r = runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    tokio::spawn(super::watchdog::tick());
                    accept_loop(listener, ctx, shutdown, abort, &stop_tx).await;
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
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            (socket, peer, permit) = listener::accept(&listener, &cap) => {
                let ctx = ctx.clone();
                let mut stop = ctx.stop.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    let service = service_fn(move |req| {
                        let ctx = ctx.clone();
                        async move {
                            let (start, method) = (std::time::Instant::now(), req.method().clone());
                            let _in_flight = crate::metrics::GaugeGuard::new(&crate::metrics::get().in_flight);
                            let mut resp = handle(ctx.clone(), peer, req).await?;
                            let app = resp.extensions_mut().remove::<MetricsApp>();
                            let app = app.as_ref().map_or(crate::metrics::UNKNOWN_APP, |a| a.0.as_str());
                            crate::metrics::request(app, &method, resp.status(), start.elapsed());
                            if *ctx.stop.borrow() {
                                resp.headers_mut().insert(
                                    hyper::header::CONNECTION,
                                    hyper::header::HeaderValue::from_static("close"),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
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

/// Resolves once the flag is true or its sender is gone. (Never holds the
/// watch's read guard across an await.)
pub(crate) async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}
