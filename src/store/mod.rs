//! Durable state of the local provider: keys, apps and their settings,
//! config versions (ciphertext only), domains and the audit trail, in one
//! SQLite database (WAL) under the data dir.
//!
//! This module stores what it is given. It never sees plaintext config
//! values (`release/` encrypts before calling it) and knows nothing about
//! SSH, git or Docker. Every method is a short transaction, so the server and
//! the offline `rack keys` command can use the database at the same time.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

mod timers;
pub use timers::TimerStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Refused(String),
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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
    pub settings: BTreeMap<String, String>,
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

#[derive(Debug, Clone, Serialize)]
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

const BUILD_COLUMNS: &str = "id, app, commit_id, status, kind, push_options, created_by, created_at, finished_at, duration_ms, context_bytes, image_id, error";

fn build_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BuildRecord> {
    let opts: String = r.get(5)?;
    Ok(BuildRecord {
        id: r.get(0)?,
        app: r.get(1)?,
        commit: r.get(2)?,
        status: r.get(3)?,
        kind: r.get(4)?,
        push_options: serde_json::from_str(&opts).unwrap_or_default(),
        created_by: r.get(6)?,
        created_at: r.get(7)?,
        finished_at: r.get(8)?,
        duration_ms: r.get(9)?,
        context_bytes: r.get(10)?,
        image_id: r.get(11)?,
        error: r.get(12)?,
    })
}

/// One release: immutable once created, but for its status.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseRecord {
    pub app: String,
    pub version: i64,
    pub build_id: String,
    pub config_version: i64,
    /// Process types → counts at the time of the release.
    pub formation: BTreeMap<String, u32>,
    pub description: String,
    pub created_by: String,
    pub created_at: String,
    /// pending (rolling out), succeeded, failed
    pub status: String,
    /// Journal: the ref compare-and-swap this release still owes, as
    /// `refname old new`, cleared once applied.
    #[serde(skip)]
    pub ref_update: Option<String>,
}

const RELEASE_COLUMNS: &str =
    "app, version, build_id, config_version, formation, description, created_by, created_at, status, ref_update";

fn release_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReleaseRecord> {
    let formation: String = r.get(4)?;
    Ok(ReleaseRecord {
        app: r.get(0)?,
        version: r.get(1)?,
        build_id: r.get(2)?,
        config_version: r.get(3)?,
        formation: serde_json::from_str(&formation).unwrap_or_default(),
        description: r.get(5)?,
        created_by: r.get(6)?,
        created_at: r.get(7)?,
        status: r.get(8)?,
        ref_update: r.get(9)?,
    })
}

/// The app's running state: current release, rollout id, counts per type.
#[derive(Debug, Clone, Default)]
pub struct AppState {
    pub current_release: Option<i64>,
    pub deploy_id: Option<String>,
    pub formation: BTreeMap<String, u32>,
}

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

/// Each entry moves the schema one version up; never edit a shipped entry.
const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE keys (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        admin INTEGER NOT NULL,
        created_at TEXT NOT NULL
     );
     CREATE TABLE key_apps (
        key_name TEXT NOT NULL REFERENCES keys(name) ON DELETE CASCADE,
        app TEXT NOT NULL,
        PRIMARY KEY (key_name, app)
     );
     CREATE TABLE apps (
        name TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}'
     );
     CREATE TABLE config_versions (
        app TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        PRIMARY KEY (app, version)
     );
     CREATE TABLE config_values (
        app TEXT NOT NULL,
        version INTEGER NOT NULL,
        key TEXT NOT NULL,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        PRIMARY KEY (app, version, key)
     );
     CREATE TABLE domains (
        host TEXT PRIMARY KEY,
        app TEXT NOT NULL
     );
     CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        actor TEXT NOT NULL,
        app TEXT,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL
     );
     CREATE INDEX events_app ON events(app, id);",
    // v2: builds
    "CREATE TABLE builds (
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        commit_id TEXT NOT NULL,
        status TEXT NOT NULL,
        kind TEXT,
        push_options TEXT NOT NULL DEFAULT '[]',
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        finished_at TEXT,
        duration_ms INTEGER,
        context_bytes INTEGER,
        image_id TEXT,
        error TEXT
     );
     CREATE INDEX builds_app ON builds(app, id);",
    // v3: releases, formation, the deploy journal
    "ALTER TABLE builds ADD COLUMN procfile TEXT;
     ALTER TABLE apps ADD COLUMN current_release INTEGER;
     ALTER TABLE apps ADD COLUMN deploy_id TEXT;
     ALTER TABLE apps ADD COLUMN formation TEXT NOT NULL DEFAULT '{}';
     CREATE TABLE releases (
        app TEXT NOT NULL,
        version INTEGER NOT NULL,
        build_id TEXT NOT NULL,
        config_version INTEGER NOT NULL,
        formation TEXT NOT NULL,
        description TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL,
        ref_update TEXT,
        PRIMARY KEY (app, version)
     );",
    // v4: timers (app.json's cron list) and the scheduler's state
    "ALTER TABLE builds ADD COLUMN timers TEXT;
     CREATE TABLE timer_states (
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (app, name)
     );",
];

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatting the current UTC time as RFC 3339 cannot fail")
}

