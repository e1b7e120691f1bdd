//! The timer use cases of the `Deployer`: the timers of an app's current
//! release, one run of a timer (scheduled or `timers:run`), suspend and
//! resume, and the scheduler's claim of a tick. A run is a one-off of the
//! app's CURRENT release (its config, `RACK_TIMER=NAME`, the limits of
//! `resources.timer.*`), stopped after `maxRuntime`, recorded as an event
//! and in the timer's state. The scheduler itself is `timers::Scheduler`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::rollout::new_deploy_id;
use super::{DeployError, Deployer, Result};
use crate::runtime::{OneOff, OneOffIo, ReleaseSpec, Runtime, RuntimeError};
use crate::store::now_rfc3339;
use crate::timers::{update_state, CurrentTimers, Timer, TIMER_LABEL};

impl Deployer {
    /// The timers of the app's current release and when it was created
    /// (`None` before its first release).
    pub async fn current_timers(&self, app: &str) -> Result<Option<CurrentTimers>> {
        let store = &self.provider.store;
        let Some(v) = store.app_state(app).await?.current_release else {
            return Ok(None);
        };
        let release = store.release(app, v).await?;
        let timers = store.build_timers(&release.build_id).await?;
        let since = time::OffsetDateTime::parse(
            &release.created_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t.unix_timestamp())
        .map_err(|e| DeployError::Failed(format!("release v{v} of {app}: created_at: {e}")))?;
        Ok(Some(CurrentTimers { timers, since }))
    }

    /// The named timer of the current release, or all of them.
    pub async fn pick_timers(&self, app: &str, name: Option<&str>) -> Result<Vec<Timer>> {
        self.provider.store.app(app).await?;
        let timers = self
            .current_timers(app)
            .await?
            .map(|c| c.timers)
            .unwrap_or_default();
        match name {
            None => Ok(timers),
            Some(n) => match timers.into_iter().find(|t| t.name == n) {
                Some(t) => Ok(vec![t]),
                None => Err(DeployError::Refused(format!(
                    "{app} has no timer '{}' in its current release (see: timers {app})",
                    crate::names::printable(n)
                ))),
            },
        }
    }

    /// Suspends (or resumes) the named timer of the current release, or
    /// all of them; kept across deploys. Returns the names changed.
    pub async fn suspend_timers(
        &self,
        app: &str,
        name: Option<&str>,
        suspended: bool,
    ) -> Result<Vec<String>> {
        let timers = self.pick_timers(app, name).await?;
        for t in &timers {
            update_state(&*self.provider.store, app, &t.name, |s| {
                s.suspended = suspended
            })
            .await?;
        }
        self.reschedule_timers(app).await?;
        Ok(timers.into_iter().map(|t| t.name).collect())
    }

    /// Hands the current release's timers to the runtime again after a
    /// suspend or resume (aws: the schedules' state); a no-op locally.
    async fn reschedule_timers(&self, app: &str) -> Result<()> {
        let runtime = self.provider.runtime().await.map_err(DeployError::Failed)?;
        if runtime.fires_timers() {
            return Ok(());
        }
        let store = &*self.provider.store;
        let Some(v) = store.app_state(app).await?.current_release else {
            return Ok(());
        };
        let release = store.release(app, v).await?;
        let spec = self
            .spec_for(&*runtime, &release, &release.formation, new_deploy_id())
            .await?;
        let timers = store.build_timers(&release.build_id).await?;
        let suspended = super::rollout::suspended_timers(store, app).await?;
        runtime
            .set_timers(&spec, &timers, &suspended)
            .await
            .map_err(|e| DeployError::Failed(format!("scheduling {app}'s timers: {e}")))
    }

