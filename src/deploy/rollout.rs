//! Releases and rollouts: a new `vN` from a build and a config version, the
//! release phase, then start → commit point → switch on the runtime.
//!
//! The commit point is one store transaction that makes the release
//! current; the deploy branch's compare-and-swap (journalled on the release
//! row) follows it, then the traffic switch. Start-up recovery rolls a
//! journal entry forward when the release is current, back otherwise.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{internal, DeployError, Deployer, Result};
use crate::git::DeployPush;
use crate::progress::Progress;
use crate::runtime::{
    HealthCheck, HealthKind, OneOff, OneOffIo, ProcessSpec, ReleaseSpec, Retention, Runtime,
    RuntimeError,
};
use crate::store::{now_rfc3339, BuildRecord, RefUpdateJournal, ReleaseRecord, ReleaseStatus};

/// Which config a new release takes.
pub enum ConfigChoice {
    /// The newest version (deploys and config changes).
    Latest,
    /// A given version (rollback: already recorded as the newest).
    Version(i64),
}

pub struct NewRelease<'a> {
    pub app: &'a str,
    pub build: &'a BuildRecord,
    pub config: ConfigChoice,
    pub description: String,
    pub actor: &'a str,
    /// The deploy branch update this release owes (pushes only).
    pub push: Option<&'a DeployPush>,
    pub started: Instant,
}

/// Creates and rolls out a release; the caller holds the app's deploy lock.
/// `Err` is the push's `ng` reason.
impl Deployer {
    pub async fn release(&self, req: NewRelease<'_>, progress: &Progress) -> Result<ReleaseRecord> {
        let app = req.app;
        let result = self.release_inner(req, progress).await;
        use crate::metrics::Outcome;
        let outcome = match &result {
            Ok(_) => Outcome::succeeded,
            Err(DeployError::ReleaseFailed) => Outcome::release_failed,
            Err(DeployError::RolloutFailed) => Outcome::rollout_failed,
            Err(_) => Outcome::failed,
        };
        crate::metrics::deploy(app, outcome);
        result
    }

