//! The router's accept loop: connection cap, header read timeout, graceful
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::cidr::Cidrs;
use super::proxy::{handle, Ctx};
use super::Router;

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

/// Serves HTTP/1.1 on `listener` until `shutdown` becomes true (or its
/// sender is dropped), then lets running requests finish within a grace
/// period. `trusted_proxy` is a CIDR block (or a comma-separated list):
/// peers inside it keep their `X-Forwarded-*` headers.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    trusted_proxy: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let trusted = trusted_proxy
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Cidrs::parse)
        .transpose()?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        router,
        trusted,
        stop: stop.clone(),
        slots: slots.clone(),
    });
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (mut socket, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::debug!(error = %e, "router accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "router connection refused: too many connections");
                    tokio::spawn(async move {
                        let msg = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n\r\ntoo many connections\n";
                        let _ = tokio::time::timeout(Duration::from_secs(1), socket.write_all(msg)).await;
                    });
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let ctx = ctx.clone();
                let mut stop = stop.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    let service = service_fn(move |req| handle(ctx.clone(), peer, req));
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(socket), service)
                        .with_upgrades();
                    tokio::pin!(conn);
                    let ended = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = stopped(&mut stop) => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = ended {
                        tracing::debug!(%peer, error = %e, "router connection ended");
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    let finish = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, finish).await.is_err() {
        tracing::debug!("router grace period over; closing remaining connections");
        tasks.shutdown().await;
    }
    Ok(())
}

/// Resolves once the flag is true or its sender is gone. (Never holds the
/// watch's read guard across an await.)
pub(crate) async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}
