//! EventBridge Scheduler: an app's timers as schedules in a schedule group
//! of its own (`rack-RACK-APP`), each targeting ECS RunTask of one task
//! definition on the rack's cluster with the timer's command as a
//! container override. A leaf module: it knows the Scheduler API and the
//! cron dialect of EventBridge, nothing of releases or the store.

use aws_sdk_scheduler::types::{
    AwsVpcConfiguration, EcsParameters, FlexibleTimeWindow, FlexibleTimeWindowMode, LaunchType,
    NetworkConfiguration, ScheduleState, Target,
};

use super::{AwsContext, AwsError, Result};
use crate::timers::Timer;

/// Where an app's schedules run their tasks.
pub struct EcsTarget<'a> {
    pub cluster_arn: &'a str,
    /// The role EventBridge Scheduler assumes to call ecs:RunTask: the
    /// rack's scheduler role (never the task execution role, which trusts
    /// ECS tasks only).
    pub role_arn: &'a str,
    pub task_definition: &'a str,
    /// The container the command override names.
    pub container: &'a str,
    pub subnets: &'a [String],
    pub security_group: &'a str,
}

/// The app's schedule group.
pub fn group_name(ctx: &AwsContext, app: &str) -> String {
    format!("rack-{}-{app}", ctx.rack)
}

/// A cron expression of `app.json` as EventBridge writes it:
/// `cron(MIN HOUR DOM MONTH DOW YEAR)`, one of DOM and DOW `?`, weekdays
/// 1-7 from Sunday. Seconds other than 0 cannot be scheduled there.
pub fn aws_expression(expr: &str) -> std::result::Result<String, String> {
    let named = match expr.trim() {
        "@yearly" | "@annually" => Some("0 0 1 1 *"),
        "@monthly" => Some("0 0 1 * *"),
        "@weekly" => Some("0 0 * * 0"),
        "@daily" | "@midnight" => Some("0 0 * * *"),
        "@hourly" => Some("0 * * * *"),
        _ => None,
    };
    let expr = named.unwrap_or(expr);
    let mut f: Vec<&str> = expr.split_whitespace().collect();
    if f.len() == 6 {
        if f[0] != "0" {
            return Err(format!(
                "\"{expr}\": EventBridge schedules fire at most once a minute (seconds must be 0)"
            ));
        }
        f.remove(0);
    }
    let [min, hour, dom, month, dow] = f[..] else {
        return Err(format!("\"{expr}\": expected 5 fields"));
    };
    let (dom, dow) = match (dom, dow) {
        (d, "*") => (d.to_string(), "?".to_string()),
        ("*", w) => ("?".to_string(), weekdays(w)?),
        _ => {
            return Err(format!(
                "\"{expr}\": EventBridge cannot restrict both the day of the month and the weekday"
            ))
        }
    };
    Ok(format!("cron({min} {hour} {dom} {month} {dow} *)"))
}

