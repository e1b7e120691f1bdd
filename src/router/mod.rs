//! The built-in HTTP router of the local provider: a reverse proxy (hyper,
//! HTTP/1.1) that sends each request to one of the ready web instances of
//! the app named by its `Host`.
//!
//! It owns the routing table (host names → app → backend addresses), the
//! pooled keep-alive connections to backends, the per-backend count of
//! requests and WebSocket tunnels in flight, and the drain that lets a
//! rollout stop old instances without failing a request.
//!
//! It knows nothing of Docker, git, releases or the store: the local runtime
//! hands it plain host names and `IP:port` pairs (`set_app`), then calls
//! `drain` on the addresses it is about to stop.
//!
//! Zero downtime rests on three rules:
//! - a request picks its backend once, when it starts, and counts itself in
//!   flight on it (under the table's read lock, so a switch either happened
//!   before the pick or after it: never halfway);
//! - `drain` waits until nothing is in flight to the old backends, closes
//!   their idle pooled connections and stops pooling to them;
//! - while a single-writer web instance is swapped (`hold`), new requests
//!   for the app wait in a bounded queue instead of picking a backend, and
//!   pick once the new backends are in place (`hold.rs`);
//! - a request whose backend connection fails before anything was sent
//!   (refused: the instance just stopped) is retried once on another current
//!   backend; one that was sent but got no response is retried only when it
//!   is idempotent and has no body.

mod cidr;
mod hold;
mod proxy;
mod serve;
#[cfg(test)]
mod tests;
mod watchdog;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

pub use hold::{Hold, HoldLimits};
pub use serve::serve;
pub(crate) use serve::stopped;

use hold::{HoldState, Waiter};

/// Idle keep-alive connections kept per backend. More than the number of
/// requests a backend serves at once buys nothing; fewer costs reconnects
/// under load.
const MAX_IDLE_PER_BACKEND: usize = 256;

/// An idle pooled connection older than this is not reused. Many app servers
/// close idle keep-alive connections after a few seconds (gunicorn: 2 s,
/// node: 5 s); reusing one just as it closes fails the request, so stay
/// below them. A fresh connection on the container network costs ~0.1 ms.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The routing table and backend registry. Cheap to clone: every clone
/// shares the same table.
#[derive(Clone, Default)]
pub struct Router {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    table: RwLock<Table>,
    /// Every backend a request or the table may still hold, by address, so
    /// `drain` can find backends the table no longer names.
    registry: Mutex<HashMap<SocketAddr, Weak<Backend>>>,
    /// How held requests are bounded.
    hold_limits: HoldLimits,
}

#[derive(Default)]
struct Table {
    apps: BTreeMap<String, AppEntry>,
    /// Lower-case host name → the route of the app that serves it.
    hosts: HashMap<String, Arc<Route>>,
}

struct AppEntry {
    hosts: Vec<String>,
    route: Arc<Route>,
}

/// One app's current backends. Replaced as a whole on every switch.
pub(crate) struct Route {
    app: String,
    backends: Vec<Arc<Backend>>,
    next: AtomicUsize,
    /// Set while the app's requests are held (`Router::hold`).
    hold: Option<Arc<HoldState>>,
}

/// One backend address (a web instance) with its pooled connections and
/// what is in flight to it.
pub(crate) struct Backend {
    addr: SocketAddr,
    /// Requests between their pick and the end of their response body.
    in_flight: AtomicUsize,
    /// Upgraded (WebSocket) connections currently spliced to this backend.
    tunnels: AtomicUsize,
    /// Woken whenever `in_flight` or `tunnels` drops to zero.
    idle_signal: Notify,
    /// Set by `drain` once no route names this backend: stop pooling.
    retired: AtomicBool,
    /// Turned true when `drain` gives up waiting: open tunnels close.
    close_tunnels: watch::Sender<bool>,
    pool: Mutex<Vec<Pooled>>,
}

struct Pooled {
    sender: proxy::Sender,
    since: Instant,
}

