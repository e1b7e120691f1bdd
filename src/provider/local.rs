//! The local provider: SQLite in the data dir, the master key and host key
//! as files beside it, `LocalRuntime` on the rack's Docker engine (connected
//! on first use) behind the router, in-process deploy locks.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::{Locks, Provider};
use crate::config::Settings;
use crate::release::config::Configs;
use crate::release::crypto::MasterKey;
use crate::resources::local::LocalResources;
use crate::resources::Resources;
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
        pids_limit: settings.containers.pids,
        default_memory: settings.containers.memory_bytes,
        default_nano_cpus: settings.containers.nano_cpus,
        ..Default::default()
    };
    // One LocalRuntime for releases and resources: resources join the
    // apps' networks through it (one lock around network creation).
    let shared: Arc<tokio::sync::OnceCell<LocalRuntime>> = Arc::default();
    let connect_local = {
        let (docker, opts, router, shared) =
            (docker.clone(), opts.clone(), r.clone(), shared.clone());
        move || {
            let (docker, opts, router, shared) =
                (docker.clone(), opts.clone(), router.clone(), shared.clone());
            async move {
                shared
                    .get_or_try_init(|| async {
                        let engine = crate::build::connect_docker(docker.as_deref())
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok::<_, String>(LocalRuntime::with_options(engine, router, opts))
                    })
                    .await
                    .cloned()
            }
        }
    };
    let connect_resources = connect_local.clone();
    let backups = settings.data_dir.join("backups");
    Ok(Provider {
        configs: Configs::new(store.clone(), key),
        store,
        locks: Box::new(Locks::default()),
        host_key,
        router: Some(router),
        firewall: settings.firewall.then(|| settings.namespace.clone()),
        runtime: tokio::sync::OnceCell::new(),
        connect: Box::new(move || {
            let connect = connect_local.clone();
            Box::pin(async move {
                let rt: Arc<dyn Runtime> = Arc::new(connect().await?);
                Ok(rt)
            })
        }),
        resources: tokio::sync::OnceCell::new(),
        connect_resources: Box::new(move || {
            let (connect, backups) = (connect_resources.clone(), backups.clone());
            Box::pin(async move {
                let res: Arc<dyn Resources> =
                    Arc::new(LocalResources::new(connect().await?, backups));
                Ok(res)
            })
        }),
    })
}
