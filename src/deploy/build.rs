//! One build as the pipeline runs it: the record in the store, the log
//! file, build args from config, the call to the `Builder`, and the publish
//! of its image where releases run (`Runtime::publish_image`).

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use git2::Oid;

use super::{internal, DeployError, Deployer, Result};
use crate::build::{new_build_id, BuildError, BuildRequest, BuildResult, LogSink};
use crate::images::image_tag;
use crate::progress::Progress;
use crate::release::config::ConfigError;
use crate::runtime::{Retention, Runtime};
use crate::store::{now_rfc3339, BuildRecord, BuildStatus, Store};

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
            r.status = BuildStatus::Cancelled;
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

impl Deployer {
    /// Builds `job.commit` and publishes its image where releases run; the
    /// caller holds the app's lock. `Err` is the push's `ng` reason.
    pub(super) async fn run_build(
        &self,
        job: BuildJob,
        progress: &Progress,
    ) -> Result<BuildRecord> {
        let started = Instant::now();
        let store = &self.provider.store;
        let id = new_build_id();
        let record = BuildRecord::running(
            id.clone(),
            job.app.clone(),
            job.commit.to_string(),
            job.push_options.clone(),
            job.actor.clone(),
        );
        store.insert_build(&record).await.map_err(internal)?;
        let mut pending = Pending {
            store: store.clone(),
            record: Some(record),
        };
        let outcome = self.build_and_publish(&job, &id, progress).await;
        crate::metrics::stage_took(crate::metrics::Stage::build, started.elapsed());
        if outcome.is_err() {
            crate::metrics::deploy(&job.app, crate::metrics::Outcome::build_failed);
        }
        let mut rec = pending
            .record
            .take()
            .expect("the record is only taken here");
        rec.finished_at = Some(now_rfc3339());
        rec.duration_ms = Some(started.elapsed().as_millis() as i64);
        let result = match outcome {
            Ok(res) => {
                rec.status = BuildStatus::Succeeded;
                rec.kind = Some(res.kind.to_string());
                rec.image_id = Some(res.image_id);
                rec.context_bytes = Some(res.context_bytes as i64);
                Ok(())
            }
            Err(e) => {
                let reason = e.reason();
                tracing::warn!(app = %job.app, build = %id, error = %reason, "build failed");
                rec.status = BuildStatus::Failed;
                rec.error = Some(reason);
                Err(DeployError::BuildFailed)
            }
        };
        store.finish_build(&rec).await.map_err(internal)?;
        result.map(|_| rec)
    }