/// The outcome of picking a backend for a request.
pub(crate) enum Pick {
    NoApp,
    NoBackend(String),
    /// The request's place in flight, and the app (for the metrics).
    Backend(InFlight, String),
    /// The app is held: wait, then pick again.
    Held(Waiter),
    /// The app is held and its queue is full.
    HoldFull,
}

/// Counts one request in flight on a backend until dropped.
pub(crate) struct InFlight {
    backend: Arc<Backend>,
}

/// Counts one spliced upgraded connection on a backend until dropped.
pub(crate) struct Tunnel {
    backend: Arc<Backend>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// A router whose holds are bounded by `limits` (`[router]`).
    pub fn with_hold_limits(limits: HoldLimits) -> Router {
        Router {
            inner: Arc::new(Inner {
                hold_limits: limits,
                ..Inner::default()
            }),
        }
    }

    pub(crate) fn hold_limits(&self) -> &HoldLimits {
        &self.inner.hold_limits
    }

    /// Holds the app's new requests (see `hold.rs`) until the returned
    /// `Hold` is dropped. Its backends stay as they are, so requests in
    /// flight finish and `drain` still sees them. A `set_app` while held
    /// ends the hold for new requests (they pick the new backends); the
    /// waiting ones wake when the `Hold` drops.
    pub fn hold(&self, app: &str) -> Hold {
        let state = Arc::new(HoldState::new());
        let mut table = self
            .inner
            .table
            .write()
            .expect("router table lock poisoned");
        if let Some(entry) = table.apps.get_mut(app) {
            entry.route = Arc::new(Route {
                app: app.to_string(),
                backends: entry.route.backends.clone(),
                next: AtomicUsize::new(entry.route.next.load(Ordering::Relaxed)),
                hold: Some(state.clone()),
            });
            table.rebuild_hosts();
        }
        Hold {
            router: self.clone(),
            app: app.to_string(),
            state,
        }
    }

    /// Ends `state`'s hold of the app's route, if it still holds it.
    fn unhold(&self, app: &str, state: &Arc<HoldState>) {
        let mut table = self
            .inner
            .table
            .write()
            .expect("router table lock poisoned");
        let Some(entry) = table.apps.get_mut(app) else {
            return;
        };
        if !entry
            .route
            .hold
            .as_ref()
            .is_some_and(|h| Arc::ptr_eq(h, state))
        {
            return;
        }
        entry.route = Arc::new(Route {
            app: app.to_string(),
            backends: entry.route.backends.clone(),
            next: AtomicUsize::new(entry.route.next.load(Ordering::Relaxed)),
            hold: None,
        });
        table.rebuild_hosts();
    }

    /// Atomically replaces the app's host names and ready web backends
    /// (container IP:port). Requests already in flight continue on the
    /// backend they started on.
    pub fn set_app(&self, app: &str, hosts: Vec<String>, backends: Vec<SocketAddr>) {
        let backends = self.backends_for(&backends);
        let mut table = self
            .inner
            .table
            .write()
            .expect("router table lock poisoned");
        let next = table
            .apps
            .get(app)
            .map_or(0, |e| e.route.next.load(Ordering::Relaxed));
        let route = Arc::new(Route {
            app: app.to_string(),
            backends,
            next: AtomicUsize::new(next),
            hold: None,
        });
        table.apps.insert(
            app.to_string(),
            AppEntry {
                hosts: normalize_hosts(hosts),
                route,
            },
        );
        table.rebuild_hosts();
    }

    /// Replaces the app's host names, keeping its backends. An app the
    /// router does not know yet is added with no backends (its hosts
    /// answer 503).
    pub fn set_hosts(&self, app: &str, hosts: Vec<String>) {
        let mut table = self
            .inner
            .table
            .write()
            .expect("router table lock poisoned");
        let hosts = normalize_hosts(hosts);
        match table.apps.get_mut(app) {
            Some(entry) => entry.hosts = hosts,
            None => {
                let route = Arc::new(Route {
                    app: app.to_string(),
                    backends: Vec::new(),
                    next: AtomicUsize::new(0),
                    hold: None,
                });
                table
                    .apps
                    .insert(app.to_string(), AppEntry { hosts, route });
            }
        }
        table.rebuild_hosts();
    }

