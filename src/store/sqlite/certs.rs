//! `CertStore` on SQLite: `certs` (one JSON record per host) and
//! `rack_secrets`.

use super::SqliteStore;
use crate::store::{CertRecord, CertStore, Result, StoreError};

fn parse(text: &str) -> Result<CertRecord> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Refused(format!("malformed certificate record in the store: {e}")))
}

#[async_trait::async_trait]
impl CertStore for SqliteStore {
    async fn put_cert(&self, cert: &CertRecord) -> Result<()> {
        let record = serde_json::to_string(cert).expect("a certificate record always serializes");
        let sql = "INSERT INTO certs (host, app, record) VALUES (?1, ?2, ?3)
                   ON CONFLICT (host) DO UPDATE SET app = excluded.app, record = excluded.record";
        self.execute(sql, (cert.host.clone(), cert.app.clone(), record))
            .await
            .map(drop)
    }

    async fn cert(&self, host: &str) -> Result<Option<CertRecord>> {
        let sql = "SELECT record FROM certs WHERE host = ?1";
        let rows: Vec<String> = self.query(sql, (host.to_owned(),), |r| r.get(0)).await?;
        rows.first().map(|t| parse(t)).transpose()
    }

    async fn certs(&self, app: Option<&str>) -> Result<Vec<CertRecord>> {
        let rows: Vec<String> = match app {
            Some(app) => {
                let sql = "SELECT record FROM certs WHERE app = ?1 ORDER BY host";
                self.query(sql, (app.to_owned(),), |r| r.get(0)).await?
            }
            None => {
                let sql = "SELECT record FROM certs ORDER BY host";
                self.query(sql, (), |r| r.get(0)).await?
            }
        };
        rows.iter().map(|t| parse(t)).collect()
    }

    async fn remove_cert(&self, host: &str) -> Result<()> {
        let sql = "DELETE FROM certs WHERE host = ?1";
        self.execute(sql, (host.to_owned(),)).await.map(drop)
    }

    async fn rack_secret(&self, name: &str) -> Result<Option<String>> {
        let sql = "SELECT value FROM rack_secrets WHERE name = ?1";
        let rows: Vec<String> = self.query(sql, (name.to_owned(),), |r| r.get(0)).await?;
        Ok(rows.into_iter().next())
    }

    async fn put_rack_secret(&self, name: &str, sealed: &str) -> Result<()> {
        let sql = "INSERT INTO rack_secrets (name, value) VALUES (?1, ?2)
                   ON CONFLICT (name) DO UPDATE SET value = excluded.value";
        self.execute(sql, (name.to_owned(), sealed.to_owned()))
            .await
            .map(drop)
    }
}
