//! What the router needs for HTTPS, held in memory and swapped at run
//! time: the certificate served for each SNI name, the ACME HTTP-01 tokens
//! it answers on the HTTP listener, and each app's HTTPS policy (redirect,
//! HSTS).
//!
//! It knows nothing of ACME, the store or PEM files: `certs/` hands it
//! parsed keys (`set_cert`), tokens (`add_challenge`) and policies.
//! Replacing a certificate changes what the next handshake gets; a
//! connection already open keeps the session it negotiated.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// ACME tokens kept at once. Each pending order holds one; more than this
/// means something is issuing in a loop.
const MAX_CHALLENGES: usize = 1024;

/// An app's HTTPS settings (`apps:set https.redirect`, `https.hsts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpsPolicy {
    /// Plain HTTP requests get a 308 to HTTPS (ACME challenges excepted).
    pub redirect: bool,
    /// `Strict-Transport-Security: max-age=N` on HTTPS responses.
    pub hsts: Option<u64>,
}

/// The router's TLS state. Cheap to clone: clones share it.
#[derive(Clone, Default)]
pub struct Tls {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Lower-case host → the key and chain served for it.
    certs: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// ACME token → key authorization.
    challenges: RwLock<HashMap<String, String>>,
    /// App → its policy (absent: the default, no redirect, no HSTS).
    policies: RwLock<HashMap<String, HttpsPolicy>>,
}

impl Tls {
    /// Serves `key` for `host` from the next handshake on.
    pub fn set_cert(&self, host: &str, key: Arc<CertifiedKey>) {
        self.inner
            .certs
            .write()
            .expect("tls cert lock poisoned")
            .insert(host.to_ascii_lowercase(), key);
    }

    /// Stops serving a certificate for `host` (new handshakes for it fail).
    pub fn remove_cert(&self, host: &str) {
        self.inner
            .certs
            .write()
            .expect("tls cert lock poisoned")
            .remove(&host.to_ascii_lowercase());
    }

    /// The hosts a certificate is served for.
    pub fn cert_hosts(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .certs
            .read()
            .expect("tls cert lock poisoned")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Answers `GET /.well-known/acme-challenge/TOKEN` with `key_auth`
    /// until removed. False when too many are pending.
    pub fn add_challenge(&self, token: &str, key_auth: &str) -> bool {
        let mut c = self
            .inner
            .challenges
            .write()
            .expect("tls challenge lock poisoned");
        if c.len() >= MAX_CHALLENGES && !c.contains_key(token) {
            return false;
        }
        c.insert(token.to_string(), key_auth.to_string());
        true
    }

    pub fn remove_challenge(&self, token: &str) {
        self.inner
            .challenges
            .write()
            .expect("tls challenge lock poisoned")
            .remove(token);
    }

    pub(crate) fn challenge(&self, token: &str) -> Option<String> {
        self.inner
            .challenges
            .read()
            .expect("tls challenge lock poisoned")
            .get(token)
            .cloned()
    }

    /// Replaces the app's policy; takes effect on the next request.
    pub fn set_policy(&self, app: &str, policy: HttpsPolicy) {
        let mut p = self
            .inner
            .policies
            .write()
            .expect("tls policy lock poisoned");
        if policy == HttpsPolicy::default() {
            p.remove(app);
        } else {
            p.insert(app.to_string(), policy);
        }
    }

    pub(crate) fn policy(&self, app: &str) -> HttpsPolicy {
        let p = self
            .inner
            .policies
            .read()
            .expect("tls policy lock poisoned");
        if p.is_empty() {
            return HttpsPolicy::default();
        }
        p.get(app).copied().unwrap_or_default()
    }

    /// The SNI resolver over this state, for a rustls `ServerConfig`.
    pub fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::new(Resolver(self.clone()))
    }
}

#[derive(Debug)]
struct Resolver(Tls);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let certs = self.0.inner.certs.read().expect("tls cert lock poisoned");
        if let Some(k) = certs.get(&name) {
            return Some(k.clone());
        }
        // A wildcard certificate added for `*.example.com` covers one label.
        let (_, parent) = name.split_once('.')?;
        certs.get(&format!("*.{parent}")).cloned()
    }
}

/// The rustls provider the router and the ACME client use: ring (one
/// provider for the whole process, whatever else the build links).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider, for libraries (the ACME
/// client) that build their rustls configs with the default. Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The server config of the HTTPS listener: certificates from `tls` by SNI,
/// ALPN h2 then http/1.1.
pub fn server_config(tls: &Tls) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(tls.resolver());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
