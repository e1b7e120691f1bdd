//! The use cases: what each command (and a push) that changes what runs
//! does under the app's lock. Checks that refuse a request run before the
//! lock, and again under it where a concurrent change could make them
//! stale.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{BuildJob, ConfigChoice, DeployError, Deployer, NewRelease, Result};
use crate::git::DeployPush;
use crate::images::image_tag;
use crate::progress::Progress;
use crate::release::config::Change;
use crate::store::{BuildRecord, ReleaseRecord, ReleaseStatus, StoreError};

/// What `apps:deploy` made.
pub struct Deployed {
    pub build: BuildRecord,
    pub release: ReleaseRecord,
    /// The reference that was deployed (`refs/heads/BRANCH` by default).
    pub reference: String,
}

/// What a config change made.
pub struct ConfigChange {
    /// The new config version; `None`: nothing changed.
    pub version: Option<i64>,
    /// The release that rolled it out; `None`: none (no change,
    /// `--no-restart`, or nothing running yet).
    pub release: Option<i64>,
}

/// What a rollback made.
pub struct Rollback {
    /// The new release.
    pub version: i64,
    /// The release rolled back to.
    pub target: i64,
    /// Config keys whose value differs between the two.
    pub changed_keys: Vec<String>,
}

impl Deployer {
    /// A push of the deploy branch: build, release, roll out; the ref moves
    /// at the release's commit point.
    pub(super) async fn push(
        &self,
        push: &DeployPush,
        actor: &str,
        progress: &Progress,
    ) -> Result<()> {
        let started = Instant::now();
        let _guard = self.lock(&push.app, progress).await?;
        if !push.ref_unchanged().map_err(DeployError::Failed)? {
            return Err(DeployError::MovedWhileWaiting);
        }
        let job = BuildJob {
            app: push.app.clone(),
            commit: push.new,
            push_options: push.push_options.clone(),
            actor: actor.to_string(),
            no_cache: false,
        };
        let build = self.run_build(job, progress).await?;
        let req = NewRelease {
            app: &push.app,
            build: &build,
            config: ConfigChoice::Latest,
            description: format!("Deploy {}", &push.new.to_string()[..7]),
            actor,
            push: Some(push),
            started,
        };
        self.release(req, progress).await?;
        Ok(())
    }

    /// `apps:deploy APP [REF]`: builds and releases a commit already in the
    /// repo (the deploy branch by default).
    pub async fn deploy(
        &self,
        app: &str,
        reference: Option<&str>,
        no_cache: bool,
        actor: &str,
        progress: &Progress,
    ) -> Result<Deployed> {
        let rec = self.provider.store.app(app).await?;
        let reference = match reference {
            Some(r) => r.to_string(),
            None => crate::appsettings::deploy_branch(&rec.settings)
                .map(|b| format!("refs/heads/{b}"))
                .ok_or_else(|| {
                    DeployError::Refused(format!("{app} has no deploy branch yet: git push first"))
                })?,
        };
        let (repo, r) = (self.settings.repo_path(app), reference.clone());
        let commit = tokio::task::spawn_blocking(move || crate::git::resolve_commit(&repo, &r))
            .await
            .map_err(|e| DeployError::Failed(e.to_string()))?
            .map_err(|e| DeployError::Failed(e.to_string()))?;
        let _guard = self.lock(app, progress).await?;
        let job = BuildJob {
            app: app.to_string(),
            commit,
            push_options: vec![],
            actor: actor.to_string(),
            no_cache,
        };
        let started = Instant::now();
        let build = self.run_build(job, progress).await?;
        let req = NewRelease {
            app,
            build: &build,
            config: ConfigChoice::Latest,
            description: format!("Deploy {}", &build.commit[..7]),
            actor: &build.created_by,
            push: None,
            started,
        };
        let release = self.release(req, progress).await?;
        Ok(Deployed {
            build,
            release,
            reference,
        })
    }

