//! `CertStore` on S3: `certs/HOST.json` (one record per host, key sealed)
//! and `secrets/NAME.json` (the rack's own sealed secrets).

use super::{store_err, S3Store};
use crate::store::{CertRecord, CertStore, Result, StoreError};

fn cert_key(host: &str) -> String {
    format!("certs/{host}.json")
}

fn secret_key(name: &str) -> String {
    format!("secrets/{name}.json")
}

#[async_trait::async_trait]
impl CertStore for S3Store {
    async fn put_cert(&self, cert: &CertRecord) -> Result<()> {
        let host = cert.host.clone();
        self.read_modify_write(
            &cert_key(&cert.host),
            || Ok(cert.clone()),
            |c| {
                *c = cert.clone();
                Ok(())
            },
            || {
                StoreError::Conflict(format!(
                    "the certificate of {host} keeps changing; try again"
                ))
            },
        )
        .await
    }

    async fn cert(&self, host: &str) -> Result<Option<CertRecord>> {
        Ok(self
            .state
            .get_json(&cert_key(host))
            .await
            .map_err(store_err)?
            .map(|(c, _)| c))
    }

    async fn certs(&self, app: Option<&str>) -> Result<Vec<CertRecord>> {
        let keys = self.state.list("certs/", None).await.map_err(store_err)?;
        let mut out = Vec::new();
        for key in keys {
            if let Some((c, _)) = self
                .state
                .get_json::<CertRecord>(&key)
                .await
                .map_err(store_err)?
            {
                if app.is_none_or(|a| a == c.app) {
                    out.push(c);
                }
            }
        }
        out.sort_by(|a, b| a.host.cmp(&b.host));
        Ok(out)
    }

    async fn remove_cert(&self, host: &str) -> Result<()> {
        self.delete_object(cert_key(host)).await
    }

    async fn rack_secret(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .state
            .get_json::<String>(&secret_key(name))
            .await
            .map_err(store_err)?
            .map(|(v, _)| v))
    }

    async fn put_rack_secret(&self, name: &str, sealed: &str) -> Result<()> {
        let value = sealed.to_string();
        self.read_modify_write(
            &secret_key(name),
            || Ok(value.clone()),
            |v| {
                *v = value.clone();
                Ok(())
            },
            || StoreError::Conflict(format!("the secret {name} keeps changing; try again")),
        )
        .await
    }
}
