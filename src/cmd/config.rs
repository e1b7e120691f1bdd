//! `config*`: show, get, set and unset an app's encrypted config vars.

use serde_json::{Map, Value};
use tokio::io::AsyncRead;

use super::{output::Output, CmdError, Ctx};
use super::{split_pair, usage, Access, Args};
use crate::names::validate_config_key;
use crate::release::config::Change;

pub async fn show<R>(ctx: &Ctx<'_, R>, app: &str) -> Result<Output, CmdError> {
    ctx.store().app(app).await?;
    let vars = ctx.configs().current(app).await?;
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
    ctx.store().app(app).await?;
    match ctx.configs().get(app, key).await? {
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
        ctx.store().app(app).await?;
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
    Output::done(
        format!(
            "{verb} {} on {app}: config v{version}; {tail}",
            keys.join(", ")
        ),
        serde_json::json!({ "app": app, "config_version": version, "keys": keys, "release": release }),
    )
}

// ---------------------------------------------------------------- commands

commands! {
    /// The `config*` commands. Config holds secrets: admins only, reads
    /// included; values never reach the audit trail (key names only).
    ConfigCmd(ctx) {
        "config" | "config:show" => Show { app: String }
            parse Args::just_app; access Access::Admin; app app;
            // Reading secrets is recorded too (names, never values).
            audit format!("config {app}");
            run show(ctx, &app);
        "config:get" => Get { app: String, key: String }
            parse Args::app_word; access Access::Admin; app app;
            audit format!("config:get {app} {key}");
            run get(ctx, &app, &key);
        "config:set" => Set {
            app: String,
            pairs: Vec<(String, String)>,
            stdin_key: Option<String>,
            no_restart: bool,
        }
            parse parse_set; access Access::Admin; app app;
            audit {
                let keys: Vec<&str> =
                    pairs.iter().map(|(k, _)| k.as_str()).chain(stdin_key.as_deref()).collect();
                format!("config:set {app} {}", keys.join(" "))
            };
            run set(ctx, &app, pairs, stdin_key, no_restart);
        "config:unset" => Unset { app: String, keys: Vec<String>, no_restart: bool }
            parse parse_unset; access Access::Admin; app app;
            audit format!("config:unset {app} {}", keys.join(" "));
            run unset(ctx, &app, &keys, no_restart);
    }
}

type SetFields = (String, Vec<(String, String)>, Option<String>, bool);

/// `config:set APP KEY=VAL ... [--no-restart]` or `config:set APP KEY --stdin`.
fn parse_set(a: &mut Args, cmd: &str) -> Result<SetFields, CmdError> {
    let app = a.app(cmd)?;
    let mut no_restart = false;
    let mut stdin = false;
    let mut pairs = Vec::new();
    let mut bare = Vec::new();
    for w in a.rest() {
        match w.as_str() {
            "--no-restart" => no_restart = true,
            "--stdin" => stdin = true,
            _ if w.contains('=') => pairs.push(split_pair(&w)?),
            _ => bare.push(w),
        }
    }
    let stdin_key = if stdin {
        if bare.len() != 1 || !pairs.is_empty() {
            return Err(usage(
                "usage: config:set APP KEY --stdin (one key, value on stdin)",
            ));
        }
        bare.pop()
    } else {
        if let Some(w) = bare.first() {
            return Err(usage(format!(
                "expected KEY=VALUE, got '{}'",
                crate::names::printable(w)
            )));
        }
        if pairs.is_empty() {
            return Err(usage("usage: config:set APP KEY=VAL ... [--no-restart]"));
        }
        None
    };
    Ok((app, pairs, stdin_key, no_restart))
}

/// `config:unset APP KEY ... [--no-restart]`.
fn parse_unset(a: &mut Args, cmd: &str) -> Result<(String, Vec<String>, bool), CmdError> {
    let app = a.app(cmd)?;
    let mut no_restart = false;
    let mut keys = Vec::new();
    for w in a.rest() {
        if w == "--no-restart" {
            no_restart = true;
        } else {
            keys.push(w);
        }
    }
    if keys.is_empty() {
        return Err(usage("usage: config:unset APP KEY ... [--no-restart]"));
    }
    Ok((app, keys, no_restart))
}
