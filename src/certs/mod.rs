//! HTTPS certificates of the apps' hosts: which hosts need one, issuing and
//! renewing them over ACME, `certs:add` bundles, and keeping the router's
//! certificates in step with the store.
//!
//! `Manager` owns the use cases (`list`, `add`, `remove`, `renew`) and the
//! background loop (`run`) that orders what is missing or due, one host at
//! a time, with backoff after a failure. Keys reach the store only sealed
//! with the master key (`Configs::seal_blob`); the router gets parsed keys.
//! It knows nothing of SSH or of how commands are parsed; on a provider
//! without the built-in router (aws) it keeps records but issues nothing.

mod acme;
pub mod bundle;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use instant_acme::Account;
use tokio::sync::{watch, Notify};

use crate::config::Settings;
use crate::provider::Provider;
use crate::router::{HttpsPolicy, Tls};
use crate::store::{now_rfc3339, AppSettings, CertRecord, CertSource, CertStatus, StoreError};

/// The longest wait between retries of a failing order.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);
/// How often the loop looks for certificates due without being woken.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Name of the ACME account among the rack's sealed secrets.
const ACCOUNT: &str = "acme-account";

/// A failed certificate use case: the user's line.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One line of `certs APP`.
pub struct CertView {
    pub host: String,
    pub issuer: String,
    pub not_after: String,
    pub status: String,
    pub last_error: Option<String>,
}

