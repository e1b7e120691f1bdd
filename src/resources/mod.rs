//! Resources: Postgres and Redis databases the rack runs for apps.
//!
//! This module owns what a resource is (`Kind`, `Resource`, its URL, the
//! dump formats and how to tell them apart), the `[resources]` settings and
//! the `Resources` trait each provider implements (local: one Docker
//! container per resource, `local/`). The use cases over it (create, link
//! as config, backups, destroy) are the `Deployer`'s
//! (`deploy/resources.rs`); the automatic backups are `schedule.rs`.
//!
//! It knows nothing of SSH, `cmd/` or the store; the password reaches it
//! already opened and leaves it only in a URL or a container's environment
//! (the official images' contract).

pub mod local;
pub mod schedule;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::progress::Progress;
use crate::runtime::OneOffIo;

/// What a resource is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Postgres,
    Redis,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "postgres" | "postgresql" => Some(Kind::Postgres),
            "redis" => Some(Kind::Redis),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Redis => "redis",
        }
    }
    /// The config var prefix a link uses unless `--as` says otherwise
    /// (`DATABASE_URL`, `REDIS_URL`, as on Heroku).
    pub fn default_prefix(self) -> &'static str {
        match self {
            Kind::Postgres => "DATABASE",
            Kind::Redis => "REDIS",
        }
    }
    pub fn port(self) -> u16 {
        match self {
            Kind::Postgres => 5432,
            Kind::Redis => 6379,
        }
    }
    /// The version a new resource gets without `--version`: pinned, so a
    /// re-created container never jumps a major version under its data.
    pub fn default_version(self) -> &'static str {
        match self {
            Kind::Postgres => "16",
            Kind::Redis => "7",
        }
    }
    /// The first bytes of this type's dump: `pg_dump -Fc` starts with
    /// `PGDMP`, a Redis RDB with `REDIS`.
    pub fn dump_magic(self) -> &'static [u8] {
        match self {
            Kind::Postgres => b"PGDMP",
            Kind::Redis => b"REDIS",
        }
    }
    /// What a dump whose first bytes are `head` was taken from.
    pub fn of_dump(head: &[u8]) -> Option<Kind> {
        [Kind::Postgres, Kind::Redis]
            .into_iter()
            .find(|k| head.starts_with(k.dump_magic()))
    }
    /// How the type's dumps are described to users.
    pub fn dump_name(self) -> &'static str {
        match self {
            Kind::Postgres => "a Postgres dump (pg_dump -Fc)",
            Kind::Redis => "a Redis dump (RDB)",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource password: no Debug or Display, so it reaches no log line.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// 32 random letters and digits: nothing to escape in a URL.
    pub fn generate() -> Password {
        use rand::distributions::{Alphanumeric, DistString};
        Password(Alphanumeric.sample_string(&mut rand::rngs::OsRng, 32))
    }
    pub fn from_opened(s: String) -> Password {
        Password(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// One resource as a provider needs it (opened password included).
#[derive(Clone)]
pub struct Resource {
    pub name: String,
    pub kind: Kind,
    pub version: String,
    pub image: String,
    pub password: Password,
    /// The linked apps: the only ones that may reach it.
    pub links: Vec<String>,
}

/// Postgres's role of every resource (the official image's `POSTGRES_USER`).
pub const PG_USER: &str = "rack";

impl Resource {
    /// The database name of a Postgres resource: its name with `_` for `-`.
    pub fn database(&self) -> String {
        self.name.replace('-', "_")
    }

    /// The URL apps get (`PREFIX_URL`), with the password.
    pub fn url(&self, at: &Endpoint) -> String {
        let (host, port, pw) = (&at.host, at.port, self.password.expose());
        match self.kind {
            Kind::Postgres => format!(
                "postgres://{PG_USER}:{pw}@{host}:{port}/{}",
                self.database()
            ),
            // `default`: Redis 6+'s user for `requirepass` (redis-cli 7
            // sends an empty user name as one and fails).
            Kind::Redis => format!("redis://default:{pw}@{host}:{port}"),
        }
    }
}

/// Where linked apps reach a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// One backup of a resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupInfo {
    /// `b-YYYYMMDDTHHMMSSZ-XXXX`: sorts by time.
    pub id: String,
    /// RFC 3339.
    pub created: String,
    pub bytes: u64,
    /// The type the dump was taken from.
    pub kind: String,
    /// `manual` (`resources:backup`) or `scheduled`.
    #[serde(default)]
    pub trigger: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("{0}")]
    NotFound(String),
    /// Refused before anything changed (a dump of another type, too big).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

pub type Result<T, E = ResourceError> = std::result::Result<T, E>;

/// A byte stream in or out of a resource (dumps are streamed, never held).
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A terminal for `resources:console`: size and size changes.
pub struct Terminal {
    pub cols: u16,
    pub rows: u16,
    pub resize: tokio::sync::mpsc::UnboundedReceiver<(u16, u16)>,
}

/// Where resources run. Implemented by each provider; every method works
/// on one resource and never on an app's processes.
pub trait Resources: Send + Sync {
    /// Where linked apps reach `r` (the host in its URL).
    fn endpoint(&self, r: &Resource) -> Endpoint;

    /// Creates what `r` needs, or brings what exists back to it (a missing
    /// container re-created on the same data, networks of exactly the
    /// linked apps), and returns once it accepts connections.
    fn ensure<'a>(&'a self, r: &'a Resource, progress: &'a Progress) -> BoxFuture<'a, Result<()>>;

    /// `running` (accepting connections), `starting`, `missing`, ... for
    /// `resources:info`.
    fn status<'a>(&'a self, r: &'a Resource) -> BoxFuture<'a, Result<String>>;

    /// Removes the resource, its data and its backups.
    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>>;

    /// The type's client (psql, redis-cli) in the resource, attached to
    /// `io`; returns its exit status.
    fn console<'a>(
        &'a self,
        r: &'a Resource,
        io: OneOffIo,
        tty: Option<Terminal>,
    ) -> BoxFuture<'a, Result<i64>>;

    /// Streams a dump of `r` (pg_dump's custom format, an RDB) to `out`.
    fn export<'a>(&'a self, r: &'a Resource, out: Writer) -> BoxFuture<'a, Result<()>>;

    /// Replaces `r`'s data with the dump read from `input` (its type
    /// already checked), streamed.
    fn import<'a>(&'a self, r: &'a Resource, input: Reader) -> BoxFuture<'a, Result<()>>;

    /// Takes a backup of `r` now.
    fn backup<'a>(&'a self, r: &'a Resource, trigger: &'a str)
        -> BoxFuture<'a, Result<BackupInfo>>;

    /// The resource's backups, oldest first.
    fn backups<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<BackupInfo>>>;

    /// Replaces `r`'s data with backup `id`.
    fn restore<'a>(&'a self, r: &'a Resource, id: &'a str) -> BoxFuture<'a, Result<()>>;

    /// Removes all but the newest `keep` backups; returns the ids removed.
    fn prune_backups<'a>(
        &'a self,
        name: &'a str,
        keep: usize,
    ) -> BoxFuture<'a, Result<Vec<String>>>;

    /// Calls `gone(name)` whenever a resource's container disappears
    /// (`docker rm -f`), until the rack stops; a no-op where the provider
    /// keeps its resources itself.
    fn watch(&self, gone: tokio::sync::mpsc::Sender<String>) -> BoxFuture<'_, ()>;
}

