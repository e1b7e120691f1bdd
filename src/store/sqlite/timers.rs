//! `TimerStore` on SQLite: `builds.timers` (JSON) and `timer_states`.

use std::collections::BTreeMap;

use super::schema::{from_json, to_json};
use super::SqliteStore;
use crate::store::{Result, TimerStore};
use crate::timers::{Timer, TimerState};

#[async_trait::async_trait]
impl TimerStore for SqliteStore {
    async fn set_build_timers(&self, id: &str, timers: &[Timer]) -> Result<()> {
        self.set_build_json(id, "timers", to_json(&timers)).await
    }

    async fn build_timers(&self, id: &str) -> Result<Vec<Timer>> {
        Ok(self.build_json(id, "timers").await?.unwrap_or_default())
    }

    async fn timer_states(&self, app: &str) -> Result<BTreeMap<String, TimerState>> {
        let sql = "SELECT name, state FROM timer_states WHERE app = ?1";
        let rows: Vec<(String, String)> = self
            .query(sql, (app.to_owned(),), |r| Ok((r.get(0)?, r.get(1)?)))
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, text)| (name, from_json(&text)))
            .collect())
    }

    async fn put_timer_state(&self, app: &str, name: &str, state: &TimerState) -> Result<()> {
        let sql = "INSERT INTO timer_states (app, name, state) VALUES (?1, ?2, ?3)
                   ON CONFLICT (app, name) DO UPDATE SET state = excluded.state";
        self.execute(sql, (app.to_owned(), name.to_owned(), to_json(state)))
            .await
            .map(drop)
    }

    async fn delete_timer_states(&self, app: &str) -> Result<()> {
        let sql = "DELETE FROM timer_states WHERE app = ?1";
        self.execute(sql, (app.to_owned(),)).await.map(drop)
    }
}
