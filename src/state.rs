//! `Rack`: the handles every session shares, opened once at start-up.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Settings;
use crate::release::config::Configs;
use crate::release::crypto::MasterKey;
use crate::store::prelude::*;
use crate::store::SqliteStore;

pub struct Rack {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub configs: Configs,
    pub locks: crate::deploy::Locks,
    builder: tokio::sync::OnceCell<crate::build::Builder>,
    /// The local provider's HTTP router (served by `rack server --http`).
    pub router: crate::router::Router,
    runtime: tokio::sync::OnceCell<Arc<dyn crate::runtime::Runtime>>,
    /// The SSH host key: a file locally, KMS-sealed in the bucket on aws
    /// (so a replaced instance keeps its identity).
    pub host_key: russh::keys::PrivateKey,
    #[cfg(feature = "aws")]
    pub aws: Option<AwsHandles>,
}

#[cfg(feature = "aws")]
type AwsHandlesOpt = AwsHandles;
#[cfg(not(feature = "aws"))]
type AwsHandlesOpt = ();

/// What the aws provider's stages share.
#[cfg(feature = "aws")]
#[derive(Clone)]
pub struct AwsHandles {
    pub ctx: crate::aws::AwsContext,
    pub section: crate::aws::rack::AwsSection,
}

impl Rack {
    /// Opens (creating on first start) the data dir, state database and
    /// master key.
    pub async fn open(settings: Settings) -> Result<Arc<Rack>> {
        settings.ensure_dirs()?;
        match settings.provider {
            crate::config::Provider::Local => {
                let store: Arc<dyn Store> = Arc::new(
                    SqliteStore::open(&settings.db_path())
                        .with_context(|| format!("opening {}", settings.db_path().display()))?,
                );
                let key = MasterKey::load_or_create(&settings.master_key_path())?;
                let host_key = crate::ssh::hostkey::load_or_create(&settings.host_key_path())?;
                Rack::assemble(settings, store, key, host_key, None).await
            }
            crate::config::Provider::Aws => Rack::open_aws(settings).await,
        }
    }

    #[cfg(not(feature = "aws"))]
    async fn open_aws(_settings: Settings) -> Result<Arc<Rack>> {
        anyhow::bail!("this rack was built without the aws provider (cargo feature \"aws\")")
    }

