//! The aws provider: state in the rack's S3 bucket, the master key and host
//! key sealed with its KMS key there, releases on ECS (`AwsRuntime`), build
//! images pushed to the app's ECR repository, an app stack per app, and the
//! deploy lock followed by the app's S3 lease. Everything here calls into
//! `crate::aws`; nothing outside `provider/` does.

use std::sync::Arc;

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use tokio::sync::mpsc::Sender;

use super::lease::LeasedLocks;
use super::{Install, Provider};
use crate::aws::{self, rack::AwsSection, state::S3State, AwsContext};
use crate::config::Settings;
use crate::progress::Progress;
use crate::release::config::Configs;
use crate::release::crypto::MasterKey;
use crate::runtime::RuntimeFuture as Fut;
use crate::runtime::{
    LogLine, LogOptions, OneOff, OneOffIo, ProcessInfo, ReleaseSpec, Retention, Runtime,
    RuntimeError, Started,
};
use crate::store::prelude::*;
use crate::store::SqliteStore;

/// The `[aws]` section of `rack.toml` and the rack's name, or why not.
async fn context(settings: &Settings) -> Result<(AwsContext, AwsSection)> {
    let section = AwsSection::from_file(&settings.data_dir)?.ok_or_else(|| {
        anyhow::anyhow!("rack.toml has no [aws] section: run rack install aws --rack NAME first")
    })?;
    let name = settings.rack.clone().ok_or_else(|| {
        anyhow::anyhow!("the aws provider needs --rack NAME (or rack = \"NAME\" in rack.toml)")
    })?;
    Ok((AwsContext::from_env(&name).await?, section))
}

