//! The one place that knows which provider runs this rack. [`open`]
//! matches on `Settings::provider` once and hands back a [`Provider`]: the
//! store, config sealing, the runtime, the deploy lock, the host key and
//! (locally) the HTTP router. Everything above it (`deploy/`, `cmd/`,
//! `ssh/`) works on those handles and never asks which provider it is.
//!
//! `local`: SQLite, key files in the data dir, `LocalRuntime` on the
//! rack's Docker engine behind the router, in-process deploy locks.
//! `aws` (cargo feature `aws`, in `aws.rs`): the bucket, keys sealed with
//! the rack's KMS key, ECS through `AwsRuntime` (plus ECR pushes and app
//! stacks), in-process locks followed by the app's S3 lease (`lease.rs`).

#[cfg(feature = "aws")]
mod aws;
#[cfg(feature = "aws")]
pub mod lease;
mod local;
pub mod lock;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use futures::future::BoxFuture;

pub use lock::{DeployGuard, DeployLock, Locks, WAITING};

use crate::config::Settings;
use crate::release::config::Configs;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::store::Store;

/// How the provider connects its runtime on first use.
type Connect = Box<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Runtime>, String>> + Send + Sync>;

/// The handles of one provider, opened once at start-up.
pub struct Provider {
    pub store: Arc<dyn Store>,
    /// Config versions, sealed with the rack's master key.
    pub configs: Configs,
    /// One change that rolls an app's processes at a time.
    pub locks: Box<dyn DeployLock>,
    /// The SSH host key: a file locally, KMS-sealed in the bucket on aws
    /// (so a replaced instance keeps its identity).
    pub host_key: russh::keys::PrivateKey,
    /// The local provider's HTTP router (served by `rack server --http`).
    pub router: Option<Router>,
    /// The namespace whose containers the host firewall guards (a local
    /// rack with `[local] firewall` on); None: no firewall.
    firewall: Option<String>,
    runtime: tokio::sync::OnceCell<Arc<dyn Runtime>>,
    connect: Connect,
}

impl Provider {
    /// Installs the host firewall (`crate::firewall`) letting the rack's
    /// containers reach the host only on `router_port`; None when this
    /// provider has none.
    pub fn guard_host(
        &self,
        router_port: u16,
    ) -> Result<Option<crate::firewall::Firewall>, crate::firewall::FirewallError> {
        self.firewall
            .as_deref()
            .map(|ns| crate::firewall::Firewall::install(ns, router_port))
            .transpose()
    }

    /// The runtime releases run on, connected on first use: a local rack
    /// whose Docker engine is down still answers commands and says why a
    /// deploy cannot run.
    pub async fn runtime(&self) -> Result<Arc<dyn Runtime>, String> {
        self.runtime
            .get_or_try_init(|| (self.connect)())
            .await
            .cloned()
    }
}

/// Opens (creating on first start) the provider `settings` name.
pub async fn open(settings: &Settings) -> Result<Provider> {
    settings.ensure_dirs()?;
    match settings.provider {
        crate::config::Provider::Local => local::open(settings),
        crate::config::Provider::Aws => open_aws(settings).await,
    }
}

/// The store `rack keys` works on: the server's own, so a key added there
/// is the one the server checks (the bucket on aws).
pub async fn keys_store(settings: &Settings) -> Result<Box<dyn Store>> {
    match settings.provider {
        crate::config::Provider::Local => Ok(Box::new(crate::store::SqliteStore::open(
            &settings.db_path(),
        )?)),
        crate::config::Provider::Aws => keys_store_aws(settings).await,
    }
}

/// The server's SSH host key (`rack host-key`), created on first use.
pub async fn host_key(settings: &Settings) -> Result<russh::keys::PrivateKey> {
    settings.ensure_dirs()?;
    match settings.provider {
        crate::config::Provider::Local => {
            crate::ssh::hostkey::load_or_create(&settings.host_key_path())
        }
        crate::config::Provider::Aws => Ok(open_aws(settings).await?.host_key),
    }
}

/// `rack install PROVIDER` / `rack uninstall PROVIDER`.
pub struct Install {
    pub provider: String,
    pub rack: String,
    pub data_dir: PathBuf,
    /// Existing VPC and subnets to use (install; default: new ones).
    pub vpc: Option<String>,
    pub subnets: Vec<String>,
}

/// Creates (or with `install == false` deletes) the rack's cloud
/// infrastructure, with progress on stderr.
pub async fn install(req: Install, install: bool) -> Result<()> {
    if req.provider != "aws" {
        anyhow::bail!(
            "unknown provider '{}': rack install knows aws",
            req.provider
        );
    }
    install_aws(req, install).await
}

#[cfg(feature = "aws")]
use aws::{install as install_aws, keys_store as keys_store_aws, open as open_aws};

#[cfg(not(feature = "aws"))]
async fn open_aws(_settings: &Settings) -> Result<Provider> {
    Err(no_aws())
}

#[cfg(not(feature = "aws"))]
async fn keys_store_aws(_settings: &Settings) -> Result<Box<dyn Store>> {
    Err(no_aws())
}

#[cfg(not(feature = "aws"))]
async fn install_aws(_req: Install, _install: bool) -> Result<()> {
    Err(no_aws())
}

#[cfg(not(feature = "aws"))]
fn no_aws() -> anyhow::Error {
    anyhow::anyhow!("this rack was built without the aws provider (cargo feature \"aws\")")
}
