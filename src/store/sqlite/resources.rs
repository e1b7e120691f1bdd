//! `ResourceStore` on SQLite: one row per resource, its record as JSON
//! (the password inside is sealed; links are part of the record so a link
//! and the "refused while linked" check of a destroy are one transaction).

use rusqlite::OptionalExtension;

use super::{conflict_on_unique, SqliteStore};
use crate::store::{ResourceRecord, ResourceStore, Result, StoreError};

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("no resource named '{name}'"))
}

fn parse(text: &str) -> Result<ResourceRecord> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Refused(format!("unreadable resource record: {e}")))
}

fn to_text(r: &ResourceRecord) -> String {
    serde_json::to_string(r).expect("a resource record always serializes")
}

#[async_trait::async_trait]
impl ResourceStore for SqliteStore {
    async fn create_resource(&self, r: &ResourceRecord) -> Result<()> {
        let (name, text) = (r.name.clone(), to_text(r));
        let sql = "INSERT INTO resources (name, record) VALUES (?1, ?2)";
        self.execute(sql, (name.clone(), text))
            .await
            .map(drop)
            .map_err(|e| conflict_on_unique(e, || format!("resource '{name}' already exists")))
    }

    async fn resource(&self, name: &str) -> Result<ResourceRecord> {
        let sql = "SELECT record FROM resources WHERE name = ?1";
        let rows: Vec<String> = self.query(sql, (name.to_owned(),), |r| r.get(0)).await?;
        match rows.first() {
            Some(text) => parse(text),
            None => Err(not_found(name)),
        }
    }

    async fn resources(&self) -> Result<Vec<ResourceRecord>> {
        let sql = "SELECT record FROM resources ORDER BY name";
        let rows: Vec<String> = self.query(sql, (), |r| r.get(0)).await?;
        rows.iter().map(|t| parse(t)).collect()
    }

    async fn set_resource_link(
        &self,
        name: &str,
        app: &str,
        prefix: Option<&str>,
    ) -> Result<ResourceRecord> {
        let (name, app, prefix) = (name.to_owned(), app.to_owned(), prefix.map(str::to_owned));
        self.transaction(move |tx| {
            let text: Option<String> = tx
                .query_row(
                    "SELECT record FROM resources WHERE name = ?1",
                    (&name,),
                    |r| r.get(0),
                )
                .optional()?;
            let mut r = parse(&text.ok_or_else(|| not_found(&name))?)?;
            match prefix {
                Some(p) => r.links.insert(app, p),
                None => r.links.remove(&app),
            };
            tx.execute(
                "UPDATE resources SET record = ?2 WHERE name = ?1",
                (&name, to_text(&r)),
            )?;
            Ok(r)
        })
        .await
    }

    async fn delete_resource(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.transaction(move |tx| {
            let text: Option<String> = tx
                .query_row(
                    "SELECT record FROM resources WHERE name = ?1",
                    (&name,),
                    |r| r.get(0),
                )
                .optional()?;
            let r = parse(&text.ok_or_else(|| not_found(&name))?)?;
            if let Some(app) = r.links.keys().next() {
                return Err(StoreError::Refused(format!(
                    "{name} is linked to {app}: resources:unlink {name} {app} first"
                )));
            }
            tx.execute("DELETE FROM resources WHERE name = ?1", (&name,))?;
            Ok(())
        })
        .await
    }
}
