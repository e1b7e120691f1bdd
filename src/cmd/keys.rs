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
    let mut out = Output::message(format!("Added key {} ({})", rec.name, rec.fingerprint));
    out.json = key_json(&rec);
    Ok(out)
}

pub async fn remove<R>(ctx: &Ctx<'_, R>, name: &str) -> Result<Output, CmdError> {
    ctx.store().remove_key(name).await?;
    Ok(Output::message(format!("Removed key {name}")))
}

// ---------------------------------------------------------------- commands

/// The `keys*` commands (admin only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysCmd {
    List,
    Add {
        name: String,
        admin: bool,
        apps: Vec<String>,
    },
    Remove {
        name: String,
    },
}

impl KeysCmd {
    /// `None` when `name` is not a `keys*` command.
    pub(super) fn parse(name: &str, a: &mut Args) -> Result<Option<KeysCmd>, CmdError> {
        Ok(Some(match name {
            "keys" | "keys:list" => {
                a.done("keys")?;
                KeysCmd::List
            }
            "keys:add" => {
                let name = a.word("keys:add")?;
                let (admin, apps) = parse_scope(a.rest())?;
                KeysCmd::Add { name, admin, apps }
            }
            "keys:remove" => {
                let name = a.word("keys:remove")?;
                a.done("keys:remove")?;
                KeysCmd::Remove { name }
            }
            _ => return Ok(None),
        }))
    }

    /// Exhaustive: a new command must say who may run it.
    pub(super) fn access(&self) -> Access {
        match self {
            KeysCmd::List | KeysCmd::Add { .. } | KeysCmd::Remove { .. } => Access::Admin,
        }
    }

    pub(super) fn audit_line(&self) -> Option<String> {
        match self {
            KeysCmd::List => None,
            KeysCmd::Add { name, admin, apps } => Some(if *admin {
                format!("keys:add {name} --admin")
            } else {
                format!("keys:add {name} --app {}", apps.join(","))
            }),
            KeysCmd::Remove { name } => Some(format!("keys:remove {name}")),
        }
    }

    pub(super) async fn execute<R: AsyncRead + Unpin>(
        self,
        ctx: &mut Ctx<'_, R>,
    ) -> Result<Output, CmdError> {
        match self {
            KeysCmd::List => list(ctx).await,
            KeysCmd::Add { name, admin, apps } => add(ctx, &name, admin, &apps).await,
            KeysCmd::Remove { name } => remove(ctx, &name).await,
        }
    }
}
