//! One build as the pipeline runs it: the record in the store, the log
//! file, build args from config, and the call to the `Builder`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use git2::Oid;

use crate::build::{new_build_id, BuildRequest, LogSink};
use crate::progress::Progress;
use crate::state::Rack;
use crate::store::{now_rfc3339, BuildRecord, Store};

pub struct BuildJob {
    pub app: String,
    pub commit: Oid,
    pub push_options: Vec<String>,
    pub actor: String,
    pub no_cache: bool,
}

/// Marks the record cancelled if the build future is dropped before it
/// finished (the client went away), so no build shows "running" forever.
struct Pending {
    store: Arc<dyn Store>,
    record: Option<BuildRecord>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            r.status = "cancelled".into();
            r.finished_at = Some(now_rfc3339());
            r.error = Some("cancelled: the client went away".into());
            let store = self.store.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = store.finish_build(&r).await;
                });
            }
        }
    }
}

/// Builds `job.commit`; the user-facing `Err` is the push's `ng` reason.
pub async fn run_build(
    rack: &Arc<Rack>,
    job: BuildJob,
    progress: &Progress,
) -> Result<BuildRecord, String> {
    let started = Instant::now();
    let id = new_build_id();
    let record = BuildRecord {
        id: id.clone(),
        app: job.app.clone(),
        commit: job.commit.to_string(),
        status: "running".into(),
        kind: None,
        push_options: job.push_options.clone(),
        created_by: job.actor.clone(),
        created_at: now_rfc3339(),
        finished_at: None,
        duration_ms: None,
        context_bytes: None,
        image_id: None,
        error: None,
    };
    rack.store.insert_build(&record).await.map_err(internal)?;
    let mut pending = Pending {
        store: rack.store.clone(),
        record: Some(record),
    };
    let log_path = rack.build_log_path(&job.app, &id);
    let sink = open_log(&log_path);

    let outcome = async {
        let builder = match rack.builder().await {
            Ok(b) => b,
            Err(e) => {
                // The builder never ran, so it printed nothing: say why here.
                let line = format!("Build {id} failed: {}", e.reason());
                progress.stage(&line);
                if let Some(s) = &sink {
                    s(&format!("-----> {line}"));
                }
                return Err(e);
            }
        };
        let build_args = build_args(rack, &job.app)
            .await
            .map_err(crate::build::BuildError::Invalid)?;
        let req = BuildRequest {
            repo_path: rack.repo_path(&job.app),
            commit: job.commit,
            app: job.app.clone(),
            build_id: id.clone(),
            build_args,
            no_cache: job.no_cache,
            // No image labels: each would be an uncached build step. The
            // record keeps the commit and the image id.
            labels: HashMap::new(),
            log: sink.clone(),
        };
        #[allow(unused_mut)]
        let mut res = builder.build(req, progress.clone()).await?;
        // On aws the image goes to the app's ECR repository; releases run it
        // by digest.
        #[cfg(feature = "aws")]
        if let Some(h) = &rack.aws {
            let docker = crate::build::connect_docker(rack.settings.docker.as_deref()).await?;
            let pushed =
                crate::aws::ecr::push_image(&h.ctx, &docker, &res.tag, &job.app, &id, progress)
                    .await
                    .map_err(|e| {
                        let line = format!("Build {id} failed: pushing the image: {e}");
                        progress.stage(&line);
                        crate::build::BuildError::Failed(line)
                    })?;
            res.image_id = pushed.reference;
            prune_local_builds(rack, &docker, &job.app, Some(&id)).await;
        }
        // The Procfile decides the process types of releases of this
        // build, app.json's cron list their timers.
        record_procfile(rack, &job, &id, progress).await?;
        record_timers(rack, &job, &id, progress).await?;
        Ok(res)
    }
    .await;

    let mut rec = pending
        .record
        .take()
        .expect("the record is only taken here");
    rec.finished_at = Some(now_rfc3339());
    rec.duration_ms = Some(started.elapsed().as_millis() as i64);
    let result = match outcome {
        Ok(res) => {
            rec.status = "succeeded".into();
            rec.kind = Some(res.kind.to_string());
            rec.image_id = Some(res.image_id);
            rec.context_bytes = Some(res.context_bytes as i64);
            Ok(())
        }
        Err(e) => {
            let reason = e.reason();
            tracing::warn!(app = %job.app, build = %id, error = %reason, "build failed");
            rec.status = "failed".into();
            rec.error = Some(reason);
            Err("build failed".to_string())
        }
    };
    rack.store.finish_build(&rec).await.map_err(internal)?;
    result.map(|_| rec)
}

