//! The SQLite schema: the migrations (the database's `user_version` says
//! how many have run) and how each table's rows map to records.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, Row, ToSql, TransactionBehavior};

use crate::store::{
    AppRecord, BuildRecord, BuildStatus, Event, KeyRecord, RefUpdateJournal, ReleaseRecord,
    ReleaseStatus, Result, StoreError,
};

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
    // volumes: an app's persistent volumes, each row the record as JSON
    "CREATE TABLE IF NOT EXISTS volumes (
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        volume TEXT NOT NULL,
        PRIMARY KEY (app, name)
     );",
    // resources: one JSON record per resource (password sealed), links inside
    "CREATE TABLE IF NOT EXISTS resources (
        name TEXT PRIMARY KEY,
        record TEXT NOT NULL
     );",
];

/// The schema version this binary writes: the number of migrations.
pub(super) fn known_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Refuses a database a newer rack has migrated (its `user_version` is past
/// the migrations this binary knows), before anything writes to it:
/// migrations only go forward, and an older binary would misread tables it
/// does not know.
pub(super) fn check_not_newer(conn: &Connection) -> Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > known_version() {
        return Err(StoreError::Refused(format!(
            "the state database is at schema version {current}, newer than this rack \
             binary knows (version {}): it was migrated by a newer rack; run that \
             version (or a newer one) on this data dir (nothing was changed)",
            known_version()
        )));
    }
    Ok(())
}

/// Applies the migrations this database has not seen, in one transaction.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    check_not_newer(&tx)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

// ---- how rows become records (columns in the order of each list) ----

pub(super) const KEY_COLUMNS: &str = "name, fingerprint, public_key, admin, created_at";
pub(super) const APP_COLUMNS: &str = "name, created_at, settings";
pub(super) const BUILD_COLUMNS: &str = "id, app, commit_id, status, kind, push_options, created_by, created_at, finished_at, duration_ms, context_bytes, image_id, error";
pub(super) const RELEASE_COLUMNS: &str =
    "app, version, build_id, config_version, formation, description, created_by, created_at, status, ref_update";
pub(super) const EVENT_COLUMNS: &str = "id, time, actor, app, action, outcome";

/// A `keys` row; the apps come from `key_apps` (`keys::with_apps`).
pub(super) fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        name: r.get(0)?,
        fingerprint: r.get(1)?,
        public_key: r.get(2)?,
        admin: r.get(3)?,
        created_at: r.get(4)?,
        apps: Vec::new(),
    })
}

pub(super) fn app_row(r: &Row<'_>) -> rusqlite::Result<AppRecord> {
    Ok(AppRecord {
        name: r.get(0)?,
        created_at: r.get(1)?,
        settings: from_json(&r.get::<_, String>(2)?),
    })
}

pub(super) fn build_row(r: &Row<'_>) -> rusqlite::Result<BuildRecord> {
    Ok(BuildRecord {
        id: r.get(0)?,
        app: r.get(1)?,
        commit: r.get(2)?,
        status: r.get(3)?,
        kind: r.get(4)?,
        push_options: from_json(&r.get::<_, String>(5)?),
        created_by: r.get(6)?,
        created_at: r.get(7)?,
        finished_at: r.get(8)?,
        duration_ms: r.get(9)?,
        context_bytes: r.get(10)?,
        image_id: r.get(11)?,
        error: r.get(12)?,
    })
}

/// Runs `f` with a build's values in [`BUILD_COLUMNS`] order (`?1`..`?13`).
pub(super) fn with_build_params<T>(b: &BuildRecord, f: impl FnOnce(&[&dyn ToSql]) -> T) -> T {
    let push_options = to_json(&b.push_options);
    f(params![
        b.id,
        b.app,
        b.commit,
        b.status,
        b.kind,
        push_options,
        b.created_by,
        b.created_at,
        b.finished_at,
        b.duration_ms,
        b.context_bytes,
        b.image_id,
        b.error
    ])
}

pub(super) fn release_row(r: &Row<'_>) -> rusqlite::Result<ReleaseRecord> {
    Ok(ReleaseRecord {
        app: r.get(0)?,
        version: r.get(1)?,
        build_id: r.get(2)?,
        config_version: r.get(3)?,
        formation: from_json(&r.get::<_, String>(4)?),
        description: r.get(5)?,
        created_by: r.get(6)?,
        created_at: r.get(7)?,
        status: r.get(8)?,
        ref_update: r.get(9)?,
    })
}

pub(super) fn event_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        time: r.get(1)?,
        actor: r.get(2)?,
        app: r.get(3)?,
        action: r.get(4)?,
        outcome: r.get(5)?,
    })
}

/// Columns holding a typed value as its text (`Display`, read back with
/// `FromStr`): the same text the column held when it was a plain string.
macro_rules! text_column {
    ($($name:ty),*) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.to_string()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<$name> {
                value.as_str()?.parse().map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    )*};
}

text_column!(BuildStatus, ReleaseStatus, RefUpdateJournal);

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("maps and lists of strings and counts always serialize")
}

/// A JSON column written by [`to_json`]; unreadable text reads as empty,
/// as it always has.
pub(super) fn from_json<T: serde::de::DeserializeOwned + Default>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_default()
}
