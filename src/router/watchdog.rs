//! Coarse deadlines for a router thread, checked by one ticker per thread
//! instead of a tokio timer each.
//!
//! Every proxied request that opens a backend connection needs a deadline
//! (start a second connect when a SYN was dropped) that almost never fires.
//! A tokio timer for it costs a timer-wheel insert and removal, and, because
//! it is due sooner than anything the thread's driver slept on, a write to
//! the runtime's eventfd and one more `epoll_wait` turn: about one system
//! call in seven of a request against a backend that closes every
//! connection. Here a deadline is an entry in a thread-local list, and a
//! ticker task on each router thread wakes the expired ones every `TICK`.
//! The ticker also keeps the driver's next wake-up at most `TICK` away, so
//! the timers hyper arms per request (header read timeout) no longer wake
//! it either.
//!
//! Deadlines fire up to `TICK` late. On a thread without a ticker (tests
//! that call the proxy directly) `after` falls back to a tokio timer.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;

/// How often a router thread checks its deadlines.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// Shared with its `Deadline`, which a task may take to another thread
/// (tasks must be `Send`); only the registering thread's ticker fires it.
struct Entry {
    at: Instant,
    fired: AtomicBool,
    waker: AtomicWaker,
}

thread_local! {
    static TICKING: Cell<bool> = const { Cell::new(false) };
    static PENDING: RefCell<Vec<Weak<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// Runs this thread's ticker until the runtime drops it. Spawn it once per
/// router thread, on that thread's current-thread runtime.
pub(crate) async fn tick() {
    TICKING.with(|t| t.set(true));
    let _reset = Reset;
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        fire(Instant::now());
    }
}

/// Clears the thread's flag when the ticker is dropped (with its runtime),
/// and fires what is left: nothing would wake it any more.
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        let _ = TICKING.try_with(|t| t.set(false));
        if PENDING.try_with(|_| ()).is_ok() {
            fire(Instant::now() + Duration::from_secs(365 * 24 * 3600));
        }
    }
}

/// Wakes the deadlines due by `now` and forgets dropped ones.
fn fire(now: Instant) {
    let due: Vec<Arc<Entry>> = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let mut due = Vec::new();
        p.retain(|w| match w.upgrade() {
            Some(e) if e.at <= now => {
                due.push(e);
                false
            }
            Some(_) => true,
            None => false,
        });
        due
    });
    // Woken outside the borrow: a woken task may register a new deadline.
    for e in due {
        e.fired.store(true, Ordering::Release);
        e.waker.wake();
    }
}

/// Completes `d` from now, give or take a `TICK`.
pub(crate) fn after(d: Duration) -> Deadline {
    if !TICKING.with(Cell::get) {
        return Deadline(Inner::Timer(Box::pin(tokio::time::sleep(d))));
    }
    let e = Arc::new(Entry {
        at: Instant::now() + d,
        fired: AtomicBool::new(false),
        waker: AtomicWaker::new(),
    });
    PENDING.with(|p| p.borrow_mut().push(Arc::downgrade(&e)));
    Deadline(Inner::Listed(e))
}

/// A deadline from `after`. Dropping it unregisters it (the ticker drops
/// the dead entry on its next turn).
pub(crate) struct Deadline(Inner);

enum Inner {
    Listed(Arc<Entry>),
    Timer(Pin<Box<tokio::time::Sleep>>),
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.get_mut().0 {
            Inner::Listed(e) => {
                if e.fired.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                e.waker.register(cx.waker());
                // Fired between the check and the registration.
                if e.fired.load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                Poll::Pending
            }
            Inner::Timer(s) => s.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests;