    async fn release_inner(
        &self,
        req: NewRelease<'_>,
        progress: &Progress,
    ) -> Result<ReleaseRecord> {
        let app = req.app;
        let store = &self.provider.store;
        let runtime = self.provider.runtime().await.map_err(|e| {
            progress.stage(format!("Rollout failed: {e}"));
            DeployError::RolloutFailed
        })?;
        let config_version = match req.config {
            ConfigChoice::Latest => store
                .latest_config(app)
                .await
                .map_err(internal)?
                .map(|c| c.version)
                .unwrap_or(0),
            ConfigChoice::Version(v) => v,
        };
        let procfile = store
            .build_procfile(&req.build.id)
            .await
            .map_err(internal)?;
        let state = store.app_state(app).await.map_err(internal)?;
        let formation = crate::release::procfile::formation(procfile.as_ref(), &state.formation);
        let record = store
            .create_release(ReleaseRecord {
                app: app.to_string(),
                version: 0,
                build_id: req.build.id.clone(),
                config_version,
                formation: formation.clone(),
                description: req.description.clone(),
                created_by: req.actor.to_string(),
                created_at: now_rfc3339(),
                status: ReleaseStatus::Pending,
                ref_update: req.push.map(journal),
            })
            .await
            .map_err(internal)?;
        let v = record.version;
        progress.stage(format!("Releasing v{v}"));

        let spec = match self
            .spec_for(&*runtime, &record, &formation, new_deploy_id())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                let _ = store
                    .set_release_status(app, v, ReleaseStatus::Failed)
                    .await;
                progress.stage(format!("Release v{v} failed: {e}"));
                return Err(DeployError::ReleaseFailed);
            }
        };

        if let Some(cmd) = procfile.as_ref().and_then(|p| p.get("release")) {
            let phase = Instant::now();
            let ran = release_phase(&*runtime, &spec, cmd, progress).await;
            crate::metrics::stage_took(crate::metrics::Stage::release_phase, phase.elapsed());
            if let Err(e) = ran {
                let _ = store
                    .set_release_status(app, v, ReleaseStatus::Failed)
                    .await;
                progress.stage(format!("Release phase failed: {e}"));
                return Err(DeployError::ReleaseFailed);
            }
        }

        let rolling = Instant::now();
        let result = roll(&*runtime, &spec, progress, async {
        set_timers(&**store, &*runtime, &spec, &req.build.id, progress).await?;
        store.commit_release(app, v, &spec.deploy_id, &formation).await.map_err(internal)?;
        if let Some(push) = req.push {
            // Under the app's lock nothing else moves the deploy branch, so
            // this cannot find it moved; if it does, the release still
            // stands and the log says why the ref lags.
            match push.apply() {
                Ok(()) => {
                    let _ = store.clear_ref_update(app, v).await;
                }
                Err(e) => tracing::error!(app, version = v, error = %e, "deploy branch update after commit"),
            }
        }
        Ok(())
    })
    .await;
        crate::metrics::stage_took(crate::metrics::Stage::rollout, rolling.elapsed());
        match result {
            Ok(()) => {
                progress.stage(format!(
                    "Deployed {app} v{v} in {:.1}s: {}",
                    req.started.elapsed().as_secs_f64(),
                    self.settings.web_url(app)
                ));
                self.prune_in_background(&*runtime, app);
                Ok(ReleaseRecord {
                    status: ReleaseStatus::Succeeded,
                    ..record
                })
            }
            Err(e) => {
                let _ = store
                    .set_release_status(app, v, ReleaseStatus::Failed)
                    .await;
                Err(e)
            }
        }
    }

    /// Rolls the current release again with new counts (`ps:scale`) or as is
    /// (`ps:restart`), under a new rollout id. No new release.
    pub(super) async fn reroll(
        &self,
        app: &str,
        formation: BTreeMap<String, u32>,
        progress: &Progress,
    ) -> Result<()> {
        let store = &self.provider.store;
        let state = store.app_state(app).await.map_err(internal)?;
        let Some(v) = state.current_release else {
            store
                .set_formation(app, &formation)
                .await
                .map_err(internal)?;
            return Ok(());
        };
        let runtime = self
            .provider
            .runtime()
            .await
            .map_err(DeployError::NoRuntime)?;
        let record = store.release(app, v).await.map_err(internal)?;
        let spec = self
            .spec_for(&*runtime, &record, &formation, new_deploy_id())
            .await?;
        roll(&*runtime, &spec, progress, async {
            store
                .commit_rollout(app, &spec.deploy_id, &formation)
                .await
                .map_err(internal)
        })
        .await
    }
}

/// The deploy branch update `push` owes, as the release journals it.
fn journal(push: &DeployPush) -> RefUpdateJournal {
    RefUpdateJournal {
        refname: push.refname.clone(),
        old: push.old.to_string(),
        new: push.new.to_string(),
    }
}

/// start → commit → switch.
/// `commit` is a future, so it runs only once the new instances are ready.
async fn roll(
    runtime: &dyn Runtime,
    spec: &ReleaseSpec,
    progress: &Progress,
    commit: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    let counts: Vec<String> = spec
        .processes
        .iter()
        .map(|p| format!("{}={}", p.kind, p.count))
        .collect();
    progress.stage(format!("Rolling out {}", counts.join(" ")));
    let started = match runtime.start(spec, progress).await {
        Ok(s) => s,
        Err(e) => {
            for line in e.to_string().lines() {
                progress.detail(line);
            }
            progress.stage(format!(
                "Rollout of v{} failed; the previous release keeps serving",
                spec.version
            ));
            return Err(DeployError::RolloutFailed);
        }
    };
    if let Err(e) = commit.await {
        runtime.abort(started).await;
        return Err(e);
    }
    if let Err(e) = runtime.switch(spec, started, progress).await {
        // Committed: recovery (or the next deploy) re-routes; say so.
        tracing::error!(app = %spec.app, error = %e, "switching traffic");
        progress.stage(format!("Switching traffic failed: {e}"));
        return Err(DeployError::RolloutFailed);
    }
    Ok(())
}

