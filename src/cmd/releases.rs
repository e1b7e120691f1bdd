//! `releases*`: list, inspect and roll back releases.

use serde_json::json;

use super::group::read;
use super::{output::Output, CmdError, Ctx};
use super::{with_space, Access, Args};
use crate::store::ReleaseRecord;

fn release_json(r: &ReleaseRecord, current: Option<i64>) -> serde_json::Value {
    json!({
        "version": r.version,
        "name": format!("v{}", r.version),
        "build_id": r.build_id,
        "config_version": r.config_version,
        "formation": r.formation,
        "description": r.description,
        "created_by": r.created_by,
        "created_at": r.created_at,
        "status": r.status,
        "current": current == Some(r.version),
    })
}

pub fn parse_version(s: &str) -> Result<i64, CmdError> {
    s.strip_prefix('v')
        .unwrap_or(s)
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            CmdError::Usage(format!(
                "expected a release such as v3, got '{}'",
                crate::names::printable(s)
            ))
        })
}

pub async fn list<R>(ctx: &Ctx<'_, R>, app: &str) -> Result<Output, CmdError> {
    let current = ctx.store().app_state(app).await?.current_release;
    let items = ctx
        .store()
        .releases(app, 50)
        .await?
        .iter()
        .map(|r| release_json(r, current))
        .collect();
    Ok(Output::list(
        &[
            ("RELEASE", "name"),
            ("STATUS", "status"),
            ("CURRENT", "current"),
            ("BUILD", "build_id"),
            ("DESCRIPTION", "description"),
            ("BY", "created_by"),
            ("CREATED", "created_at"),
        ],
        items,
    ))
}

pub async fn info<R>(ctx: &Ctx<'_, R>, app: &str, version: &str) -> Result<Output, CmdError> {
    let v = parse_version(version)?;
    let current = ctx.store().app_state(app).await?.current_release;
    let r = ctx.store().release(app, v).await?;
    let mut obj = release_json(&r, current);
    let keys: Vec<String> = ctx
        .configs()
        .at(app, r.config_version)
        .await?
        .keys()
        .map(str::to_string)
        .collect();
    obj["config_keys"] = json!(keys);
    Ok(Output::info(&format!("{app} v{v}"), obj))
}

pub async fn rollback<R>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    target: Option<&str>,
) -> Result<Output, CmdError> {
    let target = target.map(parse_version).transpose()?;
    let actor = ctx.who.key_name.as_str();
    let r = ctx
        .deploying(|d, p| async move { d.rollback(app, target, actor, &p).await })
        .await?;
    let keys = if r.changed_keys.is_empty() {
        "none".to_string()
    } else {
        r.changed_keys.join(", ")
    };
    Ok(Output::done(
        format!(
            "Rolled back {app} to v{} as v{}; config keys changed: {keys}",
            r.target, r.version
        ),
        json!({ "app": app, "release": r.version, "rolled_back_to": r.target, "changed_keys": r.changed_keys }),
    ))
}

// ---------------------------------------------------------------- commands

commands! {
    /// The `releases*` commands.
    ReleasesCmd(ctx) {
        "releases" => List { app: String }
            parse Args::just_app; access read(app); app app;
            run list(ctx, &app);
        "releases:info" => Info { app: String, version: String }
            parse Args::app_word; access read(app); app app;
            run info(ctx, &app, &version);
        "releases:rollback" => Rollback { app: String, version: Option<String> }
            parse Args::app_maybe_word; access Access::Admin; app app;
            audit format!("releases:rollback {app}{}", with_space(version.as_deref()));
            run rollback(ctx, &app, version.as_deref());
    }
}