/// Durable state behind one small interface: SQLite for the local
/// provider, S3 for aws. Every method is one short, atomic operation.
#[async_trait::async_trait]
pub trait Store: TimerStore + Send + Sync {
    async fn add_key(&self, key: &KeyRecord) -> Result<()>;
    async fn list_keys(&self) -> Result<Vec<KeyRecord>>;
    async fn key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<KeyRecord>>;
    /// Removes a key; refuses to remove the last admin key, checked in the
    /// same transaction so two concurrent removals cannot both pass.
    async fn remove_key(&self, name: &str) -> Result<()>;
    async fn create_app(&self, name: &str) -> Result<AppRecord>;
    async fn get_app(&self, name: &str) -> Result<Option<AppRecord>>;
    /// The app, or a NotFound error phrased for users.
    async fn app(&self, name: &str) -> Result<AppRecord>;
    async fn list_apps(&self) -> Result<Vec<AppRecord>>;
    async fn set_app_settings(&self, name: &str, settings: &BTreeMap<String, String>)
        -> Result<()>;
    /// Removes the app and everything stored about it except audit events.
    async fn delete_app(&self, name: &str) -> Result<()>;
    async fn latest_config(&self, app: &str) -> Result<Option<ConfigVersion>>;
    async fn config_version(&self, app: &str, version: i64) -> Result<ConfigVersion>;
    /// Next version number the app's config would get.
    async fn next_config_version(&self, app: &str) -> Result<i64>;
    /// Records a whole config version. Fails with Conflict if `version` is
    /// taken (a concurrent writer won): the caller re-reads and retries, so
    /// no acknowledged change is ever lost.
    async fn put_config_version(&self, app: &str, cv: &ConfigVersion) -> Result<()>;
    async fn domains(&self, app: &str) -> Result<Vec<String>>;
    async fn insert_build(&self, b: &BuildRecord) -> Result<()>;
    /// Records the end of a build (every field but the identity).
    async fn finish_build(&self, b: &BuildRecord) -> Result<()>;
    async fn build(&self, app: &str, id: &str) -> Result<BuildRecord>;
    /// Newest first.
    async fn builds(&self, app: &str, limit: usize) -> Result<Vec<BuildRecord>>;
    /// At start-up: builds that were running when the process died can never
    /// finish; mark them failed so nothing shows "running" forever.
    async fn fail_running_builds(&self, reason: &str) -> Result<usize>;
    async fn set_build_procfile(&self, id: &str, procfile: &BTreeMap<String, String>)
        -> Result<()>;
    /// The Procfile entries recorded with a build (`None`: no Procfile).
    async fn build_procfile(&self, id: &str) -> Result<Option<BTreeMap<String, String>>>;
    async fn app_state(&self, app: &str) -> Result<AppState>;
    async fn set_formation(&self, app: &str, formation: &BTreeMap<String, u32>) -> Result<()>;
    /// Creates the next `vN` (pending). Version allocation and insert are
    /// one transaction, so concurrent creators never share a number.
    async fn create_release(&self, mut r: ReleaseRecord) -> Result<ReleaseRecord>;
    async fn set_release_status(&self, app: &str, version: i64, status: &str) -> Result<()>;
    /// The commit point of a deploy: in one transaction the release becomes
    /// current (with its rollout id and counts) and succeeded.
    async fn commit_release(
        &self,
        app: &str,
        version: i64,
        deploy_id: &str,
        formation: &BTreeMap<String, u32>,
    ) -> Result<()>;
    /// A rollout of the current release (scale, restart) committed.
    async fn commit_rollout(
        &self,
        app: &str,
        deploy_id: &str,
        formation: &BTreeMap<String, u32>,
    ) -> Result<()>;
    async fn clear_ref_update(&self, app: &str, version: i64) -> Result<()>;
    async fn release(&self, app: &str, version: i64) -> Result<ReleaseRecord>;
    /// Newest first.
    async fn releases(&self, app: &str, limit: usize) -> Result<Vec<ReleaseRecord>>;
    /// At start-up: releases that were rolling out when the process died and
    /// never became current are failed (rolled back).
    async fn fail_pending_releases(&self) -> Result<usize>;
    async fn add_domain(&self, app: &str, host: &str) -> Result<()>;
    async fn remove_domain(&self, app: &str, host: &str) -> Result<()>;
    async fn add_event(
        &self,
        actor: &str,
        app: Option<&str>,
        action: &str,
        outcome: &str,
    ) -> Result<()>;
    /// Newest `limit` events, oldest first. `apps` restricts to those apps
    /// (for deploy keys); `app` to one app.
    async fn events(
        &self,
        app: Option<&str>,
        apps: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<Event>>;
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let store = SqliteStore {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: every
        // write is a transaction that SQLite rolled back.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    // ---- keys ----

    async fn add_key(&self, key: &KeyRecord) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let by_name: Option<String> = tx
            .query_row("SELECT name FROM keys WHERE name = ?1", [&key.name], |r| {
                r.get(0)
            })
            .optional()?;
        if by_name.is_some() {
            return Err(StoreError::Conflict(format!(
                "a key named '{}' already exists",
                key.name
            )));
        }
        let by_fp: Option<String> = tx
            .query_row(
                "SELECT name FROM keys WHERE fingerprint = ?1",
                [&key.fingerprint],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = by_fp {
            return Err(StoreError::Conflict(format!(
                "this public key is already registered as '{other}'"
            )));
        }
        tx.execute(
            "INSERT INTO keys (name, fingerprint, public_key, admin, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key.name, key.fingerprint, key.public_key, key.admin, key.created_at],
        )?;
        for app in &key.apps {
            tx.execute(
                "INSERT INTO key_apps (key_name, app) VALUES (?1, ?2)",
                params![key.name, app],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT name, fingerprint, public_key, admin, created_at FROM keys ORDER BY name",
        )?;
        let mut keys: Vec<KeyRecord> = stmt.query_map([], key_row)?.collect::<Result<_, _>>()?;
        for k in &mut keys {
            k.apps = key_apps(&conn, &k.name)?;
        }
        Ok(keys)
    }

    async fn key_by_fingerprint(&self, fingerprint: &str) -> Result<Option<KeyRecord>> {
        let conn = self.lock();
        let key = conn
            .query_row(
                "SELECT name, fingerprint, public_key, admin, created_at FROM keys WHERE fingerprint = ?1",
                [fingerprint],
                key_row,
            )
            .optional()?;
        match key {
            Some(mut k) => {
                k.apps = key_apps(&conn, &k.name)?;
                Ok(Some(k))
            }
            None => Ok(None),
        }
    }

    /// Removes a key; refuses to remove the last admin key, checked in the
    /// same transaction so two concurrent removals cannot both pass.
    async fn remove_key(&self, name: &str) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let admin: Option<bool> = tx
            .query_row("SELECT admin FROM keys WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(admin) = admin else {
            return Err(StoreError::NotFound(format!("no key named '{name}'")));
        };
        if admin {
            let admins: i64 =
                tx.query_row("SELECT COUNT(*) FROM keys WHERE admin = 1", [], |r| {
                    r.get(0)
                })?;
            if admins <= 1 {
                return Err(StoreError::Refused(format!(
                    "'{name}' is the last admin key; add another admin key first"
                )));
            }
        }
        tx.execute("DELETE FROM key_apps WHERE key_name = ?1", [name])?;
        tx.execute("DELETE FROM keys WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    // ---- apps ----

    async fn create_app(&self, name: &str) -> Result<AppRecord> {
        let conn = self.lock();
        let created_at = now_rfc3339();
        match conn.execute(
            "INSERT INTO apps (name, created_at, settings) VALUES (?1, ?2, '{}')",
            params![name, created_at],
        ) {
            Ok(_) => Ok(AppRecord {
                name: name.to_string(),
                created_at,
                settings: BTreeMap::new(),
            }),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!("app '{name}' already exists")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_app(&self, name: &str) -> Result<Option<AppRecord>> {
        let conn = self.lock();
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT created_at, settings FROM apps WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(created_at, settings)| AppRecord {
            name: name.to_string(),
            created_at,
            settings: serde_json::from_str(&settings).unwrap_or_default(),
        }))
    }

    /// The app, or a NotFound error phrased for users.
    async fn app(&self, name: &str) -> Result<AppRecord> {
        self.get_app(name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("app '{name}' does not exist")))
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT name, created_at, settings FROM apps ORDER BY name")?;
        let apps = stmt
            .query_map([], |r| {
                let settings: String = r.get(2)?;
                Ok(AppRecord {
                    name: r.get(0)?,
                    created_at: r.get(1)?,
                    settings: serde_json::from_str(&settings).unwrap_or_default(),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(apps)
    }

    async fn set_app_settings(
        &self,
        name: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<()> {
        let conn = self.lock();
        let json = serde_json::to_string(settings).expect("a map of strings always serializes");
        let n = conn.execute(
            "UPDATE apps SET settings = ?2 WHERE name = ?1",
            params![name, json],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("app '{name}' does not exist")));
        }
        Ok(())
    }

    /// Removes the app and everything stored about it except audit events.
    async fn delete_app(&self, name: &str) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute("DELETE FROM apps WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("app '{name}' does not exist")));
        }
        tx.execute("DELETE FROM config_values WHERE app = ?1", [name])?;
        tx.execute("DELETE FROM config_versions WHERE app = ?1", [name])?;
        tx.execute("DELETE FROM domains WHERE app = ?1", [name])?;
        tx.execute("DELETE FROM builds WHERE app = ?1", [name])?;
        tx.execute("DELETE FROM releases WHERE app = ?1", [name])?;
        tx.execute("DELETE FROM key_apps WHERE app = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    // ---- config (ciphertext only) ----

    async fn latest_config(&self, app: &str) -> Result<Option<ConfigVersion>> {
        let conn = self.lock();
        let v: Option<i64> = conn
            .query_row(
                "SELECT MAX(version) FROM config_versions WHERE app = ?1",
                [app],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        match v {
            Some(v) => config_version(&conn, app, v).map(Some),
            None => Ok(None),
        }
    }

    async fn config_version(&self, app: &str, version: i64) -> Result<ConfigVersion> {
        let conn = self.lock();
        config_version(&conn, app, version)
    }

    /// Next version number the app's config would get.
    async fn next_config_version(&self, app: &str) -> Result<i64> {
        let conn = self.lock();
        let v: Option<i64> = conn.query_row(
            "SELECT MAX(version) FROM config_versions WHERE app = ?1",
            [app],
            |r| r.get(0),
        )?;
        Ok(v.unwrap_or(0) + 1)
    }

    /// Records a whole config version. Fails with Conflict if `version` is
    /// taken (a concurrent writer won): the caller re-reads and retries, so
    /// no acknowledged change is ever lost.
    async fn put_config_version(&self, app: &str, cv: &ConfigVersion) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO config_versions (app, version, created_at, created_by) VALUES (?1, ?2, ?3, ?4)",
            params![app, cv.version, cv.created_at, cv.created_by],
        )?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!(
                "config version {} of '{app}' already exists",
                cv.version
            )));
        }
        for v in &cv.values {
            tx.execute(
                "INSERT INTO config_values (app, version, key, nonce, ciphertext) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![app, cv.version, v.key, v.nonce, v.ciphertext],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    // ---- domains ----

    async fn domains(&self, app: &str) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT host FROM domains WHERE app = ?1 ORDER BY host")?;
        let hosts = stmt
            .query_map([app], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(hosts)
    }

    // ---- builds ----

    async fn insert_build(&self, b: &BuildRecord) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            &format!("INSERT INTO builds ({BUILD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
            params![
                b.id,
                b.app,
                b.commit,
                b.status,
                b.kind,
                serde_json::to_string(&b.push_options).expect("strings serialize"),
                b.created_by,
                b.created_at,
                b.finished_at,
                b.duration_ms,
                b.context_bytes,
                b.image_id,
                b.error
            ],
        )?;
        Ok(())
    }

    /// Records the end of a build (every field but the identity).
    async fn finish_build(&self, b: &BuildRecord) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE builds SET status = ?2, kind = ?3, finished_at = ?4, duration_ms = ?5,
                    context_bytes = ?6, image_id = ?7, error = ?8 WHERE id = ?1",
            params![
                b.id,
                b.status,
                b.kind,
                b.finished_at,
                b.duration_ms,
                b.context_bytes,
                b.image_id,
                b.error
            ],
        )?;
        Ok(())
    }

    async fn build(&self, app: &str, id: &str) -> Result<BuildRecord> {
        let conn = self.lock();
        conn.query_row(
            &format!("SELECT {BUILD_COLUMNS} FROM builds WHERE app = ?1 AND id = ?2"),
            params![app, id],
            build_row,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("app '{app}' has no build '{id}'")))
    }

    /// Newest first.
    async fn builds(&self, app: &str, limit: usize) -> Result<Vec<BuildRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE app = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(params![app, limit as i64], build_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// At start-up: builds that were running when the process died can never
    /// finish; mark them failed so nothing shows "running" forever.
    async fn fail_running_builds(&self, reason: &str) -> Result<usize> {
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE builds SET status = 'failed', error = ?1, finished_at = ?2 WHERE status = 'running'",
            params![reason, now_rfc3339()],
        )?;
        Ok(n)
    }

    async fn set_build_procfile(
        &self,
        id: &str,
        procfile: &BTreeMap<String, String>,
    ) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE builds SET procfile = ?2 WHERE id = ?1",
            params![
                id,
                serde_json::to_string(procfile).expect("strings serialize")
            ],
        )?;
        Ok(())
    }