    /// `config:set` / `config:unset`: a new config version and, unless
    /// `no_restart`, a release of the current build with it. The version is
    /// written under the lock, so the release is of that version and builds
    /// on whatever deploy finished while this waited.
    pub async fn change_config(
        &self,
        app: &str,
        actor: &str,
        changes: &[Change],
        no_restart: bool,
        progress: &Progress,
    ) -> Result<ConfigChange> {
        let store = &self.provider.store;
        store.app(app).await?;
        let _guard = match no_restart {
            true => None,
            false => Some(self.lock(app, progress).await?),
        };
        let version = self.provider.configs.update(app, actor, changes).await?;
        if version.is_none() || no_restart {
            return Ok(ConfigChange {
                version,
                release: None,
            });
        }
        let Some(v) = store.app_state(app).await?.current_release else {
            return Ok(ConfigChange {
                version,
                release: None,
            });
        };
        let current = store.release(app, v).await?;
        let build = store.build(app, &current.build_id).await?;
        let (verb, keys): (&str, Vec<&str>) = match changes.first() {
            Some(Change::Unset(_)) => ("Unset", changes.iter().map(change_key).collect()),
            _ => ("Set", changes.iter().map(change_key).collect()),
        };
        let req = NewRelease {
            app,
            build: &build,
            config: ConfigChoice::Latest,
            description: format!("{verb} {}", keys.join(", ")),
            actor,
            push: None,
            started: Instant::now(),
        };
        let release = self.release(req, progress).await?;
        Ok(ConfigChange {
            version,
            release: Some(release.version),
        })
    }

    /// `releases:rollback APP [vN]`: a new release of `target`'s build with
    /// its config (the newest earlier successful release by default).
    pub async fn rollback(
        &self,
        app: &str,
        target: Option<i64>,
        actor: &str,
        progress: &Progress,
    ) -> Result<Rollback> {
        let (store, configs) = (&self.provider.store, &self.provider.configs);
        let current = store.app_state(app).await?.current_release.ok_or_else(|| {
            DeployError::Refused(format!("{app} has no release to roll back from"))
        })?;
        let target = match target {
            Some(v) => store.release(app, v).await?,
            None => store
                .releases(app, 1000)
                .await?
                .into_iter()
                .find(|r| r.version < current && r.status == ReleaseStatus::Succeeded)
                .ok_or_else(|| {
                    DeployError::Refused(format!("{app} has no earlier release to roll back to"))
                })?,
        };
        let tv = target.version;
        // Refused before anything changes when the image is gone; checked
        // again under the lock, since a prune holds the same lock.
        let build = store.build(app, &target.build_id).await?;
        self.image_still_there(&build, tv).await?;
        let old = configs.at(app, target.config_version).await?;
        let now = configs.current(app).await?;
        let mut changed_keys: Vec<String> = now
            .keys()
            .filter(|k| old.get(k) != now.get(k))
            .chain(old.keys().filter(|k| now.get(k).is_none()))
            .map(str::to_string)
            .collect();
        changed_keys.sort();
        changed_keys.dedup();
        let started = Instant::now();
        let _guard = self.lock(app, progress).await?;
        self.image_still_there(&build, tv).await?;
        let cv = configs.restore(app, actor, &old).await?;
        let req = NewRelease {
            app,
            build: &build,
            config: ConfigChoice::Version(cv),
            description: format!("Rollback to v{tv}"),
            actor,
            push: None,
            started,
        };
        let release = self.release(req, progress).await?;
        Ok(Rollback {
            version: release.version,
            target: tv,
            changed_keys,
        })
    }

