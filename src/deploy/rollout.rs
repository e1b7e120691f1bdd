//! Releases and rollouts: a new `vN` from a build and a config version, the
//! release phase, then start → commit point → switch on the runtime.
//!
//! The commit point is one store transaction that makes the release
//! current; the deploy branch's compare-and-swap (journalled on the release
//! row) follows it, then the traffic switch. Start-up recovery rolls a
//! journal entry forward when the release is current, back otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::git::DeployPush;
use crate::progress::Progress;
use crate::runtime::{
    HealthCheck, HealthKind, OneOff, OneOffIo, ProcessSpec, ReleaseSpec, Runtime,
};
use crate::state::Rack;
use crate::store::{now_rfc3339, BuildRecord, ReleaseRecord};

pub const RELEASE_FAILED: &str = "release failed";
pub const ROLLOUT_FAILED: &str = "rollout failed";

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
pub async fn release(
    rack: &Arc<Rack>,
    req: NewRelease<'_>,
    progress: &Progress,
) -> Result<ReleaseRecord, String> {
    let app = req.app;
    let runtime = rack.runtime().await.map_err(|e| {
        progress.stage(format!("Rollout failed: {e}"));
        ROLLOUT_FAILED.to_string()
    })?;
    let config_version = match req.config {
        ConfigChoice::Latest => rack
            .store
            .latest_config(app)
            .await
            .map_err(internal)?
            .map(|c| c.version)
            .unwrap_or(0),
        ConfigChoice::Version(v) => v,
    };
    let procfile = rack
        .store
        .build_procfile(&req.build.id)
        .await
        .map_err(internal)?;
    let state = rack.store.app_state(app).await.map_err(internal)?;
    let formation = crate::release::procfile::formation(procfile.as_ref(), &state.formation);
    let record = rack
        .store
        .create_release(ReleaseRecord {
            app: app.to_string(),
            version: 0,
            build_id: req.build.id.clone(),
            config_version,
            formation: formation.clone(),
            description: req.description.clone(),
            created_by: req.actor.to_string(),
            created_at: now_rfc3339(),
            status: "pending".into(),
            ref_update: req
                .push
                .map(|p| format!("{} {} {}", p.refname, p.old, p.new)),
        })
        .await
        .map_err(internal)?;
    let v = record.version;
    progress.stage(format!("Releasing v{v}"));

    let spec = match spec_for(rack, &record, &formation, new_deploy_id()).await {
        Ok(s) => s,
        Err(e) => {
            let _ = rack.store.set_release_status(app, v, "failed").await;
            progress.stage(format!("Release v{v} failed: {e}"));
            return Err(RELEASE_FAILED.to_string());
        }
    };

    if let Some(cmd) = procfile.as_ref().and_then(|p| p.get("release")) {
        if let Err(e) = release_phase(&*runtime, &spec, cmd, progress).await {
            let _ = rack.store.set_release_status(app, v, "failed").await;
            progress.stage(format!("Release phase failed: {e}"));
            return Err(RELEASE_FAILED.to_string());
        }
    }

    let result = roll(&*runtime, &spec, progress, async {
        set_timers(rack, &*runtime, &spec, &req.build.id, progress).await?;
        rack.store.commit_release(app, v, &spec.deploy_id, &formation).await.map_err(internal)?;
        if let Some(push) = req.push {
            // Under the app's lock nothing else moves the deploy branch, so
            // this cannot find it moved; if it does, the release still
            // stands and the log says why the ref lags.
            match push.apply() {
                Ok(()) => {
                    let _ = rack.store.clear_ref_update(app, v).await;
                }
                Err(e) => tracing::error!(app, version = v, error = %e, "deploy branch update after commit"),
            }
        }
        Ok(())
    })
    .await;
    match result {
        Ok(()) => {
            progress.stage(format!(
                "Deployed {app} v{v} in {:.1}s: {}",
                req.started.elapsed().as_secs_f64(),
                rack.web_url(app)
            ));
            prune_in_background(rack, app);
            Ok(ReleaseRecord {
                status: "succeeded".into(),
                ..record
            })
        }
        Err(e) => {
            let _ = rack.store.set_release_status(app, v, "failed").await;
            Err(e)
        }
    }
}

/// Hands the release's timers to the runtime just before the commit point
/// (a no-op where the rack's scheduler fires them; on aws the schedules).
/// A failure fails the release, which is then not committed.
async fn set_timers(
    rack: &Rack,
    runtime: &dyn Runtime,
    spec: &ReleaseSpec,
    build_id: &str,
    progress: &Progress,
) -> Result<(), String> {
    let timers = rack.store.build_timers(build_id).await.map_err(internal)?;
    runtime.set_timers(spec, &timers).await.map_err(|e| {
        progress.stage(format!(
            "Release v{} failed: scheduling its timers: {e}",
            spec.version
        ));
        RELEASE_FAILED.to_string()
    })
}