/// Reads a file at the root of the pushed tree (`None`: there is none).
async fn root_file(
    rack: &Rack,
    job: &BuildJob,
    name: &'static str,
) -> Result<Option<String>, crate::build::BuildError> {
    let repo = rack.repo_path(&job.app);
    let commit = job.commit;
    tokio::task::spawn_blocking(move || crate::build::context::read_root_file(&repo, commit, name))
        .await
        .map_err(|e| crate::build::BuildError::Invalid(e.to_string()))?
        .map_err(crate::build::BuildError::Context)
}

/// Parses the Procfile, if any, and keeps it with the build.
async fn record_procfile(
    rack: &Rack,
    job: &BuildJob,
    id: &str,
    progress: &Progress,
) -> Result<(), crate::build::BuildError> {
    let Some(text) = root_file(rack, job, "Procfile").await? else {
        return Ok(());
    };
    let parsed = crate::release::procfile::parse(&text).map_err(|e| {
        progress.stage(format!("Build {id} failed: {e}"));
        crate::build::BuildError::Invalid(e)
    })?;
    rack.store
        .set_build_procfile(id, &parsed)
        .await
        .map_err(|e| crate::build::BuildError::Invalid(e.to_string()))
}

/// Reads `app.json`'s `cron` list and keeps it with the build: releases of
/// this build run these timers. A bad entry fails the build, naming it.
async fn record_timers(
    rack: &Rack,
    job: &BuildJob,
    id: &str,
    progress: &Progress,
) -> Result<(), crate::build::BuildError> {
    let timers = match root_file(rack, job, "app.json").await? {
        None => Vec::new(),
        Some(text) => crate::timers::parse_app_json(&text, &rack.settings.timers).map_err(|e| {
            progress.stage(format!("Build {id} failed: {e}"));
            crate::build::BuildError::Invalid(e)
        })?,
    };
    rack.store
        .set_build_timers(id, &timers)
        .await
        .map_err(|e| crate::build::BuildError::Invalid(e.to_string()))
}

/// On aws, releases run from ECR (whose lifecycle policy bounds it): the
/// rack's engine only needs the newest build's image, as the next build's
/// cache. Untags the app's builds there but `keep` (all of them when
/// `None`: the app is being destroyed), only those this rack's store knows
/// (another rack on the engine may build an app of the same name). Best
/// effort: a failure is logged and the caller goes on.
#[cfg(feature = "aws")]
pub(crate) async fn prune_local_builds(
    rack: &Rack,
    docker: &bollard::Docker,
    app: &str,
    keep: Option<&str>,
) {
    let tags = match crate::build::app_image_tags(docker, app).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(app, error = %e, "listing local build images");
            return;
        }
    };
    let prefix = crate::build::image_tag(app, "");
    for tag in tags {
        let Some(id) = tag.strip_prefix(&prefix) else {
            continue;
        };
        if keep == Some(id) || rack.store.build(app, id).await.is_err() {
            continue;
        }
        let opts = bollard::query_parameters::RemoveImageOptionsBuilder::new().build();
        match docker.remove_image(&tag, Some(opts), None).await {
            Ok(_) => tracing::info!(app, image = %tag, "removed a local build image"),
            Err(e) => {
                tracing::debug!(app, image = %tag, error = %e, "removing a local build image")
            }
        }
    }
}

/// The config values named in the app's `build_args` setting.
async fn build_args(rack: &Rack, app: &str) -> Result<HashMap<String, String>, String> {
    let settings = rack
        .store
        .app(app)
        .await
        .map_err(|e| e.to_string())?
        .settings;
    let Some(names) = settings.get("build_args") else {
        return Ok(HashMap::new());
    };
    let config = rack.configs.current(app).await.map_err(|e| e.to_string())?;
    Ok(names
        .split(',')
        .map(str::trim)
        .filter_map(|k| config.get(k).map(|v| (k.to_string(), v.to_string())))
        .collect())
}

fn open_log(path: &std::path::Path) -> Option<LogSink> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok()?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| tracing::error!(path = %path.display(), error = %e, "opening build log"))
        .ok()?;
    let file = Mutex::new(file);
    Some(Arc::new(move |line: &str| {
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(f, "{line}");
    }))
}

fn internal(e: crate::store::StoreError) -> String {
    tracing::error!(error = %e, "state database");
    "internal error".to_string()
}