/// Runs the Procfile's `release:` command once, in a one-off container of
/// the new release, streaming its output into the progress sink.
async fn release_phase(
    runtime: &dyn Runtime,
    spec: &ReleaseSpec,
    command: &str,
    progress: &Progress,
) -> Result<(), RuntimeError> {
    progress.stage(format!("Running release command: {command}"));
    let (w, mut r) = tokio::io::duplex(64 * 1024);
    let cmd = OneOff {
        argv: vec!["/bin/sh".into(), "-c".into(), command.to_string()],
        tty: None,
        resize: None,
        timeout: Some(RELEASE_PHASE_TIMEOUT),
        labels: BTreeMap::from([("rack.release-phase".to_string(), spec.version.to_string())]),
    };
    let (w2, mut r2) = tokio::io::duplex(64 * 1024);
    let io = OneOffIo {
        stdin: None,
        stdout: Box::new(w),
        stderr: Box::new(w2),
    };
    let pump = |r: &mut tokio::io::DuplexStream| {
        let progress = progress.clone();
        let mut r = std::mem::replace(r, tokio::io::duplex(1).0);
        async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(&mut r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                progress.detail(line);
            }
        }
    };
    let (code, _, _) = tokio::join!(runtime.run(spec, cmd, io), pump(&mut r), pump(&mut r2));
    match code? {
        0 => Ok(()),
        n => Err(RuntimeError::Other(format!(
            "the release command exited with status {n}"
        ))),
    }
}

const RELEASE_PHASE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

