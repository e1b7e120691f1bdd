//! `keys*` over SSH, and the key registration shared with the offline
//! `rack keys` command.

use russh::keys::{HashAlg, PublicKey};
use serde_json::json;
use tokio::io::AsyncRead;

use super::{output::Output, CmdError, Ctx};
use super::{Access, Args};
use crate::names::{printable, validate_app, validate_key_name};
use crate::store::{now_rfc3339, KeyRecord, Store};

/// `--admin` or one or more `--app APP` (also `--app=A,B`).
pub fn parse_scope(args: Vec<String>) -> Result<(bool, Vec<String>), CmdError> {
    let mut admin = false;
    let mut apps = Vec::new();
    let mut it = args.into_iter();
    while let Some(w) = it.next() {
        let list = if w == "--admin" {
            admin = true;
            continue;
        } else if w == "--app" {
            it.next()
                .ok_or_else(|| CmdError::Usage("--app needs an app name".into()))?
        } else if let Some(v) = w.strip_prefix("--app=") {
            v.to_string()
        } else {
            return Err(CmdError::Usage(format!(
                "unexpected argument '{}'",
                printable(&w)
            )));
        };
        for app in list.split(',').filter(|a| !a.is_empty()) {
            validate_app(app).map_err(CmdError::Usage)?;
            apps.push(app.to_string());
        }
    }
    match (admin, apps.is_empty()) {
        (true, true) | (false, false) => {
            apps.sort();
            apps.dedup();
            Ok((admin, apps))
        }
        _ => Err(CmdError::Usage(
            "give either --admin or one or more --app APP".into(),
        )),
    }
}

/// Parses an OpenSSH public key line and registers it.
pub async fn register(
    store: &dyn Store,
    name: &str,
    admin: bool,
    apps: &[String],
    text: &str,
) -> Result<KeyRecord, CmdError> {
    validate_key_name(name).map_err(CmdError::Usage)?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| {
            CmdError::Usage("no public key on stdin (expected one OpenSSH public key line)".into())
        })?;
    let mut key = PublicKey::from_openssh(line).map_err(|_| {
        CmdError::Usage(
            "stdin does not hold an OpenSSH public key line (ssh-ed25519 AAAA...)".into(),
        )
    })?;
    key.set_comment("");
    // A scope names apps that exist: a key for an app created later would
    // otherwise be waiting for it.
    for app in apps {
        if store.get_app(app).await?.is_none() {
            return Err(CmdError::Usage(format!(
                "no app named '{app}': create it first"
            )));
        }
    }
    let record = KeyRecord {
        name: name.to_string(),
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        public_key: key
            .to_openssh()
            .map_err(|e| CmdError::Failed(format!("encoding the key: {e}")))?,
        admin,
        apps: apps.to_vec(),
        created_at: now_rfc3339(),
    };
    store.add_key(&record).await?;
    Ok(record)
}

pub fn key_json(k: &KeyRecord) -> serde_json::Value {
    json!({
        "name": k.name,
        "fingerprint": k.fingerprint,
        "admin": k.admin,
        "apps": k.apps,
        "created_at": k.created_at,
    })
}

pub fn list_output(keys: &[KeyRecord]) -> Output {
    let items = keys.iter().map(key_json).collect();
    Output::list(
        &[
            ("NAME", "name"),
            ("ADMIN", "admin"),
            ("APPS", "apps"),
            ("FINGERPRINT", "fingerprint"),
        ],
        items,
    )
}

pub async fn list<R>(ctx: &Ctx<'_, R>) -> Result<Output, CmdError> {
    Ok(list_output(&ctx.store().list_keys().await?))
}

pub async fn add<R: AsyncRead + Unpin>(
    ctx: &mut Ctx<'_, R>,
    name: &str,
    admin: bool,
    apps: &[String],
) -> Result<Output, CmdError> {
    validate_key_name(name).map_err(CmdError::Usage)?;
    let input = ctx.read_stdin().await?;
    let text = String::from_utf8_lossy(&input);
    let rec = register(ctx.store(), name, admin, apps, &text).await?;
    Ok(Output::done(
        format!("Added key {} ({})", rec.name, rec.fingerprint),
        key_json(&rec),
    ))
}

pub async fn remove<R>(ctx: &Ctx<'_, R>, name: &str) -> Result<Output, CmdError> {
    ctx.store().remove_key(name).await?;
    Ok(Output::message(format!("Removed key {name}")))
}

// ---------------------------------------------------------------- commands

commands! {
    /// The `keys*` commands (admin only).
    KeysCmd(ctx) {
        "keys" | "keys:list" => List {}
            parse Args::nothing; access Access::Admin;
            run list(ctx);
        "keys:add" => Add { name: String, admin: bool, apps: Vec<String> }
            parse |a: &mut Args, cmd: &str| {
                let name = a.word(cmd)?;
                parse_scope(a.rest()).map(|(admin, apps)| (name, admin, apps))
            };
            access Access::Admin;
            audit if *admin {
                format!("keys:add {name} --admin")
            } else {
                format!("keys:add {name} --app {}", apps.join(","))
            };
            run add(ctx, &name, admin, &apps);
        "keys:remove" => Remove { name: String }
            parse |a: &mut Args, cmd: &str| {
                let name = a.word(cmd)?;
                a.done(cmd).map(|()| (name,))
            };
            access Access::Admin;
            audit format!("keys:remove {name}");
            run remove(ctx, &name);
    }
}
