//! The resource keeper: a task the server owns ([`Keeper::start`],
//! [`Keeper::stop`]) that brings every resource back when the rack starts,
//! re-creates a resource whose container vanished (`Resources::watch`),
//! and takes the daily automatic backups of `[resources] backup_schedule`.
//!
//! A scheduled backup is due when the newest scheduled time at or before
//! now is later than both the resource's creation and its newest
//! `scheduled` backup, so a day missed while the rack was down is taken
//! once when it starts, and none is taken twice (the backups are the
//! record). Each one is an audit event of the actor `scheduler`.

use std::sync::Arc;
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::progress::Progress;
use crate::state::Rack;

/// How often the schedule is checked; a backup is at most this late.
const TICK: Duration = Duration::from_secs(20);
/// The trigger of automatic backups (`resources:backups` shows it).
pub const SCHEDULED: &str = "scheduled";
/// Their actor in the audit trail, as for timers.
const ACTOR: &str = "scheduler";

pub struct Keeper {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Keeper {
    pub fn start(rack: Arc<Rack>) -> Keeper {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let d = &rack.deployer;
            d.recover_resources(None, &Progress::discard()).await;
            let (tx, mut gone) = mpsc::channel::<String>(64);
            let watcher = async {
                if let Ok(res) = rack.provider.resources().await {
                    res.watch(tx).await;
                }
                futures::future::pending::<()>().await
            };
            tokio::pin!(watcher);
            let mut tick = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    _ = &mut watcher => {}
                    Some(name) = gone.recv() => {
                        tracing::warn!(resource = %name, "resource container gone; re-creating it");
                        d.recover_resources(Some(&name), &Progress::discard()).await;
                    }
                    _ = tick.tick() => backups_due(&rack).await,
                    _ = stopped.changed() => break,
                }
            }
        });
        Keeper { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The newest daily time `(h, m)` UTC at or before `now`.
pub fn last_due(now: OffsetDateTime, (h, m): (u32, u32)) -> OffsetDateTime {
    let today =
        now.replace_time(time::Time::from_hms(h as u8, m as u8, 0).expect("checked when read"));
    if today <= now {
        today
    } else {
        today - time::Duration::days(1)
    }
}

fn parse(t: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t, &Rfc3339).ok()
}

async fn backups_due(rack: &Rack) {
    let Some(at) = rack.settings.resources.backup_schedule else {
        return;
    };
    let due = last_due(OffsetDateTime::now_utc(), at);
    let Ok(records) = rack.provider.store.resources().await else {
        return;
    };
    for rec in records {
        if parse(&rec.created_at).is_none_or(|c| c >= due) {
            continue;
        }
        let Ok(backups) = rack.deployer.resource_backups(&rec.name).await else {
            continue;
        };
        let newest = backups
            .iter()
            .filter(|b| b.trigger == SCHEDULED)
            .filter_map(|b| parse(&b.created))
            .max();
        if newest.is_some_and(|n| n >= due) {
            continue;
        }
        let outcome = match rack.deployer.backup_resource(&rec.name, SCHEDULED).await {
            Ok(b) => format!("ok: {} ({} bytes)", b.id, b.bytes),
            Err(e) => format!("error: {e}"),
        };
        let action = format!("resources:backup {}", rec.name);
        if let Err(e) = rack
            .provider
            .store
            .add_event(ACTOR, None, &action, &outcome)
            .await
        {
            tracing::error!(error = %e, "writing audit event");
        }
    }
}
