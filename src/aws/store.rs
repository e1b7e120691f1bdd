//! `S3Store`: the [`Store`] trait on the rack's bucket, built on
//! [`S3State`]'s compare-and-swap (layout in [`super::state`]; on top of it
//! this module uses):
//!
//! ```text
//! rack/keys.json                 all SSH keys, one mutable object (If-Match),
//!                                so "not the last admin" and "fingerprint
//!                                unique" are checked atomically
//! domains/HOST.json              claim of a host name by one app
//!                                (If-None-Match: hosts are unique)
//! procfiles/BUILD_ID.json        the Procfile recorded with a build
//! ```
//!
//! Release records are created with `If-None-Match` (allocating vN) and
//! only their status and journal fields change later, with `If-Match`. The
//! commit point of a deploy is the head's `release` field: `commit_release`
//! writes the head first, then marks the release succeeded, and
//! `fail_pending_releases` never fails a release that is the head's current
//! one (it marks it succeeded instead), so a crash between the two writes
//! leaves exactly one current release.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::state::{Head, S3State, StoredConfig, StoredEvent};
use super::AwsError;
use crate::store::{
    now_rfc3339, AppRecord, AppState, BuildRecord, ConfigVersion, Event, KeyRecord, ReleaseRecord,
    Result, SealedValue, Store, StoreError,
};

fn store_err(e: AwsError) -> StoreError {
    match e {
        AwsError::NotFound(m) => StoreError::NotFound(m),
        AwsError::Conflict(m) => StoreError::Conflict(m),
        // StoreError has no backend variant yet: the AWS message verbatim.
        other => StoreError::Refused(other.to_string()),
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Serialize, Deserialize, Clone)]
struct KeyJson {
    name: String,
    fingerprint: String,
    public_key: String,
    admin: bool,
    apps: Vec<String>,
    created_at: String,
}

#[derive(Serialize, Deserialize, Default)]
struct KeysJson {
    keys: Vec<KeyJson>,
}