    /// The Procfile entries recorded with a build (`None`: no Procfile).
    async fn build_procfile(&self, id: &str) -> Result<Option<BTreeMap<String, String>>> {
        let conn = self.lock();
        let text: Option<String> = conn
            .query_row("SELECT procfile FROM builds WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?
            .flatten();
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    // ---- releases and the app's running state ----

    async fn app_state(&self, app: &str) -> Result<AppState> {
        let conn = self.lock();
        let row: Option<(Option<i64>, Option<String>, String)> = conn
            .query_row(
                "SELECT current_release, deploy_id, formation FROM apps WHERE name = ?1",
                [app],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (current_release, deploy_id, formation) =
            row.ok_or_else(|| StoreError::NotFound(format!("app '{app}' does not exist")))?;
        Ok(AppState {
            current_release,
            deploy_id,
            formation: serde_json::from_str(&formation).unwrap_or_default(),
        })
    }

    async fn set_formation(&self, app: &str, formation: &BTreeMap<String, u32>) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE apps SET formation = ?2 WHERE name = ?1",
            params![
                app,
                serde_json::to_string(formation).expect("counts serialize")
            ],
        )?;
        Ok(())
    }

    /// Creates the next `vN` (pending). Version allocation and insert are
    /// one transaction, so concurrent creators never share a number.
    async fn create_release(&self, mut r: ReleaseRecord) -> Result<ReleaseRecord> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let v: Option<i64> = tx.query_row(
            "SELECT MAX(version) FROM releases WHERE app = ?1",
            [&r.app],
            |row| row.get(0),
        )?;
        r.version = v.unwrap_or(0) + 1;
        tx.execute(
            &format!("INSERT INTO releases ({RELEASE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
            params![
                r.app,
                r.version,
                r.build_id,
                r.config_version,
                serde_json::to_string(&r.formation).expect("counts serialize"),
                r.description,
                r.created_by,
                r.created_at,
                r.status,
                r.ref_update
            ],
        )?;
        tx.commit()?;
        Ok(r)
    }

    async fn set_release_status(&self, app: &str, version: i64, status: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE releases SET status = ?3 WHERE app = ?1 AND version = ?2",
            params![app, version, status],
        )?;
        Ok(())
    }

