//! `domains*`: extra host names routed to an app.

use serde_json::json;

use super::{output::Output, CmdError, Ctx};
use super::{Access, Args};
use crate::names::printable;

fn validate_host(host: &str) -> Result<String, CmdError> {
    let h = host.to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(h)
    } else {
        Err(CmdError::Usage(format!(
            "invalid host name '{}'",
            printable(host)
        )))
    }
}

pub async fn list<R>(ctx: &Ctx<'_, R>, app: &str) -> Result<Output, CmdError> {
    ctx.store().app(app).await?;
    let mut hosts = vec![format!("{app}.{}", ctx.rack.settings.domain)];
    hosts.extend(ctx.store().domains(app).await?);
    let items = hosts.iter().map(|h| json!({ "host": h })).collect();
    Ok(Output::list(&[("HOST", "host")], items))
}

async fn push_hosts<R>(ctx: &Ctx<'_, R>, app: &str) -> Result<(), CmdError> {
    let mut hosts = vec![format!("{app}.{}", ctx.rack.settings.domain)];
    hosts.extend(ctx.store().domains(app).await?);
    if let Ok(rt) = ctx.rack.provider.runtime().await {
        rt.set_hosts(app, hosts)
            .await
            .map_err(|e| CmdError::Failed(e.to_string()))?;
    }
    Ok(())
}

pub async fn add<R>(ctx: &Ctx<'_, R>, app: &str, host: &str) -> Result<Output, CmdError> {
    let host = validate_host(host)?;
    ctx.store().app(app).await?;
    ctx.store().add_domain(app, &host).await?;
    push_hosts(ctx, app).await?;
    Ok(Output::message(format!("Added {host} to {app}")))
}

pub async fn remove<R>(ctx: &Ctx<'_, R>, app: &str, host: &str) -> Result<Output, CmdError> {
    let host = validate_host(host)?;
    ctx.store().remove_domain(app, &host).await?;
    push_hosts(ctx, app).await?;
    Ok(Output::message(format!("Removed {host} from {app}")))
}

// ---------------------------------------------------------------- commands

/// The `domains*` commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainsCmd {
    List { app: String },
    Add { app: String, host: String },
    Remove { app: String, host: String },
}

impl DomainsCmd {
    /// `None` when `name` is not a `domains*` command.
    pub(super) fn parse(name: &str, a: &mut Args) -> Result<Option<DomainsCmd>, CmdError> {
        Ok(Some(match name {
            "domains" => DomainsCmd::List {
                app: a.only_app(name)?,
            },
            "domains:add" | "domains:remove" => {
                let (app, host) = a.app_word(name)?;
                if name == "domains:add" {
                    DomainsCmd::Add { app, host }
                } else {
                    DomainsCmd::Remove { app, host }
                }
            }
            _ => return Ok(None),
        }))
    }

    /// Exhaustive: a new command must say who may run it.
    pub(super) fn access(&self) -> Access {
        match self {
            DomainsCmd::List { .. } | DomainsCmd::Add { .. } | DomainsCmd::Remove { .. } => {
                Access::Admin
            }
        }
    }

    pub(super) fn app(&self) -> Option<&str> {
        match self {
            DomainsCmd::List { app }
            | DomainsCmd::Add { app, .. }
            | DomainsCmd::Remove { app, .. } => Some(app),
        }
    }

    pub(super) fn audit_line(&self) -> Option<String> {
        match self {
            DomainsCmd::List { .. } => None,
            DomainsCmd::Add { app, host } => Some(format!("domains:add {app} {host}")),
            DomainsCmd::Remove { app, host } => Some(format!("domains:remove {app} {host}")),
        }
    }

    pub(super) async fn execute<R>(self, ctx: &mut Ctx<'_, R>) -> Result<Output, CmdError> {
        match self {
            DomainsCmd::List { app } => list(ctx, &app).await,
            DomainsCmd::Add { app, host } => add(ctx, &app, &host).await,
            DomainsCmd::Remove { app, host } => remove(ctx, &app, &host).await,
        }
    }
}
