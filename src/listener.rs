//! Accepting TCP connections under a connection cap, for the SSH server
//! and the app router alike: a connection over the cap gets a one-line
//! refusal and is closed (no queue), and a failing `accept` (EMFILE and
//! friends) backs off instead of spinning.
//!
//! Does not know: what is served on the connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How one listener accepts.
#[derive(Clone)]
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

/// Connections open at once per client address, so that one client cannot
/// take every slot of a listener from everyone else.
#[derive(Debug)]
pub(crate) struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    pub fn new(max: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection of `ip`, `None` when it has its
    /// limit already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().expect("per-IP counts poisoned");
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            owner: self.clone(),
            ip,
        })
    }
}

/// One connection's place in [`PerIp`], given back when dropped.
#[derive(Debug)]
pub(crate) struct IpSlot {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().expect("per-IP counts poisoned");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
