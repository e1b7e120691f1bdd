//! `ConfigStore` on S3: `apps/APP/config/vN.json`, each version's sealed
//! values inside a KMS envelope of its own ([`crate::aws::envelope`]).

use base64::Engine;

use super::{store_err, S3Store, B64};
use crate::aws::envelope;
use crate::aws::state::StoredConfig;
use crate::store::{ConfigStore, ConfigVersion, Result, SealedValue, StoreError};

#[async_trait::async_trait]
impl ConfigStore for S3Store {
    async fn latest_config(&self, app: &str) -> Result<Option<ConfigVersion>> {
        let n = self.next_config_version(app).await? - 1;
        if n == 0 {
            return Ok(None);
        }
        self.config_version(app, n).await.map(Some)
    }

    async fn config_version(&self, app: &str, version: i64) -> Result<ConfigVersion> {
        // The values (already sealed with the master key, as in every
        // store) sit in a KMS envelope of the version's own: a fresh data
        // key per version, stored encrypted beside the ciphertext.
        let c = self
            .state
            .config_version(app, version)
            .await
            .map_err(store_err)?;
        let bad = || StoreError::Refused(format!("config version {version} of {app} is corrupt"));
        let sealed = c.sealed_bytes().map_err(store_err)?;
        let payload = envelope::open_config(&self.state.ctx, app, version, &sealed)
            .await
            .map_err(store_err)?;
        let triples: Vec<(String, String, String)> =
            serde_json::from_slice(&payload).map_err(|_| bad())?;
        let mut values = Vec::new();
        for (key, nonce, ct) in triples {
            values.push(SealedValue {
                key,
                nonce: B64.decode(nonce).map_err(|_| bad())?,
                ciphertext: B64.decode(ct).map_err(|_| bad())?,
            });
        }
        Ok(ConfigVersion {
            version: c.version,
            created_at: c.created_at,
            created_by: c.created_by,
            values,
        })
    }

    async fn next_config_version(&self, app: &str) -> Result<i64> {
        Ok(self
            .state
            .highest_version(&format!("apps/{app}/config"))
            .await
            .map_err(store_err)?
            + 1)
    }

    async fn put_config_version(&self, app: &str, cv: &ConfigVersion) -> Result<()> {
        let triples: Vec<(&str, String, String)> = cv
            .values
            .iter()
            .map(|v| {
                (
                    v.key.as_str(),
                    B64.encode(&v.nonce),
                    B64.encode(&v.ciphertext),
                )
            })
            .collect();
        let payload =
            serde_json::to_vec(&triples).map_err(|e| StoreError::Refused(e.to_string()))?;
        let sealed =
            envelope::seal_config(&self.state.ctx, &self.key_arn, app, cv.version, &payload)
                .await
                .map_err(store_err)?;
        let json = StoredConfig {
            version: cv.version,
            created_at: cv.created_at.clone(),
            created_by: cv.created_by.clone(),
            keys: cv.values.iter().map(|v| v.key.clone()).collect(),
            sealed: B64.encode(sealed),
        };
        match self
            .state
            .put_json(
                &format!("apps/{app}/config/v{}.json", cv.version),
                &json,
                None,
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_precondition_failed() => {
                return Err(StoreError::Conflict(format!(
                    "config version {} of {app} was taken by a concurrent change",
                    cv.version
                )))
            }
            Err(e) => return Err(store_err(e)),
        }
        let v = cv.version;
        self.update_head(app, |h| h.config_version = h.config_version.max(v))
            .await
    }
}