    /// Forgets the app: its hosts answer 404 from now on. Requests in flight
    /// finish; `drain` its backends before stopping them.
    pub fn remove_app(&self, app: &str) {
        let mut table = self
            .inner
            .table
            .write()
            .expect("router table lock poisoned");
        if table.apps.remove(app).is_some() {
            table.rebuild_hosts();
        }
    }

    /// The app's current backends, in routing order.
    pub fn backends(&self, app: &str) -> Vec<SocketAddr> {
        let table = self.inner.table.read().expect("router table lock poisoned");
        table
            .apps
            .get(app)
            .map(|e| e.route.backends.iter().map(|b| b.addr).collect())
            .unwrap_or_default()
    }

    /// Resolves when no request (and no WebSocket tunnel) is in flight to any
    /// of `backends`, or after `max`, and drops the idle pooled connections
    /// to them. Call it after a switch (`set_app`/`remove_app`), before the
    /// old instances are stopped. Tunnels still open at `max` are closed;
    /// requests still running at `max` are left to fail when their instance
    /// stops.
    pub async fn drain(&self, backends: &[SocketAddr], max: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + max;
        let found: Vec<Arc<Backend>> = {
            let registry = self
                .inner
                .registry
                .lock()
                .expect("router registry lock poisoned");
            backends
                .iter()
                .filter_map(|a| registry.get(a).and_then(Weak::upgrade))
                .collect()
        };
        {
            let table = self.inner.table.read().expect("router table lock poisoned");
            for b in &found {
                if !table.names(b) {
                    // No route can pick it again: stop returning connections
                    // to its pool.
                    b.retired.store(true, Ordering::SeqCst);
                }
            }
        }
        for b in &found {
            b.clear_pool();
            loop {
                let notified = b.idle_signal.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if b.busy() == 0 {
                    break;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            // A request that ended after the first clear may have returned
            // its connection before seeing `retired`.
            b.clear_pool();
        }
        for b in &found {
            let (requests, tunnels) = (
                b.in_flight.load(Ordering::SeqCst),
                b.tunnels.load(Ordering::SeqCst),
            );
            if requests > 0 || tunnels > 0 {
                tracing::debug!(backend = %b.addr, requests, tunnels, "drain timed out; closing tunnels");
            }
            if tunnels > 0 {
                b.close_tunnels.send_replace(true);
            }
        }
    }

    /// The shared `Backend` for each address: the live one if a route or a
    /// request still holds it (so in-flight counts carry over a switch), else
    /// a new one.
    fn backends_for(&self, addrs: &[SocketAddr]) -> Vec<Arc<Backend>> {
        let mut registry = self
            .inner
            .registry
            .lock()
            .expect("router registry lock poisoned");
        registry.retain(|_, w| w.strong_count() > 0);
        let mut out: Vec<Arc<Backend>> = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            if out.iter().any(|b| b.addr == addr) {
                continue;
            }
            let live = registry
                .get(&addr)
                .and_then(Weak::upgrade)
                .filter(|b| !b.retired.load(Ordering::SeqCst));
            let backend = live.unwrap_or_else(|| {
                let b = Arc::new(Backend::new(addr));
                registry.insert(addr, Arc::downgrade(&b));
                b
            });
            out.push(backend);
        }
        out
    }

    /// Picks the backend for a request to `host` (already normalized) and
    /// counts it in flight, avoiding `avoid` when another backend exists.
    pub(crate) fn pick(&self, host: &str, avoid: Option<SocketAddr>) -> Pick {
        let table = self.inner.table.read().expect("router table lock poisoned");
        let Some(route) = table.hosts.get(host) else {
            return Pick::NoApp;
        };
        if let Some(hold) = &route.hold {
            return match hold.enter(self.inner.hold_limits.max_requests) {
                Some(w) => Pick::Held(w),
                None => Pick::HoldFull,
            };
        }
        let n = route.backends.len();
        if n == 0 {
            return Pick::NoBackend(route.app.clone());
        }
        let mut i = route.next.fetch_add(1, Ordering::Relaxed) % n;
        if n > 1 && Some(route.backends[i].addr) == avoid {
            i = (i + 1) % n;
        }
        // Counted while the read lock is held: a `set_app` that removes this
        // backend happens either before (and we never picked it) or after
        // (and `drain` sees this request).
        Pick::Backend(InFlight::new(route.backends[i].clone()), route.app.clone())
    }
}

impl Table {
    /// Rebuilds the host index. A host claimed by two apps goes to the
    /// first by name (and is logged): the store is meant to prevent it.
    fn rebuild_hosts(&mut self) {
        let mut hosts: HashMap<String, Arc<Route>> = HashMap::new();
        for (app, entry) in &self.apps {
            for h in &entry.hosts {
                if let Some(other) = hosts.get(h) {
                    tracing::warn!(host = %h, app = %app, other = %other.app, "host claimed by two apps; keeping the first");
                    continue;
                }
                hosts.insert(h.clone(), entry.route.clone());
            }
        }
        self.hosts = hosts;
    }

