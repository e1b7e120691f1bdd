//! `apps*`: create, list, inspect, configure and destroy apps.

use std::collections::BTreeMap;

use serde_json::json;

use super::{output::Output, CmdError, Ctx};
use crate::appsettings;
use crate::names::printable;

pub async fn list<R>(ctx: &Ctx<'_, R>) -> Result<Output, CmdError> {
    let visible = ctx.who.visible_apps();
    let items = ctx
        .rack
        .provider
        .store
        .list_apps()
        .await?
        .into_iter()
        .filter(|a| visible.is_none_or(|v| v.contains(&a.name)))
        .map(|a| {
            json!({
                "name": a.name,
                "deploy_branch": appsettings::deploy_branch(&a.settings),
                "created_at": a.created_at,
            })
        })
        .collect();
    Ok(Output::list(
        &[
            ("APP", "name"),
            ("BRANCH", "deploy_branch"),
            ("CREATED", "created_at"),
        ],
        items,
    ))
}

pub async fn create<R>(ctx: &Ctx<'_, R>, app: &str) -> Result<Output, CmdError> {
    ctx.rack.deployer.create_app(app).await?;
    Ok(Output::message(format!(
        "Created {app}\n  git remote add rack {}",
        ctx.rack.git_url(app)
    )))
}

pub async fn info<R>(ctx: &Ctx<'_, R>, app: &str) -> Result<Output, CmdError> {
    let rec = ctx.rack.provider.store.app(app).await?;
    let domains = ctx.rack.provider.store.domains(app).await?;
    let config_version = ctx
        .rack
        .provider
        .store
        .latest_config(app)
        .await?
        .map(|c| c.version);
    Ok(Output::info(
        app,
        json!({
            "name": rec.name,
            "created_at": rec.created_at,
            "deploy_branch": appsettings::deploy_branch(&rec.settings),
            "git_url": ctx.rack.git_url(app),
            "web_url": ctx.rack.web_url(app),
            "domains": domains,
            "config_version": config_version,
            "settings": rec.settings,
        }),
    ))
}

pub async fn destroy<R>(
    ctx: &Ctx<'_, R>,
    app: &str,
    confirm: Option<&str>,
) -> Result<Output, CmdError> {
    if confirm != Some(app) {
        return Err(CmdError::Usage(format!(
            "this deletes {app}'s repository, config and releases; confirm with: apps:destroy {app} --confirm {app}"
        )));
    }
    ctx.rack.deployer.destroy(app).await?;
    Ok(Output::message(format!("Destroyed {app}")))
}

pub async fn set<R>(
    ctx: &Ctx<'_, R>,
    app: &str,
    pairs: &[(String, String)],
) -> Result<Output, CmdError> {
    for (k, v) in pairs {
        appsettings::validate(k, v).map_err(CmdError::Usage)?;
    }
    let mut rec = ctx.rack.provider.store.app(app).await?;
    for (k, v) in pairs {
        rec.settings.insert(k.clone(), v.clone());
    }
    ctx.rack
        .provider
        .store
        .set_app_settings(app, &rec.settings)
        .await?;
    if let Some(branch) = pairs.iter().rev().find(|(k, _)| k == "deploy_branch") {
        let path = ctx.rack.repo_path(app);
        if let Err(e) = crate::git::set_head(&path, &branch.1) {
            tracing::warn!(app, error = %e, "pointing HEAD at the deploy branch");
        }
    }
    Ok(Output::message(format!(
        "Updated {app}: {}",
        pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

pub async fn unset<R>(ctx: &Ctx<'_, R>, app: &str, keys: &[String]) -> Result<Output, CmdError> {
    if let Some(bad) = keys.iter().find(|k| !appsettings::is_known(k)) {
        return Err(CmdError::Usage(format!(
            "unknown setting '{}'",
            printable(bad)
        )));
    }
    let mut rec = ctx.rack.provider.store.app(app).await?;
    let before: BTreeMap<_, _> = rec.settings.clone();
    for k in keys {
        rec.settings.remove(k);
    }
    if before != rec.settings {
        ctx.rack
            .provider
            .store
            .set_app_settings(app, &rec.settings)
            .await?;
    }
    Ok(Output::message(format!("Reset {app}: {}", keys.join(", "))))
}
