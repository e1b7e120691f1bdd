//! `apps*`: create, list, inspect, configure and destroy apps.

use std::collections::BTreeMap;

use serde_json::json;

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
    }
    Ok(Output::message(format!("Reset {app}: {}", keys.join(", "))))
}

// ---------------------------------------------------------------- commands

/// The `apps*` commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppsCmd {
    List,
    Create {
        app: String,
    },
    Info {
        app: String,
    },
    Destroy {
        app: String,
        confirm: Option<String>,
    },
    Set {
        app: String,
        pairs: Vec<(String, String)>,
    },
    Unset {
        app: String,
        keys: Vec<String>,
    },
    Deploy {
        app: String,
        reference: Option<String>,
        no_cache: bool,
    },
}

impl AppsCmd {
    /// `None` when `name` is not an `apps*` command.
    pub(super) fn parse(name: &str, a: &mut Args) -> Result<Option<AppsCmd>, CmdError> {
        Ok(Some(match name {
            "apps" | "apps:list" => {
                a.done("apps")?;
                AppsCmd::List
            }
            "apps:create" => AppsCmd::Create {
                app: a.only_app(name)?,
            },
            "apps:info" => AppsCmd::Info {
                app: a.only_app(name)?,
            },
            "apps:destroy" => {
                let app = a.app(name)?;
                let confirm = a.option_only("--confirm", "--confirm needs the app name")?;
                AppsCmd::Destroy { app, confirm }
            }
            "apps:set" => {
                let (app, words) = a.app_words(name)?;
                let pairs = words
                    .iter()
                    .map(|w| split_pair(w))
                    .collect::<Result<_, _>>()?;
                AppsCmd::Set { app, pairs }
            }
            "apps:unset" => {
                let (app, keys) = a.app_words(name)?;
                AppsCmd::Unset { app, keys }
            }
            "apps:deploy" => {
                let app = a.app(name)?;
                let mut reference = None;
                let mut no_cache = false;
                for w in a.rest() {
                    if w == "--no-cache" {
                        no_cache = true;
                    } else if reference.is_none() && !w.starts_with('-') {
                        reference = Some(w);
                    } else {
                        return Err(unexpected(&w, name));
                    }
                }
                AppsCmd::Deploy {
                    app,
                    reference,
                    no_cache,
                }
            }
            _ => return Ok(None),
        }))
    }

    /// Exhaustive: a new command must say who may run it.
    pub(super) fn access(&self) -> Access {
        match self {
            AppsCmd::List => Access::Anyone,
            AppsCmd::Info { app } => Access::Read(app.clone()),
            AppsCmd::Create { .. }
            | AppsCmd::Destroy { .. }
            | AppsCmd::Set { .. }
            | AppsCmd::Unset { .. }
            | AppsCmd::Deploy { .. } => Access::Admin,
        }
    }

    pub(super) fn app(&self) -> Option<&str> {
        match self {
            AppsCmd::List => None,
            AppsCmd::Create { app }
            | AppsCmd::Info { app }
            | AppsCmd::Destroy { app, .. }
            | AppsCmd::Set { app, .. }
            | AppsCmd::Unset { app, .. }
            | AppsCmd::Deploy { app, .. } => Some(app),
        }
    }

    pub(super) fn audit_line(&self) -> Option<String> {
        Some(match self {
            AppsCmd::List | AppsCmd::Info { .. } => return None,
            AppsCmd::Create { app } => format!("apps:create {app}"),
            AppsCmd::Destroy { app, .. } => format!("apps:destroy {app}"),
            AppsCmd::Set { app, pairs } => format!(
                "apps:set {app} {}",
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            AppsCmd::Unset { app, keys } => format!("apps:unset {app} {}", keys.join(" ")),
            AppsCmd::Deploy {
                app,
                reference,
                no_cache,
            } => format!(
                "apps:deploy {app}{}{}",
                with_space(reference.as_deref()),
                if *no_cache { " --no-cache" } else { "" }
            ),
        })
    }

    pub(super) async fn execute<R>(self, ctx: &mut Ctx<'_, R>) -> Result<Output, CmdError> {
        match self {
            AppsCmd::List => list(ctx).await,
            AppsCmd::Create { app } => create(ctx, &app).await,
            AppsCmd::Info { app } => info(ctx, &app).await,
            AppsCmd::Destroy { app, confirm } => destroy(ctx, &app, confirm.as_deref()).await,
            AppsCmd::Set { app, pairs } => set(ctx, &app, &pairs).await,
            AppsCmd::Unset { app, keys } => unset(ctx, &app, &keys).await,
            AppsCmd::Deploy {
                app,
                reference,
                no_cache,
            } => super::builds::deploy(ctx, &app, reference.as_deref(), no_cache).await,
        }
    }
}
