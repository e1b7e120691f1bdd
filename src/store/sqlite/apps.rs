//! `AppStore` on SQLite: `apps` rows (settings as a JSON column) and the
//! `domains` table (the host is the key, so a host has one app).

use super::schema::{app_row, to_json, APP_COLUMNS};
use super::{conflict_on_unique, SqliteStore};
use crate::store::{AppRecord, AppSettings, AppStore, Result, StoreError};

fn no_such_app(name: &str) -> StoreError {
    StoreError::NotFound(format!("app '{name}' does not exist"))
}

#[async_trait::async_trait]
impl AppStore for SqliteStore {
    async fn create_app(&self, name: &str) -> Result<AppRecord> {
        let app = AppRecord::new(name);
        let sql = "INSERT INTO apps (name, created_at, settings) VALUES (?1, ?2, '{}')";
        self.execute(sql, (app.name.clone(), app.created_at.clone()))
            .await
            .map_err(|e| conflict_on_unique(e, || format!("app '{name}' already exists")))?;
        Ok(app)
    }

    async fn get_app(&self, name: &str) -> Result<Option<AppRecord>> {
        let sql = format!("SELECT {APP_COLUMNS} FROM apps WHERE name = ?1");
        let apps = self.query(sql, (name.to_owned(),), app_row).await?;
        Ok(apps.into_iter().next())
    }

    async fn app(&self, name: &str) -> Result<AppRecord> {
        self.get_app(name).await?.ok_or_else(|| no_such_app(name))
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>> {
        let sql = format!("SELECT {APP_COLUMNS} FROM apps ORDER BY name");
        self.query(sql, (), app_row).await
    }

    async fn set_app_settings(&self, name: &str, settings: &AppSettings) -> Result<()> {
        let sql = "UPDATE apps SET settings = ?2 WHERE name = ?1";
        match self
            .execute(sql, (name.to_owned(), to_json(settings)))
            .await?
        {
            0 => Err(no_such_app(name)),
            _ => Ok(()),
        }
    }

    async fn delete_app(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.transaction(move |tx| {
            let n = tx.execute("DELETE FROM apps WHERE name = ?1", [&name])?;
            if n == 0 {
                return Err(no_such_app(&name));
            }
            for table in [
                "config_values",
                "config_versions",
                "domains",
                "builds",
                "releases",
                "volumes",
            ] {
                tx.execute(&format!("DELETE FROM {table} WHERE app = ?1"), [&name])?;
            }
            tx.execute("DELETE FROM key_apps WHERE app = ?1", [&name])?;
            Ok(())
        })
        .await
    }

    async fn domains(&self, app: &str) -> Result<Vec<String>> {
        let sql = "SELECT host FROM domains WHERE app = ?1 ORDER BY host";
        self.query(sql, (app.to_owned(),), |r| r.get(0)).await
    }

    async fn add_domain(&self, app: &str, host: &str) -> Result<()> {
        let sql = "INSERT INTO domains (host, app) VALUES (?1, ?2)";
        self.execute(sql, (host.to_owned(), app.to_owned()))
            .await
            .map_err(|e| conflict_on_unique(e, || format!("{host} is already routed to an app")))?;
        Ok(())
    }

    async fn remove_domain(&self, app: &str, host: &str) -> Result<()> {
        let sql = "DELETE FROM domains WHERE app = ?1 AND host = ?2";
        match self.execute(sql, (app.to_owned(), host.to_owned())).await? {
            0 => Err(StoreError::NotFound(format!(
                "{host} is not a domain of {app}"
            ))),
            _ => Ok(()),
        }
    }
}
