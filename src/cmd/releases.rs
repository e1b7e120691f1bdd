//! `releases*`: list, inspect and roll back releases.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::{output::Output, CmdError, Ctx};
use super::{with_space, Access, Args};
use crate::deploy::rollout::{self, ConfigChoice, NewRelease};
use crate::state::Rack;
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
    let current = ctx.rack.store.app_state(app).await?.current_release;
    let items = ctx
        .rack
        .store
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
    let current = ctx.rack.store.app_state(app).await?.current_release;
    let r = ctx.rack.store.release(app, v).await?;
    let mut obj = release_json(&r, current);
    let keys: Vec<String> = ctx
        .rack
        .configs
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
    let state = ctx.rack.store.app_state(app).await?;
    let current = state
        .current_release
        .ok_or_else(|| CmdError::Failed(format!("{app} has no release to roll back from")))?;
    let target = match target {
        Some(t) => ctx.rack.store.release(app, parse_version(t)?).await?,
        None => ctx
            .rack
            .store
            .releases(app, 1000)
            .await?
            .into_iter()
            .find(|r| r.version < current && r.status == "succeeded")
            .ok_or_else(|| {
                CmdError::Failed(format!("{app} has no earlier release to roll back to"))
            })?,
    };
    let tv = target.version;
    // Refused before anything changes when the image is gone; checked again
    // under the lock, since a prune holds the same lock.
    let build = ctx.rack.store.build(app, &target.build_id).await?;
    image_still_there(ctx.rack, &build, tv, app).await?;
    let old = ctx.rack.configs.at(app, target.config_version).await?;
    let now = ctx.rack.configs.current(app).await?;
    let mut changed: Vec<String> = now
        .keys()
        .filter(|k| old.get(k) != now.get(k))
        .chain(old.keys().filter(|k| now.get(k).is_none()))
        .map(str::to_string)
        .collect();
    changed.sort();
    changed.dedup();
    let rack = ctx.rack.clone();
    let actor = ctx.who.key_name.clone();
    let app_s = app.to_string();
    let result = ctx
        .with_progress(|progress| async move {
            let started = Instant::now();
            let _guard = rack.locks.acquire(&app_s, &progress).await?;
            image_still_there(&rack, &build, tv, &app_s)
                .await
                .map_err(|e| e.to_string())?;
            let cv = rack
                .configs
                .restore(&app_s, &actor, &old)
                .await
                .map_err(|e| e.to_string())?;
            let req = NewRelease {
                app: &app_s,
                build: &build,
                config: ConfigChoice::Version(cv),
                description: format!("Rollback to v{tv}"),
                actor: &actor,
                push: None,
                started,
            };
            rollout::release(&rack, req, &progress).await
        })
        .await;
    match result {
        Ok(r) => {
            let keys = if changed.is_empty() {
                "none".to_string()
            } else {
                changed.join(", ")
            };
            let mut out = Output::message(format!(
                "Rolled back {app} to v{tv} as v{}; config keys changed: {keys}",
                r.version
            ));
            out.json = json!({ "app": app, "release": r.version, "rolled_back_to": tv, "changed_keys": changed });
            Ok(out)
        }
        Err(e) => Err(CmdError::Failed(e)),
    }
}

/// `Err` when the image `target`'s build made is no longer there (pruned:
/// only the images of the newest releases are kept).
async fn image_still_there(
    rack: &Rack,
    build: &crate::store::BuildRecord,
    version: i64,
    app: &str,
) -> Result<(), CmdError> {
    let runtime = rack.runtime().await.map_err(CmdError::Failed)?;
    let image = rollout::image_of(build);
    match runtime.has_image(&image).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(CmdError::Failed(format!(
            "the image of v{version} was pruned (the images of {app}'s last {} releases are kept); \
             push its commit again to deploy it",
            rack.settings.keep_releases
        ))),
        Err(e) => Err(CmdError::Failed(e.to_string())),
    }
}

/// A new release of the current build with the newest config, after a
/// config change. `None` when the app has nothing running yet.
pub async fn release_config_change<R>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    description: String,
) -> Result<Option<i64>, CmdError> {
    let rack: Arc<Rack> = ctx.rack.clone();
    if rack.store.app_state(app).await?.current_release.is_none() {
        return Ok(None);
    }
    let actor = ctx.who.key_name.clone();
    let app_s = app.to_string();
    let result = ctx
        .with_progress(|progress| async move {
            let started = Instant::now();
            let _guard = rack.locks.acquire(&app_s, &progress).await?;
            // Read the current release under the lock: a deploy that
            // finished while we waited is the one to build on.
            let Some(v) = rack
                .store
                .app_state(&app_s)
                .await
                .map_err(|e| e.to_string())?
                .current_release
            else {
                return Ok(None);
            };
            let cur = rack
                .store
                .release(&app_s, v)
                .await
                .map_err(|e| e.to_string())?;
            let build = rack
                .store
                .build(&app_s, &cur.build_id)
                .await
                .map_err(|e| e.to_string())?;
            let req = NewRelease {
                app: &app_s,
                build: &build,
                config: ConfigChoice::Latest,
                description,
                actor: &actor,
                push: None,
                started,
            };
            rollout::release(&rack, req, &progress)
                .await
                .map(|r| Some(r.version))
        })
        .await;
    result.map_err(CmdError::Failed)
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