/// Cron weekdays (0-7, 0 and 7 Sunday) as EventBridge's 1-7; names stay.
fn weekdays(w: &str) -> std::result::Result<String, String> {
    if w.contains('/') {
        return Err(format!(
            "weekday \"{w}\": steps are not supported by EventBridge"
        ));
    }
    let map = |t: &str| match t.parse::<u8>() {
        Ok(n) if n <= 7 => Ok(((n % 7) + 1).to_string()),
        Ok(_) => Err(format!("weekday \"{w}\": out of range")),
        Err(_) => Ok(t.to_string()),
    };
    w.split(',')
        .map(|part| {
            part.split('-')
                .map(map)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(|v| v.join("-"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(|v| v.join(","))
}

/// The ECS RunTask input of one timer: its command and `RACK_TIMER`.
fn input(container: &str, t: &Timer) -> String {
    serde_json::json!({
        "containerOverrides": [{
            "name": container,
            "command": ["/bin/sh", "-c", t.command],
            "environment": [{ "name": "RACK_TIMER", "value": t.name }],
        }]
    })
    .to_string()
}

/// Makes the app's schedules exactly `timers`, targeting `target`, those
/// named in `suspended` disabled: every expression is checked before
/// anything is written.
pub async fn put_app_schedules(
    ctx: &AwsContext,
    app: &str,
    target: &EcsTarget<'_>,
    timers: &[Timer],
    suspended: &[String],
) -> Result<()> {
    let exprs = timers
        .iter()
        .map(|t| {
            aws_expression(&t.schedule)
                .map_err(|e| AwsError::Invalid(format!("timer {}: {e}", t.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let group = group_name(ctx, app);
    match ctx
        .scheduler
        .create_schedule_group()
        .name(&group)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) => {
            let e = AwsError::api("Scheduler.CreateScheduleGroup", e);
            if e.code() != Some("ConflictException") {
                return Err(e);
            }
        }
    }
    let existing = schedule_names(ctx, &group).await?;
    for (t, expr) in timers.iter().zip(exprs) {
        let state = if suspended.contains(&t.name) {
            ScheduleState::Disabled
        } else {
            ScheduleState::Enabled
        };
        let exists = existing.contains(&t.name);
        put_schedule(ctx, &group, target, t, &expr, exists, state).await?;
    }
    for name in existing
        .iter()
        .filter(|n| !timers.iter().any(|t| &t.name == *n))
    {
        ctx.scheduler
            .delete_schedule()
            .group_name(&group)
            .name(name)
            .send()
            .await
            .map_err(|e| AwsError::api("Scheduler.DeleteSchedule", e))?;
    }
    Ok(())
}

async fn put_schedule(
    ctx: &AwsContext,
    group: &str,
    target: &EcsTarget<'_>,
    t: &Timer,
    expr: &str,
    exists: bool,
    state: ScheduleState,
) -> Result<()> {
    let invalid = |e: aws_sdk_scheduler::error::BuildError| AwsError::Invalid(e.to_string());
    let ecs = EcsParameters::builder()
        .task_definition_arn(target.task_definition)
        .task_count(1)
        .launch_type(LaunchType::Fargate)
        .network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(
                    AwsVpcConfiguration::builder()
                        .set_subnets(Some(target.subnets.to_vec()))
                        .security_groups(target.security_group)
                        .build()
                        .map_err(invalid)?,
                )
                .build(),
        )
        .build()
        .map_err(invalid)?;
    let tgt = Target::builder()
        .arn(target.cluster_arn)
        .role_arn(target.role_arn)
        .ecs_parameters(ecs)
        .input(input(target.container, t))
        .build()
        .map_err(invalid)?;
    let window = FlexibleTimeWindow::builder()
        .mode(FlexibleTimeWindowMode::Off)
        .build()
        .map_err(invalid)?;
    // CreateSchedule and UpdateSchedule take the same fields, on
    // builders of different types.
    macro_rules! send {
        ($req:expr, $op:literal) => {
            $req.group_name(group)
                .name(&t.name)
                .schedule_expression(expr)
                .schedule_expression_timezone("UTC")
                .state(state)
                .flexible_time_window(window)
                .target(tgt)
                .send()
                .await
                .map(drop)
                .map_err(|e| AwsError::api($op, e))
        };
    }
    if exists {
        send!(ctx.scheduler.update_schedule(), "Scheduler.UpdateSchedule")
    } else {
        send!(ctx.scheduler.create_schedule(), "Scheduler.CreateSchedule")
    }
}

/// Names of the schedules in `group` (a missing group: none).
pub async fn schedule_names(ctx: &AwsContext, group: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = match ctx
            .scheduler
            .list_schedules()
            .group_name(group)
            .set_next_token(token.take())
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let e = AwsError::api("Scheduler.ListSchedules", e);
                if e.code() == Some("ResourceNotFoundException") {
                    return Ok(names);
                }
                return Err(e);
            }
        };
        names.extend(
            out.schedules()
                .iter()
                .filter_map(|s| s.name().map(str::to_string)),
        );
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(names),
        }
    }
}

/// Removes the app's schedules with their group (none: nothing to do).
pub async fn delete_app_schedules(ctx: &AwsContext, app: &str) -> Result<()> {
    let group = group_name(ctx, app);
    // Asked first: deleting a missing group is not an error everywhere
    // (moto answers 500).
    if let Err(e) = ctx.scheduler.get_schedule_group().name(&group).send().await {
        let e = AwsError::api("Scheduler.GetScheduleGroup", e);
        return match e.code() {
            Some("ResourceNotFoundException") => Ok(()),
            _ => Err(e),
        };
    }
    ctx.scheduler
        .delete_schedule_group()
        .name(&group)
        .send()
        .await
        .map(drop)
        .map_err(|e| AwsError::api("Scheduler.DeleteScheduleGroup", e))
}