    /// `Err` when the image `build` made is no longer there (pruned: only
    /// the images of the newest releases are kept).
    async fn image_still_there(&self, build: &BuildRecord, version: i64) -> Result<()> {
        let runtime = self.provider.runtime().await.map_err(DeployError::Failed)?;
        let image = self.image_of(&*runtime, build);
        match runtime.has_image(&image).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(DeployError::Refused(format!(
                "the image of v{version} was pruned (the images of {}'s last {} releases are kept); \
                 push its commit again to deploy it",
                build.app, self.settings.keep_releases
            ))),
            Err(e) => Err(DeployError::Failed(e.to_string())),
        }
    }

    /// `ps:scale APP TYPE=N...`: the current release rolled again with new
    /// counts (or, with nothing running yet, the counts the first release
    /// takes). Returns the whole formation.
    pub async fn scale(
        &self,
        app: &str,
        counts: &[(String, u32)],
        progress: &Progress,
    ) -> Result<BTreeMap<String, u32>> {
        let store = &self.provider.store;
        store.app(app).await?;
        // A count the single-writer rule refuses is refused before waiting
        // for a deploy in progress (one error line, nothing else); checked
        // again under the lock below.
        let asked: BTreeMap<String, u32> = counts.iter().cloned().collect();
        super::volumes::check_single_writer(app, &asked, &store.volumes(app).await?)?;
        let _guard = self.lock(app, progress).await?;
        let state = store.app_state(app).await?;
        let mut formation = state.formation.clone();
        let known: Option<BTreeMap<String, u32>> = match state.current_release {
            Some(v) => Some(store.release(app, v).await?.formation),
            None => None,
        };
        for (k, n) in counts {
            if let Some(types) = &known {
                if !types.contains_key(k) {
                    return Err(DeployError::Refused(format!(
                        "{app} has no process type '{k}' (types: {})",
                        types.keys().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
            formation.insert(k.clone(), *n);
        }
        if let Some(types) = &known {
            formation.retain(|k, _| types.contains_key(k));
            for k in types.keys() {
                formation.entry(k.clone()).or_insert(0);
            }
        }
        super::volumes::check_single_writer(app, &formation, &store.volumes(app).await?)?;
        self.reroll(app, formation.clone(), progress).await?;
        Ok(formation)
    }

    /// `ps:restart APP`: a fresh rollout of the current release: new
    /// instances come up and become ready before the old ones stop.
    pub async fn restart(&self, app: &str, progress: &Progress) -> Result<()> {
        let store = &self.provider.store;
        store.app(app).await?;
        let _guard = self.lock(app, progress).await?;
        let state = store.app_state(app).await?;
        if state.current_release.is_none() {
            return Err(DeployError::Refused(format!("{app} has nothing running")));
        }
        self.reroll(app, state.formation, progress).await
    }

    /// `apps:create APP`: the record, what the runtime needs before a first
    /// release (the app's stack on aws), and the repository. Leaves nothing
    /// half-made.
    pub async fn create_app(&self, app: &str) -> Result<()> {
        let store = &self.provider.store;
        store.create_app(app).await?;
        // A local runtime needs nothing before its first release, so one
        // that cannot be reached yet (Docker down) does not stop this.
        if let Ok(runtime) = self.provider.runtime().await {
            let hosts = vec![format!("{app}.{}", self.settings.domain)];
            if let Err(e) = runtime.create_app(app, hosts, &Progress::discard()).await {
                let _ = store.delete_app(app).await;
                return Err(DeployError::Failed(e.to_string()));
            }
        }
        let path = self.settings.repo_path(app);
        // A directory left by an app of this name whose delete failed half
        // way is stray (the record did not exist): never its history.
        let made = tokio::task::spawn_blocking(move || {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => tracing::warn!(path = %path.display(), "removed a stray repository"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::git::GitError::Io(e)),
            }
            crate::git::init_bare(&path)
        })
        .await
        .map_err(|e| DeployError::Failed(format!("creating the repository: {e}")))?;
        if let Err(e) = made {
            // Leave nothing half-made: the app exists only with its repo.
            let _ = store.delete_app(app).await;
            tracing::error!(app, error = %e, "creating repository");
            return Err(DeployError::Failed(format!(
                "cannot create the repository for '{app}'"
            )));
        }
        Ok(())
    }

    /// `apps:destroy APP`: under the deploy lock, so no rollout of the app
    /// is half-way: its processes, volumes and infrastructure, this rack's
    /// images of it, its records, build logs and repository.
    pub async fn destroy(&self, app: &str) -> Result<()> {
        let store = &self.provider.store;
        store.app(app).await?;
        let _guard = self.lock(app, &Progress::discard()).await?;
        // Linked resources leave the app's network first (it goes below).
        self.forget_links_of(app).await?;
        let state = store.app_state(app).await?;
        let builds = store.builds(app, usize::MAX).await?;
        // Volumes may exist with nothing deployed (an import made one).
        let volumes = !store.volumes(app).await?.is_empty();
        if state.current_release.is_some() || !builds.is_empty() || volumes {
            let runtime = self.provider.runtime().await.map_err(DeployError::Failed)?;
            // The images of this rack's builds only (another rack on the
            // same engine may hold images of an app of the same name),
            // listed before `destroy`: on aws it deletes the build records.
            let images: Vec<String> = builds.iter().map(|b| image_tag(app, &b.id)).collect();
            runtime
                .destroy(app)
                .await
                .map_err(|e| DeployError::Failed(format!("removing {app}'s processes: {e}")))?;
            if let Err(e) = runtime.prune_images(app, &images).await {
                tracing::warn!(app, error = %e, "removing the app's images");
            }
        }
        match store.delete_app(app).await {
            // The aws runtime's destroy already removed the app's objects.
            Ok(()) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        store.delete_timer_states(app).await?;
        // The record is gone first: a crash here leaves only a stray
        // directory, which apps:create replaces.
        let logs = self.settings.logs_dir().join("builds").join(app);
        let _ = tokio::fs::remove_dir_all(logs).await;
        match tokio::fs::remove_dir_all(self.settings.repo_path(app)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(app, error = %e, "removing repository"),
        }
        Ok(())
    }
}

fn change_key(c: &Change) -> &str {
    match c {
        Change::Set(k, _) | Change::Unset(k) => k,
    }
}
