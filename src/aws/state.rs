//! The aws provider's state in the rack's S3 bucket, with compare-and-swap
//! and no lock objects.
//!
//! # Layout
//!
//! ```text
//! apps/APP/head.json            mutable: the app's one head (see `Head`)
//! apps/APP/releases/vN.json     immutable release records
//! apps/APP/config/vN.json       immutable config versions: key names and the
//!                               KMS envelope (base64), never a plaintext value
//! apps/APP/builds/ID.json       build records (created once, then finished
//!                               with If-Match)
//! events/INV-APP-RAND.json      one object per audit event; INV = 9999999999999
//!                               minus the time in ms, so a listing is newest
//!                               first; APP is `-` for rack-wide events
//! rack/keys.json                all SSH keys in one mutable object (If-Match)
//! domains/HOST.json              a host name's claim by one app (If-None-Match)
//! procfiles/BUILD_ID.json        the Procfile recorded with a build
//! apps/APP/volumes.json          the app's volumes (If-Match)
//! rack/NAME.sealed              rack secrets such as the SSH host key,
//!                                KMS-envelope-sealed (`aws::secrets`)
//! ```
//!
//! # Rules
//!
//! - `head.json` is written only with `If-Match: <etag of what was read>`
//!   (created with `If-None-Match: *`). A writer that loses gets 412
//!   PreconditionFailed, re-reads and re-applies its change
//!   ([`S3State::update_head`]); no update is ever lost and no lock object
//!   exists that a crash could leave behind.
//! - Immutable records are created with `If-None-Match: *`, which is also
//!   how `vN` is allocated without races: list for the highest N, try N+1,
//!   on 412 try N+2 ([`S3State::create_versioned`]).
//! - The deploy lock is a lease in the head (owner, expiry, counter): taken
//!   and renewed (heartbeat) by compare-and-swap; an expired lease can be
//!   taken over; the counter rises with every acquisition, so a writer that
//!   lost its lease can tell (fencing).
//! - Nothing here holds a plaintext config value: config versions arrive
//!   sealed by [`super::envelope`] (this module calls no KMS itself).
//! - `apps:destroy` deletes `apps/APP/` ([`delete_app_objects`]);
//!   `rack uninstall aws` empties the whole bucket ([`empty_bucket`]).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{or_absent, AwsContext, AwsError, Result};

/// How many times a compare-and-swap is retried before giving up.
const CAS_ATTEMPTS: usize = 25;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The deploy lock: who holds it, until when, and how many times it has
/// been taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    /// Unix time in ms after which the lease may be taken over.
    pub expires_at_ms: i64,
    /// Incremented on every acquisition (a fencing token).
    pub counter: u64,
}

impl Lease {
    pub fn is_live(&self, now_ms: i64) -> bool {
        !self.owner.is_empty() && self.expires_at_ms > now_ms
    }
}

/// The one mutable object per app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Head {
    #[serde(default)]
    pub app: String,
    #[serde(default)]
    pub created_at: String,
    /// The current release (`vN`), if any.
    #[serde(default)]
    pub release: Option<i64>,
    /// The newest config version (0: none yet).
    #[serde(default)]
    pub config_version: i64,
    #[serde(default)]
    pub formation: BTreeMap<String, u32>,
    /// `apps:set` settings.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default)]
    pub domains: Vec<String>,
    /// The rollout id of the current release.
    #[serde(default)]
    pub deploy_id: Option<String>,
    #[serde(default)]
    pub lease: Option<Lease>,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A config version as stored: key names and the sealed envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConfig {
    pub version: i64,
    pub created_at: String,
    pub created_by: String,
    pub keys: Vec<String>,
    /// base64 of the [`super::envelope`] bytes.
    pub sealed: String,
}

impl StoredConfig {
    pub fn sealed_bytes(&self) -> Result<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.sealed)
            .map_err(|_| AwsError::Invalid(format!("config version {} is corrupt", self.version)))
    }
}

/// An audit event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub time: String,
    pub actor: String,
    pub app: Option<String>,
    pub action: String,
    pub outcome: String,
}

/// The outcome of trying to take the deploy lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    Acquired(Lease),
    /// Someone else holds a live lease.
    Held(Lease),
}

pub fn head_key(app: &str) -> String {
    format!("apps/{app}/head.json")
}

fn version_key(prefix: &str, n: i64) -> String {
    format!("{prefix}/v{n}.json")
}

/// Typed access to the rack's bucket.
#[derive(Clone, Debug)]
pub struct S3State {
    pub ctx: AwsContext,
    pub bucket: String,
}

