//! Accepting TCP connections under a connection cap, for the SSH server
//! and the app router alike: a connection over the cap gets a one-line
//! refusal and is closed (no queue), and a failing `accept` (EMFILE and
//! friends) backs off instead of spinning.
//!
//! Does not know: what is served on the connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How one listener accepts.
pub(crate) struct Cap {
    /// One permit per open connection.
    pub slots: Arc<Semaphore>,
    /// Written to a connection refused for want of a slot.
    pub refusal: &'static [u8],
    /// The pause after a failed `accept`.
    pub backoff: Duration,
    /// Names the listener in the logs (`ssh`, `router`); the router logs
    /// refusals and accept failures at debug, the SSH server at warn.
    pub name: &'static str,
    pub quiet: bool,
}

/// The next connection that gets a slot, with its permit (held for as
/// long as the connection is served). Cancel-safe.
pub(crate) async fn accept(
    listener: &TcpListener,
    cap: &Cap,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    loop {
        let (mut socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                if cap.quiet {
                    tracing::debug!(listener = cap.name, error = %e, "accept failed");
                } else {
                    tracing::warn!(listener = cap.name, error = %e, "accept failed");
                }
                tokio::time::sleep(cap.backoff).await;
                continue;
            }
        };
        let Ok(permit) = cap.slots.clone().try_acquire_owned() else {
            if cap.name == "ssh" {
                crate::metrics::refusal(crate::metrics::Refusal::too_many_connections);
            }
            if cap.quiet {
                tracing::debug!(listener = cap.name, %peer, "connection refused: too many connections");
            } else {
                tracing::warn!(listener = cap.name, %peer, "connection refused: too many connections");
            }
            let refusal = cap.refusal;
            tokio::spawn(async move {
                let write = socket.write_all(refusal);
                let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
            });
            continue;
        };
        let _ = socket.set_nodelay(true);
        return (socket, peer, permit);
    }
}
