//! `BuildStore` on SQLite: `builds` rows (push options and the Procfile as
//! JSON columns).

use super::schema::{build_row, to_json, with_build_params, BUILD_COLUMNS};
use super::SqliteStore;
use crate::store::{
    now_rfc3339, BuildRecord, BuildStatus, BuildStore, Procfile, Result, StoreError,
};

#[async_trait::async_trait]
impl BuildStore for SqliteStore {
    async fn insert_build(&self, b: &BuildRecord) -> Result<()> {
        let b = b.clone();
        self.call(move |conn| {
            let sql = format!("INSERT INTO builds ({BUILD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
            with_build_params(&b, |p| conn.execute(&sql, p))?;
            Ok(())
        })
        .await
    }

    async fn finish_build(&self, b: &BuildRecord) -> Result<()> {
        let b = b.clone();
        self.call(move |conn| {
            let sql =
                "UPDATE builds SET status = ?4, kind = ?5, finished_at = ?9, duration_ms = ?10,
                       context_bytes = ?11, image_id = ?12, error = ?13 WHERE id = ?1";
            with_build_params(&b, |p| conn.execute(sql, p))?;
            Ok(())
        })
        .await
    }

    async fn build(&self, app: &str, id: &str) -> Result<BuildRecord> {
        let sql = format!("SELECT {BUILD_COLUMNS} FROM builds WHERE app = ?1 AND id = ?2");
        self.query(sql, (app.to_owned(), id.to_owned()), build_row)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NotFound(format!("app '{app}' has no build '{id}'")))
    }

    async fn builds(&self, app: &str, limit: usize) -> Result<Vec<BuildRecord>> {
        let sql =
            format!("SELECT {BUILD_COLUMNS} FROM builds WHERE app = ?1 ORDER BY id DESC LIMIT ?2");
        self.query(sql, (app.to_owned(), limit as i64), build_row)
            .await
    }

    async fn fail_running_builds(&self, reason: &str) -> Result<usize> {
        let sql = "UPDATE builds SET status = ?3, error = ?1, finished_at = ?2 WHERE status = ?4";
        let params = (
            reason.to_owned(),
            now_rfc3339(),
            BuildStatus::Failed,
            BuildStatus::Running,
        );
        self.execute(sql, params).await
    }

    async fn set_build_procfile(&self, id: &str, procfile: &Procfile) -> Result<()> {
        self.set_build_json(id, "procfile", to_json(procfile)).await
    }

    async fn build_procfile(&self, id: &str) -> Result<Option<Procfile>> {
        self.build_json(id, "procfile").await
    }
}

/// The JSON columns recorded with a build (`procfile`, `timers`).
impl SqliteStore {
    pub(super) async fn set_build_json(&self, id: &str, column: &str, json: String) -> Result<()> {
        let sql = format!("UPDATE builds SET {column} = ?2 WHERE id = ?1");
        self.execute(sql, (id.to_owned(), json)).await.map(drop)
    }

    /// `None`: no such build, nothing recorded, or unreadable text.
    pub(super) async fn build_json<T>(&self, id: &str, column: &str) -> Result<Option<T>>
    where
        T: serde::de::DeserializeOwned,
    {
        let sql = format!("SELECT {column} FROM builds WHERE id = ?1");
        let text: Vec<Option<String>> = self.query(sql, (id.to_owned(),), |r| r.get(0)).await?;
        Ok(text
            .into_iter()
            .next()
            .flatten()
            .and_then(|t| serde_json::from_str(&t).ok()))
    }
}
