//! The use cases that change what runs, behind each app's deploy lock:
//! `Deployer` serves git's push hook ([`PushDeploy`]), `apps:deploy`,
//! config changes, rollbacks, scaling, restarts, `apps:create`,
//! `apps:destroy`, the volumes (`volumes.rs`) and the image prune. Each method takes the app's lock
//! itself and fails with a [`DeployError`] whose `Display` is the user's
//! one line (the push's `ng` reason, a command's `error:` line).
//!
//! The pack is received and checked before the lock; under the lock the
//! ref's old value is checked again, so a push that waited behind another
//! is rejected rather than overwriting what the other one deployed.
//!
//! This module works on the provider's handles (`provider::Provider`) and
//! never asks which provider it is; it knows nothing of SSH or of `cmd/`.

mod apps;
mod build;
pub mod recovery;
mod resources;
pub mod rollout;
mod timers;
mod volumes;

use std::sync::Arc;

use futures::future::BoxFuture;

pub use apps::{ConfigChange, Rollback};
pub use build::BuildJob;
pub use resources::ResourceInfo;
pub use rollout::{ConfigChoice, NewRelease};
pub use volumes::NewVolume;

use crate::config::Settings;
use crate::git::receive::MOVED_WHILE_WAITING;
use crate::git::{DeployPush, PushHook};
use crate::progress::Progress;
use crate::provider::{DeployGuard, Provider};
use crate::release::config::ConfigError;
use crate::store::StoreError;

/// Why a use case failed; `Display` is the user's one line. Where a stage
/// already said why in the progress lines, the line is short (`build
/// failed`, like a push's `ng` reason).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Refused before anything changed: the request cannot be done as
    /// asked (nothing to roll back to, an image that was pruned, ...).
    #[error("{0}")]
    Refused(String),
    /// The deploy lock's store could not be reached (aws: the S3 lease).
    #[error("{0}")]
    Lock(String),
    /// The pushed ref moved while the push waited for the lock.
    #[error("{MOVED_WHILE_WAITING}")]
    MovedWhileWaiting,
    #[error("build failed")]
    BuildFailed,
    #[error("release failed")]
    ReleaseFailed,
    #[error("rollout failed")]
    RolloutFailed,
    /// The runtime cannot be reached (a scale or restart).
    #[error("rollout failed: {0}")]
    NoRuntime(String),
    /// The runtime or the repository failed; the message says how.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state store failed inside the pipeline (logged).
    #[error("internal error")]
    Internal,
}

pub type Result<T, E = DeployError> = std::result::Result<T, E>;

/// Inside the pipeline a store failure is logged and shown as `internal
/// error`.
fn internal(e: StoreError) -> DeployError {
    tracing::error!(error = %e, "state database");
    DeployError::Internal
}

/// The deploy use cases over one provider. Cheap to clone.
#[derive(Clone)]
pub struct Deployer {
    settings: Arc<Settings>,
    provider: Arc<Provider>,
    builder: Arc<tokio::sync::OnceCell<crate::build::Builder>>,
    /// Open (true) when deploys may run: closed while the process this
    /// one replaces may still be deploying (`take_over` opens it).
    gate: Arc<tokio::sync::watch::Sender<bool>>,
}

/// What a deploy waiting for the gate says, once.
pub const WAITING_FOR_HANDOVER: &str =
    "Waiting for the rack's previous process to finish its sessions (an update is in progress)";

impl Deployer {
    pub fn new(settings: Settings, provider: Arc<Provider>) -> Deployer {
        Deployer {
            settings: Arc::new(settings),
            provider,
            builder: Arc::default(),
            gate: Arc::new(tokio::sync::watch::channel(true).0),
        }
    }

    /// False while this process waits to take over from the one it
    /// replaces (deploys wait, timers do not fire).
    pub fn taken_over(&self) -> bool {
        *self.gate.borrow()
    }

    /// Deploys wait from now until [`Self::take_over`].
    pub fn close_gate(&self) {
        self.gate.send_replace(false);
    }

    /// In a process that replaced another, once that one's sessions are
    /// over: the start-up clean-up and recovery, then deploys may run.
    pub async fn take_over(&self) -> anyhow::Result<()> {
        self.prepare().await?;
        self.recover().await?;
        self.gate.send_replace(true);
        Ok(())
    }

    /// The push hook for one push session by `actor` (a key name).
    pub fn push_hook(&self, actor: &str) -> PushDeploy {
        PushDeploy {
            deployer: self.clone(),
            actor: actor.to_string(),
        }
    }

    /// The Docker-backed builder, connected on first use so a rack whose
    /// engine is down still serves commands and says why builds fail.
    async fn builder(&self) -> Result<&crate::build::Builder, crate::build::BuildError> {
        self.builder
            .get_or_try_init(|| async {
                let docker = crate::build::connect_docker(self.settings.docker.as_deref()).await?;
                let b = crate::build::Builder::new(docker, self.settings.build.clone())?;
                b.sweep_networks().await;
                Ok(b)
            })
            .await
    }

    async fn lock(&self, app: &str, progress: &Progress) -> Result<DeployGuard> {
        if !*self.gate.borrow() {
            progress.stage(WAITING_FOR_HANDOVER);
            let mut gate = self.gate.subscribe();
            let _ = gate.wait_for(|open| *open).await;
        }
        self.provider
            .locks
            .acquire(app, progress)
            .await
            .map_err(DeployError::Lock)
    }
}

/// The push hook for one push session.
pub struct PushDeploy {
    deployer: Deployer,
    /// Key name of the pusher, for records.
    actor: String,
}

impl PushHook for PushDeploy {
    fn deploy<'a>(
        &'a self,
        push: &'a DeployPush,
        progress: Progress,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.deployer
                .push(push, &self.actor, &progress)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