    /// The build itself, the publish of its image (on aws the ECR push;
    /// then the engine keeps only the newest build when that is the
    /// runtime's retention) and its Procfile.
    async fn build_and_publish(
        &self,
        job: &BuildJob,
        id: &str,
        progress: &Progress,
    ) -> Result<BuildResult, BuildError> {
        let sink = open_log(
            &self.settings.build_log_path(&job.app, id),
            self.settings.build.max_log_bytes,
        );
        let builder = match self.builder().await {
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
        let build_args = self
            .build_args(&job.app)
            .await
            .map_err(|e| BuildError::Invalid(e.to_string()))?;
        let req = BuildRequest {
            repo_path: self.settings.repo_path(&job.app),
            commit: job.commit,
            app: job.app.clone(),
            build_id: id.to_string(),
            build_args,
            no_cache: job.no_cache,
            // No image labels: each would be an uncached build step. The
            // record keeps the commit and the image id.
            labels: HashMap::new(),
            log: sink.clone(),
        };
        let mut res = builder.build(req, progress.clone()).await?;
        res.image_id = self.publish(&job.app, id, res.image_id, progress).await?;
        // The Procfile decides the process types of releases of this
        // build, app.json's cron list their timers.
        self.record_procfile(job, id, progress).await?;
        self.record_timers(job, id, progress).await?;
        Ok(res)
    }

    async fn publish(
        &self,
        app: &str,
        id: &str,
        image_id: String,
        progress: &Progress,
    ) -> Result<String, BuildError> {
        let failed = |e: &dyn std::fmt::Display| {
            let line = format!("Build {id} failed: pushing the image: {e}");
            progress.stage(&line);
            BuildError::Failed(line)
        };
        let runtime = self.provider.runtime().await.map_err(|e| failed(&e))?;
        let image = runtime
            .publish_image(app, id, image_id, progress)
            .await
            .map_err(|e| failed(&e))?;
        if runtime.retention() == Retention::NewestBuild {
            self.prune_own_images(&*runtime, app, &[id.to_string()])
                .await;
        }
        Ok(image)
    }

    /// Reads a file at the root of the pushed tree (`None`: there is none).
    async fn root_file(
        &self,
        job: &BuildJob,
        name: &'static str,
    ) -> Result<Option<String>, BuildError> {
        let repo = self.settings.repo_path(&job.app);
        let commit = job.commit;
        tokio::task::spawn_blocking(move || {
            crate::build::context::read_root_file(&repo, commit, name)
        })
        .await
        .map_err(|e| BuildError::Invalid(e.to_string()))?
        .map_err(BuildError::Context)
    }

    /// Parses the Procfile, if any, and keeps it with the build.
    async fn record_procfile(
        &self,
        job: &BuildJob,
        id: &str,
        progress: &Progress,
    ) -> Result<(), BuildError> {
        let Some(text) = self.root_file(job, "Procfile").await? else {
            return Ok(());
        };
        let parsed = crate::release::procfile::parse(&text).map_err(|e| {
            progress.stage(format!("Build {id} failed: {e}"));
            BuildError::Invalid(e)
        })?;
        self.provider
            .store
            .set_build_procfile(id, &parsed)
            .await
            .map_err(|e| BuildError::Invalid(e.to_string()))
    }

    /// Reads `app.json`'s `cron` list and keeps it with the build: releases
    /// of this build run these timers. A bad entry fails the build, naming
    /// it.
    async fn record_timers(
        &self,
        job: &BuildJob,
        id: &str,
        progress: &Progress,
    ) -> Result<(), BuildError> {
        let timers = match self.root_file(job, "app.json").await? {
            None => Vec::new(),
            Some(text) => {
                crate::timers::parse_app_json(&text, &self.settings.timers).map_err(|e| {
                    progress.stage(format!("Build {id} failed: {e}"));
                    BuildError::Invalid(e)
                })?
            }
        };
        self.provider
            .store
            .set_build_timers(id, &timers)
            .await
            .map_err(|e| BuildError::Invalid(e.to_string()))
    }

    /// Removes the engine's images of this rack's builds of `app` but
    /// `keep` (another rack on the engine may build an app of the same
    /// name: only the builds this rack's store knows are its own). Best
    /// effort: a failure is logged and the caller goes on.
    pub(super) async fn prune_own_images(&self, runtime: &dyn Runtime, app: &str, keep: &[String]) {
        let remove = match self.provider.store.builds(app, usize::MAX).await {
            Ok(builds) => builds
                .iter()
                .filter(|b| !keep.contains(&b.id))
                .map(|b| image_tag(app, &b.id))
                .collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(app, error = %e, "listing the app's builds");
                return;
            }
        };
        match runtime.prune_images(app, &remove).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(app, ?removed, "pruned build images")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(app, error = %e, "removing the app's build images"),
        }
    }

    /// The config values named in the app's `build_args` setting.
    async fn build_args(&self, app: &str) -> Result<HashMap<String, String>, ConfigError> {
        let settings = self.provider.store.app(app).await?.settings;
        let Some(names) = settings.get("build_args") else {
            return Ok(HashMap::new());
        };
        let config = self.provider.configs.current(app).await?;
        Ok(names
            .split(',')
            .map(str::trim)
            .filter_map(|k| config.get(k).map(|v| (k.to_string(), v.to_string())))
            .collect())
    }
}

/// The build's log file, appended to line by line up to `max` bytes; then
/// one marker line, and nothing more.
fn open_log(path: &std::path::Path, max: u64) -> Option<LogSink> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok()?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| tracing::error!(path = %path.display(), error = %e, "opening build log"))
        .ok()?;
    let written = file.metadata().map(|m| m.len()).unwrap_or(0);
    let file = Mutex::new((file, written));
    Some(Arc::new(move |line: &str| {
        let mut g = file.lock().unwrap_or_else(|p| p.into_inner());
        let (f, written) = &mut *g;
        if *written > max {
            return;
        }
        let n = line.len() as u64 + 1;
        if *written + n > max {
            let _ = writeln!(f, "{}", log_truncated(max));
            *written = max + 1;
            return;
        }
        let _ = writeln!(f, "{line}");
        *written += n;
    }))
}

/// The last line of a build log cut at `max` bytes.
pub fn log_truncated(max: u64) -> String {
    format!("-----> build log truncated: over {max} bytes ([build] max_log_bytes)")
}
