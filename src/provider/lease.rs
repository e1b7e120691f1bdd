//! The deploy lock across rack instances on the aws provider: the lease in
//! the app's head object ([`S3State::try_acquire_lease`]), taken after the
//! in-process lock, renewed by a heartbeat while held, given back on drop.
//!
//! A holder that dies stops renewing, so its lease expires after [`TTL`] and
//! the next deploy takes it over: like the in-memory lock, it never outlives
//! its process for long. This module knows the lease's rules only through
//! `S3State`; it does not know what the deploy does.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::lock::{Acquire, DeployGuard, DeployLock, Locks};
use crate::aws::state::{Lease, LeaseOutcome, S3State};
use crate::progress::Progress;

/// How long a lease lives without a heartbeat.
pub const TTL: Duration = Duration::from_secs(60);
/// The heartbeat renews well before the lease could expire.
const HEARTBEAT: Duration = Duration::from_secs(20);
/// How often a waiting deploy asks again.
const POLL: Duration = Duration::from_secs(1);

pub struct S3Lease {
    state: S3State,
    /// This process: host, pid and a random part, so two racks (or one
    /// restarted) never mistake each other's lease for their own.
    owner: String,
    ttl: Duration,
    poll: Duration,
}

impl S3Lease {
    pub fn new(state: S3State) -> S3Lease {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let owner = format!(
            "{}:{}:{:08x}",
            host.trim(),
            std::process::id(),
            rand::random::<u32>()
        );
        S3Lease {
            state,
            owner,
            ttl: TTL,
            poll: POLL,
        }
    }

    #[cfg(test)]
    fn with_timing(mut self, ttl: Duration, poll: Duration) -> S3Lease {
        self.ttl = ttl;
        self.poll = poll;
        self
    }

    /// Waits for the app's lease (saying so once, unless the caller already
    /// did) and starts its heartbeat.
    pub async fn acquire(
        &self,
        app: &str,
        progress: &Progress,
        mut said: bool,
    ) -> Result<HeldLease, String> {
        loop {
            match self
                .state
                .try_acquire_lease(app, &self.owner, self.ttl)
                .await
                .map_err(|e| format!("taking the deploy lock of {app}: {e}"))?
            {
                LeaseOutcome::Acquired(lease) => {
                    return Ok(HeldLease::start(self.state.clone(), app, lease, self.ttl))
                }
                LeaseOutcome::Held(other) => {
                    if !said {
                        progress.stage(super::lock::WAITING);
                        said = true;
                    }
                    tracing::debug!(app, holder = %other.owner, "deploy lease held elsewhere");
                    tokio::time::sleep(self.poll).await;
                }
            }
        }
    }
}

/// The aws provider's deploy lock: the in-process lock, then the app's
/// lease in the bucket.
pub struct LeasedLocks {
    local: Locks,
    lease: S3Lease,
}

impl LeasedLocks {
    pub fn new(state: S3State) -> LeasedLocks {
        LeasedLocks {
            local: Locks::default(),
            lease: S3Lease::new(state),
        }
    }
}

impl DeployLock for LeasedLocks {
    fn acquire<'a>(&'a self, app: &'a str, progress: &'a Progress) -> Acquire<'a> {
        Box::pin(async move {
            let (local, said) = self.local.acquire_local(app, progress).await;
            let held = self.lease.acquire(app, progress, said).await?;
            Ok(DeployGuard::new(vec![Box::new(local), Box::new(held)]))
        })
    }
}

/// A lease we hold; renewed in the background until dropped.
pub struct HeldLease {
    state: S3State,
    app: String,
    lease: Lease,
    heartbeat: JoinHandle<()>,
}

impl HeldLease {
    fn start(state: S3State, app: &str, lease: Lease, ttl: Duration) -> HeldLease {
        let beat = ttl.min(HEARTBEAT * 3) / 3;
        let (s, a, mut l) = (state.clone(), app.to_string(), lease.clone());
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(beat).await;
                match s.renew_lease(&a, &l, ttl).await {
                    Ok(renewed) => l = renewed,
                    Err(e) => tracing::warn!(app = %a, error = %e, "renewing the deploy lease"),
                }
            }
        });
        HeldLease {
            state,
            app: app.to_string(),
            lease,
            heartbeat,
        }
    }

    #[cfg(test)]
    fn counter(&self) -> u64 {
        self.lease.counter
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.heartbeat.abort();
        let (state, app, lease) = (self.state.clone(), self.app.clone(), self.lease.clone());
        // Giving it back early is a courtesy: if this never runs (the
        // runtime is shutting down), the lease simply expires.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = state.release_lease(&app, &lease).await {
                    tracing::warn!(app = %app, error = %e, "giving back the deploy lease");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests;
