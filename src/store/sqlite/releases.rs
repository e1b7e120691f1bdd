//! `ReleaseStore` on SQLite: `releases` rows (with the journal column
//! `ref_update`) and the running state on the app's row
//! (`current_release`, `deploy_id`, `formation`). The commit point is one
//! transaction over both.

use rusqlite::params;

use super::schema::{from_json, release_row, to_json, RELEASE_COLUMNS};
use super::SqliteStore;
use crate::store::{AppState, Commit, Formation, ReleaseRecord, ReleaseStore, Result, StoreError};

#[async_trait::async_trait]
impl ReleaseStore for SqliteStore {
    async fn app_state(&self, app: &str) -> Result<AppState> {
        let sql = "SELECT current_release, deploy_id, formation FROM apps WHERE name = ?1";
        let state = |r: &rusqlite::Row<'_>| {
            Ok(AppState {
                current_release: r.get(0)?,
                deploy_id: r.get(1)?,
                formation: from_json(&r.get::<_, String>(2)?),
            })
        };
        self.query(sql, (app.to_owned(),), state)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NotFound(format!("app '{app}' does not exist")))
    }

    async fn set_formation(&self, app: &str, formation: &Formation) -> Result<()> {
        let sql = "UPDATE apps SET formation = ?2 WHERE name = ?1";
        self.execute(sql, (app.to_owned(), to_json(formation)))
            .await
            .map(drop)
    }

    async fn create_release(&self, mut r: ReleaseRecord) -> Result<ReleaseRecord> {
        self.transaction(move |tx| {
            let v: Option<i64> = tx.query_row(
                "SELECT MAX(version) FROM releases WHERE app = ?1",
                [&r.app],
                |row| row.get(0),
            )?;
            r.version = v.unwrap_or(0) + 1;
            tx.execute(
                &format!("INSERT INTO releases ({RELEASE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    r.app,
                    r.version,
                    r.build_id,
                    r.config_version,
                    to_json(&r.formation),
                    r.description,
                    r.created_by,
                    r.created_at,
                    r.status,
                    r.ref_update
                ],
            )?;
            Ok(r)
        })
        .await
    }

    async fn set_release_status(&self, app: &str, version: i64, status: &str) -> Result<()> {
        let sql = "UPDATE releases SET status = ?3 WHERE app = ?1 AND version = ?2";
        self.execute(sql, (app.to_owned(), version, status.to_owned()))
            .await
            .map(drop)
    }

    async fn commit(&self, app: &str, commit: Commit) -> Result<()> {
        let app = app.to_owned();
        self.transaction(move |tx| {
            if let Some(version) = commit.release {
                tx.execute(
                    "UPDATE releases SET status = 'succeeded' WHERE app = ?1 AND version = ?2",
                    params![app, version],
                )?;
            }
            tx.execute(
                "UPDATE apps SET current_release = COALESCE(?2, current_release), deploy_id = ?3,
                        formation = ?4 WHERE name = ?1",
                params![
                    app,
                    commit.release,
                    commit.deploy_id,
                    to_json(&commit.formation)
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn clear_ref_update(&self, app: &str, version: i64) -> Result<()> {
        let sql = "UPDATE releases SET ref_update = NULL WHERE app = ?1 AND version = ?2";
        self.execute(sql, (app.to_owned(), version)).await.map(drop)
    }

    async fn release(&self, app: &str, version: i64) -> Result<ReleaseRecord> {
        let sql = format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE app = ?1 AND version = ?2");
        self.query(sql, (app.to_owned(), version), release_row)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NotFound(format!("app '{app}' has no release v{version}")))
    }

    async fn releases(&self, app: &str, limit: usize) -> Result<Vec<ReleaseRecord>> {
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE app = ?1 ORDER BY version DESC LIMIT ?2"
        );
        self.query(sql, (app.to_owned(), limit as i64), release_row)
            .await
    }

    async fn fail_pending_releases(&self) -> Result<usize> {
        let sql = "UPDATE releases SET status = 'failed', ref_update = NULL WHERE status = 'pending'
             AND NOT EXISTS (SELECT 1 FROM apps WHERE apps.name = releases.app AND apps.current_release = releases.version)";
        self.execute(sql, ()).await
    }
}