impl S3State {
    pub fn new(ctx: AwsContext, bucket: impl Into<String>) -> S3State {
        S3State {
            ctx,
            bucket: bucket.into(),
        }
    }

    /// The object and its ETag, or `None`.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<(Vec<u8>, String)>> {
        let answer = self
            .ctx
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let Some(out) = or_absent("S3.GetObject", answer, |e| e.code() == Some("NoSuchKey"))?
        else {
            return Ok(None);
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body =
            out.body.collect().await.map_err(|e| {
                AwsError::Invalid(format!("reading s3://{}/{key}: {e}", self.bucket))
            })?;
        Ok(Some((body.into_bytes().to_vec(), etag)))
    }

    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, String)>> {
        match self.get_bytes(key).await? {
            None => Ok(None),
            Some((bytes, etag)) => serde_json::from_slice(&bytes)
                .map(|v| Some((v, etag)))
                .map_err(|e| {
                    AwsError::Invalid(format!("s3://{}/{key} is not valid: {e}", self.bucket))
                }),
        }
    }

    /// Writes `body`: `if_match = Some(etag)` only over that version,
    /// `None` only when no object exists (`If-None-Match: *`). Returns the
    /// new ETag; a lost race is an error with `is_precondition_failed()`.
    pub async fn put_bytes(
        &self,
        key: &str,
        body: Vec<u8>,
        if_match: Option<&str>,
    ) -> Result<String> {
        let mut req = self
            .ctx
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        req = match if_match {
            Some(etag) => req.if_match(etag),
            None => req.if_none_match("*"),
        };
        let out = req
            .send()
            .await
            .map_err(|e| AwsError::api("S3.PutObject", e))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    pub async fn put_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        if_match: Option<&str>,
    ) -> Result<String> {
        let body =
            serde_json::to_vec_pretty(value).map_err(|e| AwsError::Invalid(e.to_string()))?;
        self.put_bytes(key, body, if_match).await
    }

    /// Keys under `prefix` (all pages, or the first `limit`), in S3's
    /// (lexicographic) order.
    pub async fn list(&self, prefix: &str, limit: Option<usize>) -> Result<Vec<String>> {
        let s3 = &self.ctx.s3;
        let request = s3.list_objects_v2().bucket(&self.bucket).prefix(prefix);
        let objects = paginated!("S3.ListObjectsV2", request, |p| p.contents(), limit)?;
        Ok(objects
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect())
    }

    /// The highest `N` of `PREFIX/vN.json` objects (0 when none).
    pub async fn highest_version(&self, prefix: &str) -> Result<i64> {
        let p = format!("{prefix}/v");
        Ok(self
            .list(&p, None)
            .await?
            .iter()
            .filter_map(|k| {
                k.strip_prefix(&p)?
                    .strip_suffix(".json")?
                    .parse::<i64>()
                    .ok()
            })
            .max()
            .unwrap_or(0))
    }

    /// Creates `PREFIX/vN.json` for the next free N: tries `highest + 1`
    /// with `If-None-Match: *` and moves on to N+1 on 412, so two writers
    /// never get the same N. `make(N)` builds the record for N.
    pub async fn create_versioned<T: Serialize>(
        &self,
        prefix: &str,
        mut make: impl FnMut(i64) -> T,
    ) -> Result<(i64, T)> {
        let mut n = self.highest_version(prefix).await? + 1;
        for _ in 0..CAS_ATTEMPTS {
            let record = make(n);
            match self.put_json(&version_key(prefix, n), &record, None).await {
                Ok(_) => return Ok((n, record)),
                Err(e) if e.is_precondition_failed() => n += 1,
                Err(e) => return Err(e),
            }
        }
        Err(AwsError::Conflict(format!(
            "could not allocate a new version under {prefix}: too many concurrent writers"
        )))
    }

    pub async fn head(&self, app: &str) -> Result<Option<(Head, String)>> {
        self.get_json(&head_key(app)).await
    }

    /// Creates the app's head; fails (`Conflict`) when it already exists.
    pub async fn create_head(&self, head: &Head) -> Result<String> {
        match self.put_json(&head_key(&head.app), head, None).await {
            Err(e) if e.is_precondition_failed() => Err(AwsError::Conflict(format!(
                "app {} already exists",
                head.app
            ))),
            other => other,
        }
    }

    /// Read-modify-write of the app's head with `If-Match`: on 412 re-reads
    /// and calls `change` again on the fresh head. `change` returning an
    /// error aborts without writing.
    pub async fn update_head<F>(&self, app: &str, mut change: F) -> Result<Head>
    where
        F: FnMut(&mut Head) -> Result<()>,
    {
        let key = head_key(app);
        for attempt in 0..CAS_ATTEMPTS {
            let Some((mut head, etag)) = self.head(app).await? else {
                return Err(AwsError::NotFound(format!("app {app} does not exist")));
            };
            change(&mut head)?;
            match self.put_json(&key, &head, Some(&etag)).await {
                Ok(_) => return Ok(head),
                Err(e) if e.is_precondition_failed() => {
                    tracing::debug!(app, attempt, "head changed under us; retrying");
                    let jitter = rand::random::<u64>() % (20 * (attempt as u64 + 1));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(AwsError::Conflict(format!(
            "app {app}: too many concurrent changes; try again"
        )))
    }

    /// Takes the deploy lease for `ttl` unless someone else holds a live
    /// one (then `Held` says who, until when).
    pub async fn try_acquire_lease(
        &self,
        app: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome> {
        let mut held: Option<Lease> = None;
        let head = self
            .update_head(app, |h| {
                held = None;
                let now = now_ms();
                if let Some(l) = &h.lease {
                    if l.is_live(now) && l.owner != owner {
                        held = Some(l.clone());
                        return Err(AwsError::Conflict(String::new()));
                    }
                }
                let counter = h.lease.as_ref().map(|l| l.counter).unwrap_or(0) + 1;
                h.lease = Some(Lease {
                    owner: owner.to_string(),
                    expires_at_ms: now + ttl.as_millis() as i64,
                    counter,
                });
                Ok(())
            })
            .await;
        match (head, held) {
            (_, Some(l)) => Ok(LeaseOutcome::Held(l)),
            (Ok(h), None) => Ok(LeaseOutcome::Acquired(h.lease.unwrap_or_default())),
            (Err(e), None) => Err(e),
        }
    }

    /// Extends a lease we hold (heartbeat). Fails with `Conflict` when the
    /// lease was lost (expired and taken by someone else).
    pub async fn renew_lease(&self, app: &str, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let head = self
            .update_head(app, |h| match &h.lease {
                Some(l) if l.owner == lease.owner && l.counter == lease.counter => {
                    h.lease = Some(Lease {
                        expires_at_ms: now_ms() + ttl.as_millis() as i64,
                        ..l.clone()
                    });
                    Ok(())
                }
                _ => Err(AwsError::Conflict(format!(
                    "app {app}: the deploy lock of {} was lost",
                    lease.owner
                ))),
            })
            .await?;
        Ok(head.lease.unwrap_or_default())
    }

    /// Gives the lease back (a no-op if it is no longer ours).
    pub async fn release_lease(&self, app: &str, lease: &Lease) -> Result<()> {
        let r = self
            .update_head(app, |h| match &h.lease {
                Some(l) if l.owner == lease.owner && l.counter == lease.counter => {
                    h.lease = Some(Lease {
                        owner: String::new(),
                        expires_at_ms: 0,
                        counter: l.counter,
                    });
                    Ok(())
                }
                _ => Err(AwsError::Conflict(String::new())),
            })
            .await;
        match r {
            Ok(_) | Err(AwsError::Conflict(_)) | Err(AwsError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Records a new config version (sealed envelope) and returns its
    /// number; the head's `config_version` follows it.
    pub async fn put_config_version(
        &self,
        app: &str,
        created_by: &str,
        keys: Vec<String>,
        sealed: &[u8],
    ) -> Result<i64> {
        let sealed = base64::engine::general_purpose::STANDARD.encode(sealed);
        let (n, _) = self
            .create_versioned(&format!("apps/{app}/config"), |n| StoredConfig {
                version: n,
                created_at: crate::store::now_rfc3339(),
                created_by: created_by.to_string(),
                keys: keys.clone(),
                sealed: sealed.clone(),
            })
            .await?;
        self.update_head(app, |h| {
            h.config_version = h.config_version.max(n);
            Ok(())
        })
        .await?;
        Ok(n)
    }

    pub async fn config_version(&self, app: &str, version: i64) -> Result<StoredConfig> {
        self.get_json(&version_key(&format!("apps/{app}/config"), version))
            .await?
            .map(|(c, _)| c)
            .ok_or_else(|| AwsError::NotFound(format!("app {app} has no config version {version}")))
    }

    /// Appends one audit event (its own object).
    pub async fn add_event(&self, event: &StoredEvent) -> Result<()> {
        let inv = 9_999_999_999_999i64 - now_ms();
        let app = event.app.as_deref().unwrap_or("-");
        let rand: u32 = rand::random();
        let key = format!("events/{inv:013}-{app}-{rand:08x}.json");
        self.put_json(&key, event, None).await.map(|_| ())
    }

    /// The newest `limit` events (of `app` when given), newest first.
    pub async fn events(&self, app: Option<&str>, limit: usize) -> Result<Vec<StoredEvent>> {
        self.events_where(|a| app.is_none() || a == app, limit)
            .await
    }

    /// The newest `limit` events whose app (None: a rack-wide event)
    /// passes `keep`, newest first. The keys order events newest first and
    /// name their app, so this lists page by page and reads only the
    /// objects it returns: `events -n 1` costs one listing page and one
    /// read however long the audit trail is.
    pub async fn events_where(
        &self,
        keep: impl Fn(Option<&str>) -> bool,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let mut pages = self
            .ctx
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix("events/")
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(page) = pages.next().await else {
                break;
            };
            let page = page.map_err(|e| AwsError::api("S3.ListObjectsV2", e))?;
            for k in page.contents().iter().filter_map(|o| o.key()) {
                if out.len() >= limit {
                    break;
                }
                if !keep(event_key_app(k)) {
                    continue;
                }
                if let Some((e, _)) = self.get_json::<StoredEvent>(k).await? {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }
}

/// The app of an `events/INV-APP-RAND.json` key (APP never holds '_' or
/// '.'); None for a rack-wide event (`-`) or a key of another shape.
fn event_key_app(key: &str) -> Option<&str> {
    let mid = key
        .strip_prefix("events/")
        .and_then(|r| r.split_once('-'))
        .map(|(_, r)| r)?;
    let (app, _) = mid.rsplit_once('-')?;
    (app != "-").then_some(app)
}

/// The old path of [`super::secrets::load_or_create_secret`] (it seals
/// with KMS, so it is no longer part of this S3-only module).
pub use super::secrets::load_or_create_secret;

/// Deletes every object under `apps/APP/` (apps:destroy). Audit events stay.
pub async fn delete_app_objects(ctx: &AwsContext, bucket: &str, app: &str) -> Result<usize> {
    let state = S3State::new(ctx.clone(), bucket);
    let keys = match state.list(&format!("apps/{app}/"), None).await {
        Ok(k) => k,
        Err(e) if e.code() == Some("NoSuchBucket") => return Ok(0),
        Err(e) => return Err(e),
    };
    let ids = keys
        .iter()
        .map(|k| object_id(k, None))
        .collect::<Result<Vec<_>>>()?;
    delete_objects(ctx, bucket, &ids).await?;
    Ok(keys.len())
}

/// Deletes every object in the bucket (and every version, should
/// versioning have been turned on); returns how many.
pub async fn empty_bucket(ctx: &AwsContext, bucket: &str) -> Result<usize> {
    let mut deleted = 0;
    // Listing again after each round, not paging: what was listed is gone.
    loop {
        let page = ctx
            .s3
            .list_object_versions()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| AwsError::api("S3.ListObjectVersions", e))?;
        let versions = page.versions().iter().map(|v| (v.key(), v.version_id()));
        let markers = page
            .delete_markers()
            .iter()
            .map(|m| (m.key(), m.version_id()));
        let mut ids = versions
            .chain(markers)
            .filter_map(|(k, v)| Some(object_id(k?, v)))
            .collect::<Result<Vec<_>>>()?;
        if ids.is_empty() {
            // Unversioned listing as a fallback (some S3 doubles list no
            // versions for unversioned buckets).
            let state = S3State::new(ctx.clone(), bucket);
            let keys = state.list("", Some(1000)).await?;
            ids = keys
                .iter()
                .map(|k| object_id(k, None))
                .collect::<Result<Vec<_>>>()?;
            if ids.is_empty() {
                return Ok(deleted);
            }
        }
        delete_objects(ctx, bucket, &ids).await?;
        deleted += ids.len();
    }
}

fn object_id(key: &str, version: Option<&str>) -> Result<ObjectIdentifier> {
    ObjectIdentifier::builder()
        .key(key)
        .set_version_id(version.map(str::to_string))
        .build()
        .map_err(|e| AwsError::Invalid(e.to_string()))
}

/// DeleteObjects, a thousand (its limit) at a time.
async fn delete_objects(ctx: &AwsContext, bucket: &str, ids: &[ObjectIdentifier]) -> Result<()> {
    for chunk in ids.chunks(1000) {
        let delete = Delete::builder()
            .set_objects(Some(chunk.to_vec()))
            .quiet(true)
            .build()
            .map_err(|e| AwsError::Invalid(e.to_string()))?;
        ctx.s3
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| AwsError::api("S3.DeleteObjects", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
