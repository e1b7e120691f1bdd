//! Start-up: leftovers of an interrupted process cleaned (running builds
//! marked failed, repository debris removed), then every deploy journal
//! entry rolled forward or back around its commit point, then the runtime
//! re-converges on the current releases (re-create missing instances,
//! remove strays and one-offs).

use anyhow::Result;

use super::Deployer;
use crate::progress::{LogLines, Progress};
use crate::store::RefUpdateJournal;

impl Deployer {
    /// Before the rack serves anything: builds a restart interrupted are
    /// failed, and the repos lose what an interrupted push left (the rack
    /// is the only writer of its repos).
    pub async fn prepare(&self) -> Result<()> {
        let store = &self.provider.store;
        let stale = store
            .fail_running_builds("interrupted: the rack stopped during the build")
            .await?;
        if stale > 0 {
            tracing::warn!(
                builds = stale,
                "marked builds interrupted by a restart as failed"
            );
        }
        // Tars of `volumes:import` a crash left staged.
        let _ = std::fs::remove_dir_all(self.settings.data_dir.join("tmp"));
        for app in store.list_apps().await? {
            let path = self.settings.repo_path(&app.name);
            if !path.exists() {
                continue;
            }
            match crate::git::recover_repo(&path) {
                Ok(removed) if !removed.is_empty() => {
                    tracing::warn!(app = %app.name, ?removed, "removed leftovers of an interrupted push")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(app = %app.name, error = %e, "checking repository"),
            }
        }
        Ok(())
    }

    /// Rolls the journal forward or back, then lets the runtime recover.
    pub async fn recover(&self) -> Result<()> {
        let store = &self.provider.store;
        let failed = store.fail_pending_releases().await?;
        if failed > 0 {
            tracing::warn!(
                releases = failed,
                "rolled back releases interrupted before their commit point"
            );
        }
        let runtime = self.provider.runtime().await;
        let mut specs = Vec::new();
        for app in store.list_apps().await? {
            let state = store.app_state(&app.name).await?;
            let (Some(v), Some(deploy_id)) = (state.current_release, state.deploy_id.clone())
            else {
                continue;
            };
            let release = store.release(&app.name, v).await?;
            if let Some(update) = &release.ref_update {
                // Committed but the ref had not moved yet: roll forward.
                match roll_ref_forward(&self.settings.repo_path(&app.name), update) {
                    Ok(()) => {
                        tracing::warn!(app = %app.name, version = v, "moved the deploy branch of a committed release");
                        store.clear_ref_update(&app.name, v).await?;
                    }
                    Err(e) => {
                        tracing::error!(app = %app.name, error = %e, "rolling the deploy branch forward")
                    }
                }
            }
            let Ok(rt) = &runtime else { continue };
            match self
                .spec_for(&**rt, &release, &state.formation, deploy_id)
                .await
            {
                Ok(spec) => specs.push(spec),
                Err(e) => {
                    tracing::error!(app = %app.name, error = %e, "cannot describe the current release")
                }
            }
        }
        let runtime = match runtime {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "no runtime at start-up; apps are not served until it is reachable");
                return Ok(());
            }
        };
        let result = Progress::forward_to(&mut LogLines, |progress| async move {
            runtime.recover(&specs, &progress).await
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "recovering running apps");
        }
        Ok(())
    }
}

/// Applies a journalled ref update when the ref is still at `old`
/// (compare-and-swap; a ref that moved on is left alone).
fn roll_ref_forward(repo: &std::path::Path, update: &RefUpdateJournal) -> Result<()> {
    let old = git2::Oid::from_str(&update.old)?;
    let new = git2::Oid::from_str(&update.new)?;
    match crate::git::refs::cas_at(repo, &update.refname, old, new, "rack: recovered deploy") {
        Ok(()) | Err(crate::git::refs::CasError::Stale) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