    /// The commit point of a deploy: in one transaction the release becomes
    /// current (with its rollout id and counts) and succeeded.
    async fn commit_release(
        &self,
        app: &str,
        version: i64,
        deploy_id: &str,
        formation: &BTreeMap<String, u32>,
    ) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE releases SET status = 'succeeded' WHERE app = ?1 AND version = ?2",
            params![app, version],
        )?;
        tx.execute(
            "UPDATE apps SET current_release = ?2, deploy_id = ?3, formation = ?4 WHERE name = ?1",
            params![
                app,
                version,
                deploy_id,
                serde_json::to_string(formation).expect("counts serialize")
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A rollout of the current release (scale, restart) committed.
    async fn commit_rollout(
        &self,
        app: &str,
        deploy_id: &str,
        formation: &BTreeMap<String, u32>,
    ) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE apps SET deploy_id = ?2, formation = ?3 WHERE name = ?1",
            params![
                app,
                deploy_id,
                serde_json::to_string(formation).expect("counts serialize")
            ],
        )?;
        Ok(())
    }

    async fn clear_ref_update(&self, app: &str, version: i64) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE releases SET ref_update = NULL WHERE app = ?1 AND version = ?2",
            params![app, version],
        )?;
        Ok(())
    }

    async fn release(&self, app: &str, version: i64) -> Result<ReleaseRecord> {
        let conn = self.lock();
        conn.query_row(
            &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE app = ?1 AND version = ?2"),
            params![app, version],
            release_row,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("app '{app}' has no release v{version}")))
    }

    /// Newest first.
    async fn releases(&self, app: &str, limit: usize) -> Result<Vec<ReleaseRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE app = ?1 ORDER BY version DESC LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(params![app, limit as i64], release_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// At start-up: releases that were rolling out when the process died and
    /// never became current are failed (rolled back).
    async fn fail_pending_releases(&self) -> Result<usize> {
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE releases SET status = 'failed', ref_update = NULL WHERE status = 'pending'
             AND NOT EXISTS (SELECT 1 FROM apps WHERE apps.name = releases.app AND apps.current_release = releases.version)",
            [],
        )?;
        Ok(n)
    }

    // ---- domains ----

    async fn add_domain(&self, app: &str, host: &str) -> Result<()> {
        let conn = self.lock();
        match conn.execute(
            "INSERT INTO domains (host, app) VALUES (?1, ?2)",
            params![host, app],
        ) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!(
                    "{host} is already routed to an app"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn remove_domain(&self, app: &str, host: &str) -> Result<()> {
        let conn = self.lock();
        let n = conn.execute(
            "DELETE FROM domains WHERE app = ?1 AND host = ?2",
            params![app, host],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "{host} is not a domain of {app}"
            )));
        }
        Ok(())
    }

    // ---- audit events ----

    async fn add_event(
        &self,
        actor: &str,
        app: Option<&str>,
        action: &str,
        outcome: &str,
    ) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO events (time, actor, app, action, outcome) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![now_rfc3339(), actor, app, action, outcome],
        )?;
        Ok(())
    }

    /// Newest `limit` events, oldest first. `apps` restricts to those apps
    /// (for deploy keys); `app` to one app.
    async fn events(
        &self,
        app: Option<&str>,
        apps: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, time, actor, app, action, outcome FROM events
             WHERE (?1 IS NULL OR app = ?1) ORDER BY id DESC",
        )?;
        let rows = stmt.query_map(params![app], |r| {
            Ok(Event {
                id: r.get(0)?,
                time: r.get(1)?,
                actor: r.get(2)?,
                app: r.get(3)?,
                action: r.get(4)?,
                outcome: r.get(5)?,
            })
        })?;
        let mut out = Vec::new();
        for e in rows {
            let e = e?;
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
        Ok(out)
    }
}

