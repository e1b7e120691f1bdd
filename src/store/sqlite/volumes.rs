//! `VolumeStore` on SQLite: one `volumes` row per volume, the record as
//! JSON.

use super::SqliteStore;
use crate::store::{Result, StoreError, VolumeStore};
use crate::volumes::Volume;

#[async_trait::async_trait]
impl VolumeStore for SqliteStore {
    async fn volumes(&self, app: &str) -> Result<Vec<Volume>> {
        let sql = "SELECT volume FROM volumes WHERE app = ?1 ORDER BY name";
        let rows: Vec<String> = self.query(sql, (app.to_owned(),), |r| r.get(0)).await?;
        Ok(rows
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect())
    }

    async fn add_volume(&self, app: &str, volume: &Volume) -> Result<()> {
        let (app, v) = (app.to_owned(), volume.clone());
        let json = serde_json::to_string(&v).expect("a volume always serializes");
        self.transaction(move |tx| {
            let n = tx.execute(
                "INSERT INTO volumes (app, name, volume) VALUES (?1, ?2, ?3)
                 ON CONFLICT (app, name) DO NOTHING",
                (&app, &v.name, &json),
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "{app} already has a volume named '{}'",
                    v.name
                )));
            }
            Ok(())
        })
        .await
    }

    async fn remove_volume(&self, app: &str, name: &str) -> Result<()> {
        let sql = "DELETE FROM volumes WHERE app = ?1 AND name = ?2";
        let n = self.execute(sql, (app.to_owned(), name.to_owned())).await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "{app} has no volume named '{name}'"
            )));
        }
        Ok(())
    }
}
