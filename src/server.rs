//! The accept loop: connection limit, pre-auth timeout, graceful shutdown,
//! and the housekeeper (repacks, memory trims) and the timers' scheduler
//! that live as long as it.
//!
//! `run` takes an already bound listener so tests can bind port 0.

use std::sync::Arc;

use anyhow::Result;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::listener::{self, Cap};
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
    let cap = Cap {
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        refusal: b"rack: too many connections; try again shortly\r\n",
        backoff: std::time::Duration::from_millis(50),
        name: "ssh",
        quiet: false,
    };
    let mut tasks = JoinSet::new();
    rack.stopping.send_replace(false);
    let housekeeper = crate::housekeeping::Housekeeper::start();
    let scheduler = crate::timers::Scheduler::start(rack.clone());
    let keeper = crate::resources::schedule::Keeper::start(rack.clone());
    loop {
        tokio::select! {
            (socket, peer, permit) = listener::accept(&listener, &cap) => {
                let config = config.clone();
                let rack = rack.clone();
                let preauth = limits.preauth_timeout;
                tasks.spawn(async move {
                    let _permit = permit;
                    let _open = crate::metrics::GaugeGuard::new(&crate::metrics::get().ssh_sessions);
                    let state = Arc::new(ConnectionState::default());
                    let handler = Connection::new(rack, Some(peer), state.clone());
                    let session = match tokio::time::timeout(preauth, russh::server::run_stream(config, PreauthDeadline::new(socket, state.clone(), preauth), handler)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "handshake failed");
                            return;
                        }
                        Err(_) => {
                            crate::metrics::refusal(crate::metrics::Refusal::preauth_timeout);
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
    rack.stopping.send_replace(true);
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
    scheduler.stop().await;
    keeper.stop().await;
    housekeeper.stop(limits.shutdown_grace).await;
    Ok(())
}
