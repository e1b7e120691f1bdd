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
                        progress.stage(super::WAITING);
                        said = true;
                    }
                    tracing::debug!(app, holder = %other.owner, "deploy lease held elsewhere");
                    tokio::time::sleep(self.poll).await;
                }
            }
        }
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
mod tests {
    use super::*;
    use crate::aws::state::Head;
    use crate::aws::testing;

    async fn bucket(prefix: &str) -> S3State {
        let ctx = testing::context(prefix).await.expect("moto");
        let bucket = format!("rack-{}-lease", ctx.rack);
        ctx.s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let state = S3State::new(ctx, bucket);
        state
            .create_head(&Head {
                app: "app".into(),
                ..Head::default()
            })
            .await
            .unwrap();
        state
    }

    /// Two rack instances on one bucket: the second waits (and says so)
    /// until the first gives the lease back; a holder that died without
    /// giving it back loses it when it expires.
    #[tokio::test]
    async fn one_holder_across_instances_and_a_dead_holder_expires() {
        let state = bucket("lease").await;
        let fast = Duration::from_millis(50);
        let a = S3Lease::new(state.clone()).with_timing(Duration::from_secs(30), fast);
        let b = S3Lease::new(state.clone()).with_timing(Duration::from_secs(30), fast);
        let held = a.acquire("app", &Progress::discard(), false).await.unwrap();

        let (progress, mut lines) = Progress::channel();
        let waiter = tokio::spawn(async move {
            let h = b.acquire("app", &progress, false).await.unwrap();
            (h.counter(), b)
        });
        // The waiter says it waits: an event, not a sleep.
        let line = lines.recv().await.expect("a waiting line");
        assert!(line.contains(super::super::WAITING), "{line}");
        assert!(!waiter.is_finished());
        let first = held.counter();
        drop(held);
        let (second, b) = waiter.await.unwrap();
        assert_eq!(second, first + 1, "the counter fences the new holder");

        // A holder that dies: its lease is never given back, so the next
        // one waits for the expiry, then takes it over.
        let short = S3Lease::new(state.clone()).with_timing(Duration::from_millis(300), fast);
        drop(b);
        // b's give-back runs in the background; wait for the head to show
        // it (polling the store, the event itself).
        loop {
            let (h, _) = state.head("app").await.unwrap().unwrap();
            if !h.lease.unwrap().is_live(crate::aws::state::now_ms()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let dead = short
            .acquire("app", &Progress::discard(), false)
            .await
            .unwrap();
        let dead_counter = dead.counter();
        dead.heartbeat.abort();
        std::mem::forget(dead);
        let c = S3Lease::new(state.clone()).with_timing(Duration::from_secs(30), fast);
        let taken = c.acquire("app", &Progress::discard(), false).await.unwrap();
        assert_eq!(taken.counter(), dead_counter + 1);
        let (h, _) = state.head("app").await.unwrap().unwrap();
        assert_eq!(h.lease.unwrap().owner, c.owner);
    }
}
