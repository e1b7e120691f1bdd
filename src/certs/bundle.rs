//! PEM bundles: what `certs:add` accepts (a chain, leaf first, and the
//! leaf's private key) and what the router serves.
//!
//! The checks, each refusing with one line: the key matches the leaf;
//! each certificate is signed by the next; the last is self-signed or
//! issued by a CA the bundle does not include; the leaf's subjectAltName
//! covers the host; nothing is expired or not yet valid.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Certificates a bundle may hold (leaf and intermediates; real chains
/// have two or three).
pub const MAX_CHAIN: usize = 8;

/// Why a bundle is refused: the user's line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BundleError(String);

fn refuse<T>(why: impl Into<String>) -> Result<T, BundleError> {
    Err(BundleError(why.into()))
}

/// A checked bundle, as PEM for the store, with what `certs` shows.
pub struct Bundle {
    pub chain_pem: String,
    pub key_pem: String,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub key: Arc<CertifiedKey>,
}

/// Splits a PEM text into its certificates (in order) and its one key.
fn split(pem: &str) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), BundleError> {
    let mut chain = Vec::new();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        match c {
            Ok(c) => chain.push(c),
            Err(e) => return refuse(format!("the PEM input cannot be read: {e}")),
        }
        if chain.len() > MAX_CHAIN {
            return refuse(format!("more than {MAX_CHAIN} certificates in the bundle"));
        }
    }
    if chain.is_empty() {
        return refuse("no certificate (-----BEGIN CERTIFICATE-----) in the input");
    }
    let key = match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(k) => k,
        Err(_) => return refuse("no private key (-----BEGIN PRIVATE KEY-----) in the input"),
    };
    Ok((chain, key))
}

/// The serving key for a chain and its private key; refused when the key
/// does not match the leaf.
fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, BundleError> {
    let provider = crate::router::crypto_provider();
    let signer = match provider.key_provider.load_private_key(key) {
        Ok(s) => s,
        Err(e) => return refuse(format!("the private key is not usable: {e}")),
    };
    let ck = CertifiedKey::new(chain, signer);
    if ck.keys_match().is_err() {
        return refuse("the private key does not match the certificate");
    }
    Ok(Arc::new(ck))
}

/// Whether the SAN name `pattern` covers `host` (exact, or `*.` for one
/// label), case-insensitively.
fn covers(pattern: &str, host: &str) -> bool {
    let (p, h) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    if p == h {
        return true;
    }
    match (p.strip_prefix("*."), h.split_once('.')) {
        (Some(parent), Some((label, rest))) => !label.is_empty() && parent == rest,
        _ => false,
    }
}

/// Parses and checks a `certs:add` bundle for `host` at `now` (Unix s).
pub fn check(pem: &str, host: &str, now: i64) -> Result<Bundle, BundleError> {
    let (chain, key) = split(pem)?;
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        match X509Certificate::from_der(der.as_ref()) {
            Ok((_, c)) => parsed.push(c),
            Err(e) => return refuse(format!("certificate {} cannot be parsed: {e}", i + 1)),
        }
    }
    for (i, c) in parsed.iter().enumerate() {
        let what = if i == 0 {
            "the certificate".to_string()
        } else {
            format!("certificate {} of the chain", i + 1)
        };
        if c.validity().not_after.timestamp() <= now {
            return refuse(format!("{what} expired on {}", c.validity().not_after));
        }
        if c.validity().not_before.timestamp() > now {
            return refuse(format!(
                "{what} is not valid before {}",
                c.validity().not_before
            ));
        }
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .is_err()
        {
            return refuse(format!(
                "broken chain: certificate {} is not signed by certificate {}",
                i + 1,
                i + 2
            ));
        }
    }
    let last = parsed
        .last()
        .expect("split returns at least one certificate");
    if last.subject() == last.issuer() && last.verify_signature(None).is_err() {
        return refuse(format!(
            "broken chain: certificate {} claims to be self-signed but its signature does not verify",
            parsed.len()
        ));
    }
    let leaf = &parsed[0];
    let names: Vec<String> = match leaf.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !names.iter().any(|n| covers(n, host)) {
        return refuse(format!(
            "the certificate does not cover {host} (its names: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    }
    let (issuer, not_before, not_after) = (
        leaf.issuer().to_string(),
        leaf.validity().not_before.timestamp(),
        leaf.validity().not_after.timestamp(),
    );
    drop(parsed);
    let chain_pem = to_pem(&chain);
    let key_pem = key_to_pem(&key);
    let key = certified(chain, key)?;
    Ok(Bundle {
        chain_pem,
        key_pem,
        issuer,
        not_before,
        not_after,
        key,
    })
}

/// A stored chain and key, loaded for serving (no checks but the key's
/// match: they were checked when stored), with the leaf's issuer and
/// validity.
pub fn load(chain_pem: &str, key_pem: &str) -> Result<Bundle, BundleError> {
    let chain: Vec<CertificateDer<'static>> =
        match CertificateDer::pem_slice_iter(chain_pem.as_bytes()).collect() {
            Ok(c) if Vec::len(&c) > 0 => c,
            _ => return refuse("no certificate in the stored chain"),
        };
    let key = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) {
        Ok(k) => k,
        Err(_) => return refuse("no private key in the stored key"),
    };
    let leaf = match X509Certificate::from_der(chain[0].as_ref()) {
        Ok((_, c)) => c,
        Err(e) => return refuse(format!("the certificate cannot be parsed: {e}")),
    };
    let (issuer, not_before, not_after) = (
        leaf.issuer().to_string(),
        leaf.validity().not_before.timestamp(),
        leaf.validity().not_after.timestamp(),
    );
    let key = certified(chain, key)?;
    Ok(Bundle {
        chain_pem: chain_pem.to_string(),
        key_pem: key_pem.to_string(),
        issuer,
        not_before,
        not_after,
        key,
    })
}

fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn to_pem(chain: &[CertificateDer<'_>]) -> String {
    chain.iter().map(|c| pem_block("CERTIFICATE", c)).collect()
}

fn key_to_pem(key: &PrivateKeyDer<'_>) -> String {
    let label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    pem_block(label, key.secret_der())
}

#[cfg(test)]
mod tests;
