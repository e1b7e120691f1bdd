//! The one deploy pipeline behind a per-app lock. It implements `git/`'s
//! push hook and serves `apps:deploy`; config changes, rollbacks and scaling
//! will go through it too.
//!
//! The pack is received and checked before the lock; under the lock the
//! ref's old value is checked again, so a push that waited behind another
//! is rejected rather than overwriting what the other one deployed.

mod build;
#[cfg(feature = "aws")]
pub mod lease;
pub mod recovery;
pub mod rollout;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[cfg(feature = "aws")]
pub(crate) use build::prune_local_builds;
pub use build::{run_build, BuildJob};

use crate::git::receive::MOVED_WHILE_WAITING;
use crate::git::{DeployPush, PushHook};
use crate::progress::Progress;
use crate::state::Rack;

/// Per-app deploy locks. In memory: a lock never outlives the process that
/// held it, so a crash cannot leave an app locked. On the aws provider,
/// where several rack instances may share one bucket, the in-memory lock is
/// followed by the app's lease in S3 ([`lease`]), which expires when its
/// holder stops renewing it.
#[derive(Default)]
pub struct Locks {
    apps: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
    #[cfg(feature = "aws")]
    lease: Option<lease::S3Lease>,
}

/// Held while a deploy (or any change that rolls processes) runs; dropping
/// it lets the next one in.
pub struct DeployGuard {
    _local: OwnedMutexGuard<()>,
    #[cfg(feature = "aws")]
    _lease: Option<lease::HeldLease>,
}

const WAITING: &str = "Waiting for the deploy in progress to finish";

impl Locks {
    /// Locks that also take the app's lease in the aws provider's bucket.
    #[cfg(feature = "aws")]
    pub fn with_s3_lease(state: crate::aws::state::S3State) -> Locks {
        Locks {
            apps: Mutex::default(),
            lease: Some(lease::S3Lease::new(state)),
        }
    }

    /// Takes the app's lock, saying so when another deploy holds it. Fails
    /// only when the lease's store cannot be reached.
    pub async fn acquire(&self, app: &str, progress: &Progress) -> Result<DeployGuard, String> {
        let lock = {
            let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
            apps.entry(app.to_string()).or_default().clone()
        };
        let mut said = false;
        let local = match lock.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                progress.stage(WAITING);
                said = true;
                lock.lock_owned().await
            }
        };
        #[cfg(feature = "aws")]
        let held = match &self.lease {
            Some(l) => Some(l.acquire(app, progress, said).await?),
            None => None,
        };
        #[cfg(not(feature = "aws"))]
        let _ = said;
        Ok(DeployGuard {
            _local: local,
            #[cfg(feature = "aws")]
            _lease: held,
        })
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
            let _guard = self.rack.locks.acquire(&push.app, &progress).await?;
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
