//! Holding an app's new requests while its only web instance is swapped
//! (the stop-first rollout of a single-writer process type).
//!
//! `Router::hold` marks the app's route as held: from then on a request
//! for the app does not pick a backend but waits (`Waiter::wait`), counted
//! against `[router] hold_max_requests` and bounded by `hold_timeout_secs`
//! (beyond either it gets a 503). Requests already in flight are not
//! touched, so `drain` can still wait for them. Dropping the `Hold` ends it
//! (after `set_app` put the new, or the old, backends in place): the
//! waiters wake, pick again and are sent to whatever the route names then.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Router;

/// `[router]` settings of holding.
#[derive(Debug, Clone)]
pub struct HoldLimits {
    /// Requests waiting at once per held app; more get 503 at once.
    pub max_requests: usize,
    /// How long one request waits before it gets 503.
    pub timeout: Duration,
}

impl Default for HoldLimits {
    fn default() -> Self {
        HoldLimits {
            max_requests: 1024,
            timeout: Duration::from_secs(30),
        }
    }
}

impl HoldLimits {
    pub fn from_file(f: &crate::config::RouterFile) -> anyhow::Result<HoldLimits> {
        let d = HoldLimits::default();
        let l = HoldLimits {
            max_requests: f.hold_max_requests.unwrap_or(d.max_requests),
            timeout: f
                .hold_timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(d.timeout),
        };
        if l.max_requests > 1_000_000 || l.timeout > Duration::from_secs(3600) {
            anyhow::bail!(
                "router: hold_max_requests is at most 1000000, hold_timeout_secs at most 3600"
            );
        }
        Ok(l)
    }
}

/// One hold of one app's route.
pub(crate) struct HoldState {
    released: watch::Sender<bool>,
    waiting: AtomicUsize,
}

impl HoldState {
    pub(crate) fn new() -> HoldState {
        HoldState {
            released: watch::channel(false).0,
            waiting: AtomicUsize::new(0),
        }
    }

    /// A place in the queue, or `None` when it is full. Called under the
    /// table's read lock, so a release cannot slip between the route's
    /// check and the subscription.
    pub(crate) fn enter(self: &Arc<Self>, max: usize) -> Option<Waiter> {
        let n = self.waiting.fetch_add(1, Ordering::SeqCst);
        let waiter = Waiter {
            state: self.clone(),
            rx: self.released.subscribe(),
        };
        (n < max).then_some(waiter)
    }
}

/// A request waiting for a held app. Leaves the queue when dropped.
pub(crate) struct Waiter {
    state: Arc<HoldState>,
    rx: watch::Receiver<bool>,
}

impl Waiter {
    /// `true` once the hold ends, `false` when `timeout` passes first.
    pub(crate) async fn wait(mut self, timeout: Duration) -> bool {
        tokio::select! {
            r = self.rx.wait_for(|released| *released) => r.is_ok(),
            _ = super::watchdog::after(timeout) => false,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.state.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An app's requests are held while this lives (`Router::hold`).
pub struct Hold {
    pub(super) router: Router,
    pub(super) app: String,
    pub(super) state: Arc<HoldState>,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hold({})", self.app)
    }
}

impl Hold {
    /// Requests waiting right now.
    pub fn waiting(&self) -> usize {
        self.state.waiting.load(Ordering::SeqCst)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.router.unhold(&self.app, &self.state);
        self.state.released.send_replace(true);
    }
}
