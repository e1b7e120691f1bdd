//! One run of a timer, scheduled or asked for (`timers:run`): a one-off of
//! the app's CURRENT release (its config, `RACK_TIMER=NAME`, the limits of
//! `resources.timer.*`), stopped after `maxRuntime`, recorded as an event
//! and in the timer's state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::deploy::rollout::new_deploy_id;
use crate::runtime::{OneOff, OneOffIo, ReleaseSpec, Runtime, RuntimeError};
use crate::state::Rack;
use crate::store::now_rfc3339;

use super::Timer;

/// The label that marks a timer's one-off (the runtime names its lines
/// `timer.NAME` and keeps it for `logs`).
pub const TIMER_LABEL: &str = "rack.timer";

/// The timers of the app's current release (none before its first one).
pub async fn current_timers(rack: &Rack, app: &str) -> Result<Vec<Timer>, String> {
    Ok(current(rack, app)
        .await?
        .map(|c| c.timers)
        .unwrap_or_default())
}

/// The app's current release as the scheduler sees it.
pub struct Current {
    pub timers: Vec<Timer>,
    /// When the release was created (unix seconds): ticks before it are
    /// not its timers' to fire.
    pub since: i64,
}

pub async fn current(rack: &Rack, app: &str) -> Result<Option<Current>, String> {
    let state = rack
        .provider
        .store
        .app_state(app)
        .await
        .map_err(|e| e.to_string())?;
    let Some(v) = state.current_release else {
        return Ok(None);
    };
    let release = rack
        .provider
        .store
        .release(app, v)
        .await
        .map_err(|e| e.to_string())?;
    let timers = rack
        .provider
        .store
        .build_timers(&release.build_id)
        .await
        .map_err(|e| e.to_string())?;
    let since = time::OffsetDateTime::parse(
        &release.created_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map(|t| t.unix_timestamp())
    .map_err(|e| format!("release v{v} of {app}: created_at: {e}"))?;
    Ok(Some(Current { timers, since }))
}

/// The runtime's view of one run: the current release with the timer's
/// variables, and the one-off.
pub async fn prepare(
    rack: &Rack,
    app: &str,
    timer: &Timer,
) -> Result<(ReleaseSpec, OneOff), String> {
    let state = rack
        .provider
        .store
        .app_state(app)
        .await
        .map_err(|e| e.to_string())?;
    let v = state
        .current_release
        .ok_or_else(|| format!("{app} has no release yet: git push first"))?;
    let release = rack
        .provider
        .store
        .release(app, v)
        .await
        .map_err(|e| e.to_string())?;
    let formation = BTreeMap::from([("timer".to_string(), 0)]);
    let runtime = rack.provider.runtime().await?;
    let mut spec = rack
        .deployer
        .spec_for(&*runtime, &release, &formation, new_deploy_id())
        .await?;
    spec.env.set("RACK_TIMER", &timer.name);
    let cmd = OneOff {
        argv: vec!["/bin/sh".into(), "-c".into(), timer.command.clone()],
        tty: None,
        resize: None,
        timeout: timer.max_runtime_secs.map(Duration::from_secs),
        labels: BTreeMap::from([(TIMER_LABEL.to_string(), timer.name.clone())]),
    };
    Ok((spec, cmd))
}

/// How a run ended, as the events and `timers` show it.
pub fn status_of(timer: &Timer, result: &Result<i64, RuntimeError>) -> String {
    match (result, timer.max_runtime_secs) {
        (Ok(code), _) => format!("exit {code}"),
        // The runtime's one-off timeout (`OneOff::timeout`) fired.
        (Err(RuntimeError::Other(m)), Some(max)) if m.contains("time limit") => {
            format!("stopped: ran past maxRuntime {max}s")
        }
        (Err(e), _) => format!("error: {e}"),
    }
}

/// Records a finished (or stopped) run: one event, the timer's state.
pub async fn record(rack: &Rack, app: &str, name: &str, actor: &str, status: &str, took: Duration) {
    let outcome = format!("{status} after {:.1}s", took.as_secs_f64());
    if let Err(e) = rack
        .provider
        .store
        .add_event(actor, Some(app), &format!("timer.{name} run"), &outcome)
        .await
    {
        tracing::error!(app, timer = name, error = %e, "writing a timer event");
    }
    let took_ms = took.as_millis() as i64;
    let res = super::update_state(rack.provider.store.as_ref(), app, name, |s| {
        s.last_run_at = Some(now_rfc3339());
        s.last_status = Some(status.to_string());
        s.last_duration_ms = Some(took_ms);
    })
    .await;
    if let Err(e) = res {
        tracing::error!(app, timer = name, error = %e, "writing a timer's state");
    }
}

/// Runs `timer` once to its end with `io`, records it, returns the result.
pub async fn run_once(
    rack: &Arc<Rack>,
    runtime: &dyn Runtime,
    app: &str,
    timer: &Timer,
    actor: &str,
    io: OneOffIo,
) -> Result<i64, RuntimeError> {
    let started = Instant::now();
    let result = match prepare(rack, app, timer).await {
        Ok((spec, cmd)) => runtime.run(&spec, cmd, io).await,
        Err(e) => Err(RuntimeError::Other(e)),
    };
    let status = status_of(timer, &result);
    tracing::info!(app, timer = %timer.name, %status, "timer run");
    record(rack, app, &timer.name, actor, &status, started.elapsed()).await;
    result
}

/// Output of a scheduled run: it goes to the runtime's logs only.
pub fn discard_io() -> OneOffIo {
    OneOffIo {
        stdin: None,
        stdout: Box::new(tokio::io::sink()),
        stderr: Box::new(tokio::io::sink()),
    }
}
