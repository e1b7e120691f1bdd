//! `timers*`: the scheduled jobs of an app's current release (from its
//! `app.json`): list them, run one now, suspend and resume them.

use serde_json::json;
use tokio::io::AsyncRead;

use super::group::read;
use super::{output::Output, CmdError, Ctx};
use super::{with_space, Access, Args};
use crate::timers::{next_after, rfc3339};

pub async fn list<R>(ctx: &Ctx<'_, R>, app: &str) -> Result<Output, CmdError> {
    let timers = ctx.rack.deployer.pick_timers(app, None).await?;
    let states = ctx.store().timer_states(app).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let items = timers
        .iter()
        .map(|t| {
            let s = states.get(&t.name).cloned().unwrap_or_default();
            let next = t.cron().ok().and_then(|c| next_after(&c, now)).map(rfc3339);
            json!({
                "name": t.name,
                "schedule": t.schedule,
                "command": t.command,
                "concurrency_policy": t.policy.as_str(),
                "max_runtime_secs": t.max_runtime_secs,
                "next_run": if s.suspended { None } else { next },
                "last_run": s.last_run_at,
                "last_status": s.last_status,
                "last_duration_ms": s.last_duration_ms,
                "suspended": s.suspended,
                "state": if s.suspended { "suspended" } else { "active" },
            })
        })
        .collect();
    Ok(Output::list(
        &[
            ("TIMER", "name"),
            ("SCHEDULE", "schedule"),
            ("NEXT RUN", "next_run"),
            ("LAST RUN", "last_run"),
            ("STATUS", "last_status"),
            ("STATE", "state"),
        ],
        items,
    ))
}

pub async fn suspend<R>(
    ctx: &Ctx<'_, R>,
    app: &str,
    name: Option<&str>,
    suspended: bool,
) -> Result<Output, CmdError> {
    let names = ctx
        .rack
        .deployer
        .suspend_timers(app, name, suspended)
        .await?;
    let verb = if suspended { "Suspended" } else { "Resumed" };
    let mut out = Output::message(format!("{verb} {app}'s timers: {}", names.join(", ")));
    out.json = json!({ "app": app, "timers": names, "suspended": suspended });
    Ok(out)
}

pub async fn run_now<R: AsyncRead + Unpin>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    name: &str,
) -> Result<Output, CmdError> {
    let deployer = ctx.rack.deployer.clone();
    let timer = deployer.pick_timers(app, Some(name)).await?.remove(0);
    let runtime = ctx.runtime().await?;
    let actor = ctx.who.key_name.clone();
    super::run::stream(ctx, false, |io| async move {
        deployer.run_timer(&*runtime, app, &timer, &actor, io).await
    })
    .await
}

// ---------------------------------------------------------------- commands

commands! {
    /// The `timers*` commands.
    TimersCmd(ctx) {
        "timers" => List { app: String }
            parse Args::just_app; access read(app); app app;
            run list(ctx, &app);
        "timers:run" => Run { app: String, name: String }
            parse Args::app_word; access Access::Admin; app app;
            audit format!("timers:run {app} {name}");
            run run_now(ctx, &app, &name);
        "timers:suspend" => Suspend { app: String, name: Option<String> }
            parse Args::app_maybe_word; access Access::Admin; app app;
            audit format!("timers:suspend {app}{}", with_space(name.as_deref()));
            run suspend(ctx, &app, name.as_deref(), true);
        "timers:resume" => Resume { app: String, name: Option<String> }
            parse Args::app_maybe_word; access Access::Admin; app app;
            audit format!("timers:resume {app}{}", with_space(name.as_deref()));
            run suspend(ctx, &app, name.as_deref(), false);
    }
}
