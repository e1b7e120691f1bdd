//! `ConfigStore` on SQLite: `config_versions` (who, when) and
//! `config_values` (one sealed value per key and version).

use rusqlite::{params, Connection, OptionalExtension};

use super::SqliteStore;
use crate::store::{ConfigStore, ConfigVersion, Result, SealedValue, StoreError};

#[async_trait::async_trait]
impl ConfigStore for SqliteStore {
    async fn latest_config(&self, app: &str) -> Result<Option<ConfigVersion>> {
        let app = app.to_owned();
        self.call(move |conn| match highest_version(conn, &app)? {
            Some(v) => config_version(conn, &app, v).map(Some),
            None => Ok(None),
        })
        .await
    }

    async fn config_version(&self, app: &str, version: i64) -> Result<ConfigVersion> {
        let app = app.to_owned();
        self.call(move |conn| config_version(conn, &app, version))
            .await
    }

    async fn next_config_version(&self, app: &str) -> Result<i64> {
        let app = app.to_owned();
        self.call(move |conn| Ok(highest_version(conn, &app)?.unwrap_or(0) + 1))
            .await
    }

    async fn put_config_version(&self, app: &str, cv: &ConfigVersion) -> Result<()> {
        let (app, cv) = (app.to_owned(), cv.clone());
        self.transaction(move |tx| {
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO config_versions (app, version, created_at, created_by) VALUES (?1, ?2, ?3, ?4)",
                params![app, cv.version, cv.created_at, cv.created_by],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!(
                    "config version {} of '{app}' already exists",
                    cv.version
                )));
            }
            for v in &cv.values {
                tx.execute(
                    "INSERT INTO config_values (app, version, key, nonce, ciphertext) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![app, cv.version, v.key, v.nonce, v.ciphertext],
                )?;
            }
            Ok(())
        })
        .await
    }
}

fn highest_version(conn: &Connection, app: &str) -> Result<Option<i64>> {
    let sql = "SELECT MAX(version) FROM config_versions WHERE app = ?1";
    Ok(conn.query_row(sql, [app], |r| r.get(0))?)
}

fn config_version(conn: &Connection, app: &str, version: i64) -> Result<ConfigVersion> {
    let (created_at, created_by): (String, String) = conn
        .query_row(
            "SELECT created_at, created_by FROM config_versions WHERE app = ?1 AND version = ?2",
            params![app, version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "config version {version} of '{app}' does not exist"
            ))
        })?;
    let mut stmt = conn.prepare(
        "SELECT key, nonce, ciphertext FROM config_values WHERE app = ?1 AND version = ?2 ORDER BY key",
    )?;
    let values = stmt
        .query_map(params![app, version], |r| {
            Ok(SealedValue {
                key: r.get(0)?,
                nonce: r.get(1)?,
                ciphertext: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(ConfigVersion {
        version,
        created_at,
        created_by,
        values,
    })
}
