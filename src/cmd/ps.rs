//! `ps*`: processes, scaling and restarts.

use serde_json::json;

use super::group::read;
use super::{output::Output, CmdError, Ctx};
use super::{with_space, Access, Args};
use crate::names::{printable, validate_process_type};

pub async fn list<R>(ctx: &Ctx<'_, R>, app: &str) -> Result<Output, CmdError> {
    ctx.store().app(app).await?;
    let runtime = ctx.runtime().await?;
    let mut procs = runtime
        .processes(app)
        .await
        .map_err(|e| CmdError::Failed(e.to_string()))?;
    // Instances of an earlier rollout are draining: not part of the app.
    if let Some(current) = ctx.store().app_state(app).await?.deploy_id {
        procs.retain(|p| {
            p.deploy_id.is_empty() || p.deploy_id == current || p.kind == "run" || p.kind == "timer"
        });
    }
    procs.sort_by(|a, b| (a.kind.as_str(), a.number).cmp(&(b.kind.as_str(), b.number)));
    let now = time::OffsetDateTime::now_utc();
    let items = procs
        .iter()
        .map(|p| {
            let uptime = p
                .started_at
                .as_deref()
                .and_then(|s| {
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map(|t| format!("{}s", (now - t).whole_seconds().max(0)));
            json!({
                "name": p.name,
                "type": p.kind,
                "number": p.number,
                "release": format!("v{}", p.release),
                "state": p.state,
                "started_at": p.started_at,
                "uptime": uptime,
                "id": p.id,
                "deploy_id": p.deploy_id,
            })
        })
        .collect();
    Ok(Output::list(
        &[
            ("PROCESS", "name"),
            ("RELEASE", "release"),
            ("STATE", "state"),
            ("UPTIME", "uptime"),
        ],
        items,
    ))
}

pub fn parse_counts(pairs: &[String]) -> Result<Vec<(String, u32)>, CmdError> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(|| {
                CmdError::Usage(format!("expected TYPE=N, got '{}'", printable(p)))
            })?;
            validate_process_type(k).map_err(CmdError::Usage)?;
            let n = v.parse::<u32>().ok().filter(|n| *n <= 100).ok_or_else(|| {
                CmdError::Usage(format!(
                    "expected a count 0-100 for {k}, got '{}'",
                    printable(v)
                ))
            })?;
            Ok((k.to_string(), n))
        })
        .collect()
}

pub async fn scale<R>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    pairs: &[String],
) -> Result<Output, CmdError> {
    let counts = parse_counts(pairs)?;
    let formation = ctx
        .deploying(|d, p| async move { d.scale(app, &counts, &p).await })
        .await?;
    let text: Vec<String> = formation.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok(Output::done(
        format!("Scaled {app} to {}", text.join(" ")),
        json!({ "app": app, "formation": formation }),
    ))
}

pub async fn restart<R>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    kind: Option<&str>,
) -> Result<Output, CmdError> {
    if let Some(k) = kind {
        validate_process_type(k).map_err(CmdError::Usage)?;
    }
    ctx.deploying(|d, p| async move { d.restart(app, &p).await })
        .await?;
    Ok(Output::message(format!("Restarted {app}")))
}

// ---------------------------------------------------------------- commands

commands! {
    /// The `ps*` commands.
    PsCmd(ctx) {
        "ps" => List { app: String }
            parse Args::just_app; access read(app); app app;
            run list(ctx, &app);
        "ps:scale" => Scale { app: String, pairs: Vec<String> }
            parse Args::app_words; access Access::Admin; app app;
            audit format!("ps:scale {app} {}", pairs.join(" "));
            run scale(ctx, &app, &pairs);
        "ps:restart" => Restart { app: String, kind: Option<String> }
            parse Args::app_maybe_word; access Access::Admin; app app;
            audit format!("ps:restart {app}{}", with_space(kind.as_deref()));
            run restart(ctx, &app, kind.as_deref());
    }
}