pub struct Manager {
    settings: Settings,
    provider: Arc<Provider>,
    wake: Notify,
    /// Hosts `certs:renew` asked to renew now.
    forced: Mutex<HashSet<String>>,
    /// One change to the certificates at a time (loop and commands).
    ops: tokio::sync::Mutex<()>,
    account: tokio::sync::Mutex<Option<Account>>,
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn unix(rfc: &str) -> Option<i64> {
    time::OffsetDateTime::parse(rfc, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Whether `domain` is one a public CA could issue for: not `localhost`,
/// not an IP address, at least two labels.
pub fn is_real_domain(domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    d.contains('.')
        && d.parse::<std::net::IpAddr>().is_err()
        && d != "localhost"
        && !d.ends_with(".localhost")
}

/// The app's HTTPS policy from its `apps:set` settings.
pub fn policy(settings: &AppSettings) -> HttpsPolicy {
    HttpsPolicy {
        redirect: settings.get("https.redirect").is_some_and(|v| v == "true"),
        hsts: settings.get("https.hsts").and_then(|v| v.parse().ok()),
    }
}

impl Manager {
    pub fn new(settings: Settings, provider: Arc<Provider>) -> Arc<Manager> {
        Arc::new(Manager {
            settings,
            provider,
            wake: Notify::new(),
            forced: Mutex::new(HashSet::new()),
            ops: tokio::sync::Mutex::new(()),
            account: tokio::sync::Mutex::new(None),
        })
    }

    fn tls(&self) -> Option<&Tls> {
        self.provider.router.as_ref().map(|r| r.tls())
    }

    /// Whether this rack orders certificates itself.
    fn issues(&self) -> bool {
        self.settings.acme.enabled && self.tls().is_some()
    }

    /// Asks the loop to look at the hosts again (a domain was added).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// At start-up, before the router serves: every stored certificate and
    /// every app's HTTPS policy into the router.
    pub async fn load(&self) -> Result<(), CertError> {
        let Some(tls) = self.tls() else {
            return Ok(());
        };
        for app in self.provider.store.list_apps().await? {
            tls.set_policy(&app.name, policy(&app.settings));
        }
        for rec in self.provider.store.certs(None).await? {
            if let Err(e) = self.install(tls, &rec) {
                tracing::warn!(host = %rec.host, error = %e, "stored certificate not served");
            }
        }
        Ok(())
    }

    /// Puts a stored record's certificate into the router (if it has one).
    fn install(&self, tls: &Tls, rec: &CertRecord) -> Result<(), String> {
        if rec.chain_pem.is_empty() || rec.key_sealed.is_empty() {
            return Ok(());
        }
        let key = self
            .provider
            .configs
            .open_blob(&rec.app, &key_name(&rec.host), &rec.key_sealed)
            .map_err(|e| e.to_string())?;
        let b = bundle::load(&rec.chain_pem, &key).map_err(|e| e.to_string())?;
        tls.set_cert(&rec.host, b.key);
        Ok(())
    }

    /// The app's changed HTTPS policy, effective on the next request.
    pub fn set_policy(&self, app: &str, settings: &AppSettings) {
        if let Some(tls) = self.tls() {
            tls.set_policy(app, policy(settings));
        }
    }

    /// The host names of the app that get a certificate: its domains, and
    /// `APP.DOMAIN` when the rack's domain is a real one.
    async fn app_hosts(&self, app: &str) -> Result<Vec<String>, CertError> {
        let mut hosts = Vec::new();
        if is_real_domain(&self.settings.domain) {
            hosts.push(format!("{app}.{}", self.settings.domain));
        }
        hosts.extend(self.provider.store.domains(app).await?);
        Ok(hosts)
    }

    /// `certs APP`: every host of the app with its certificate's state.
    pub async fn list(&self, app: &str) -> Result<Vec<CertView>, CertError> {
        self.provider.store.app(app).await?;
        let stored: BTreeMap<String, CertRecord> = self
            .provider
            .store
            .certs(Some(app))
            .await?
            .into_iter()
            .map(|c| (c.host.clone(), c))
            .collect();
        let mut hosts = self.app_hosts(app).await?;
        hosts.extend(stored.keys().cloned());
        hosts.sort();
        hosts.dedup();
        Ok(hosts
            .into_iter()
            .map(|host| match stored.get(&host) {
                Some(c) => CertView {
                    issuer: c.issuer.clone(),
                    not_after: c.not_after.clone(),
                    status: c.status.to_string(),
                    last_error: c.last_error.clone(),
                    host,
                },
                None => CertView {
                    host,
                    issuer: String::new(),
                    not_after: String::new(),
                    status: if self.issues() { "pending" } else { "none" }.into(),
                    last_error: None,
                },
            })
            .collect())
    }

    /// `certs:add`: a checked bundle for one of the app's hosts, served
    /// from the next handshake on. Nothing changes when it is refused.
    pub async fn add(&self, app: &str, host: &str, pem: &str) -> Result<CertView, CertError> {
        self.provider.store.app(app).await?;
        if !self.app_hosts(app).await?.iter().any(|h| h == host) {
            return Err(CertError::Refused(format!(
                "{host} is not a host of {app} (add it with domains:add first)"
            )));
        }
        let b = bundle::check(pem, host, now()).map_err(|e| CertError::Refused(e.to_string()))?;
        let _ops = self.ops.lock().await;
        let rec = CertRecord {
            app: app.to_string(),
            host: host.to_string(),
            source: CertSource::Added,
            status: CertStatus::Issued,
            key_sealed: self
                .provider
                .configs
                .seal_blob(app, &key_name(host), &b.key_pem),
            chain_pem: b.chain_pem,
            issuer: b.issuer.clone(),
            not_before: rfc3339(b.not_before),
            not_after: rfc3339(b.not_after),
            last_error: None,
            failures: 0,
            retry_at: None,
            updated_at: now_rfc3339(),
        };
        self.provider.store.put_cert(&rec).await?;
        if let Some(tls) = self.tls() {
            tls.set_cert(host, b.key);
        }
        Ok(CertView {
            host: rec.host,
            issuer: rec.issuer,
            not_after: rec.not_after,
            status: rec.status.to_string(),
            last_error: None,
        })
    }

    /// `certs:remove`: the host's certificate is no longer served. With
    /// ACME on, the host gets a new one automatically.
    pub async fn remove(&self, app: &str, host: &str) -> Result<(), CertError> {
        let _ops = self.ops.lock().await;
        match self.provider.store.cert(host).await? {
            Some(c) if c.app == app => {}
            _ => {
                return Err(CertError::NotFound(format!(
                    "{app} has no certificate for {host}"
                )))
            }
        }
        self.provider.store.remove_cert(host).await?;
        if let Some(tls) = self.tls() {
            tls.remove_cert(host);
        }
        self.wake();
        Ok(())
    }

    /// `certs:renew`: orders a new certificate for the host now.
    pub async fn renew(&self, app: &str, host: &str) -> Result<(), CertError> {
        if !self.issues() {
            return Err(CertError::Refused(
                "this rack does not issue certificates (no HTTPS listener, or [acme] enabled = false)"
                    .into(),
            ));
        }
        if !self.app_hosts(app).await?.iter().any(|h| h == host) {
            return Err(CertError::NotFound(format!(
                "{host} is not a host of {app}"
            )));
        }
        if let Some(c) = self.provider.store.cert(host).await? {
            if c.source == CertSource::Added {
                return Err(CertError::Refused(format!(
                    "the certificate of {host} was added with certs:add; add a new one (or certs:remove it to have one issued)"
                )));
            }
        }
        self.forced
            .lock()
            .expect("forced lock poisoned")
            .insert(host.to_string());
        self.wake();
        Ok(())
    }

    /// The background loop: orders what is missing or due until
    /// `shutdown`. Does nothing on a rack that does not issue.
    pub async fn run(self: Arc<Manager>, mut shutdown: watch::Receiver<bool>) {
        if !self.issues() {
            return;
        }
        loop {
            let next = match self.sweep().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "certificate sweep failed");
                    self.settings.acme.retry
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(next) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One pass over every host; returns how long until the next is due.
    async fn sweep(&self) -> Result<Duration, CertError> {
        let mut wanted = Vec::new();
        for app in self.provider.store.list_apps().await? {
            for host in self.app_hosts(&app.name).await? {
                wanted.push((app.name.clone(), host));
            }
        }
        let stored: BTreeMap<String, CertRecord> = self
            .provider
            .store
            .certs(None)
            .await?
            .into_iter()
            .map(|c| (c.host.clone(), c))
            .collect();
        // Certificates of hosts no app has any more.
        for (host, rec) in &stored {
            if !wanted.iter().any(|(a, h)| h == host && *a == rec.app) {
                let _ops = self.ops.lock().await;
                self.provider.store.remove_cert(host).await?;
                if let Some(tls) = self.tls() {
                    tls.remove_cert(host);
                }
            }
        }
        let mut next = SWEEP_EVERY;
        for (app, host) in wanted {
            let forced = self
                .forced
                .lock()
                .expect("forced lock poisoned")
                .remove(&host);
            let rec = stored.get(&host).filter(|r| r.app == app);
            match due_in(rec, self.settings.acme.renew_after, now()) {
                Some(wait) if !forced && wait > 0 => {
                    next = next.min(Duration::from_secs(wait as u64));
                }
                None if !forced => {}
                _ => {
                    if let Some(wait) = self.issue(&app, &host, rec).await {
                        next = next.min(wait);
                    }
                }
            }
        }
        Ok(next)
    }

    /// One order for `host`, recorded either way. Returns the retry delay
    /// after a failure.
    async fn issue(&self, app: &str, host: &str, prev: Option<&CertRecord>) -> Option<Duration> {
        let tls = self.tls()?;
        tracing::info!(app, host, "ordering a certificate");
        let result = match self.account().await {
            Ok(account) => acme::issue(&account, host, tls).await,
            Err(e) => Err(e),
        };
        let _ops = self.ops.lock().await;
        let mut rec = prev.cloned().unwrap_or_else(|| CertRecord {
            app: app.to_string(),
            host: host.to_string(),
            source: CertSource::Acme,
            status: CertStatus::Pending,
            chain_pem: String::new(),
            key_sealed: String::new(),
            issuer: String::new(),
            not_before: String::new(),
            not_after: String::new(),
            last_error: None,
            failures: 0,
            retry_at: None,
            updated_at: now_rfc3339(),
        });
        // A certs:add that landed meanwhile wins.
        if let Ok(Some(c)) = self.provider.store.cert(host).await {
            if c.source == CertSource::Added {
                return None;
            }
        }
        rec.updated_at = now_rfc3339();
        let loaded = result.and_then(|(chain, key)| {
            bundle::load(&chain, &key)
                .map(|b| (b, key))
                .map_err(|e| format!("the issued certificate is unusable: {e}"))
        });
        let (outcome, wait) = match loaded {
            Ok((b, key_pem)) => {
                rec.key_sealed = self
                    .provider
                    .configs
                    .seal_blob(app, &key_name(host), &key_pem);
                rec.chain_pem = b.chain_pem;
                rec.issuer = b.issuer;
                rec.not_before = rfc3339(b.not_before);
                rec.not_after = rfc3339(b.not_after);
                rec.status = CertStatus::Issued;
                rec.last_error = None;
                rec.failures = 0;
                rec.retry_at = None;
                tls.set_cert(host, b.key);
                tracing::info!(app, host, not_after = %rec.not_after, "certificate issued");
                ("ok".to_string(), None)
            }
            Err(e) => {
                let wait = backoff(self.settings.acme.retry, rec.failures);
                rec.status = CertStatus::Failed;
                rec.failures = rec.failures.saturating_add(1);
                rec.retry_at = Some(rfc3339(now() + wait.as_secs() as i64));
                rec.last_error = Some(e.clone());
                tracing::warn!(app, host, error = %e, retry_in_secs = wait.as_secs(), "certificate order failed");
                (format!("failed: {e}"), Some(wait))
            }
        };
        if let Err(e) = self.provider.store.put_cert(&rec).await {
            tracing::warn!(host, error = %e, "recording the certificate failed");
        }
        let action = format!("certs:issue {host}");
        if let Err(e) = self
            .provider
            .store
            .add_event("(acme)", Some(app), &action, &outcome)
            .await
        {
            tracing::warn!(host, error = %e, "recording the event failed");
        }
        wait
    }

    /// The rack's ACME account, registered (and its credentials sealed in
    /// the store) on first use.
    async fn account(&self) -> Result<Account, String> {
        let mut slot = self.account.lock().await;
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let store = &self.provider.store;
        let saved = match store.rack_secret(ACCOUNT).await {
            Ok(Some(s)) => self.provider.configs.open_blob("", ACCOUNT, &s).ok(),
            Ok(None) => None,
            Err(e) => return Err(e.to_string()),
        };
        let (account, new) = acme::account(&self.settings.acme, saved.as_deref()).await?;
        if let Some(text) = new {
            let sealed = self.provider.configs.seal_blob("", ACCOUNT, &text);
            store
                .put_rack_secret(ACCOUNT, &sealed)
                .await
                .map_err(|e| e.to_string())?;
        }
        *slot = Some(account.clone());
        Ok(account)
    }
}

/// The name a host's private key is sealed under (a `:` keeps it apart
/// from config keys).
fn key_name(host: &str) -> String {
    format!("tls-key:{host}")
}

/// Seconds until `rec` should be ordered (0 or less: now), `None` when the
/// rack never orders it (an added certificate).
fn due_in(rec: Option<&CertRecord>, renew_after: f64, now: i64) -> Option<i64> {
    let Some(rec) = rec else {
        return Some(0);
    };
    if rec.source == CertSource::Added {
        return None;
    }
    match rec.status {
        CertStatus::Issued => {
            let (Some(from), Some(to)) = (unix(&rec.not_before), unix(&rec.not_after)) else {
                return Some(0);
            };
            let at = from + ((to - from) as f64 * renew_after) as i64;
            Some(at - now)
        }
        CertStatus::Pending | CertStatus::Failed => Some(
            rec.retry_at
                .as_deref()
                .and_then(unix)
                .map_or(0, |at| at - now),
        ),
    }
}

/// The wait after `failures` earlier failures: `first`, doubled each time,
/// at most a day.
fn backoff(first: Duration, failures: u32) -> Duration {
    first
        .checked_mul(1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX))
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests;
