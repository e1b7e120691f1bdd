//! `Rack`: the handles every session shares, opened once at start-up.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::Settings;
use crate::release::config::Configs;
use crate::release::crypto::MasterKey;
use crate::store::Store;

pub struct Rack {
    pub settings: Settings,
    pub store: Arc<Store>,
    pub configs: Configs,
}

impl Rack {
    /// Opens (creating on first start) the data dir, state database and
    /// master key.
    pub fn open(settings: Settings) -> Result<Arc<Rack>> {
        settings.ensure_dirs()?;
        let store = Arc::new(
            Store::open(&settings.db_path())
                .with_context(|| format!("opening {}", settings.db_path().display()))?,
        );
        let key = MasterKey::load_or_create(&settings.master_key_path())?;
        Ok(Arc::new(Rack {
            configs: Configs::new(store.clone(), key),
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