/// State in S3, the secrets master key and host key sealed with the rack's
/// KMS key in the bucket, processes on ECS.
pub(super) async fn open(settings: &Settings) -> Result<Provider> {
    let (ctx, section) = context(settings).await?;
    let state = S3State::new(ctx.clone(), section.bucket.clone());
    let master = aws::state::load_or_create_secret(&state, &section.key_arn, "master.key", || {
        let mut b = vec![0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        b
    })
    .await?;
    let key = MasterKey::from_raw(&master)?;
    let pem =
        aws::state::load_or_create_secret(&state, &section.key_arn, "ssh_host_ed25519_key", || {
            crate::ssh::hostkey::generate_pem().into_bytes()
        })
        .await?;
    let host_key = russh::keys::PrivateKey::from_openssh(&pem)
        .context("reading the host key from the bucket")?;
    let store: Arc<dyn Store> = Arc::new(aws::store::S3Store::new(
        state.clone(),
        section.key_arn.clone(),
    ));
    // First start on aws: bring the local keys along.
    if store.list_keys().await?.is_empty() && settings.db_path().exists() {
        let local = SqliteStore::open(&settings.db_path())?;
        for k in local.list_keys().await? {
            store.add_key(&k).await?;
            tracing::info!(key = %k.name, "imported local key into the aws store");
        }
    }
    let runtime: Arc<dyn Runtime> = Arc::new(EcsRuntime {
        inner: aws::runtime::AwsRuntime::new(ctx.clone(), section.clone()),
        ctx,
        section,
        docker: settings.docker.clone(),
    });
    Ok(Provider {
        configs: Configs::new(store.clone(), key),
        store,
        locks: Box::new(LeasedLocks::new(state)),
        host_key,
        router: None,
        firewall: None,
        runtime: tokio::sync::OnceCell::new_with(Some(runtime.clone())),
        connect: Box::new(move || {
            let rt = runtime.clone();
            Box::pin(async move { Ok(rt) })
        }),
        resources: tokio::sync::OnceCell::new(),
        // RDS and ElastiCache resources are not built yet: every
        // resources:* command says so instead of half-working.
        connect_resources: Box::new(|| {
            Box::pin(async {
                Err("resources are not available on the aws provider yet".to_string())
            })
        }),
    })
}

/// The bucket's store, for `rack keys`: checked up front, so a wrong bucket
/// fails with S3's own message rather than half-way through.
pub(super) async fn keys_store(settings: &Settings) -> Result<Box<dyn Store>> {
    let (ctx, section) = context(settings).await?;
    let state = S3State::new(ctx, section.bucket.clone());
    state
        .ctx
        .s3
        .list_objects_v2()
        .bucket(&section.bucket)
        .max_keys(1)
        .send()
        .await
        .map_err(|e| aws::AwsError::api("S3.ListObjectsV2", e))
        .with_context(|| format!("opening the rack's bucket {}", section.bucket))?;
    Ok(Box::new(aws::store::S3Store::new(state, section.key_arn)))
}

/// `rack update` on aws: this binary's templates applied to the rack's
/// stack and its apps' stacks through change sets, with progress on stderr.
pub(super) async fn update(settings: &Settings, dry_run: bool) -> Result<String> {
    let (ctx, _) = context(settings).await?;
    let data_dir = settings.data_dir.clone();
    Progress::forward_to(&mut tokio::io::stderr(), |progress| async move {
        aws::lifecycle::update::update(&ctx, &data_dir, dry_run, &progress).await
    })
    .await?;
    Ok(if dry_run {
        "dry run: nothing was changed".to_string()
    } else {
        format!(
            "rack {} runs the templates of {}",
            settings.rack.as_deref().unwrap_or(""),
            crate::version()
        )
    })
}

/// `rack backup` on aws: the bucket's current objects (config sealed with
/// the master key and KMS, the KMS-sealed master and host keys, state) as
/// `bucket/KEY` entries. The bucket is versioned, so older versions stay
/// there too.
pub(super) async fn backup(
    settings: &Settings,
    include_master_key: bool,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    if include_master_key {
        anyhow::bail!(
            "an aws rack's master key is sealed with its KMS key: the backup holds it sealed; \
             leave out --include-master-key"
        );
    }
    /// A state object larger than this is not the rack's (they are small
    /// JSON documents and sealed keys).
    const MAX_OBJECT: usize = 64 * 1024 * 1024;
    let (ctx, section) = context(settings).await?;
    let state = S3State::new(ctx, section.bucket.clone());
    let mut tar = tar::Builder::new(out);
    let manifest = crate::backup::Manifest::now("aws", 0, false);
    crate::backup::append_bytes(
        &mut tar,
        crate::backup::MANIFEST,
        &serde_json::to_vec_pretty(&manifest)?,
    )?;
    for key in state.list("", None).await? {
        let Some((bytes, _)) = state.get_bytes(&key).await? else {
            continue; // deleted since the listing
        };
        if bytes.len() > MAX_OBJECT {
            anyhow::bail!(
                "object {key} is {} bytes: not a rack state object",
                bytes.len()
            );
        }
        crate::backup::append_bytes(&mut tar, &format!("bucket/{key}"), &bytes)?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// `rack install aws` / `rack uninstall aws`, with progress on stderr.
pub(super) async fn install(req: Install, install: bool) -> Result<()> {
    std::fs::create_dir_all(&req.data_dir)?;
    let ctx = AwsContext::from_env(&req.rack).await?;
    let result = Progress::forward_to(&mut tokio::io::stderr(), |progress| async move {
        if install {
            let opts = aws::rack::InstallOptions {
                vpc_id: req.vpc,
                subnet_ids: (!req.subnets.is_empty()).then_some(req.subnets),
            };
            aws::rack::install_with(&ctx, &req.data_dir, &opts, &progress)
                .await
                .map(|s| {
                    println!(
                        "Installed rack {} (stack {}); rack.toml updated",
                        req.rack, s.stack
                    );
                })
        } else {
            aws::rack::uninstall(&ctx, &req.data_dir, &progress)
                .await
                .map(|()| println!("Uninstalled rack {}", req.rack))
        }
    })
    .await;
    Ok(result?)
}

/// `AwsRuntime` plus what the provider does around it: the app's stack on
/// create, the ECR push of a build, and the untagging of older build images
/// on the rack's engine (releases run from ECR, whose lifecycle policy
/// bounds it; the engine only keeps the newest build, as a cache).
struct EcsRuntime {
    inner: aws::runtime::AwsRuntime,
    ctx: AwsContext,
    section: AwsSection,
    /// The rack's Docker engine, where builds run.
    docker: Option<String>,
}

fn other(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Other(e.to_string())
}

impl EcsRuntime {
    async fn engine(&self) -> Result<bollard::Docker, RuntimeError> {
        crate::build::connect_docker(self.docker.as_deref())
            .await
            .map_err(other)
    }

    /// Untags the build images named in `remove` that the engine has. Best
    /// effort: a failure is logged.
    async fn untag(&self, app: &str, remove: &[String]) -> Result<Vec<String>, RuntimeError> {
        let docker = self.engine().await?;
        let tags = crate::images::app_image_tags(&docker, app)
            .await
            .map_err(other)?;
        let mut removed = Vec::new();
        for tag in tags.into_iter().filter(|t| remove.contains(t)) {
            let opts = bollard::query_parameters::RemoveImageOptionsBuilder::new().build();
            match docker.remove_image(&tag, Some(opts), None).await {
                Ok(_) => {
                    tracing::info!(app, image = %tag, "removed a local build image");
                    removed.push(tag);
                }
                Err(e) => {
                    tracing::debug!(app, image = %tag, error = %e, "removing a local build image")
                }
            }
        }
        Ok(removed)
    }
}

/// `AwsRuntime` as it is, but for the app stack, the images and their
/// retention.
impl Runtime for EcsRuntime {
    fn start<'a>(&'a self, spec: &'a ReleaseSpec, p: &'a Progress) -> Fut<'a, Started> {
        self.inner.start(spec, p)
    }

    fn switch<'a>(&'a self, spec: &'a ReleaseSpec, s: Started, p: &'a Progress) -> Fut<'a, ()> {
        self.inner.switch(spec, s, p)
    }

    fn abort(&self, started: Started) -> BoxFuture<'_, ()> {
        self.inner.abort(started)
    }

    fn processes<'a>(&'a self, app: &'a str) -> Fut<'a, Vec<ProcessInfo>> {
        self.inner.processes(app)
    }

    fn logs<'a>(&'a self, app: &'a str, o: LogOptions, tx: Sender<LogLine>) -> Fut<'a, ()> {
        self.inner.logs(app, o, tx)
    }

    fn run<'a>(&'a self, spec: &'a ReleaseSpec, cmd: OneOff, io: OneOffIo) -> Fut<'a, i64> {
        self.inner.run(spec, cmd, io)
    }

    fn set_hosts<'a>(&'a self, app: &'a str, hosts: Vec<String>) -> Fut<'a, ()> {
        self.inner.set_hosts(app, hosts)
    }

    /// The app's stack: ECR repository, log group, target group, rule.
    fn create_app<'a>(&'a self, app: &'a str, hosts: Vec<String>, p: &'a Progress) -> Fut<'a, ()> {
        Box::pin(async move {
            aws::app::create_app(&self.ctx, &self.section, app, &hosts, p)
                .await
                .map(|_| ())
                .map_err(other)
        })
    }

    fn destroy<'a>(&'a self, app: &'a str) -> Fut<'a, ()> {
        self.inner.destroy(app)
    }

    /// Pushes the build to the app's ECR repository; releases run it by
    /// digest.
    fn publish_image<'a>(
        &'a self,
        app: &'a str,
        build_id: &'a str,
        _image_id: String,
        progress: &'a Progress,
    ) -> Fut<'a, String> {
        Box::pin(async move {
            let docker = self.engine().await?;
            let tag = crate::images::image_tag(app, build_id);
            let pushed = aws::ecr::push_image(&self.ctx, &docker, &tag, app, build_id, progress)
                .await
                .map_err(other)?;
            Ok(pushed.reference)
        })
    }

    fn release_image(&self, app: &str, build_id: &str, recorded: Option<&str>) -> String {
        match recorded {
            Some(reference) => reference.to_string(),
            None => crate::images::image_tag(app, build_id),
        }
    }

    fn retention(&self) -> Retention {
        Retention::NewestBuild
    }

    fn prune_images<'a>(&'a self, app: &'a str, remove: &'a [String]) -> Fut<'a, Vec<String>> {
        Box::pin(self.untag(app, remove))
    }

    fn has_image<'a>(&'a self, image: &'a str) -> Fut<'a, bool> {
        self.inner.has_image(image)
    }

    fn recover<'a>(&'a self, current: &'a [ReleaseSpec], p: &'a Progress) -> Fut<'a, ()> {
        self.inner.recover(current, p)
    }

    fn fires_timers(&self) -> bool {
        self.inner.fires_timers()
    }

    fn set_timers<'a>(
        &'a self,
        spec: &'a ReleaseSpec,
        timers: &'a [crate::timers::Timer],
        suspended: &'a [String],
    ) -> Fut<'a, ()> {
        self.inner.set_timers(spec, timers, suspended)
    }

    fn volume_sizes<'a>(
        &'a self,
        app: &'a str,
        names: &'a [String],
    ) -> Fut<'a, std::collections::BTreeMap<String, Option<u64>>> {
        self.inner.volume_sizes(app, names)
    }

    fn destroy_volume<'a>(&'a self, app: &'a str, name: &'a str) -> Fut<'a, ()> {
        self.inner.destroy_volume(app, name)
    }

    fn export_volume<'a>(
        &'a self,
        app: &'a str,
        name: &'a str,
        out: &'a mut (dyn tokio::io::AsyncWrite + Send + Unpin),
    ) -> Fut<'a, ()> {
        self.inner.export_volume(app, name, out)
    }

    fn import_volume<'a>(
        &'a self,
        app: &'a str,
        name: &'a str,
        tar: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    ) -> Fut<'a, ()> {
        self.inner.import_volume(app, name, tar)
    }
}
