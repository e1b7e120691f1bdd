//! The deploy lock: one change that rolls an app's processes at a time.
//!
//! `DeployLock` is what the deploy pipeline takes; the provider picks the
//! implementation. [`Locks`] is in memory, per process: a lock never
//! outlives the process that held it, so a crash cannot leave an app
//! locked. On aws, where several rack instances may share one bucket, the
//! in-memory lock is followed by the app's lease in S3 (`lease.rs`), which
//! expires when its holder stops renewing it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::Mutex as AsyncMutex;

use crate::progress::Progress;

/// What a waiting deploy says, once.
pub const WAITING: &str = "Waiting for the deploy in progress to finish";

/// What [`DeployLock::acquire`] returns.
pub type Acquire<'a> = BoxFuture<'a, Result<DeployGuard, String>>;

/// Takes an app's deploy lock.
pub trait DeployLock: Send + Sync {
    /// Takes the app's lock, saying [`WAITING`] (once) when another holder
    /// has it. `Err` (the user's one line) only when the lock's store
    /// cannot be reached.
    fn acquire<'a>(&'a self, app: &'a str, progress: &'a Progress) -> Acquire<'a>;
}

/// Held while a deploy (or any change that rolls processes) runs; dropping
/// it lets the next one in.
pub struct DeployGuard {
    _held: Vec<Box<dyn Send + Sync>>,
}

impl DeployGuard {
    /// A guard that holds `parts` (released in order when dropped).
    pub fn new(parts: Vec<Box<dyn Send + Sync>>) -> DeployGuard {
        DeployGuard { _held: parts }
    }
}

/// Per-app locks in this process.
#[derive(Default)]
pub struct Locks {
    apps: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

impl Locks {
    /// Takes the app's in-process lock; the bool says whether it had to
    /// wait (and said so).
    pub async fn acquire_local(
        &self,
        app: &str,
        progress: &Progress,
    ) -> (tokio::sync::OwnedMutexGuard<()>, bool) {
        let lock = {
            let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
            apps.entry(app.to_string()).or_default().clone()
        };
        match lock.clone().try_lock_owned() {
            Ok(guard) => (guard, false),
            Err(_) => {
                progress.stage(WAITING);
                (lock.lock_owned().await, true)
            }
        }
    }
}

impl DeployLock for Locks {
    fn acquire<'a>(&'a self, app: &'a str, progress: &'a Progress) -> Acquire<'a> {
        Box::pin(async move {
            let (guard, _) = self.acquire_local(app, progress).await;
            Ok(DeployGuard::new(vec![Box::new(guard)]))
        })
    }
}
