//! `certs*`: the HTTPS certificates of an app's hosts (access like
//! `domains*`). The work is `certs::Manager`'s.

use serde_json::json;
use tokio::io::AsyncRead;

use super::domains::validate_host;
use super::{output::Output, CmdError, Ctx};
use super::{Access, Args};

pub async fn list<R>(ctx: &Ctx<'_, R>, app: &str) -> Result<Output, CmdError> {
    let views = ctx.rack.certs.list(app).await?;
    let items = views
        .into_iter()
        .map(|v| {
            json!({
                "host": v.host,
                "issuer": v.issuer,
                "not_after": v.not_after,
                "status": v.status,
                "last_error": v.last_error,
            })
        })
        .collect();
    Ok(Output::list(
        &[
            ("HOST", "host"),
            ("STATUS", "status"),
            ("NOT AFTER", "not_after"),
            ("ISSUER", "issuer"),
            ("LAST ERROR", "last_error"),
        ],
        items,
    ))
}

pub async fn add<R: AsyncRead + Unpin>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    host: &str,
) -> Result<Output, CmdError> {
    let host = validate_host(host)?;
    ctx.store().app(app).await?;
    let input = ctx.read_stdin().await?;
    let pem =
        String::from_utf8(input).map_err(|_| CmdError::Failed("stdin is not PEM text".into()))?;
    let v = ctx.rack.certs.add(app, &host, &pem).await?;
    Ok(Output::done(
        format!("Added a certificate for {host} (expires {})", v.not_after),
        json!({ "host": v.host, "issuer": v.issuer, "not_after": v.not_after, "status": v.status }),
    ))
}

pub async fn remove<R>(ctx: &Ctx<'_, R>, app: &str, host: &str) -> Result<Output, CmdError> {
    let host = validate_host(host)?;
    ctx.rack.certs.remove(app, &host).await?;
    Ok(Output::message(format!(
        "Removed the certificate of {host}"
    )))
}

pub async fn renew<R>(ctx: &Ctx<'_, R>, app: &str, host: &str) -> Result<Output, CmdError> {
    let host = validate_host(host)?;
    ctx.rack.certs.renew(app, &host).await?;
    Ok(Output::message(format!(
        "Renewing the certificate of {host}; `certs {app}` shows when it is issued"
    )))
}

// ---------------------------------------------------------------- commands

commands! {
    /// The `certs*` commands (admin only, like `domains*`).
    CertsCmd(ctx) {
        "certs" => List { app: String }
            parse Args::just_app; access Access::Admin; app app;
            run list(ctx, &app);
        "certs:add" => Add { app: String, host: String }
            parse Args::app_word; access Access::Admin; app app;
            audit format!("certs:add {app} {host}");
            run add(ctx, &app, &host);
        "certs:remove" => Remove { app: String, host: String }
            parse Args::app_word; access Access::Admin; app app;
            audit format!("certs:remove {app} {host}");
            run remove(ctx, &app, &host);
        "certs:renew" => Renew { app: String, host: String }
            parse Args::app_word; access Access::Admin; app app;
            audit format!("certs:renew {app} {host}");
            run renew(ctx, &app, &host);
    }
}