    fn names(&self, backend: &Arc<Backend>) -> bool {
        self.apps
            .values()
            .any(|e| e.route.backends.iter().any(|b| Arc::ptr_eq(b, backend)))
    }
}

impl Backend {
    fn new(addr: SocketAddr) -> Backend {
        Backend {
            addr,
            in_flight: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            idle_signal: Notify::new(),
            retired: AtomicBool::new(false),
            close_tunnels: watch::channel(false).0,
            pool: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn busy(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst) + self.tunnels.load(Ordering::SeqCst)
    }

    /// A pooled connection ready for a request, if any.
    pub(crate) fn checkout(&self) -> Option<proxy::Sender> {
        let mut pool = self.pool.lock().expect("router pool lock poisoned");
        while let Some(p) = pool.pop() {
            if p.since.elapsed() < POOL_IDLE_TIMEOUT && p.sender.is_ready() {
                return Some(p.sender);
            }
        }
        None
    }

    /// Returns a connection (ready for its next request) to the pool.
    pub(crate) fn checkin(&self, sender: proxy::Sender) {
        if self.retired.load(Ordering::SeqCst) {
            return;
        }
        let mut pool = self.pool.lock().expect("router pool lock poisoned");
        if pool.len() < MAX_IDLE_PER_BACKEND {
            pool.push(Pooled {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn clear_pool(&self) {
        let idle = std::mem::take(&mut *self.pool.lock().expect("router pool lock poisoned"));
        drop(idle);
    }

    pub(crate) fn tunnel_closer(&self) -> watch::Receiver<bool> {
        self.close_tunnels.subscribe()
    }
}

impl InFlight {
    fn new(backend: Arc<Backend>) -> InFlight {
        backend.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight { backend }
    }

    pub(crate) fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Turns this request into a tunnel without the backend ever looking
    /// idle in between.
    pub(crate) fn into_tunnel(self) -> Tunnel {
        self.backend.tunnels.fetch_add(1, Ordering::SeqCst);
        Tunnel {
            backend: self.backend.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.backend.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.backend.idle_signal.notify_waiters();
        }
    }
}

impl Tunnel {
    pub(crate) fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if self.backend.tunnels.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.backend.idle_signal.notify_waiters();
        }
    }
}

fn normalize_hosts(hosts: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = hosts
        .iter()
        .map(|h| normalize_host(h))
        .filter(|h| !h.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `Host` header value → routing key: port and trailing dot stripped, lower
/// case. `[::1]:8080` → `[::1]`.
pub(crate) fn normalize_host(raw: &str) -> String {
    let raw = raw.trim();
    let raw = raw.rsplit_once('@').map_or(raw, |(_, h)| h);
    let host = if raw.starts_with('[') {
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}