    /// Records `due` as the timer's last tick if it is newer than both the
    /// recorded one and `floor` (ticks before the release became current
    /// are not its to fire); whether to run it now (not when suspended).
    /// Written before the run starts: no tick runs twice.
    pub async fn claim_timer_tick(
        &self,
        app: &str,
        name: &str,
        due: i64,
        floor: i64,
    ) -> Result<bool> {
        let newer = |last: Option<i64>| due > last.unwrap_or(i64::MIN).max(floor);
        let states = self.provider.store.timer_states(app).await?;
        if !newer(states.get(name).and_then(|s| s.last_tick)) {
            return Ok(false);
        }
        let mut fire = false;
        update_state(&*self.provider.store, app, name, |s| {
            if newer(s.last_tick) {
                fire = !s.suspended;
                s.last_tick = Some(due);
            }
        })
        .await?;
        Ok(fire)
    }

    /// Runs `timer` once to its end with `io` and records it.
    pub async fn run_timer(
        &self,
        runtime: &dyn Runtime,
        app: &str,
        timer: &Timer,
        actor: &str,
        io: OneOffIo,
    ) -> std::result::Result<i64, RuntimeError> {
        let started = Instant::now();
        let result = match self.timer_one_off(runtime, app, timer).await {
            Ok((spec, cmd)) => runtime.run(&spec, cmd, io).await,
            Err(e) => Err(RuntimeError::Other(e.to_string())),
        };
        let status = status_of(timer, &result);
        tracing::info!(app, timer = %timer.name, %status, "timer run");
        self.record_timer_run(app, &timer.name, actor, &status, started.elapsed())
            .await;
        result
    }

    /// The runtime's view of one run: the current release with the timer's
    /// variables, and the one-off.
    async fn timer_one_off(
        &self,
        runtime: &dyn Runtime,
        app: &str,
        timer: &Timer,
    ) -> Result<(ReleaseSpec, OneOff)> {
        let store = &self.provider.store;
        let v = store.app_state(app).await?.current_release.ok_or_else(|| {
            DeployError::Refused(format!("{app} has no release yet: git push first"))
        })?;
        let release = store.release(app, v).await?;
        let formation = BTreeMap::from([("timer".to_string(), 0)]);
        let mut spec = self
            .spec_for(runtime, &release, &formation, new_deploy_id())
            .await?;
        spec.env.set("RACK_TIMER", &timer.name);
        let (memory_bytes, nano_cpus) = self.oneoff_limits(app, "timer").await?;
        let cmd = OneOff {
            memory_bytes,
            nano_cpus,
            argv: vec!["/bin/sh".into(), "-c".into(), timer.command.clone()],
            tty: None,
            resize: None,
            timeout: timer.max_runtime_secs.map(Duration::from_secs),
            labels: BTreeMap::from([(TIMER_LABEL.to_string(), timer.name.clone())]),
        };
        Ok((spec, cmd))
    }

    /// Records a finished (or stopped) run: one event, the timer's state.
    pub async fn record_timer_run(
        &self,
        app: &str,
        name: &str,
        actor: &str,
        status: &str,
        took: Duration,
    ) {
        let store = &self.provider.store;
        let outcome = format!("{status} after {:.1}s", took.as_secs_f64());
        let action = format!("timer.{name} run");
        if let Err(e) = store.add_event(actor, Some(app), &action, &outcome).await {
            tracing::error!(app, timer = name, error = %e, "writing a timer event");
        }
        let took_ms = took.as_millis() as i64;
        let res = update_state(&**store, app, name, |s| {
            s.last_run_at = Some(now_rfc3339());
            s.last_status = Some(status.to_string());
            s.last_duration_ms = Some(took_ms);
        })
        .await;
        if let Err(e) = res {
            tracing::error!(app, timer = name, error = %e, "writing a timer's state");
        }
    }
}

/// How a run ended, as the events and `timers` show it.
fn status_of(timer: &Timer, result: &std::result::Result<i64, RuntimeError>) -> String {
    match (result, timer.max_runtime_secs) {
        (Ok(code), _) => format!("exit {code}"),
        // The runtime's one-off timeout (`OneOff::timeout`) fired.
        (Err(RuntimeError::Other(m)), Some(max)) if m.contains("time limit") => {
            format!("stopped: ran past maxRuntime {max}s")
        }
        (Err(e), _) => format!("error: {e}"),
    }
}
