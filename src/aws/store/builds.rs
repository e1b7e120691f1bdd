//! `BuildStore` on S3: `apps/APP/builds/ID.json` (ids sort by time as
//! plain strings) and `procfiles/ID.json`.

use super::{store_err, S3Store};
use crate::store::{now_rfc3339, BuildRecord, BuildStore, Procfile, Result, StoreError};

fn build_key(app: &str, id: &str) -> String {
    format!("apps/{app}/builds/{id}.json")
}

#[async_trait::async_trait]
impl BuildStore for S3Store {
    async fn insert_build(&self, b: &BuildRecord) -> Result<()> {
        self.state
            .put_json(&build_key(&b.app, &b.id), b, None)
            .await
            .map(|_| ())
            .map_err(|e| {
                if e.is_precondition_failed() {
                    StoreError::Conflict(format!("build {} changed concurrently", b.id))
                } else {
                    store_err(e)
                }
            })
    }

    async fn finish_build(&self, b: &BuildRecord) -> Result<()> {
        self.read_modify_write(
            &build_key(&b.app, &b.id),
            || {
                Err(StoreError::NotFound(format!(
                    "no build {} of app '{}'",
                    b.id, b.app
                )))
            },
            |stored: &mut BuildRecord| {
                *stored = b.clone();
                Ok(())
            },
            || StoreError::Conflict(format!("build {}: too many concurrent changes", b.id)),
        )
        .await
    }

    async fn build(&self, app: &str, id: &str) -> Result<BuildRecord> {
        self.state
            .get_json::<BuildRecord>(&build_key(app, id))
            .await
            .map_err(store_err)?
            .map(|(b, _)| b)
            .ok_or_else(|| StoreError::NotFound(format!("app '{app}' has no build {id}")))
    }

    async fn builds(&self, app: &str, limit: usize) -> Result<Vec<BuildRecord>> {
        // Build ids sort by time as plain strings.
        let mut keys = self
            .state
            .list(&format!("apps/{app}/builds/"), None)
            .await
            .map_err(store_err)?;
        keys.sort();
        keys.reverse();
        let mut out = Vec::new();
        for k in keys.into_iter().take(limit) {
            if let Some((b, _)) = self
                .state
                .get_json::<BuildRecord>(&k)
                .await
                .map_err(store_err)?
            {
                out.push(b);
            }
        }
        Ok(out)
    }

    async fn fail_running_builds(&self, reason: &str) -> Result<usize> {
        let mut n = 0;
        for app in self.app_names().await? {
            for mut b in self.builds(&app, usize::MAX).await? {
                if b.status == "running" {
                    b.status = "failed".into();
                    b.error = Some(reason.to_string());
                    b.finished_at = Some(now_rfc3339());
                    self.finish_build(&b).await?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn set_build_procfile(&self, id: &str, procfile: &Procfile) -> Result<()> {
        let key = format!("procfiles/{id}.json");
        // Written once per build; a repeat (same content) is fine.
        match self.state.put_json(&key, procfile, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_precondition_failed() => {
                let (cur, etag) = self
                    .state
                    .get_json::<Procfile>(&key)
                    .await
                    .map_err(store_err)?
                    .unwrap_or_default();
                if &cur == procfile {
                    Ok(())
                } else {
                    self.state
                        .put_json(&key, procfile, Some(&etag))
                        .await
                        .map(|_| ())
                        .map_err(store_err)
                }
            }
            Err(e) => Err(store_err(e)),
        }
    }

    async fn build_procfile(&self, id: &str) -> Result<Option<Procfile>> {
        Ok(self
            .state
            .get_json(&format!("procfiles/{id}.json"))
            .await
            .map_err(store_err)?
            .map(|(p, _)| p))
    }
}