impl From<&KeyJson> for KeyRecord {
    fn from(k: &KeyJson) -> KeyRecord {
        KeyRecord {
            name: k.name.clone(),
            fingerprint: k.fingerprint.clone(),
            public_key: k.public_key.clone(),
            admin: k.admin,
            apps: k.apps.clone(),
            created_at: k.created_at.clone(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone)]
struct BuildJson {
    id: String,
    app: String,
    commit: String,
    status: String,
    kind: Option<String>,
    push_options: Vec<String>,
    created_by: String,
    created_at: String,
    finished_at: Option<String>,
    duration_ms: Option<i64>,
    context_bytes: Option<i64>,
    image_id: Option<String>,
    error: Option<String>,
}

impl From<&BuildRecord> for BuildJson {
    fn from(b: &BuildRecord) -> BuildJson {
        BuildJson {
            id: b.id.clone(),
            app: b.app.clone(),
            commit: b.commit.clone(),
            status: b.status.clone(),
            kind: b.kind.clone(),
            push_options: b.push_options.clone(),
            created_by: b.created_by.clone(),
            created_at: b.created_at.clone(),
            finished_at: b.finished_at.clone(),
            duration_ms: b.duration_ms,
            context_bytes: b.context_bytes,
            image_id: b.image_id.clone(),
            error: b.error.clone(),
        }
    }
}

impl From<BuildJson> for BuildRecord {
    fn from(b: BuildJson) -> BuildRecord {
        BuildRecord {
            id: b.id,
            app: b.app,
            commit: b.commit,
            status: b.status,
            kind: b.kind,
            push_options: b.push_options,
            created_by: b.created_by,
            created_at: b.created_at,
            finished_at: b.finished_at,
            duration_ms: b.duration_ms,
            context_bytes: b.context_bytes,
            image_id: b.image_id,
            error: b.error,
        }
    }
}

#[derive(Serialize, Deserialize, Clone)]
struct ReleaseJson {
    app: String,
    version: i64,
    build_id: String,
    config_version: i64,
    formation: BTreeMap<String, u32>,
    description: String,
    created_by: String,
    created_at: String,
    status: String,
    ref_update: Option<String>,
}

impl From<ReleaseJson> for ReleaseRecord {
    fn from(r: ReleaseJson) -> ReleaseRecord {
        ReleaseRecord {
            app: r.app,
            version: r.version,
            build_id: r.build_id,
            config_version: r.config_version,
            formation: r.formation,
            description: r.description,
            created_by: r.created_by,
            created_at: r.created_at,
            status: r.status,
            ref_update: r.ref_update,
        }
    }
}

const KEYS: &str = "rack/keys.json";
const CAS_ATTEMPTS: usize = 25;

pub struct S3Store {
    state: S3State,
    /// The rack's KMS key: each config version gets a data key of its own.
    key_arn: String,
}

impl S3Store {
    pub fn new(state: S3State, key_arn: impl Into<String>) -> S3Store {
        S3Store {
            state,
            key_arn: key_arn.into(),
        }
    }

    /// Read-modify-write of `rack/keys.json` with If-Match (created with
    /// If-None-Match when absent).
    async fn update_keys<F>(&self, mut change: F) -> Result<()>
    where
        F: FnMut(&mut KeysJson) -> Result<()> + Send,
    {
        for _ in 0..CAS_ATTEMPTS {
            let (mut keys, etag) = match self
                .state
                .get_json::<KeysJson>(KEYS)
                .await
                .map_err(store_err)?
            {
                Some((k, e)) => (k, Some(e)),
                None => (KeysJson::default(), None),
            };
            change(&mut keys)?;
            match self.state.put_json(KEYS, &keys, etag.as_deref()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_precondition_failed() => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(StoreError::Conflict(
            "keys: too many concurrent changes; try again".into(),
        ))
    }

    async fn keys(&self) -> Result<Vec<KeyJson>> {
        Ok(self
            .state
            .get_json::<KeysJson>(KEYS)
            .await
            .map_err(store_err)?
            .map(|(k, _)| k.keys)
            .unwrap_or_default())
    }

    async fn head(&self, app: &str) -> Result<Head> {
        self.state
            .head(app)
            .await
            .map_err(store_err)?
            .map(|(h, _)| h)
            .ok_or_else(|| StoreError::NotFound(format!("no app named '{app}'")))
    }

    async fn update_head(
        &self,
        app: &str,
        change: impl FnMut(&mut Head) -> super::Result<()> + Send,
    ) -> Result<Head> {
        self.state.update_head(app, change).await.map_err(store_err)
    }

    fn release_key(app: &str, version: i64) -> String {
        format!("apps/{app}/releases/v{version}.json")
    }

    async fn update_release(
        &self,
        app: &str,
        version: i64,
        change: impl Fn(&mut ReleaseJson) + Send,
    ) -> Result<()> {
        let key = Self::release_key(app, version);
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut r, etag)) = self
                .state
                .get_json::<ReleaseJson>(&key)
                .await
                .map_err(store_err)?
            else {
                return Err(StoreError::NotFound(format!(
                    "app '{app}' has no release v{version}"
                )));
            };
            change(&mut r);
            match self.state.put_json(&key, &r, Some(&etag)).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_precondition_failed() => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(StoreError::Conflict(format!(
            "release v{version} of {app}: too many concurrent changes"
        )))
    }

    /// App names (from `apps/APP/head.json`).
    async fn app_names(&self) -> Result<Vec<String>> {
        let keys = self.state.list("apps/", None).await.map_err(store_err)?;
        Ok(keys
            .iter()
            .filter_map(|k| {
                k.strip_prefix("apps/")?
                    .strip_suffix("/head.json")
                    .map(str::to_string)
            })
            .collect())
    }

    fn app_record(h: &Head) -> AppRecord {
        AppRecord {
            name: h.app.clone(),
            created_at: h.created_at.clone(),
            settings: h.settings.clone(),
        }
    }

    async fn build_json(&self, app: &str, id: &str) -> Result<Option<(BuildJson, String)>> {
        self.state
            .get_json(&format!("apps/{app}/builds/{id}.json"))
            .await
            .map_err(store_err)
    }

    async fn put_build(&self, b: &BuildRecord, etag: Option<&str>) -> Result<()> {
        self.state
            .put_json(
                &format!("apps/{}/builds/{}.json", b.app, b.id),
                &BuildJson::from(b),
                etag,
            )
            .await
            .map(|_| ())
            .map_err(|e| {
                if e.is_precondition_failed() {
                    StoreError::Conflict(format!("build {} changed concurrently", b.id))
                } else {
                    store_err(e)
                }
            })
    }
}

#[async_trait::async_trait]
impl Store for S3Store {
    async fn add_key(&self, key: &KeyRecord) -> Result<()> {
        let new = KeyJson {
            name: key.name.clone(),
            fingerprint: key.fingerprint.clone(),
            public_key: key.public_key.clone(),
            admin: key.admin,
            apps: key.apps.clone(),
            created_at: key.created_at.clone(),
        };
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
        let mut keys: Vec<KeyRecord> = self.keys().await?.iter().map(KeyRecord::from).collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(keys)
    }

    async fn key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<KeyRecord>> {
        Ok(self
            .keys()
            .await?
            .iter()
            .find(|k| k.fingerprint == fingerprint)
            .map(KeyRecord::from))
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

    async fn create_app(&self, name: &str) -> Result<AppRecord> {
        let head = Head {
            app: name.to_string(),
            created_at: now_rfc3339(),
            ..Head::default()
        };
        match self.state.create_head(&head).await {
            Ok(_) => Ok(Self::app_record(&head)),
            Err(AwsError::Conflict(_)) => {
                Err(StoreError::Conflict(format!("app '{name}' already exists")))
            }
            Err(e) => Err(store_err(e)),
        }
    }

    async fn get_app(&self, name: &str) -> Result<Option<AppRecord>> {
        Ok(self
            .state
            .head(name)
            .await
            .map_err(store_err)?
            .map(|(h, _)| Self::app_record(&h)))
    }

    async fn app(&self, name: &str) -> Result<AppRecord> {
        Ok(Self::app_record(&self.head(name).await?))
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>> {
        let mut out = Vec::new();
        for name in self.app_names().await? {
            if let Some(a) = self.get_app(&name).await? {
                out.push(a);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn set_app_settings(
        &self,
        name: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<()> {
        let settings = settings.clone();
        self.update_head(name, move |h| {
            h.settings = settings.clone();
            Ok(())
        })
        .await
        .map(|_| ())
    }

    async fn delete_app(&self, name: &str) -> Result<()> {
        let head = self.head(name).await?;
        for host in &head.domains {
            let _ = self
                .state
                .ctx
                .s3
                .delete_object()
                .bucket(&self.state.bucket)
                .key(format!("domains/{host}.json"))
                .send()
                .await;
        }
        super::state::delete_app_objects(&self.state.ctx, &self.state.bucket, name)
            .await
            .map(|_| ())
            .map_err(store_err)
    }

    async fn latest_config(&self, app: &str) -> Result<Option<ConfigVersion>> {
        let n = self
            .state
            .highest_version(&format!("apps/{app}/config"))
            .await
            .map_err(store_err)?;
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
        let payload = super::envelope::open_config(&self.state.ctx, app, version, &sealed)
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
            super::envelope::seal_config(&self.state.ctx, &self.key_arn, app, cv.version, &payload)
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
        self.update_head(app, move |h| {
            h.config_version = h.config_version.max(v);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    async fn domains(&self, app: &str) -> Result<Vec<String>> {
        Ok(self.head(app).await?.domains)
    }

    async fn insert_build(&self, b: &BuildRecord) -> Result<()> {
        self.put_build(b, None).await
    }

    async fn finish_build(&self, b: &BuildRecord) -> Result<()> {
        for _ in 0..CAS_ATTEMPTS {
            let Some((_, etag)) = self.build_json(&b.app, &b.id).await? else {
                return Err(StoreError::NotFound(format!(
                    "no build {} of app '{}'",
                    b.id, b.app
                )));
            };
            match self.put_build(b, Some(&etag)).await {
                Err(StoreError::Conflict(_)) => continue,
                other => return other,
            }
        }
        Err(StoreError::Conflict(format!(
            "build {}: too many concurrent changes",
            b.id
        )))
    }

    async fn build(&self, app: &str, id: &str) -> Result<BuildRecord> {
        self.build_json(app, id)
            .await?
            .map(|(b, _)| b.into())
            .ok_or_else(|| StoreError::NotFound(format!("app '{app}' has no build {id}")))
    }

    async fn builds(&self, app: &str, limit: usize) -> Result<Vec<BuildRecord>> {
        // Build ids sort by time as plain strings.
        let mut keys = self
            .state
            .list(&format!("apps/{app}/builds/"), None)
            .await
            .map_err(store_err)?;
        keys.sort();
        keys.reverse();
        let mut out = Vec::new();
        for k in keys.into_iter().take(limit) {
            if let Some((b, _)) = self
                .state
                .get_json::<BuildJson>(&k)
                .await
                .map_err(store_err)?
            {
                out.push(b.into());
            }
        }
        Ok(out)
    }

    async fn fail_running_builds(&self, reason: &str) -> Result<usize> {
        let mut n = 0;
        for app in self.app_names().await? {
            for b in self.builds(&app, usize::MAX).await? {
                if b.status == "running" {
                    let mut b = b;
                    b.status = "failed".into();
                    b.error = Some(reason.to_string());
                    b.finished_at = Some(now_rfc3339());
                    self.finish_build(&b).await?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn set_build_procfile(
        &self,
        id: &str,
        procfile: &BTreeMap<String, String>,
    ) -> Result<()> {
        let key = format!("procfiles/{id}.json");
        // Written once per build; a repeat (same content) is fine.
        match self.state.put_json(&key, procfile, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_precondition_failed() => {
                let (cur, etag) = self
                    .state
                    .get_json::<BTreeMap<String, String>>(&key)
                    .await
                    .map_err(store_err)?
                    .unwrap_or_default();
                if &cur == procfile {
                    Ok(())
                } else {
                    self.state
                        .put_json(&key, procfile, Some(&etag))
                        .await
                        .map(|_| ())
                        .map_err(store_err)
                }
            }
            Err(e) => Err(store_err(e)),
        }
    }

    async fn build_procfile(&self, id: &str) -> Result<Option<BTreeMap<String, String>>> {
        Ok(self
            .state
            .get_json(&format!("procfiles/{id}.json"))
            .await
            .map_err(store_err)?
            .map(|(p, _)| p))
    }

    async fn app_state(&self, app: &str) -> Result<AppState> {
        let h = self.head(app).await?;
        Ok(AppState {
            current_release: h.release,
            deploy_id: h.deploy_id,
            formation: h.formation,
        })
    }

    async fn set_formation(&self, app: &str, formation: &BTreeMap<String, u32>) -> Result<()> {
        let f = formation.clone();
        self.update_head(app, move |h| {
            h.formation = f.clone();
            Ok(())
        })
        .await
        .map(|_| ())
    }

    async fn create_release(&self, r: ReleaseRecord) -> Result<ReleaseRecord> {
        let base = ReleaseJson {
            app: r.app.clone(),
            version: 0,
            build_id: r.build_id.clone(),
            config_version: r.config_version,
            formation: r.formation.clone(),
            description: r.description.clone(),
            created_by: r.created_by.clone(),
            created_at: r.created_at.clone(),
            status: r.status.clone(),
            ref_update: r.ref_update.clone(),
        };
        let (_, rec) = self
            .state
            .create_versioned(&format!("apps/{}/releases", r.app), |n| ReleaseJson {
                version: n,
                ..base.clone()
            })
            .await
            .map_err(store_err)?;
        Ok(rec.into())
    }

    async fn set_release_status(&self, app: &str, version: i64, status: &str) -> Result<()> {
        let status = status.to_string();
        self.update_release(app, version, move |r| r.status = status.clone())
            .await
    }

    async fn commit_release(
        &self,
        app: &str,
        version: i64,
        deploy_id: &str,
        formation: &BTreeMap<String, u32>,
    ) -> Result<()> {
        // The head is the commit point; the release's status follows.
        let (d, f) = (deploy_id.to_string(), formation.clone());
        self.update_head(app, move |h| {
            h.release = Some(version);
            h.deploy_id = Some(d.clone());
            h.formation = f.clone();
            Ok(())
        })
        .await?;
        self.update_release(app, version, |r| r.status = "succeeded".into())
            .await
    }

    async fn commit_rollout(
        &self,
        app: &str,
        deploy_id: &str,
        formation: &BTreeMap<String, u32>,
    ) -> Result<()> {
        let (d, f) = (deploy_id.to_string(), formation.clone());
        self.update_head(app, move |h| {
            h.deploy_id = Some(d.clone());
            h.formation = f.clone();
            Ok(())
        })
        .await
        .map(|_| ())
    }

    async fn clear_ref_update(&self, app: &str, version: i64) -> Result<()> {
        self.update_release(app, version, |r| r.ref_update = None)
            .await
    }

    async fn release(&self, app: &str, version: i64) -> Result<ReleaseRecord> {
        self.state
            .get_json::<ReleaseJson>(&Self::release_key(app, version))
            .await
            .map_err(store_err)?
            .map(|(r, _)| r.into())
            .ok_or_else(|| StoreError::NotFound(format!("app '{app}' has no release v{version}")))
    }

    async fn releases(&self, app: &str, limit: usize) -> Result<Vec<ReleaseRecord>> {
        let prefix = format!("apps/{app}/releases/v");
        let mut versions: Vec<i64> = self
            .state
            .list(&prefix, None)
            .await
            .map_err(store_err)?
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix(".json")?.parse().ok())
            .collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Vec::new();
        for v in versions.into_iter().take(limit) {
            out.push(self.release(app, v).await?);
        }
        Ok(out)
    }

    async fn fail_pending_releases(&self) -> Result<usize> {
        let mut n = 0;
        for app in self.app_names().await? {
            let current = self.head(&app).await?.release;
            for r in self.releases(&app, usize::MAX).await? {
                if r.status != "pending" {
                    continue;
                }
                if Some(r.version) == current {
                    // Committed (the head says so) before a crash: finish it.
                    self.update_release(&app, r.version, |r| r.status = "succeeded".into())
                        .await?;
                } else {
                    self.update_release(&app, r.version, |r| {
                        r.status = "failed".into();
                        r.ref_update = None;
                    })
                    .await?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn add_domain(&self, app: &str, host: &str) -> Result<()> {
        self.head(app).await?;
        let claim = format!("domains/{host}.json");
        match self
            .state
            .put_json(&claim, &serde_json::json!({ "app": app }), None)
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_precondition_failed() => {
                let owner = self
                    .state
                    .get_json::<serde_json::Value>(&claim)
                    .await
                    .map_err(store_err)?
                    .and_then(|(v, _)| v["app"].as_str().map(str::to_string))
                    .unwrap_or_default();
                if owner != app {
                    return Err(StoreError::Conflict(format!(
                        "{host} is already a domain of app '{owner}'"
                    )));
                }
            }
            Err(e) => return Err(store_err(e)),
        }
        let host = host.to_string();
        self.update_head(app, move |h| {
            if !h.domains.contains(&host) {
                h.domains.push(host.clone());
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    async fn remove_domain(&self, app: &str, host: &str) -> Result<()> {
        let h = self.head(app).await?;
        if !h.domains.iter().any(|d| d == host) {
            return Err(StoreError::NotFound(format!(
                "{host} is not a domain of app '{app}'"
            )));
        }
        let owned = host.to_string();
        self.update_head(app, move |h| {
            h.domains.retain(|d| d != &owned);
            Ok(())
        })
        .await?;
        self.state
            .ctx
            .s3
            .delete_object()
            .bucket(&self.state.bucket)
            .key(format!("domains/{host}.json"))
            .send()
            .await
            .map_err(|e| store_err(AwsError::api("S3.DeleteObject", e)))?;
        Ok(())
    }

    async fn add_event(
        &self,
        actor: &str,
        app: Option<&str>,
        action: &str,
        outcome: &str,
    ) -> Result<()> {
        self.state
            .add_event(&StoredEvent {
                time: now_rfc3339(),
                actor: actor.to_string(),
                app: app.map(str::to_string),
                action: action.to_string(),
                outcome: outcome.to_string(),
            })
            .await
            .map_err(store_err)
    }

    async fn events(
        &self,
        app: Option<&str>,
        apps: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        // Newest first from S3; filter for deploy keys; then oldest first.
        let all = self
            .state
            .events(app, usize::MAX)
            .await
            .map_err(store_err)?;
        let mut out = Vec::new();
        for e in all {
            if let Some(allowed) = apps {
                match &e.app {
                    Some(a) if allowed.contains(a) => {}
                    _ => continue,
                }
            }
            out.push(e);
            if out.len() >= limit {
                break;
            }
        }
        out.reverse();
        let base = super::state::now_ms();
        Ok(out
            .into_iter()
            .enumerate()
            .map(|(i, e)| Event {
                // Ids only order the answer (oldest first).
                id: base - (limit as i64) + i as i64,
                time: e.time,
                actor: e.actor,
                app: e.app,
                action: e.action,
                outcome: e.outcome,
            })
            .collect())
    }
}

mod timers;

#[cfg(test)]
mod tests;
