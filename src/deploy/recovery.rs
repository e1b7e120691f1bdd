//! Start-up recovery: roll every deploy journal entry forward or back
//! around its commit point, then let the runtime re-converge on the current
//! releases (re-create missing instances, remove strays and one-offs).

use std::sync::Arc;

use anyhow::Result;

use super::rollout::spec_for;
use crate::progress::Progress;
use crate::state::Rack;

pub async fn recover(rack: &Arc<Rack>) -> Result<()> {
    let failed = rack.store.fail_pending_releases().await?;
    if failed > 0 {
        tracing::warn!(
            releases = failed,
            "rolled back releases interrupted before their commit point"
        );
    }
    let mut specs = Vec::new();
    for app in rack.store.list_apps().await? {
        let state = rack.store.app_state(&app.name).await?;
        let (Some(v), Some(deploy_id)) = (state.current_release, state.deploy_id.clone()) else {
            continue;
        };
        let release = rack.store.release(&app.name, v).await?;
        if let Some(update) = &release.ref_update {
            // Committed but the ref had not moved yet: roll forward.
            match roll_ref_forward(&rack.repo_path(&app.name), update) {
                Ok(()) => {
                    tracing::warn!(app = %app.name, version = v, "moved the deploy branch of a committed release");
                    rack.store.clear_ref_update(&app.name, v).await?;
                }
                Err(e) => {
                    tracing::error!(app = %app.name, error = %e, "rolling the deploy branch forward")
                }
            }
        }
        match spec_for(rack, &release, &state.formation, deploy_id).await {
            Ok(spec) => specs.push(spec),
            Err(e) => {
                tracing::error!(app = %app.name, error = %e, "cannot describe the current release")
            }
        }
    }
    let runtime = match rack.runtime().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "no runtime at start-up; apps are not served until it is reachable");
            return Ok(());
        }
    };
    let (progress, mut rx) = Progress::channel();
    let logger = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            tracing::info!(target: "rack::recovery", "{}", line.trim_start_matches("-----> ").trim());
        }
    });
    if let Err(e) = runtime.recover(&specs, &progress).await {
        tracing::error!(error = %e, "recovering running apps");
    }
    drop(progress);
    let _ = logger.await;
    Ok(())
}

/// Applies a journalled `refname old new` when the ref is still at `old`
/// (compare-and-swap; a ref that moved on is left alone).
fn roll_ref_forward(repo: &std::path::Path, update: &str) -> Result<()> {
    let mut parts = update.split(' ');
    let (Some(name), Some(old), Some(new)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("malformed journal entry");
    };
    let old = git2::Oid::from_str(old)?;
    let new = git2::Oid::from_str(new)?;
    match crate::git::refs::cas_at(repo, name, old, new, "rack: recovered deploy") {
        Ok(()) | Err(crate::git::refs::CasError::Stale) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
