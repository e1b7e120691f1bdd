//! The scheduler: a task the server owns ([`Scheduler::start`] when it
//! starts serving, [`Scheduler::stop`] on shutdown) that fires the timers
//! of every app's current release, for runtimes that do not schedule by
//! themselves (`Runtime::fires_timers`; on aws EventBridge does).
//!
//! It ticks on a clock but fires from the schedule: each tick asks, per
//! timer, for the newest tick due at or before now, and fires it if it is
//! newer than the `last_tick` in the store. The new `last_tick` is written
//! (under the state lock, compared again) BEFORE the run starts, so:
//! - across a restart, a tick already fired never fires again, and ticks
//!   missed while the rack was down collapse into the newest one, which
//!   fires once on start-up;
//! - ticks from before the release became current (`created_at`) never
//!   fire, so a new or re-added timer has no backlog, while a tick missed
//!   between the release and a crash still fires on start-up; a suspended
//!   timer's ticks are recorded without firing (resuming fires no backlog).
//!
//! The concurrency policy is applied here from the runs this process
//! started: `forbid` skips a firing while a run is going, `replace` stops
//! it (dropping the run's future stops and removes its one-off), `allow`
//! overlaps them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{discard_io, last_due, Policy, Timer};
use crate::runtime::Runtime;
use crate::state::Rack;

/// How often the clock is read; firings are at most this late.
const TICK: Duration = Duration::from_millis(250);
/// The actor of scheduled runs in the audit trail.
pub const ACTOR: &str = "scheduler";

/// The running scheduler; stopping it is the owner's job.
pub struct Scheduler {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Scheduler {
    pub fn start(rack: Arc<Rack>) -> Scheduler {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut s = State {
                rack,
                runs: HashMap::new(),
            };
            s.serve(stopped).await;
            s.stop_runs();
        });
        Scheduler { stop, task }
    }

    /// Stops firing and stops the runs still going (their one-offs are
    /// removed; recovery removes any left by a crash).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Running {
    task: JoinHandle<()>,
    started: Instant,
}

struct State {
    rack: Arc<Rack>,
    /// The runs this process started, per (app, timer).
    runs: HashMap<(String, String), Vec<Running>>,
}

impl State {
    async fn serve(&mut self, mut stopped: watch::Receiver<bool>) {
        let mut clock = tokio::time::interval(TICK);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = clock.tick() => {}
                _ = stopped.changed() => return,
            }
            // A process that replaced another fires nothing until it has
            // taken over: the old one's scheduler runs until then, and
            // ticks are claimed under a lock of one process only.
            if !self.rack.deployer.taken_over() {
                continue;
            }
            let runtime = match self.rack.provider.runtime().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "scheduler: no runtime yet");
                    continue;
                }
            };
            if !runtime.fires_timers() {
                return;
            }
            if let Err(e) = self.tick(&runtime).await {
                tracing::warn!(error = %e, "scheduler tick");
            }
        }
    }

    async fn tick(&mut self, runtime: &Arc<dyn Runtime>) -> Result<(), String> {
        let apps = self
            .rack
            .provider
            .store
            .list_apps()
            .await
            .map_err(|e| e.to_string())?;
        for app in apps {
            // An app destroyed meanwhile has no state left: skip it.
            let current = match self.rack.deployer.current_timers(&app.name).await {
                Ok(Some(c)) if !c.timers.is_empty() => c,
                _ => continue,
            };
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            for t in current.timers {
                let Ok(cron) = t.cron() else { continue };
                let Some(due) = last_due(&cron, now) else {
                    continue;
                };
                // The newest tick before the release became current.
                let floor = last_due(&cron, current.since).unwrap_or(i64::MIN);
                let claimed = self
                    .rack
                    .deployer
                    .claim_timer_tick(&app.name, &t.name, due, floor);
                if claimed.await.map_err(|e| e.to_string())? {
                    self.fire(runtime, &app.name, t).await;
                }
            }
        }
        Ok(())
    }

    async fn fire(&mut self, runtime: &Arc<dyn Runtime>, app: &str, t: Timer) {
        let key = (app.to_string(), t.name.clone());
        let list = self.runs.entry(key).or_default();
        list.retain(|r| !r.task.is_finished());
        match t.policy {
            Policy::Forbid if !list.is_empty() => {
                let line = format!("timer.{} skipped", t.name);
                let why = "the previous run is still going (concurrency_policy forbid)";
                let _ = self
                    .rack
                    .provider
                    .store
                    .add_event(ACTOR, Some(app), &line, why)
                    .await;
                return;
            }
            Policy::Replace => {
                for old in list.drain(..) {
                    old.task.abort();
                    let took = old.started.elapsed();
                    let deployer = &self.rack.deployer;
                    deployer
                        .record_timer_run(app, &t.name, ACTOR, "replaced", took)
                        .await;
                }
            }
            _ => {}
        }
        let (deployer, runtime) = (self.rack.deployer.clone(), runtime.clone());
        let app = app.to_string();
        let task = tokio::spawn(async move {
            let _ = deployer
                .run_timer(&*runtime, &app, &t, ACTOR, discard_io())
                .await;
        });
        list.push(Running {
            task,
            started: Instant::now(),
        });
    }

    fn stop_runs(&mut self) {
        for (_, list) in self.runs.drain() {
            for r in list {
                r.task.abort();
            }
        }
    }
}
