//! Test-only pause points in a rollout, so an end-to-end test can kill -9
//! the rack at an exact point without sleeping.
//!
//! Off unless the server was started with the hidden flag
//! `rack server --test-pause-at POINT` or `--test-pause-at POINT:vN` (only
//! the rollout of release `vN`), which reaches the local runtime as
//! `LocalOptions::pause_at`. At the point the rollout writes `test pause:
//! POINT vN` to the push output (when it has one) and to the server log,
//! then waits forever: the test sends SIGKILL. Not in `rack.toml` and not in
//! the environment: nobody should run a rack with it by accident.
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

/// Waits forever when `want` (the `--test-pause-at` value) names this
/// point (and release); returns at once otherwise.
pub async fn pause_at(want: Option<&str>, point: &str, version: i64, progress: Option<&Progress>) {
    let Some(want) = want else {
        return;
    };
    if !matches(want, point, version) {
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
