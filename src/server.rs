//! The accept loop: connection limit, pre-auth timeout, graceful shutdown.
//!
//! `run` takes an already bound listener so tests can bind port 0.

use std::sync::Arc;

use anyhow::Result;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::ssh::{self, Connection, ConnectionState, PreauthDeadline};
use crate::state::Rack;

/// Serves SSH on `listener` until `shutdown` turns true, then lets running
/// sessions finish within the configured grace period.
pub async fn run(
    listener: TcpListener,
    rack: Arc<Rack>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let host_key = rack.provider.host_key.clone();
    tracing::info!(fingerprint = %ssh::hostkey::fingerprint(&host_key), "host key");
    let config = ssh::config(&rack, host_key);
    let limits = rack.settings.limits.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (mut socket, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "connection refused: too many connections");
                    tokio::spawn(async move {
                        let _ = socket.write_all(b"rack: too many connections; try again shortly\r\n").await;
                    });
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let config = config.clone();
                let rack = rack.clone();
                let preauth = limits.preauth_timeout;
                tasks.spawn(async move {
                    let _permit = permit;
                    let state = Arc::new(ConnectionState::default());
                    let handler = Connection::new(rack, Some(peer), state.clone());
                    let session = match tokio::time::timeout(preauth, russh::server::run_stream(config, PreauthDeadline::new(socket, state.clone(), preauth), handler)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%peer, "closed: no SSH identification in time");
                            return;
                        }
                    };
                    if let Err(e) = session.await {
                        tracing::debug!(%peer, error = %e, "session ended");
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            changed = shutdown.changed() => {
                // A dropped sender means nobody can ask us to stop any more
                // gracefully: stop now rather than spin.
                if changed.is_err() || *shutdown.borrow() { break; }
            }
        }
    }
    drop(listener);
    tracing::info!(
        sessions = tasks.len(),
        "shutting down; waiting for running sessions"
    );
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining sessions");
        tasks.shutdown().await;
    }
    Ok(())
}
