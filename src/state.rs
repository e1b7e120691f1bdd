//! `Rack`: the handles every session shares, opened once at start-up.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Settings;
use crate::release::config::Configs;
use crate::release::crypto::MasterKey;
use crate::store::{SqliteStore, Store};

pub struct Rack {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub configs: Configs,
    pub locks: crate::deploy::Locks,
    builder: tokio::sync::OnceCell<crate::build::Builder>,
    /// The local provider's HTTP router (served by `rack server --http`).
    pub router: crate::router::Router,
    runtime: tokio::sync::OnceCell<Arc<dyn crate::runtime::Runtime>>,
}

impl Rack {
    /// Opens (creating on first start) the data dir, state database and
    /// master key.
    pub async fn open(settings: Settings) -> Result<Arc<Rack>> {
        settings.ensure_dirs()?;
        let store = Arc::new(
            SqliteStore::open(&settings.db_path())
                .with_context(|| format!("opening {}", settings.db_path().display()))?,
        );
        let key = MasterKey::load_or_create(&settings.master_key_path())?;
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
            match crate::git::recover_repo(&path) {
                Ok(removed) if !removed.is_empty() => {
                    tracing::warn!(app = %app.name, ?removed, "removed leftovers of an interrupted push")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(app = %app.name, error = %e, "checking repository"),
            }
        }
        Ok(Arc::new(Rack {
            configs: Configs::new(store.clone(), key),
            locks: Default::default(),
            builder: tokio::sync::OnceCell::new(),
            router: crate::router::Router::new(),
            runtime: tokio::sync::OnceCell::new(),
            store,
            settings,
        }))
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