/// `[resources]` of `rack.toml`, resolved.
#[derive(Debug, Clone)]
pub struct ResourceSettings {
    /// Images by type, without a version tag unless the operator gave one.
    pub images: HashMap<Kind, String>,
    pub max_import_bytes: u64,
    pub backup_keep: usize,
    /// A daily backup at this UTC time (hour, minute).
    pub backup_schedule: Option<(u32, u32)>,
}

pub const DEFAULT_MAX_IMPORT_BYTES: u64 = 10 * 1024 * 1024 * 1024;
pub const DEFAULT_BACKUP_KEEP: usize = 7;

impl Default for ResourceSettings {
    fn default() -> Self {
        ResourceSettings {
            images: HashMap::new(),
            max_import_bytes: DEFAULT_MAX_IMPORT_BYTES,
            backup_keep: DEFAULT_BACKUP_KEEP,
            backup_schedule: None,
        }
    }
}

impl ResourceSettings {
    pub fn from_file(f: &crate::config::ResourcesFile) -> anyhow::Result<ResourceSettings> {
        let mut images = HashMap::new();
        for (k, v) in &f.images {
            let kind = Kind::parse(k).ok_or_else(|| {
                anyhow::anyhow!("resources.images.{k}: unknown type (postgres, redis)")
            })?;
            if v.is_empty() || v.chars().any(|c| c.is_whitespace()) {
                anyhow::bail!("resources.images.{k}: not an image reference: {v:?}");
            }
            images.insert(kind, v.clone());
        }
        let backup_keep = f.backup_keep.unwrap_or(DEFAULT_BACKUP_KEEP);
        if backup_keep == 0 || backup_keep > 1000 {
            anyhow::bail!("resources.backup_keep: expected 1 to 1000");
        }
        let backup_schedule = match &f.backup_schedule {
            None => None,
            Some(s) => Some(parse_daily(s).ok_or_else(|| {
                anyhow::anyhow!("resources.backup_schedule: expected a UTC time HH:MM, got {s:?}")
            })?),
        };
        Ok(ResourceSettings {
            images,
            max_import_bytes: f.max_import_bytes.unwrap_or(DEFAULT_MAX_IMPORT_BYTES),
            backup_keep,
            backup_schedule,
        })
    }

    /// The image and version a new resource of `kind` runs: the configured
    /// image (default the official one) with `version` as its tag; a
    /// configured image that carries a tag is used as it is when no
    /// version is asked for.
    pub fn image_for(&self, kind: Kind, version: Option<&str>) -> (String, String) {
        let configured = self
            .images
            .get(&kind)
            .cloned()
            .unwrap_or_else(|| kind.as_str().to_string());
        let (repo, tag) = split_tag(&configured);
        match (version, tag) {
            (Some(v), _) => (format!("{repo}:{v}"), v.to_string()),
            (None, Some(t)) => (configured.clone(), t.to_string()),
            (None, None) => {
                let v = kind.default_version();
                (format!("{repo}:{v}"), v.to_string())
            }
        }
    }
}

/// `repo[:tag]` (a `:` in a registry's host:port is not a tag).
fn split_tag(image: &str) -> (&str, Option<&str>) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (image, None),
    }
}

/// `HH:MM` → (hour, minute).
fn parse_daily(s: &str) -> Option<(u32, u32)> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some((h, m))
}

/// A version as `--version` takes it: digits and dots (`16`, `15.4`, `7.2`).
pub fn validate_version(v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 16 || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "--version expects a version such as 16 or 7.2, got '{}'",
            crate::names::printable(v)
        ));
    }
    Ok(())
}