impl Deployer {
    /// The complete description of `release` for the runtime. Fails with
    /// the store's or the config's own error (`DeployError::Store`,
    /// `DeployError::Config`), whose text says what is missing.
    pub async fn spec_for(
        &self,
        runtime: &dyn Runtime,
        release: &ReleaseRecord,
        formation: &BTreeMap<String, u32>,
        deploy_id: String,
    ) -> Result<ReleaseSpec> {
        let app = &release.app;
        let store = &self.provider.store;
        let settings = store.app(app).await?.settings;
        let procfile = store.build_procfile(&release.build_id).await?;
        let env = self
            .provider
            .configs
            .secret_env(app, release.config_version)
            .await?;
        let processes = formation
            .iter()
            .map(|(kind, count)| ProcessSpec {
                kind: kind.clone(),
                command: procfile.as_ref().and_then(|p| p.get(kind).cloned()),
                count: *count,
                memory_bytes: settings
                    .get(&format!("resources.{kind}.memory"))
                    .and_then(|m| crate::appsettings::parse_memory(m))
                    .map(|b| b as i64),
                nano_cpus: settings
                    .get(&format!("resources.{kind}.cpu"))
                    .and_then(|c| c.parse::<f64>().ok())
                    .map(|c| (c * 1e9) as i64),
            })
            .collect();
        let timeout = settings
            .get("healthcheck.timeout")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(60));
        let kind = match settings.get("healthcheck.type").map(String::as_str) {
            Some("tcp") => HealthKind::Tcp,
            Some("none") => HealthKind::None,
            _ => HealthKind::Http {
                path: settings
                    .get("healthcheck.path")
                    .cloned()
                    .unwrap_or_else(|| "/".into()),
            },
        };
        let recorded = store.build(app, &release.build_id).await.ok();
        let image = runtime.release_image(
            app,
            &release.build_id,
            recorded.as_ref().and_then(|b| b.image_id.as_deref()),
        );
        Ok(ReleaseSpec {
            app: app.clone(),
            version: release.version,
            deploy_id,
            build_id: release.build_id.clone(),
            image,
            env,
            port: settings.get("port").and_then(|p| p.parse().ok()),
            processes,
            health: HealthCheck { kind, timeout },
            hosts: self.hosts(app).await?,
            volumes: store.volumes(app).await?,
        })
    }

    /// Host names routed to the app's web processes: `APP.DOMAIN` first,
    /// then its domains.
    pub async fn hosts(&self, app: &str) -> Result<Vec<String>, crate::store::StoreError> {
        let mut hosts = vec![format!("{app}.{}", self.settings.domain)];
        hosts.extend(self.provider.store.domains(app).await?);
        Ok(hosts)
    }

    /// The image a build's releases run (`ReleaseSpec::image`).
    pub fn image_of(&self, runtime: &dyn Runtime, build: &BuildRecord) -> String {
        runtime.release_image(&build.app, &build.id, build.image_id.as_deref())
    }

    /// After a release, as a housekeeping job, when the engine keeps the images
    /// of the newest releases ([`Retention::Releases`]): removes the app's
    /// images but those of the newest `keep_releases` releases, the current
    /// one and the newest build. Runs under the app's deploy lock (taken
    /// once the deploy that called it lets go), so a build in progress
    /// cannot tag an image the list missed; a push arriving during the
    /// prune (tens of ms) waits for it. An image still used by an instance
    /// (one draining) stays until a later prune.
    fn prune_in_background(&self, runtime: &dyn Runtime, app: &str) {
        // Otherwise the registry keeps the releases' images under its own
        // retention; the publish already pruned the engine.
        if runtime.retention() != Retention::Releases {
            return;
        }
        let this = self.clone();
        let app = app.to_string();
        let job = async move {
            let _guard = match this.lock(&app, &Progress::discard()).await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(app = %app, error = %e, "pruning release images");
                    return;
                }
            };
            let keep = match this.builds_to_keep(&app).await {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(app = %app, error = %e, "pruning release images");
                    return;
                }
            };
            match this.provider.runtime().await {
                Ok(runtime) => this.prune_own_images(&*runtime, &app, &keep).await,
                Err(e) => tracing::warn!(app = %app, error = %e, "pruning release images"),
            }
        };
        // Owned by the server's housekeeper: stopped with it, never detached.
        crate::housekeeping::spawn("image prune", Box::pin(job));
    }

    /// The builds of the newest `keep_releases` releases, the current
    /// release and the newest build.
    async fn builds_to_keep(&self, app: &str) -> Result<Vec<String>, crate::store::StoreError> {
        let store = &self.provider.store;
        let mut builds: Vec<String> = store
            .releases(app, self.settings.keep_releases)
            .await?
            .into_iter()
            .map(|r| r.build_id)
            .collect();
        if let Some(v) = store.app_state(app).await?.current_release {
            builds.push(store.release(app, v).await?.build_id);
        }
        builds.extend(store.builds(app, 1).await?.into_iter().map(|b| b.id));
        Ok(builds)
    }
}

/// Rollout ids: short, unique, sortable enough to read in `docker ps`.
pub fn new_deploy_id() -> String {
    let b = crate::build::new_build_id();
    format!("d{}", &b[2..])
}

/// Hands the release's timers to the runtime just before the commit point
/// (a no-op where the rack's scheduler fires them; on aws the schedules).
/// A failure fails the release, which is then not committed.
async fn set_timers(
    store: &dyn crate::store::Store,
    runtime: &dyn Runtime,
    spec: &ReleaseSpec,
    build_id: &str,
    progress: &Progress,
) -> Result<()> {
    let timers = store.build_timers(build_id).await.map_err(internal)?;
    let suspended = suspended_timers(store, &spec.app).await?;
    runtime
        .set_timers(spec, &timers, &suspended)
        .await
        .map_err(|e| {
            progress.stage(format!(
                "Release v{} failed: scheduling its timers: {e}",
                spec.version
            ));
            DeployError::ReleaseFailed
        })
}

/// Names of the app's suspended timers (kept across releases).
pub(super) async fn suspended_timers(
    store: &dyn crate::store::Store,
    app: &str,
) -> Result<Vec<String>> {
    let states = store.timer_states(app).await.map_err(internal)?;
    Ok(states
        .into_iter()
        .filter(|(_, s)| s.suspended)
        .map(|(name, _)| name)
        .collect())
}
