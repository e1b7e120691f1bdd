//! `config*`: show, get, set and unset an app's encrypted config vars.

use serde_json::{Map, Value};
use tokio::io::AsyncRead;

use super::{output::Output, CmdError, Ctx};
use crate::names::validate_config_key;
use crate::release::config::Change;

pub async fn show<R>(ctx: &Ctx<'_, R>, app: &str) -> Result<Output, CmdError> {
    ctx.rack.provider.store.app(app).await?;
    let vars = ctx.rack.provider.configs.current(app).await?;
    let mut m = Map::new();
    for (k, v) in vars.iter() {
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    let mut out = Output::info(
        &format!("{app} config (v{})", vars.version),
        Value::Object(m),
    );
    if vars.is_empty() {
        out.text.push_str("\n(no config vars)");
    }
    Ok(out)
}

pub async fn get<R>(ctx: &Ctx<'_, R>, app: &str, key: &str) -> Result<Output, CmdError> {
    validate_config_key(key).map_err(CmdError::Usage)?;
    ctx.rack.provider.store.app(app).await?;
    match ctx.rack.provider.configs.get(app, key).await? {
        Some(v) => Ok(Output::raw("value", v)),
        None => Err(CmdError::Failed(format!("{key} is not set on {app}"))),
    }
}

pub async fn set<R: AsyncRead + Unpin>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    pairs: Vec<(String, String)>,
    stdin_key: Option<String>,
    no_restart: bool,
) -> Result<Output, CmdError> {
    for (k, _) in &pairs {
        validate_config_key(k).map_err(CmdError::Usage)?;
    }
    let mut changes: Vec<Change> = pairs.into_iter().map(|(k, v)| Change::Set(k, v)).collect();
    if let Some(key) = stdin_key {
        validate_config_key(&key).map_err(CmdError::Usage)?;
        ctx.rack.provider.store.app(app).await?;
        let bytes = ctx.read_stdin().await?;
        let value = String::from_utf8(bytes)
            .map_err(|_| CmdError::Failed(format!("the value of {key} on stdin is not UTF-8")))?;
        changes.push(Change::Set(key, value));
    }
    change(ctx, app, "Set", changes, no_restart).await
}

pub async fn unset<R>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    keys: &[String],
    no_restart: bool,
) -> Result<Output, CmdError> {
    for k in keys {
        validate_config_key(k).map_err(CmdError::Usage)?;
    }
    let changes: Vec<Change> = keys.iter().map(|k| Change::Unset(k.clone())).collect();
    change(ctx, app, "Unset", changes, no_restart).await
}

async fn change<R>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    verb: &str,
    changes: Vec<Change>,
    no_restart: bool,
) -> Result<Output, CmdError> {
    let keys: Vec<String> = changes
        .iter()
        .map(|c| match c {
            Change::Set(k, _) | Change::Unset(k) => k.clone(),
        })
        .collect();
    let actor = ctx.who.key_name.as_str();
    let done = ctx
        .deploying(
            |d, p| async move { d.change_config(app, actor, &changes, no_restart, &p).await },
        )
        .await?;
    Ok(applied(
        app,
        verb,
        &keys,
        done.version,
        no_restart,
        done.release,
    ))
}

fn applied(
    app: &str,
    verb: &str,
    keys: &[String],
    version: Option<i64>,
    no_restart: bool,
    release: Option<i64>,
) -> Output {
    let Some(version) = version else {
        return Output::message(format!("No change to {app}'s config"));
    };
    let tail = match release {
        Some(v) => format!("released as v{v}"),
        None if no_restart => "not rolled out (--no-restart); the next release takes it".into(),
        None => "no release was made because the app has no build yet".into(),
    };
    let mut out = Output::message(format!(
        "{verb} {} on {app}: config v{version}; {tail}",
        keys.join(", ")
    ));
    out.json = serde_json::json!({ "app": app, "config_version": version, "keys": keys, "release": release });
    out
}
