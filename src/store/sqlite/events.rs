//! `EventStore` on SQLite: the `events` table, ids in insertion order.

use rusqlite::params;

use super::schema::{event_row, EVENT_COLUMNS};
use super::SqliteStore;
use crate::store::{Event, EventFilter, EventStore, Result};

#[async_trait::async_trait]
impl EventStore for SqliteStore {
    async fn append_event(&self, e: Event) -> Result<()> {
        let sql =
            "INSERT INTO events (time, actor, app, action, outcome) VALUES (?1, ?2, ?3, ?4, ?5)";
        self.execute(sql, (e.time, e.actor, e.app, e.action, e.outcome))
            .await
            .map(drop)
    }

    async fn select_events(&self, app: Option<&str>, filter: EventFilter) -> Result<Vec<Event>> {
        let app = app.map(str::to_owned);
        self.call(move |conn| {
            // Read lazily, newest first: the filter stops at its limit.
            let mut stmt = conn.prepare(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE (?1 IS NULL OR app = ?1) ORDER BY id DESC"
            ))?;
            let rows = stmt.query_map(params![app], event_row)?;
            Ok(filter.select(rows)?)
        })
        .await
    }
}
