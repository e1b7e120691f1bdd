//! Test-only pause points in a rollout, so an end-to-end test can kill -9
//! the rack at an exact point without sleeping.
//!
//! Off unless the server's environment has `RACK_TEST_PAUSE_AT=POINT` or
//! `RACK_TEST_PAUSE_AT=POINT:vN` (only the rollout of release `vN`). At the
//! point the rollout writes `test pause: POINT vN` to the push output (when
//! it has one) and to the server log, then waits forever: the test sends
//! SIGKILL. Not a setting: nobody should run a rack with it.
//!
//! Points, in rollout order:
//! - `before_ready`: the new instances are started, not yet checked for
//!   readiness (before the commit point).
//! - `after_switch`: committed, the router sends traffic to the new
//!   instances, the old ones still run, the push has not printed `Deployed`.
//! - `during_cleanup`: the push has finished; the old instances were
//!   drained and are about to be stopped and removed.
//!
//! This module knows nothing of Docker, git or the store.

use crate::progress::Progress;

pub const ENV: &str = "RACK_TEST_PAUSE_AT";

/// Waits forever when `RACK_TEST_PAUSE_AT` names this point (and release);
/// returns at once otherwise.
pub async fn pause_at(point: &str, version: i64, progress: Option<&Progress>) {
    let Ok(want) = std::env::var(ENV) else {
        return;
    };
    if !matches(&want, point, version) {
        return;
    }
    let marker = format!("test pause: {point} v{version}");
    if let Some(p) = progress {
        p.stage(&marker);
    }
    tracing::warn!(point, version, "{marker}");
    std::future::pending::<()>().await;
}

fn matches(want: &str, point: &str, version: i64) -> bool {
    match want.split_once(':') {
        Some((p, v)) => p == point && v.strip_prefix('v').unwrap_or(v) == version.to_string(),
        None => want == point,
    }
}

#[cfg(test)]
mod tests;
