//! Counts, for the metrics, the app containers the engine restarted on its
//! own (their restart policy, after a crash): a `start` event of one of
//! this namespace's containers whose restart count went up. Starts the
//! rack makes itself (new instances) leave the count at 0, and stops the
//! rack makes are no restarts at all.
//!
//! Does not know: the store or the router.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures::StreamExt;

use super::docker::{L_APP, L_NS, L_ONEOFF};

/// Containers whose restart count is remembered; past it the memory is
/// cleared (a later restart of one of them then counts once).
const MAX_REMEMBERED: usize = 10_000;

/// Watches the engine's events for as long as the process runs,
/// reconnecting after the engine goes away.
pub(super) fn watch(docker: Docker, namespace: String) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let mut seen: HashMap<String, i64> = HashMap::new();
        loop {
            let filters = HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                ("event".to_string(), vec!["start".to_string()]),
                ("label".to_string(), vec![format!("{L_NS}={namespace}")]),
            ]);
            let mut events = docker.events(Some(EventsOptions {
                filters: Some(filters),
                ..Default::default()
            }));
            while let Some(Ok(ev)) = events.next().await {
                let Some(actor) = ev.actor else { continue };
                let attrs = actor.attributes.unwrap_or_default();
                let (Some(id), Some(app)) = (actor.id, attrs.get(L_APP)) else {
                    continue;
                };
                if attrs.get(L_ONEOFF).is_some_and(|v| v == "1") {
                    continue;
                }
                let Ok(c) = docker.inspect_container(&id, None).await else {
                    continue;
                };
                let count = c.restart_count.unwrap_or(0);
                if seen.len() >= MAX_REMEMBERED {
                    seen.clear();
                }
                let before = seen.insert(id, count);
                let new = match before {
                    Some(b) => count - b,
                    None => i64::from(count > 0),
                };
                for _ in 0..new.max(0) {
                    crate::metrics::container_restart(app);
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
}
