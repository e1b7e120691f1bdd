//! Config versions: each `config:set`/`config:unset` records a whole new
//! version (every value re-sealed under the new version number), so any
//! release can name exactly the config it ran with.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::crypto::{DecryptError, MasterKey};
use crate::store::{now_rfc3339, ConfigVersion, SealedValue, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// Plaintext config of one version. No Debug, Display or Serialize: values
/// reach output only where a command deliberately prints them.
pub struct ConfigVars {
    pub version: i64,
    vars: BTreeMap<String, String>,
}

impl ConfigVars {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }
    pub fn len(&self) -> usize {
        self.vars.len()
    }
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }
}

/// One requested change to an app's config.
pub enum Change {
    Set(String, String),
    Unset(String),
}

pub struct Configs {
    store: Arc<dyn Store>,
    key: MasterKey,
}

pub fn validate_value(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.contains('\0') {
        return Err(ConfigError::Invalid(format!(
            "the value of {key} contains a NUL byte, which environment variables cannot hold"
        )));
    }
    Ok(())
}

impl Configs {
    pub fn new(store: Arc<dyn Store>, key: MasterKey) -> Configs {
        Configs { store, key }
    }

    /// The newest config version (version 0 and empty when none was set).
    pub async fn current(&self, app: &str) -> Result<ConfigVars, ConfigError> {
        match self.store.latest_config(app).await? {
            Some(cv) => self.open(app, &cv).await,
            None => Ok(ConfigVars {
                version: 0,
                vars: BTreeMap::new(),
            }),
        }
    }

    /// One value of the newest version; only that value is decrypted.
    pub async fn get(&self, app: &str, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(cv) = self.store.latest_config(app).await? else {
            return Ok(None);
        };
        match cv.values.iter().find(|v| v.key == key) {
            Some(v) => Ok(Some(self.key.open(
                app,
                key,
                cv.version,
                &v.nonce,
                &v.ciphertext,
            )?)),
            None => Ok(None),
        }
    }

    pub async fn at(&self, app: &str, version: i64) -> Result<ConfigVars, ConfigError> {
        if version == 0 {
            return Ok(ConfigVars {
                version: 0,
                vars: BTreeMap::new(),
            });
        }
        let cv = self.store.config_version(app, version).await?;
        self.open(app, &cv).await
    }

    /// The config of `version` as the environment handed to a runtime.
    pub async fn secret_env(
        &self,
        app: &str,
        version: i64,
    ) -> Result<super::SecretEnv, ConfigError> {
        let vars = self.at(app, version).await?;
        Ok(super::SecretEnv::new(vars.vars.into_iter().collect()))
    }

    async fn open(&self, app: &str, cv: &ConfigVersion) -> Result<ConfigVars, ConfigError> {
        let mut vars = BTreeMap::new();
        for v in &cv.values {
            let plain = self
                .key
                .open(app, &v.key, cv.version, &v.nonce, &v.ciphertext)?;
            vars.insert(v.key.clone(), plain);
        }
        Ok(ConfigVars {
            version: cv.version,
            vars,
        })
    }

    /// Applies `changes` on top of the newest version and records the result
    /// as a new version. Returns the new version, or `None` if nothing
    /// changed. A concurrent writer makes the insert conflict; then the
    /// newest version is re-read and the changes applied again, so neither
    /// writer's change is lost.
    pub async fn update(
        &self,
        app: &str,
        actor: &str,
        changes: &[Change],
    ) -> Result<Option<i64>, ConfigError> {
        for c in changes {
            match c {
                Change::Set(k, v) => {
                    crate::names::validate_config_key(k).map_err(ConfigError::Invalid)?;
                    validate_value(k, v)?;
                }
                Change::Unset(k) => {
                    crate::names::validate_config_key(k).map_err(ConfigError::Invalid)?
                }
            }
        }
        loop {
            let cur = self.current(app).await?;
            let mut vars = cur.vars.clone();
            for c in changes {
                match c {
                    Change::Set(k, v) => {
                        vars.insert(k.clone(), v.clone());
                    }
                    Change::Unset(k) => {
                        vars.remove(k);
                    }
                }
            }
            if vars == cur.vars {
                return Ok(None);
            }
            let version = cur.version + 1;
            match self
                .store
                .put_config_version(app, &self.seal(app, actor, version, &vars))
                .await
            {
                Ok(()) => return Ok(Some(version)),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Records `source`'s values as a new version (rollback).
    pub async fn restore(
        &self,
        app: &str,
        actor: &str,
        source: &ConfigVars,
    ) -> Result<i64, ConfigError> {
        loop {
            let version = self.store.next_config_version(app).await?;
            match self
                .store
                .put_config_version(app, &self.seal(app, actor, version, &source.vars))
                .await
            {
                Ok(()) => return Ok(version),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn seal(
        &self,
        app: &str,
        actor: &str,
        version: i64,
        vars: &BTreeMap<String, String>,
    ) -> ConfigVersion {
        let values = vars
            .iter()
            .map(|(k, v)| {
                let (nonce, ciphertext) = self.key.seal(app, k, version, v);
                SealedValue {
                    key: k.clone(),
                    nonce,
                    ciphertext,
                }
            })
            .collect();
        ConfigVersion {
            version,
            created_at: now_rfc3339(),
            created_by: actor.to_string(),
            values,
        }
    }

    /// Seals a resource's password like a config value (bound to the
    /// resource's name; `resource/` cannot start an app's name): hex of
    /// the nonce and the ciphertext, for the resource's record.
    pub fn seal_resource_password(&self, name: &str, password: &str) -> (String, String) {
        let (nonce, ct) = self.key.seal(&resource_aad(name), "PASSWORD", 0, password);
        (to_hex(&nonce), to_hex(&ct))
    }

    /// The resource's password, opened from its record.
    pub fn open_resource_password(
        &self,
        name: &str,
        nonce: &str,
        ciphertext: &str,
    ) -> Result<String, ConfigError> {
        let err = || DecryptError {
            app: resource_aad(name),
            key: "PASSWORD".into(),
            version: 0,
        };
        let (nonce, ct) = (
            from_hex(nonce).ok_or_else(err)?,
            from_hex(ciphertext).ok_or_else(err)?,
        );
        Ok(self
            .key
            .open(&resource_aad(name), "PASSWORD", 0, &nonce, &ct)?)
    }
}

fn resource_aad(name: &str) -> String {
    format!("resource/{name}")
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
