//! `domains*`: extra host names routed to an app.

use serde_json::json;

use super::{output::Output, CmdError, Ctx};
use super::{Access, Args};
use crate::names::printable;

pub(super) fn validate_host(host: &str) -> Result<String, CmdError> {
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
    // `APP.DOMAIN` is app APP's own host, whether APP exists yet or not.
    let suffix = format!(".{}", ctx.rack.settings.domain.to_ascii_lowercase());
    if let Some(owner) = host.strip_suffix(&suffix) {
        if owner != app && crate::names::validate_app(owner).is_ok() {
            return Err(CmdError::Usage(format!(
                "{host} is the default host of app '{owner}'; add a name outside {} instead",
                &suffix[1..]
            )));
        }
    }
    ctx.store().add_domain(app, &host).await?;
    push_hosts(ctx, app).await?;
    // A new host gets its certificate ordered.
    ctx.rack.certs.wake();
    Ok(Output::message(format!("Added {host} to {app}")))
}

pub async fn remove<R>(ctx: &Ctx<'_, R>, app: &str, host: &str) -> Result<Output, CmdError> {
    let host = validate_host(host)?;
    ctx.store().remove_domain(app, &host).await?;
    push_hosts(ctx, app).await?;
    // Its certificate is forgotten.
    ctx.rack.certs.wake();
    Ok(Output::message(format!("Removed {host} from {app}")))
}

// ---------------------------------------------------------------- commands

commands! {
    /// The `domains*` commands (admin only).
    DomainsCmd(ctx) {
        "domains" => List { app: String }
            parse Args::just_app; access Access::Admin; app app;
            run list(ctx, &app);
        "domains:add" => Add { app: String, host: String }
            parse Args::app_word; access Access::Admin; app app;
            audit format!("domains:add {app} {host}");
            run add(ctx, &app, &host);
        "domains:remove" => Remove { app: String, host: String }
            parse Args::app_word; access Access::Admin; app app;
            audit format!("domains:remove {app} {host}");
            run remove(ctx, &app, &host);
    }
}
