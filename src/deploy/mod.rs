//! The one deploy pipeline behind a per-app lock. It implements `git/`'s
//! push hook and serves `apps:deploy`; config changes, rollbacks and scaling
//! will go through it too.
//!
//! The pack is received and checked before the lock; under the lock the
//! ref's old value is checked again, so a push that waited behind another
//! is rejected rather than overwriting what the other one deployed.

mod build;
pub mod recovery;
pub mod rollout;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

pub use build::{run_build, BuildJob};

use crate::git::receive::MOVED_WHILE_WAITING;
use crate::git::{DeployPush, PushHook};
use crate::progress::Progress;
use crate::state::Rack;

/// Per-app deploy locks. In memory: a lock never outlives the process that
/// held it, so a crash cannot leave an app locked.
#[derive(Default)]
pub struct Locks {
    apps: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

impl Locks {
    /// Takes the app's lock, saying so when another deploy holds it.
    pub async fn acquire(&self, app: &str, progress: &Progress) -> OwnedMutexGuard<()> {
        let lock = {
            let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
            apps.entry(app.to_string()).or_default().clone()
        };
        match lock.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                progress.stage("Waiting for the deploy in progress to finish");
                lock.lock_owned().await
            }
        }
    }
}

/// The push hook for one push session.
pub struct PushDeploy {
    pub rack: Arc<Rack>,
    /// Key name of the pusher, for records.
    pub actor: String,
}

impl PushHook for PushDeploy {
    fn deploy<'a>(
        &'a self,
        push: &'a DeployPush,
        progress: Progress,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let _guard = self.rack.locks.acquire(&push.app, &progress).await;
            if !push.ref_unchanged()? {
                return Err(MOVED_WHILE_WAITING.to_string());
            }
            let job = BuildJob {
                app: push.app.clone(),
                commit: push.new,
                push_options: push.push_options.clone(),
                actor: self.actor.clone(),
                no_cache: false,
            };
            let build = run_build(&self.rack, job, &progress).await?;
            let req = rollout::NewRelease {
                app: &push.app,
                build: &build,
                config: rollout::ConfigChoice::Latest,
                description: format!("Deploy {}", &push.new.to_string()[..7]),
                actor: &self.actor,
                push: Some(push),
                started,
            };
            rollout::release(&self.rack, req, &progress).await?;
            Ok(())
        })
    }
}
