//! `ReleaseStore` on S3: `apps/APP/releases/vN.json` (created with
//! If-None-Match, then only status and journal change, with If-Match) and
//! the running state in the app's head, whose `release` field is the
//! commit point.

use serde::{Deserialize, Serialize};

use super::{store_err, S3Store};
use crate::store::{AppState, Commit, Formation, ReleaseRecord, ReleaseStore, Result, StoreError};

/// A release object: the record, and the journal it does not show.
#[derive(Serialize, Deserialize, Clone)]
struct ReleaseJson {
    #[serde(flatten)]
    release: ReleaseRecord,
    ref_update: Option<String>,
}

impl From<ReleaseJson> for ReleaseRecord {
    fn from(r: ReleaseJson) -> ReleaseRecord {
        ReleaseRecord {
            ref_update: r.ref_update,
            ..r.release
        }
    }
}

fn release_key(app: &str, version: i64) -> String {
    format!("apps/{app}/releases/v{version}.json")
}

impl S3Store {
    async fn update_release(
        &self,
        app: &str,
        version: i64,
        change: impl Fn(&mut ReleaseJson) + Send + Sync,
    ) -> Result<()> {
        self.read_modify_write(
            &release_key(app, version),
            || {
                Err(StoreError::NotFound(format!(
                    "app '{app}' has no release v{version}"
                )))
            },
            |r| {
                change(r);
                Ok(())
            },
            || {
                StoreError::Conflict(format!(
                    "release v{version} of {app}: too many concurrent changes"
                ))
            },
        )
        .await
    }
}

#[async_trait::async_trait]
impl ReleaseStore for S3Store {
    async fn app_state(&self, app: &str) -> Result<AppState> {
        let h = self.head(app).await?;
        Ok(AppState {
            current_release: h.release,
            deploy_id: h.deploy_id,
            formation: h.formation,
        })
    }

    async fn set_formation(&self, app: &str, formation: &Formation) -> Result<()> {
        self.update_head(app, |h| h.formation = formation.clone())
            .await
    }

    async fn create_release(&self, r: ReleaseRecord) -> Result<ReleaseRecord> {
        let base = ReleaseJson {
            ref_update: r.ref_update.clone(),
            release: r,
        };
        let (_, rec) = self
            .state
            .create_versioned(&format!("apps/{}/releases", base.release.app), |n| {
                let mut r = base.clone();
                r.release.version = n;
                r
            })
            .await
            .map_err(store_err)?;
        Ok(rec.into())
    }

    async fn set_release_status(&self, app: &str, version: i64, status: &str) -> Result<()> {
        self.update_release(app, version, |r| r.release.status = status.to_string())
            .await
    }

    async fn commit(&self, app: &str, commit: Commit) -> Result<()> {
        // The head is the commit point; the release's status follows.
        self.update_head(app, |h| {
            h.release = commit.release.or(h.release);
            h.deploy_id = Some(commit.deploy_id.clone());
            h.formation = commit.formation.clone();
        })
        .await?;
        match commit.release {
            Some(version) => {
                self.update_release(app, version, |r| r.release.status = "succeeded".into())
                    .await
            }
            None => Ok(()),
        }
    }

    async fn clear_ref_update(&self, app: &str, version: i64) -> Result<()> {
        self.update_release(app, version, |r| r.ref_update = None)
            .await
    }

    async fn release(&self, app: &str, version: i64) -> Result<ReleaseRecord> {
        self.state
            .get_json::<ReleaseJson>(&release_key(app, version))
            .await
            .map_err(store_err)?
            .map(|(r, _)| r.into())
            .ok_or_else(|| StoreError::NotFound(format!("app '{app}' has no release v{version}")))
    }

    async fn releases(&self, app: &str, limit: usize) -> Result<Vec<ReleaseRecord>> {
        let prefix = format!("apps/{app}/releases/v");
        let mut versions: Vec<i64> = self
            .state
            .list(&prefix, None)
            .await
            .map_err(store_err)?
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix(".json")?.parse().ok())
            .collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Vec::new();
        for v in versions.into_iter().take(limit) {
            out.push(self.release(app, v).await?);
        }
        Ok(out)
    }

    async fn fail_pending_releases(&self) -> Result<usize> {
        let mut n = 0;
        for app in self.app_names().await? {
            let current = self.head(&app).await?.release;
            for r in self.releases(&app, usize::MAX).await? {
                if r.status != "pending" {
                    continue;
                }
                if Some(r.version) == current {
                    // Committed (the head says so) before a crash: finish it.
                    self.update_release(&app, r.version, |r| r.release.status = "succeeded".into())
                        .await?;
                } else {
                    self.update_release(&app, r.version, |r| {
                        r.release.status = "failed".into();
                        r.ref_update = None;
                    })
                    .await?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}
