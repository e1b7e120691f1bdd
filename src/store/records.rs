//! The records the store keeps, as every backend hands them out: plain data,
//! no behaviour beyond small constructors and the deploy-key event filter
//! that both backends share.
//!
//! Their serde form is both the `--json` output of the commands that show
//! them and the object format of the S3 store (`aws::store`): renaming or
//! skipping a field changes stored data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An app's `apps:set` settings: key → validated value.
pub type AppSettings = BTreeMap<String, String>;
/// The Procfile found in a build: process type → command.
pub type Procfile = BTreeMap<String, String>;
/// Process type → number of instances.
pub type Formation = BTreeMap<String, u32>;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    pub name: String,
    pub fingerprint: String,
    /// The OpenSSH public key line (`ssh-ed25519 AAAA...`), comment dropped.
    pub public_key: String,
    pub admin: bool,
    pub apps: Vec<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppRecord {
    pub name: String,
    pub created_at: String,
    /// Validated `apps:set` settings (`deploy_branch`, `port`, ...).
    pub settings: AppSettings,
}

impl AppRecord {
    /// A new app: created now, no settings.
    pub fn new(name: &str) -> AppRecord {
        AppRecord {
            name: name.to_owned(),
            created_at: now_rfc3339(),
            settings: AppSettings::new(),
        }
    }
}

/// One encrypted config value as stored: the AEAD output and its nonce.
#[derive(Debug, Clone)]
pub struct SealedValue {
    pub key: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct ConfigVersion {
    pub version: i64,
    pub created_at: String,
    pub created_by: String,
    pub values: Vec<SealedValue>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: i64,
    pub time: String,
    pub actor: String,
    pub app: Option<String>,
    pub action: String,
    pub outcome: String,
}

/// Which events an `events` call may return: the newest `limit`, of the
/// apps in `allowed` only when that is given (a deploy key's apps).
#[derive(Debug, Clone)]
pub struct EventFilter {
    pub allowed: Option<Vec<String>>,
    pub limit: usize,
}

impl EventFilter {
    /// From events read newest first, the newest `limit` this filter lets
    /// through (with `allowed`, never a rack-wide event), oldest first.
    /// Both backends read newest first and select here, so what a deploy
    /// key may see is decided in one place. Reading stops at `limit`.
    pub fn select<E>(
        &self,
        newest_first: impl IntoIterator<Item = Result<Event, E>>,
    ) -> Result<Vec<Event>, E> {
        let mut out = Vec::new();
        for event in newest_first {
            let event = event?;
            let visible = match (&self.allowed, &event.app) {
                (None, _) => true,
                (Some(allowed), Some(app)) => allowed.contains(app),
                (Some(_), None) => false,
            };
            if visible {
                out.push(event);
                if out.len() >= self.limit {
                    break;
                }
            }
        }
        out.reverse();
        Ok(out)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildRecord {
    pub id: String,
    pub app: String,
    pub commit: String,
    /// running, succeeded, failed, cancelled
    pub status: String,
    pub kind: Option<String>,
    pub push_options: Vec<String>,
    pub created_by: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub context_bytes: Option<i64>,
    pub image_id: Option<String>,
    pub error: Option<String>,
}

impl BuildRecord {
    /// A build that starts now: `running`, nothing measured yet.
    pub fn running(
        id: impl Into<String>,
        app: impl Into<String>,
        commit: impl Into<String>,
        push_options: Vec<String>,
        created_by: impl Into<String>,
    ) -> BuildRecord {
        BuildRecord {
            id: id.into(),
            app: app.into(),
            commit: commit.into(),
            status: "running".into(),
            kind: None,
            push_options,
            created_by: created_by.into(),
            created_at: now_rfc3339(),
            finished_at: None,
            duration_ms: None,
            context_bytes: None,
            image_id: None,
            error: None,
        }
    }
}

/// One release: immutable once created, but for its status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub app: String,
    pub version: i64,
    pub build_id: String,
    pub config_version: i64,
    /// Process types → counts at the time of the release.
    pub formation: Formation,
    pub description: String,
    pub created_by: String,
    pub created_at: String,
    /// pending (rolling out), succeeded, failed
    pub status: String,
    /// Journal: the ref compare-and-swap this release still owes, as
    /// `refname old new`, cleared once applied. Not shown to users (the S3
    /// store keeps it beside the record).
    #[serde(skip)]
    pub ref_update: Option<String>,
}

/// What a rollout commits on the app: its rollout id and counts, and for
/// a deploy the release that becomes current (and succeeded).
#[derive(Debug, Clone)]
pub struct Commit {
    pub release: Option<i64>,
    pub deploy_id: String,
    pub formation: Formation,
}

/// The app's running state: current release, rollout id, counts per type.
#[derive(Debug, Clone, Default)]
pub struct AppState {
    pub current_release: Option<i64>,
    pub deploy_id: Option<String>,
    pub formation: Formation,
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatting the current UTC time as RFC 3339 cannot fail")
}
