//! `apps*`: create, list, inspect, configure and destroy apps.

use std::collections::BTreeMap;

use serde_json::json;

use super::group::read;
use super::{output::Output, CmdError, Ctx};
use super::{split_pair, unexpected, with_space, Access, Args};
use crate::appsettings;
use crate::names::printable;

pub async fn list<R>(ctx: &Ctx<'_, R>) -> Result<Output, CmdError> {
    let visible = ctx.who.visible_apps();
    let items = ctx
        .store()
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
    let rec = ctx.store().app(app).await?;
    let domains = ctx.store().domains(app).await?;
    let config_version = ctx.store().latest_config(app).await?.map(|c| c.version);
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
    let mut rec = ctx.store().app(app).await?;
    for (k, v) in pairs {
        rec.settings.insert(k.clone(), v.clone());
    }
    ctx.store().set_app_settings(app, &rec.settings).await?;
    ctx.rack.certs.set_policy(app, &rec.settings);
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
    let mut rec = ctx.store().app(app).await?;
    let before: BTreeMap<_, _> = rec.settings.clone();
    for k in keys {
        rec.settings.remove(k);
    }
    if before != rec.settings {
        ctx.store().set_app_settings(app, &rec.settings).await?;
        ctx.rack.certs.set_policy(app, &rec.settings);
    }
    Ok(Output::message(format!("Reset {app}: {}", keys.join(", "))))
}

// ---------------------------------------------------------------- commands

commands! {
    /// The `apps*` commands.
    AppsCmd(ctx) {
        "apps" | "apps:list" => List {}
            parse Args::nothing; access Access::Anyone;
            run list(ctx);
        "apps:create" => Create { app: String }
            parse Args::just_app; access Access::Admin; app app;
            audit format!("apps:create {app}");
            run create(ctx, &app);
        "apps:info" => Info { app: String }
            parse Args::just_app; access read(app); app app;
            run info(ctx, &app);
        "apps:destroy" => Destroy { app: String, confirm: Option<String> }
            parse parse_destroy; access Access::Admin; app app;
            audit format!("apps:destroy {app}");
            run destroy(ctx, &app, confirm.as_deref());
        "apps:set" => Set { app: String, pairs: Vec<(String, String)> }
            parse parse_set; access Access::Admin; app app;
            audit format!("apps:set {app} {}", pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "));
            run set(ctx, &app, &pairs);
        "apps:unset" => Unset { app: String, keys: Vec<String> }
            parse Args::app_words; access Access::Admin; app app;
            audit format!("apps:unset {app} {}", keys.join(" "));
            run unset(ctx, &app, &keys);
        "apps:deploy" => Deploy { app: String, reference: Option<String>, no_cache: bool }
            parse parse_deploy; access Access::Admin; app app;
            audit format!(
                "apps:deploy {app}{}{}",
                with_space(reference.as_deref()),
                if *no_cache { " --no-cache" } else { "" }
            );
            run super::builds::deploy(ctx, &app, reference.as_deref(), no_cache);
    }
}

/// `apps:destroy APP [--confirm APP]`.
fn parse_destroy(a: &mut Args, cmd: &str) -> Result<(String, Option<String>), CmdError> {
    let app = a.app(cmd)?;
    let confirm = a.option_only("--confirm", "--confirm needs the app name")?;
    Ok((app, confirm))
}

/// `apps:set APP KEY=VAL ...`.
fn parse_set(a: &mut Args, cmd: &str) -> Result<(String, Vec<(String, String)>), CmdError> {
    let (app, words) = a.app_words(cmd)?;
    let pairs = words
        .iter()
        .map(|w| split_pair(w))
        .collect::<Result<_, _>>()?;
    Ok((app, pairs))
}

/// `apps:deploy APP [REF] [--no-cache]`.
fn parse_deploy(a: &mut Args, cmd: &str) -> Result<(String, Option<String>, bool), CmdError> {
    let app = a.app(cmd)?;
    let mut reference = None;
    let mut no_cache = false;
    for w in a.rest() {
        if w == "--no-cache" {
            no_cache = true;
        } else if reference.is_none() && !w.starts_with('-') {
            reference = Some(w);
        } else {
            return Err(unexpected(&w, cmd));
        }
    }
    Ok((app, reference, no_cache))
}
