//! `TimerStore`: the timers recorded with a build (from its `app.json`) and
//! the scheduler's per-timer state (last tick fired, suspended, last run).
//! The SQLite backend is here; the S3 one is in `aws/store/timers.rs`.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};

use super::{Result, SqliteStore};
use crate::timers::{Timer, TimerState};

#[async_trait::async_trait]
pub trait TimerStore: Send + Sync {
    /// Records the timers of a build (an empty list: none).
    async fn set_build_timers(&self, id: &str, timers: &[Timer]) -> Result<()>;
    /// The timers recorded with a build (none when it had no `app.json`).
    async fn build_timers(&self, id: &str) -> Result<Vec<Timer>>;
    /// Every timer state of the app, by timer name.
    async fn timer_states(&self, app: &str) -> Result<BTreeMap<String, TimerState>>;
    async fn put_timer_state(&self, app: &str, name: &str, state: &TimerState) -> Result<()>;
    /// Forgets the app's timer states (`apps:destroy`).
    async fn delete_timer_states(&self, app: &str) -> Result<()>;
}

#[async_trait::async_trait]
impl TimerStore for SqliteStore {
    async fn set_build_timers(&self, id: &str, timers: &[Timer]) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE builds SET timers = ?2 WHERE id = ?1",
            params![id, serde_json::to_string(timers).expect("timers serialize")],
        )?;
        Ok(())
    }

    async fn build_timers(&self, id: &str) -> Result<Vec<Timer>> {
        let conn = self.lock();
        let text: Option<String> = conn
            .query_row("SELECT timers FROM builds WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?
            .flatten();
        Ok(text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    async fn timer_states(&self, app: &str) -> Result<BTreeMap<String, TimerState>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT name, state FROM timer_states WHERE app = ?1")?;
        let rows = stmt.query_map([app], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (name, text) = row?;
            out.insert(name, serde_json::from_str(&text).unwrap_or_default());
        }
        Ok(out)
    }

    async fn put_timer_state(&self, app: &str, name: &str, state: &TimerState) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO timer_states (app, name, state) VALUES (?1, ?2, ?3)
             ON CONFLICT (app, name) DO UPDATE SET state = excluded.state",
            params![
                app,
                name,
                serde_json::to_string(state).expect("state serializes")
            ],
        )?;
        Ok(())
    }

    async fn delete_timer_states(&self, app: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute("DELETE FROM timer_states WHERE app = ?1", [app])?;
        Ok(())
    }
}
