//! The volume use cases: create and destroy (each a new release of the
//! current build, so the change takes effect the way a config change does),
//! import, and the single-writer rule that `ps:scale` and `volumes:create`
//! check.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{ConfigChoice, DeployError, Deployer, NewRelease, Result};
use crate::progress::Progress;
use crate::store::now_rfc3339;
use crate::volumes::{paths_overlap, single_writer_types, Volume};

/// What `volumes:create` asks for (validated by the command's parser).
pub struct NewVolume {
    pub name: String,
    pub path: String,
    pub types: Vec<String>,
    pub shared: bool,
}

impl Deployer {
    /// `volumes:create`: records the volume and rolls out a release that
    /// mounts it (when the app runs). Returns the new release's number.
    pub async fn create_volume(
        &self,
        app: &str,
        new: NewVolume,
        actor: &str,
        progress: &Progress,
    ) -> Result<Option<i64>> {
        let store = &self.provider.store;
        store.app(app).await?;
        let _guard = self.lock(app, progress).await?;
        let existing = store.volumes(app).await?;
        let max = self.settings.volumes.max_per_app;
        if existing.len() >= max {
            return Err(DeployError::Refused(format!(
                "{app} already has {max} volumes, the limit ([volumes] max_per_app)"
            )));
        }
        if existing.iter().any(|v| v.name == new.name) {
            return Err(DeployError::Refused(format!(
                "{app} already has a volume named '{}'",
                new.name
            )));
        }
        for v in &existing {
            let shares_a_type = v.types.iter().any(|t| new.types.contains(t));
            if shares_a_type && paths_overlap(&v.path, &new.path) {
                return Err(DeployError::Refused(format!(
                    "{} overlaps the volume '{}' at {} in the same process type",
                    new.path, v.name, v.path
                )));
            }
        }
        let volume = Volume {
            name: new.name.clone(),
            path: new.path.clone(),
            types: new.types.clone(),
            shared: new.shared,
            created_at: now_rfc3339(),
        };
        if !volume.shared {
            let formation = store.app_state(app).await?.formation;
            check_single_writer(app, &formation, std::slice::from_ref(&volume))?;
        }
        store.add_volume(app, &volume).await?;
        let description = format!("Add volume {} at {}", volume.name, volume.path);
        match self
            .release_current(app, description, actor, progress)
            .await
        {
            Ok(v) => Ok(v),
            Err(e) => {
                // The app keeps running without it: forget it again.
                let _ = store.remove_volume(app, &volume.name).await;
                Err(e)
            }
        }
    }

    /// `volumes:destroy`: a release that no longer mounts the volume, then
    /// the volume and its data go.
    pub async fn destroy_volume(
        &self,
        app: &str,
        name: &str,
        actor: &str,
        progress: &Progress,
    ) -> Result<Option<i64>> {
        let store = &self.provider.store;
        store.app(app).await?;
        let _guard = self.lock(app, progress).await?;
        let volume = store
            .volumes(app)
            .await?
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| DeployError::Refused(format!("{app} has no volume named '{name}'")))?;
        store.remove_volume(app, name).await?;
        let description = format!("Remove volume {name}");
        let version = match self
            .release_current(app, description, actor, progress)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                let _ = store.add_volume(app, &volume).await;
                return Err(e);
            }
        };
        let runtime = self.provider.runtime().await.map_err(DeployError::Failed)?;
        runtime
            .destroy_volume(app, name)
            .await
            .map_err(|e| DeployError::Failed(format!("removing the volume {name}: {e}")))?;
        Ok(version)
    }

    /// `volumes:import`: unpacks a tar that already passed
    /// `volumes::archive::sanitize` into the volume, under the app's lock
    /// (no rollout or destroy of the volume meanwhile).
    pub async fn import_volume(
        &self,
        app: &str,
        name: &str,
        tar: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        progress: &Progress,
    ) -> Result<()> {
        let store = &self.provider.store;
        let _guard = self.lock(app, progress).await?;
        self.volume(app, name).await?;
        let runtime = self.provider.runtime().await.map_err(DeployError::Failed)?;
        store.app(app).await?;
        runtime
            .import_volume(app, name, tar)
            .await
            .map_err(|e| DeployError::Failed(e.to_string()))
    }

    /// The app's volume `name`, or a refusal naming it.
    pub async fn volume(&self, app: &str, name: &str) -> Result<Volume> {
        let store = &self.provider.store;
        store.app(app).await?;
        store
            .volumes(app)
            .await?
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| DeployError::Refused(format!("{app} has no volume named '{name}'")))
    }

    /// A new release of the current build with the newest config (as a
    /// config change makes), or `None` when nothing runs yet.
    async fn release_current(
        &self,
        app: &str,
        description: String,
        actor: &str,
        progress: &Progress,
    ) -> Result<Option<i64>> {
        let store = &self.provider.store;
        let Some(v) = store.app_state(app).await?.current_release else {
            return Ok(None);
        };
        let current = store.release(app, v).await?;
        let build = store.build(app, &current.build_id).await?;
        let req = NewRelease {
            app,
            build: &build,
            config: ConfigChoice::Latest,
            description,
            actor,
            push: None,
            started: Instant::now(),
        };
        Ok(Some(self.release(req, progress).await?.version))
    }
}

/// Refuses a formation that runs more than one instance of a type with a
/// single-writer volume: nothing has changed yet when this fails.
pub(super) fn check_single_writer(
    app: &str,
    formation: &BTreeMap<String, u32>,
    volumes: &[Volume],
) -> Result<()> {
    for kind in single_writer_types(volumes) {
        let n = formation.get(&kind).copied().unwrap_or(0);
        if n > 1 {
            let v = volumes
                .iter()
                .find(|v| v.single_writer_for(&kind))
                .map(|v| v.name.as_str())
                .unwrap_or_default();
            return Err(DeployError::Refused(format!(
                "{app}'s {kind} has the single-writer volume '{v}', so it runs at most 1 instance \
                 ({kind}={n}); scale it to 1, or use a volume created with --shared if the app can share it"
            )));
        }
    }
    Ok(())
}
