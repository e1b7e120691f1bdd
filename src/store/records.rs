//! The records the store keeps, as every backend hands them out: plain data,
//! no behaviour beyond small constructors and the deploy-key event filter
//! that both backends share.
//!
//! Their serde form is both the `--json` output of the commands that show
//! them and the object format of the S3 store (`aws::store`): renaming or
//! skipping a field changes stored data.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    pub status: BuildStatus,
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
            status: BuildStatus::Running,
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
    pub status: ReleaseStatus,
    /// Journal: the ref compare-and-swap this release still owes, cleared
    /// once applied. Not shown to users (the S3 store keeps it beside the
    /// record).
    #[serde(skip)]
    pub ref_update: Option<RefUpdateJournal>,
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

/// A record field kept as one word of text (a status): `$text` is its
/// stored form everywhere (SQLite column, S3 JSON, `--json` output), and
/// `Display`, `FromStr` and serde all use it, so the forms cannot drift.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl FromStr for $name {
            type Err = ParseRecordError;
            fn from_str(text: &str) -> Result<$name, ParseRecordError> {
                match text {
                    $($text => Ok($name::$variant),)*
                    _ => Err(ParseRecordError::new(stringify!($name), text)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        serde_as_text!($name);
    };
}

/// Serde for a type stored as its `Display` text, read back with `FromStr`.
macro_rules! serde_as_text {
    ($name:ident) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

text_enum! {
    /// Where a build is.
    BuildStatus {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        /// The client went away before the build finished.
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// Where a release is.
    ReleaseStatus {
        /// Created, rolling out, not yet committed.
        Pending = "pending",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

/// The deploy branch compare-and-swap a committed release still owes:
/// move `refname` from `old` to `new` (object ids in hex). Stored as the
/// text `refname old new` (a ref name has no spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdateJournal {
    pub refname: String,
    pub old: String,
    pub new: String,
}

impl fmt::Display for RefUpdateJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.refname, self.old, self.new)
    }
}

impl FromStr for RefUpdateJournal {
    type Err = ParseRecordError;
    fn from_str(text: &str) -> Result<RefUpdateJournal, ParseRecordError> {
        let mut parts = text.split(' ');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(refname), Some(old), Some(new), None) => Ok(RefUpdateJournal {
                refname: refname.to_owned(),
                old: old.to_owned(),
                new: new.to_owned(),
            }),
            _ => Err(ParseRecordError::new("RefUpdateJournal", text)),
        }
    }
}

serde_as_text!(RefUpdateJournal);

/// Stored text that is not a value of the type it is read as.
#[derive(Debug, Clone, thiserror::Error)]
#[error("malformed {kind} in the store: '{text}'")]
pub struct ParseRecordError {
    kind: &'static str,
    text: String,
}

impl ParseRecordError {
    fn new(kind: &'static str, text: &str) -> ParseRecordError {
        ParseRecordError {
            kind,
            text: text.to_owned(),
        }
    }
}

/// A database the rack runs for apps (`resources:create`): what it is, the
/// image it runs, its sealed password (never plaintext at rest) and the
/// apps linked to it with the prefix of their `PREFIX_URL` config var.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourceRecord {
    pub name: String,
    /// `postgres` or `redis`.
    pub kind: String,
    pub version: String,
    pub image: String,
    pub created_at: String,
    pub created_by: String,
    /// The password sealed with the master key (`release::config`), as
    /// hex: `nonce` and `ciphertext`.
    pub password_nonce: String,
    pub password_ciphertext: String,
    /// Linked apps and their config var prefix (`DATABASE`, `REDIS`, ...).
    #[serde(default)]
    pub links: BTreeMap<String, String>,
}
