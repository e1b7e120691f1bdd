//! `EventStore` on S3: one object per event ([`S3State::add_event`]),
//! listed newest first.
//!
//! [`S3State::add_event`]: crate::aws::state::S3State::add_event

use std::convert::Infallible;

use super::{store_err, S3Store};
use crate::aws::state::{now_ms, StoredEvent};
use crate::store::{Event, EventFilter, EventStore, Result};

#[async_trait::async_trait]
impl EventStore for S3Store {
    async fn append_event(&self, e: Event) -> Result<()> {
        // The object name orders events; an object has no id.
        let stored = StoredEvent {
            time: e.time,
            actor: e.actor,
            app: e.app,
            action: e.action,
            outcome: e.outcome,
        };
        self.state.add_event(&stored).await.map_err(store_err)
    }

    async fn select_events(&self, app: Option<&str>, filter: EventFilter) -> Result<Vec<Event>> {
        // Decided from the keys, so only the events returned are read.
        let keep = |a: Option<&str>| {
            let of_app = app.is_none() || a == app;
            let visible = match (&filter.allowed, a) {
                (None, _) => true,
                (Some(allowed), Some(a)) => allowed.iter().any(|x| x == a),
                (Some(_), None) => false,
            };
            of_app && visible
        };
        let stored = self
            .state
            .events_where(keep, filter.limit)
            .await
            .map_err(store_err)?;
        let newest_first = stored.into_iter().map(|e| {
            Ok::<_, Infallible>(Event {
                id: 0,
                time: e.time,
                actor: e.actor,
                app: e.app,
                action: e.action,
                outcome: e.outcome,
            })
        });
        let Ok(mut out) = filter.select(newest_first);
        // Objects have no ids; these only order the answer (oldest first).
        let base = now_ms() - filter.limit as i64;
        for (i, e) in out.iter_mut().enumerate() {
            e.id = base + i as i64;
        }
        Ok(out)
    }
}
