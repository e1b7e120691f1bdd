//! `Rack`: what every session shares, opened once at start-up: the
//! settings, the provider's handles and the deploy use cases over them.

use std::sync::Arc;

use anyhow::Result;

use crate::config::Settings;
use crate::deploy::Deployer;
use crate::provider::Provider;

pub struct Rack {
    pub settings: Settings,
    pub provider: Arc<Provider>,
    pub deployer: Deployer,
    /// Turns true when the SSH server stops accepting (SIGTERM or a
    /// handover): sessions that would go on forever (`logs -f`) end.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl Rack {
    /// Opens (creating on first start) the provider `settings` name. With
    /// `fresh`, cleans up what an interrupted process left; without (a
    /// process that replaces a running one, whose work is not debris),
    /// deploys wait until `Deployer::take_over`.
    pub async fn open(settings: Settings, fresh: bool) -> Result<Arc<Rack>> {
        let provider = Arc::new(crate::provider::open(&settings).await?);
        let deployer = Deployer::new(settings.clone(), provider.clone());
        if fresh {
            deployer.prepare().await?;
        } else {
            deployer.close_gate();
        }
        Ok(Arc::new(Rack {
            settings,
            provider,
            deployer,
            stopping: tokio::sync::watch::channel(false).0,
        }))
    }

    /// `ssh -p PORT git@HOST` as users should type it in hints.
    pub fn ssh_hint(&self) -> String {
        self.settings.ssh_hint()
    }

    pub fn build_log_path(&self, app: &str, build_id: &str) -> std::path::PathBuf {
        self.settings.build_log_path(app, build_id)
    }

    pub fn repo_path(&self, app: &str) -> std::path::PathBuf {
        self.settings.repo_path(app)
    }

    pub fn git_url(&self, app: &str) -> String {
        self.settings.git_url(app)
    }

    pub fn web_url(&self, app: &str) -> String {
        self.settings.web_url(app)
    }
}
