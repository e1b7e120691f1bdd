//! `KeyStore` on S3: every key in `rack/keys.json`, changed only by
//! read-modify-write of the whole object.

use serde::{Deserialize, Serialize};

use super::{store_err, S3Store};
use crate::store::{KeyRecord, KeyStore, Result, StoreError};

const KEYS: &str = "rack/keys.json";

/// Every key, in the order added.
#[derive(Serialize, Deserialize, Default)]
struct KeysJson {
    keys: Vec<KeyRecord>,
}

impl S3Store {
    /// Read-modify-write of `rack/keys.json` (created when absent).
    async fn update_keys(
        &self,
        change: impl FnMut(&mut KeysJson) -> Result<()> + Send,
    ) -> Result<()> {
        self.read_modify_write(
            KEYS,
            || Ok(KeysJson::default()),
            change,
            || StoreError::Conflict("keys: too many concurrent changes; try again".into()),
        )
        .await
    }

    /// Takes `app` out of every key's scope (the app is being deleted: a
    /// re-created app of the same name must not be open to old keys).
    pub(super) async fn unscope_app(&self, app: &str) -> Result<()> {
        if !self
            .keys()
            .await?
            .iter()
            .any(|k| k.apps.iter().any(|a| a == app))
        {
            return Ok(());
        }
        self.update_keys(|k| {
            for key in k.keys.iter_mut() {
                key.apps.retain(|a| a != app);
            }
            Ok(())
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>> {
        Ok(self
            .state
            .get_json::<KeysJson>(KEYS)
            .await
            .map_err(store_err)?
            .map(|(k, _)| k.keys)
            .unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl KeyStore for S3Store {
    async fn add_key(&self, key: &KeyRecord) -> Result<()> {
        let new = key.clone();
        self.update_keys(|k| {
            if k.keys.iter().any(|x| x.name == new.name) {
                return Err(StoreError::Conflict(format!(
                    "a key named '{}' already exists",
                    new.name
                )));
            }
            if let Some(x) = k.keys.iter().find(|x| x.fingerprint == new.fingerprint) {
                return Err(StoreError::Conflict(format!(
                    "this key is already registered as '{}'",
                    x.name
                )));
            }
            k.keys.push(new.clone());
            Ok(())
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        let mut keys = self.keys().await?;
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(keys)
    }

    async fn key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<KeyRecord>> {
        Ok(self
            .keys()
            .await?
            .into_iter()
            .find(|k| k.fingerprint == fingerprint))
    }

    async fn remove_key(&self, name: &str) -> Result<()> {
        self.update_keys(|k| {
            let Some(pos) = k.keys.iter().position(|x| x.name == name) else {
                return Err(StoreError::NotFound(format!("no key named '{name}'")));
            };
            if k.keys[pos].admin && k.keys.iter().filter(|x| x.admin).count() <= 1 {
                return Err(StoreError::Refused(format!(
                    "'{name}' is the last admin key; add another admin key first"
                )));
            }
            k.keys.remove(pos);
            Ok(())
        })
        .await
    }
}
