//! The local provider's store: one SQLite database (WAL) under the data
//! dir, schema moved forward by `user_version` migrations (`schema.rs`).
//! One file per part of the `Store` interface.
//!
//! Every method is a short transaction, so the server and the offline
//! `rack keys` command can use the database at the same time. SQLite calls
//! block, so they never run on an async worker: [`SqliteStore::call`] runs
//! each one on tokio's blocking pool, with the one connection behind a
//! mutex (SQLite serialises writers anyway).

mod apps;
mod builds;
mod config;
mod events;
mod keys;
mod releases;
mod resources;
mod schema;
mod timers;
mod volumes;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, Params, Row, Transaction, TransactionBehavior};

use super::{Result, StoreError};

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Before any pragma writes: a newer rack's database stays untouched.
        schema::check_not_newer(&conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Writes a consistent copy of the database at `src` to `dst` with
    /// SQLite's online backup (one read transaction: writers elsewhere go
    /// on), refusing a database newer than this binary. Returns its
    /// schema version. Blocking.
    pub fn snapshot(src: &Path, dst: &Path) -> Result<i64> {
        let from = Connection::open_with_flags(
            src,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        from.busy_timeout(std::time::Duration::from_secs(10))?;
        schema::check_not_newer(&from)?;
        let mut to = Connection::open(dst)?;
        {
            let b = rusqlite::backup::Backup::new(&from, &mut to)?;
            // -1: every page in one step, so one read transaction.
            loop {
                match b.step(-1)? {
                    rusqlite::backup::StepResult::Done => break,
                    _ => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        }
        let version: i64 = to.pragma_query_value(None, "user_version", |r| r.get(0))?;
        // A self-contained file: no -wal beside it.
        to.pragma_update(None, "journal_mode", "DELETE")?;
        Ok(version)
    }

    /// Runs `f` with the connection on the blocking pool and waits for it
    /// without holding up an async worker. A panic inside `f` is resumed
    /// here, as if `f` had run in place.
    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        match tokio::task::spawn_blocking(move || f(&mut lock(&conn))).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(StoreError::Refused(
                "state database: the server is shutting down".into(),
            )),
        }
    }

    /// [`Self::call`] inside one immediate (write-locking) transaction,
    /// committed when `f` succeeds and rolled back when it fails.
    async fn transaction<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

/// One-statement helpers over [`SqliteStore::call`]: owned parameters (a
/// tuple), the SQL text, and for queries how a row becomes a record.
impl SqliteStore {
    /// Runs one statement; the number of rows it changed.
    async fn execute<P>(&self, sql: impl AsRef<str> + Send + 'static, params: P) -> Result<usize>
    where
        P: Params + Send + 'static,
    {
        self.call(move |conn| Ok(conn.execute(sql.as_ref(), params)?))
            .await
    }

    /// Every row of a query (`.into_iter().next()`: the one row of a
    /// query by key).
    async fn query<T, P, F>(
        &self,
        sql: impl AsRef<str> + Send + 'static,
        params: P,
        row: F,
    ) -> Result<Vec<T>>
    where
        T: Send + 'static,
        P: Params + Send + 'static,
        F: FnMut(&Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.call(move |conn| {
            let mut stmt = conn.prepare(sql.as_ref())?;
            let rows = stmt.query_map(params, row)?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves the connection usable: every
    // write is a transaction that SQLite rolled back.
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

/// `Conflict(message)` for a uniqueness violation, the error itself
/// otherwise: the one way an insert says "already there".
fn conflict_on_unique(e: StoreError, message: impl FnOnce() -> String) -> StoreError {
    match e {
        StoreError::Db(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(message())
        }
        e => e,
    }
}
