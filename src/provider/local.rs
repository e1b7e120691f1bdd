//! The local provider: SQLite in the data dir, the master key and host key
//! as files beside it, `LocalRuntime` on the rack's Docker engine (connected
//! on first use) behind the router, in-process deploy locks.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::{Locks, Provider};
use crate::config::Settings;
use crate::release::config::Configs;
use crate::release::crypto::MasterKey;
use crate::router::Router;
use crate::runtime::local::{LocalOptions, LocalRuntime};
use crate::runtime::Runtime;
use crate::store::{SqliteStore, Store};

pub(super) fn open(settings: &Settings) -> Result<Provider> {
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&settings.db_path())
            .with_context(|| format!("opening {}", settings.db_path().display()))?,
    );
    let key = MasterKey::load_or_create(&settings.master_key_path())?;
    let host_key = crate::ssh::hostkey::load_or_create(&settings.host_key_path())?;
    let router = Router::with_hold_limits(settings.hold.clone());
    let (docker, r) = (settings.docker.clone(), router.clone());
    let opts = LocalOptions {
        namespace: settings.namespace.clone(),
        pause_at: settings.test_pause_at.clone(),
        ..Default::default()
    };
    Ok(Provider {
        configs: Configs::new(store.clone(), key),
        store,
        locks: Box::new(Locks::default()),
        host_key,
        router: Some(router),
        firewall: settings.firewall.then(|| settings.namespace.clone()),
        runtime: tokio::sync::OnceCell::new(),
        connect: Box::new(move || {
            let (docker, opts, router) = (docker.clone(), opts.clone(), r.clone());
            Box::pin(async move {
                let engine = crate::build::connect_docker(docker.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                let rt: Arc<dyn Runtime> =
                    Arc::new(LocalRuntime::with_options(engine, router, opts));
                Ok(rt)
            })
        }),
    })
}
