//! The one place that knows which provider runs this rack. [`open`]
//! matches on `Settings::provider` once and hands back a [`Provider`]: the
//! store, config sealing, the runtime, the deploy lock, the host key and
//! (locally) the HTTP router, and where resources (databases) run. Everything above it (`deploy/`, `cmd/`,
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
use crate::resources::Resources;
use crate::router::Router;
use crate::runtime::Runtime;
use crate::store::Store;

/// How the provider connects its runtime on first use.
type Connect = Box<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Runtime>, String>> + Send + Sync>;
/// How the provider connects its resources on first use.
type ConnectResources =
    Box<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn Resources>, String>> + Send + Sync>;

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
    resources: tokio::sync::OnceCell<Arc<dyn Resources>>,
    connect_resources: ConnectResources,
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

    /// Where resources (`resources:*`) run, connected on first use like
    /// the runtime.
    pub async fn resources(&self) -> Result<Arc<dyn Resources>, String> {
        self.resources
            .get_or_try_init(|| (self.connect_resources)())
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

/// `rack backup`: the rack's state as one tar stream on `out` (blocking).
pub fn backup(
    settings: &Settings,
    include_master_key: bool,
    mut out: impl std::io::Write,
) -> Result<()> {
    match settings.provider {
        crate::config::Provider::Local => crate::backup::backup(settings, include_master_key, out),
        crate::config::Provider::Aws => tokio::runtime::Runtime::new()?.block_on(backup_aws(
            settings,
            include_master_key,
            &mut out,
        )),
    }
}

/// `rack update`: locally, hands the running server over to `binary`
/// (through its control socket); on aws, applies this binary's templates
/// (`dry_run`: shows the change sets). `Ok`: the line to print.
pub async fn update(settings: &Settings, binary: PathBuf, dry_run: bool) -> Result<String> {
    match settings.provider {
        crate::config::Provider::Local => {
            if dry_run {
                anyhow::bail!("--dry-run is for an aws rack; locally `rack update` replaces the server process");
            }
            let answer =
                crate::handover::control::request_update(&settings.control_socket_path(), &binary)
                    .await?;
            let (pid, version) = answer.split_once(' ').unwrap_or((&answer, ""));
            Ok(format!(
                "Updated: {version} serves now (pid {pid}); the old process exits once its sessions end"
            ))
        }
        crate::config::Provider::Aws => update_aws(settings, dry_run).await,
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
use aws::{
    backup as backup_aws, install as install_aws, keys_store as keys_store_aws, open as open_aws,
    update as update_aws,
};

#[cfg(not(feature = "aws"))]
async fn open_aws(_settings: &Settings) -> Result<Provider> {
    Err(no_aws())
}

#[cfg(not(feature = "aws"))]
async fn keys_store_aws(_settings: &Settings) -> Result<Box<dyn Store>> {
    Err(no_aws())
}

#[cfg(not(feature = "aws"))]
async fn backup_aws(
    _settings: &Settings,
    _include_master_key: bool,
    _out: &mut dyn std::io::Write,
) -> Result<()> {
    Err(no_aws())
}

#[cfg(not(feature = "aws"))]
async fn update_aws(_settings: &Settings, _dry_run: bool) -> Result<String> {
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