    /// State in S3, the secrets master key and host key sealed with the
    /// rack's KMS key in the bucket, processes on ECS.
    #[cfg(feature = "aws")]
    async fn open_aws(settings: Settings) -> Result<Arc<Rack>> {
        use crate::aws::{self, state::S3State};
        let section = aws::rack::AwsSection::from_file(&settings.data_dir)?.ok_or_else(|| {
            anyhow::anyhow!(
                "rack.toml has no [aws] section: run rack install aws --rack NAME first"
            )
        })?;
        let name = settings.rack.clone().ok_or_else(|| {
            anyhow::anyhow!("the aws provider needs --rack NAME (or rack = \"NAME\" in rack.toml)")
        })?;
        let ctx = aws::AwsContext::from_env(&name).await?;
        let state = S3State::new(ctx.clone(), section.bucket.clone());
        let master =
            aws::state::load_or_create_secret(&state, &section.key_arn, "master.key", || {
                let mut b = vec![0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
                b
            })
            .await?;
        let key = MasterKey::from_raw(&master)?;
        let pem = aws::state::load_or_create_secret(
            &state,
            &section.key_arn,
            "ssh_host_ed25519_key",
            || crate::ssh::hostkey::generate_pem().into_bytes(),
        )
        .await?;
        let host_key = russh::keys::PrivateKey::from_openssh(&pem)
            .context("reading the host key from the bucket")?;
        let store: Arc<dyn Store> =
            Arc::new(aws::store::S3Store::new(state, section.key_arn.clone()));
        // First start on aws: bring the local keys along.
        if store.list_keys().await?.is_empty() && settings.db_path().exists() {
            let local = SqliteStore::open(&settings.db_path())?;
            for k in local.list_keys().await? {
                store.add_key(&k).await?;
                tracing::info!(key = %k.name, "imported local key into the aws store");
            }
        }
        let handles = AwsHandles { ctx, section };
        Rack::assemble(settings, store, key, host_key, Some(handles)).await
    }

    async fn assemble(
        settings: Settings,
        store: Arc<dyn Store>,
        key: MasterKey,
        host_key: russh::keys::PrivateKey,
        #[cfg_attr(not(feature = "aws"), allow(unused_variables))] aws: Option<AwsHandlesOpt>,
    ) -> Result<Arc<Rack>> {
        let stale = store
            .fail_running_builds("interrupted: the rack stopped during the build")
            .await?;
        if stale > 0 {
            tracing::warn!(
                builds = stale,
                "marked builds interrupted by a restart as failed"
            );
        }
        // The rack is the only writer of its repos: leftovers of a crash
        // (quarantine dirs, lock files) can go.
        for app in store.list_apps().await? {
            let path = settings.repos_dir().join(format!("{}.git", app.name));
            if !path.exists() {
                continue;
            }
            match crate::git::recover_repo(&path) {
                Ok(removed) if !removed.is_empty() => {
                    tracing::warn!(app = %app.name, ?removed, "removed leftovers of an interrupted push")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(app = %app.name, error = %e, "checking repository"),
            }
        }
        #[cfg(feature = "aws")]
        let locks = match &aws {
            Some(h) => crate::deploy::Locks::with_s3_lease(crate::aws::state::S3State::new(
                h.ctx.clone(),
                h.section.bucket.clone(),
            )),
            None => Default::default(),
        };
        #[cfg(not(feature = "aws"))]
        let locks = Default::default();
        let rack = Rack {
            configs: Configs::new(store.clone(), key),
            store,
            locks,
            builder: tokio::sync::OnceCell::new(),
            router: crate::router::Router::new(),
            runtime: tokio::sync::OnceCell::new(),
            host_key,
            #[cfg(feature = "aws")]
            aws: aws.clone(),
            settings,
        };
        #[cfg(feature = "aws")]
        if let Some(h) = aws {
            let rt: Arc<dyn crate::runtime::Runtime> =
                Arc::new(crate::aws::runtime::AwsRuntime::new(h.ctx, h.section));
            let _ = rack.runtime.set(rt);
        }
        Ok(Arc::new(rack))
    }

    /// `ssh -p PORT git@HOST` as users should type it in hints.
    pub fn ssh_hint(&self) -> String {
        format!("ssh -p {} git@HOST", self.settings.ssh_port())
    }
}

impl Rack {
    /// The Docker-backed builder, connected on first use so a rack whose
    /// engine is down still serves commands and says why builds fail.
    pub async fn builder(&self) -> Result<&crate::build::Builder, crate::build::BuildError> {
        self.builder
            .get_or_try_init(|| async {
                let docker = crate::build::connect_docker(self.settings.docker.as_deref()).await?;
                crate::build::Builder::new(docker, self.settings.build.clone())
            })
            .await
    }

    /// The runtime releases run on, connected on first use.
    pub async fn runtime(&self) -> Result<Arc<dyn crate::runtime::Runtime>, String> {
        self.runtime
            .get_or_try_init(|| async {
                let docker = crate::build::connect_docker(self.settings.docker.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                let opts = crate::runtime::local::LocalOptions {
                    namespace: self.settings.namespace.clone(),
                    ..Default::default()
                };
                let rt: Arc<dyn crate::runtime::Runtime> =
                    Arc::new(crate::runtime::local::LocalRuntime::with_options(
                        docker,
                        self.router.clone(),
                        opts,
                    ));
                Ok(rt)
            })
            .await
            .cloned()
    }

    pub fn build_log_path(&self, app: &str, build_id: &str) -> std::path::PathBuf {
        self.settings
            .logs_dir()
            .join("builds")
            .join(app)
            .join(format!("{build_id}.log"))
    }

    pub fn repo_path(&self, app: &str) -> std::path::PathBuf {
        self.settings.repos_dir().join(format!("{app}.git"))
    }

    pub fn git_url(&self, app: &str) -> String {
        format!("ssh://git@HOST:{}/{app}", self.settings.ssh_port())
    }

    pub fn web_url(&self, app: &str) -> String {
        let port = self
            .settings
            .http
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(80);
        if port == 80 {
            format!("http://{app}.{}", self.settings.domain)
        } else {
            format!("http://{app}.{}:{port}", self.settings.domain)
        }
    }
}