/// Rolls the current release again with new counts (`ps:scale`) or as is
/// (`ps:restart`), under a new rollout id. No new release.
pub async fn reroll(
    rack: &Arc<Rack>,
    app: &str,
    formation: BTreeMap<String, u32>,
    progress: &Progress,
) -> Result<(), String> {
    let state = rack.store.app_state(app).await.map_err(internal)?;
    let Some(v) = state.current_release else {
        rack.store
            .set_formation(app, &formation)
            .await
            .map_err(internal)?;
        return Ok(());
    };
    let runtime = rack
        .runtime()
        .await
        .map_err(|e| format!("{ROLLOUT_FAILED}: {e}"))?;
    let record = rack.store.release(app, v).await.map_err(internal)?;
    let spec = spec_for(rack, &record, &formation, new_deploy_id()).await?;
    roll(&*runtime, &spec, progress, async {
        rack.store
            .commit_rollout(app, &spec.deploy_id, &formation)
            .await
            .map_err(internal)
    })
    .await
}

/// start → commit → switch.
/// `commit` is a future, so it runs only once the new instances are ready.
async fn roll(
    runtime: &dyn Runtime,
    spec: &ReleaseSpec,
    progress: &Progress,
    commit: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
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
            return Err(ROLLOUT_FAILED.to_string());
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
        return Err(ROLLOUT_FAILED.to_string());
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
) -> Result<(), String> {
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
    match code {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("the release command exited with status {n}")),
        Err(e) => Err(e.to_string()),
    }
}

const RELEASE_PHASE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The complete description of `release` for the runtime.
pub async fn spec_for(
    rack: &Rack,
    release: &ReleaseRecord,
    formation: &BTreeMap<String, u32>,
    deploy_id: String,
) -> Result<ReleaseSpec, String> {
    let app = &release.app;
    let settings = rack
        .store
        .app(app)
        .await
        .map_err(|e| e.to_string())?
        .settings;
    let procfile = rack
        .store
        .build_procfile(&release.build_id)
        .await
        .map_err(|e| e.to_string())?;
    let env = rack
        .configs
        .secret_env(app, release.config_version)
        .await
        .map_err(|e| e.to_string())?;
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
    let image = match rack.store.build(app, &release.build_id).await {
        Ok(b) => image_of(&b),
        Err(_) => crate::build::image_tag(app, &release.build_id),
    };
    let mut hosts = vec![format!("{app}.{}", rack.settings.domain)];
    hosts.extend(rack.store.domains(app).await.map_err(|e| e.to_string())?);
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
        hosts,
    })
}

/// The image a build's releases run: a pushed image (aws) by its registry
/// digest, locally by tag.
pub fn image_of(build: &BuildRecord) -> String {
    match build.image_id.as_deref() {
        Some(i) if i.contains('@') => i.to_string(),
        _ => crate::build::image_tag(&build.app, &build.id),
    }
}

/// After a deploy, in the background: removes the app's images but those of
/// the newest `keep_releases` releases, the current one and the newest
/// build. Runs under the app's deploy lock (taken once the deploy that
/// called it lets go), so a build in progress cannot tag an image the list
/// missed; a push arriving during the prune (tens of ms) waits for it. An
/// image still used by an instance (one draining) stays until a later
/// prune.
pub fn prune_in_background(rack: &Arc<Rack>, app: &str) {
    // The aws provider keeps images in ECR under its lifecycle policy.
    if rack.settings.provider != crate::config::Provider::Local {
        return;
    }
    let rack = rack.clone();
    let app = app.to_string();
    tokio::spawn(async move {
        let _guard = match rack.locks.acquire(&app, &Progress::discard()).await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(app = %app, error = %e, "pruning release images");
                return;
            }
        };
        match prune_images(&rack, &app).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(app = %app, ?removed, "pruned release images")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(app = %app, error = %e, "pruning release images"),
        }
    });
}

async fn prune_images(rack: &Rack, app: &str) -> Result<Vec<String>, String> {
    let runtime = rack.runtime().await?;
    let mut builds: Vec<String> = rack
        .store
        .releases(app, rack.settings.keep_releases)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|r| r.build_id)
        .collect();
    if let Some(v) = rack
        .store
        .app_state(app)
        .await
        .map_err(|e| e.to_string())?
        .current_release
    {
        builds.push(
            rack.store
                .release(app, v)
                .await
                .map_err(|e| e.to_string())?
                .build_id,
        );
    }
    builds.extend(
        rack.store
            .builds(app, 1)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|b| b.id),
    );
    let mut keep = std::collections::HashSet::new();
    for id in builds {
        match rack.store.build(app, &id).await {
            Ok(b) => keep.insert(image_of(&b)),
            Err(_) => keep.insert(crate::build::image_tag(app, &id)),
        };
    }
    // Only this rack's builds: the engine may hold another rack's images of
    // an app of the same name.
    let remove: Vec<String> = rack
        .store
        .builds(app, usize::MAX)
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(image_of)
        .filter(|i| !keep.contains(i))
        .collect();
    runtime
        .prune_images(app, &remove)
        .await
        .map_err(|e| e.to_string())
}

/// Rollout ids: short, unique, sortable enough to read in `docker ps`.
pub fn new_deploy_id() -> String {
    let b = crate::build::new_build_id();
    format!("d{}", &b[2..])
}

fn internal(e: crate::store::StoreError) -> String {
    tracing::error!(error = %e, "state database");
    "internal error".to_string()
}
