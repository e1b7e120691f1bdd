//! `releases*`: list, inspect and roll back releases.

use serde_json::json;

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
    let mut out = Output::message(format!(
        "Rolled back {app} to v{} as v{}; config keys changed: {keys}",
        r.target, r.version
    ));
    out.json = json!({ "app": app, "release": r.version, "rolled_back_to": r.target, "changed_keys": r.changed_keys });
    Ok(out)
}

// ---------------------------------------------------------------- commands

/// The `releases*` commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleasesCmd {
    List {
        app: String,
    },
    Info {
        app: String,
        version: String,
    },
    Rollback {
        app: String,
        version: Option<String>,
    },
}

impl ReleasesCmd {
    /// `None` when `name` is not a `releases*` command.
    pub(super) fn parse(name: &str, a: &mut Args) -> Result<Option<ReleasesCmd>, CmdError> {
        Ok(Some(match name {
            "releases" => ReleasesCmd::List {
                app: a.only_app(name)?,
            },
            "releases:info" => {
                let (app, version) = a.app_word(name)?;
                ReleasesCmd::Info { app, version }
            }
            "releases:rollback" => {
                let (app, version) = a.app_maybe_word(name)?;
                ReleasesCmd::Rollback { app, version }
            }
            _ => return Ok(None),
        }))
    }

    /// Exhaustive: a new command must say who may run it.
    pub(super) fn access(&self) -> Access {
        match self {
            ReleasesCmd::List { app } | ReleasesCmd::Info { app, .. } => Access::Read(app.clone()),
            ReleasesCmd::Rollback { .. } => Access::Admin,
        }
    }

    pub(super) fn app(&self) -> Option<&str> {
        match self {
            ReleasesCmd::List { app }
            | ReleasesCmd::Info { app, .. }
            | ReleasesCmd::Rollback { app, .. } => Some(app),
        }
    }

    pub(super) fn audit_line(&self) -> Option<String> {
        match self {
            ReleasesCmd::List { .. } | ReleasesCmd::Info { .. } => None,
            ReleasesCmd::Rollback { app, version } => Some(format!(
                "releases:rollback {app}{}",
                with_space(version.as_deref())
            )),
        }
    }

    pub(super) async fn execute<R>(self, ctx: &mut Ctx<'_, R>) -> Result<Output, CmdError> {
        match self {
            ReleasesCmd::List { app } => list(ctx, &app).await,
            ReleasesCmd::Info { app, version } => info(ctx, &app, &version).await,
            ReleasesCmd::Rollback { app, version } => rollback(ctx, &app, version.as_deref()).await,
        }
    }
}
