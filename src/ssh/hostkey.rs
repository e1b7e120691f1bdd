//! The server's ed25519 host key: created on first start, kept across
//! restarts so clients never see a host-key change.

use std::path::Path;

use anyhow::{Context, Result};
use rand::RngCore;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{HashAlg, PrivateKey};

pub fn load_or_create(path: &Path) -> Result<PrivateKey> {
    match std::fs::read_to_string(path) {
        Ok(pem) => PrivateKey::from_openssh(pem.as_bytes())
            .with_context(|| format!("reading the host key {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pem = generate_pem();
            if crate::secret_file::create_new(path, pem.as_bytes())? {
                PrivateKey::from_openssh(pem.as_bytes()).context("reading the new host key")
            } else {
                load_or_create(path)
            }
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A new ed25519 host key in OpenSSH PEM form.
pub fn generate_pem() -> String {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.to_openssh(LineEnding::LF)
        .expect("encoding an in-memory ed25519 key cannot fail")
        .to_string()
}

pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

/// The `known_hosts` line for this key. `host` may be a pattern such as `*`.
pub fn known_hosts_line(key: &PrivateKey, host: &str, port: u16) -> Result<String> {
    let mut public = key.public_key().clone();
    public.set_comment("");
    let text = public.to_openssh().context("encoding the host key")?;
    let pattern = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    Ok(format!("{pattern} {}", text.trim()))
}