/// A `keys` row (name, fingerprint, public_key, admin, created_at); the
/// caller fills in the apps.
fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        name: r.get(0)?,
        fingerprint: r.get(1)?,
        public_key: r.get(2)?,
        admin: r.get(3)?,
        created_at: r.get(4)?,
        apps: Vec::new(),
    })
}

fn key_apps(conn: &Connection, name: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT app FROM key_apps WHERE key_name = ?1 ORDER BY app")?;
    let apps = stmt
        .query_map([name], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(apps)
}

fn config_version(conn: &Connection, app: &str, version: i64) -> Result<ConfigVersion> {
    let (created_at, created_by): (String, String) = conn
        .query_row(
            "SELECT created_at, created_by FROM config_versions WHERE app = ?1 AND version = ?2",
            params![app, version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "config version {version} of '{app}' does not exist"
            ))
        })?;
    let mut stmt = conn.prepare(
        "SELECT key, nonce, ciphertext FROM config_values WHERE app = ?1 AND version = ?2 ORDER BY key",
    )?;
    let values = stmt
        .query_map(params![app, version], |r| {
            Ok(SealedValue {
                key: r.get(0)?,
                nonce: r.get(1)?,
                ciphertext: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(ConfigVersion {
        version,
        created_at,
        created_by,
        values,
    })
}

#[cfg(test)]
mod tests;
