//! `KeyStore` on SQLite: `keys` rows and the apps of deploy keys in
//! `key_apps`.

use rusqlite::{params, Connection, OptionalExtension};

use super::schema::{key_row, KEY_COLUMNS};
use super::SqliteStore;
use crate::store::{KeyRecord, KeyStore, Result, StoreError};

#[async_trait::async_trait]
impl KeyStore for SqliteStore {
    async fn add_key(&self, key: &KeyRecord) -> Result<()> {
        let key = key.clone();
        self.transaction(move |tx| {
            let by_name: Option<String> = tx
                .query_row("SELECT name FROM keys WHERE name = ?1", [&key.name], |r| {
                    r.get(0)
                })
                .optional()?;
            if by_name.is_some() {
                return Err(StoreError::Conflict(format!(
                    "a key named '{}' already exists",
                    key.name
                )));
            }
            let by_fp: Option<String> = tx
                .query_row(
                    "SELECT name FROM keys WHERE fingerprint = ?1",
                    [&key.fingerprint],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(other) = by_fp {
                return Err(StoreError::Conflict(format!(
                    "this public key is already registered as '{other}'"
                )));
            }
            tx.execute(
                &format!("INSERT INTO keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                params![
                    key.name,
                    key.fingerprint,
                    key.public_key,
                    key.admin,
                    key.created_at
                ],
            )?;
            for app in &key.apps {
                tx.execute(
                    "INSERT INTO key_apps (key_name, app) VALUES (?1, ?2)",
                    params![key.name, app],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        self.call(|conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY name"))?;
            let keys: Vec<KeyRecord> = stmt.query_map([], key_row)?.collect::<Result<_, _>>()?;
            keys.into_iter().map(|k| with_apps(conn, k)).collect()
        })
        .await
    }

    async fn key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<KeyRecord>> {
        let fingerprint = fingerprint.to_owned();
        self.call(move |conn| {
            conn.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM keys WHERE fingerprint = ?1"),
                [fingerprint],
                key_row,
            )
            .optional()?
            .map(|k| with_apps(conn, k))
            .transpose()
        })
        .await
    }

    async fn remove_key(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.transaction(move |tx| {
            let admin: Option<bool> = tx
                .query_row("SELECT admin FROM keys WHERE name = ?1", [&name], |r| {
                    r.get(0)
                })
                .optional()?;
            let Some(admin) = admin else {
                return Err(StoreError::NotFound(format!("no key named '{name}'")));
            };
            if admin {
                let admins: i64 =
                    tx.query_row("SELECT COUNT(*) FROM keys WHERE admin = 1", [], |r| {
                        r.get(0)
                    })?;
                if admins <= 1 {
                    return Err(StoreError::Refused(format!(
                        "'{name}' is the last admin key; add another admin key first"
                    )));
                }
            }
            tx.execute("DELETE FROM key_apps WHERE key_name = ?1", [&name])?;
            tx.execute("DELETE FROM keys WHERE name = ?1", [&name])?;
            Ok(())
        })
        .await
    }
}

fn with_apps(conn: &Connection, mut key: KeyRecord) -> Result<KeyRecord> {
    let mut stmt = conn.prepare("SELECT app FROM key_apps WHERE key_name = ?1 ORDER BY app")?;
    key.apps = stmt
        .query_map([&key.name], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(key)
}
