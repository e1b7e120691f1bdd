//! `TimerStore` on S3: a build's timers in `timers/BUILD_ID.json` (written
//! once, like `procfiles/`), an app's timer states in one object,
//! `apps/APP/timer-states.json`, changed by compare-and-swap (it goes with
//! the app's other objects when the app is destroyed).

use std::collections::BTreeMap;

use super::{store_err, S3Store};
use crate::store::{Result, StoreError, TimerStore};
use crate::timers::{Timer, TimerState};

fn states_key(app: &str) -> String {
    format!("apps/{app}/timer-states.json")
}

#[async_trait::async_trait]
impl TimerStore for S3Store {
    async fn set_build_timers(&self, id: &str, timers: &[Timer]) -> Result<()> {
        // Written once per build; a repeat overwrites with the same list.
        let key = format!("timers/{id}.json");
        let etag = self
            .state
            .get_json::<Vec<Timer>>(&key)
            .await
            .map_err(store_err)?
            .map(|(_, e)| e);
        self.state
            .put_json(&key, &timers, etag.as_deref())
            .await
            .map(|_| ())
            .map_err(store_err)
    }

    async fn build_timers(&self, id: &str) -> Result<Vec<Timer>> {
        Ok(self
            .state
            .get_json(&format!("timers/{id}.json"))
            .await
            .map_err(store_err)?
            .map(|(t, _)| t)
            .unwrap_or_default())
    }

    async fn timer_states(&self, app: &str) -> Result<BTreeMap<String, TimerState>> {
        Ok(self
            .state
            .get_json(&states_key(app))
            .await
            .map_err(store_err)?
            .map(|(s, _)| s)
            .unwrap_or_default())
    }

    async fn put_timer_state(&self, app: &str, name: &str, state: &TimerState) -> Result<()> {
        self.read_modify_write(
            &states_key(app),
            || Ok(BTreeMap::<String, TimerState>::new()),
            |all| {
                all.insert(name.to_string(), state.clone());
                Ok(())
            },
            || {
                StoreError::Conflict(format!(
                    "the timer states of {app} keep changing; try again"
                ))
            },
        )
        .await
    }

    async fn delete_timer_states(&self, app: &str) -> Result<()> {
        self.delete_object(states_key(app)).await
    }
}
