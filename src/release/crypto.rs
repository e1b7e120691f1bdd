//! The local provider's secrets master key and the AEAD around config values.
//!
//! XChaCha20-Poly1305 with a random 192-bit nonce per value; the associated
//! data binds each ciphertext to its app, key name and config version, so a
//! ciphertext moved to another app, key or version fails to decrypt.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

pub struct MasterKey {
    cipher: XChaCha20Poly1305,
}

// Deliberately no Debug/Display: the key must not reach a log line.

#[derive(Debug, thiserror::Error)]
#[error("cannot decrypt config value {key} of app {app} (version {version}): the stored data was altered or the master key is wrong")]
pub struct DecryptError {
    pub app: String,
    pub key: String,
    pub version: i64,
}

impl MasterKey {
    /// Loads the 32-byte key, creating it (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> Result<MasterKey> {
        match std::fs::read(path) {
            Ok(bytes) => {
                if bytes.len() != 32 {
                    bail!(
                        "{} holds {} bytes, expected a 32-byte key",
                        path.display(),
                        bytes.len()
                    );
                }
                let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .with_context(|| format!("restricting {} to mode 0600", path.display()))?;
                }
                Ok(MasterKey::from_bytes(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                if crate::secret_file::create_new(path, &bytes)? {
                    Ok(MasterKey::from_bytes(&bytes))
                } else {
                    MasterKey::load_or_create(path)
                }
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// A key kept elsewhere (the aws provider keeps it KMS-sealed in the
    /// bucket).
    pub fn from_raw(bytes: &[u8]) -> Result<MasterKey> {
        if bytes.len() != 32 {
            bail!(
                "the secrets master key must be 32 bytes, found {}",
                bytes.len()
            );
        }
        Ok(MasterKey::from_bytes(bytes))
    }

    fn from_bytes(bytes: &[u8]) -> MasterKey {
        MasterKey {
            cipher: XChaCha20Poly1305::new_from_slice(bytes)
                .expect("XChaCha20Poly1305 takes exactly the 32 bytes checked above"),
        }
    }

    pub fn seal(&self, app: &str, key: &str, version: i64, value: &str) -> (Vec<u8>, Vec<u8>) {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(app, key, version);
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("XChaCha20Poly1305 encryption of an in-memory buffer cannot fail");
        (nonce.to_vec(), ct)
    }

    pub fn open(
        &self,
        app: &str,
        key: &str,
        version: i64,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<String, DecryptError> {
        let err = || DecryptError {
            app: app.to_string(),
            key: key.to_string(),
            version,
        };
        if nonce.len() != 24 {
            return Err(err());
        }
        let aad = associated_data(app, key, version);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| err())?;
        String::from_utf8(plain).map_err(|_| err())
    }
}

fn associated_data(app: &str, key: &str, version: i64) -> Vec<u8> {
    format!("rack-config-v1\0{app}\0{key}\0{version}").into_bytes()
}

#[cfg(test)]
mod tests;
