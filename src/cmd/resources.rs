//! `resources*`: databases the rack runs for apps (admin only: a resource
//! holds every linked app's data). Values never reach the audit trail; the
//! password is printed only by `resources:url`.

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::run::stream;
use super::{output::Output, usage, Access, Args, CmdError, Ctx};
use crate::names::{printable, validate_app};
use crate::resources::{validate_version, Kind, Terminal};
use crate::runtime::RuntimeError;

/// A resource name (app-name rules), from the next word.
fn name(a: &mut Args, cmd: &str) -> Result<String, CmdError> {
    let n = a.word(cmd)?;
    validate_app(&n).map_err(|e| CmdError::Usage(e.replace("app", "resource")))?;
    Ok(n)
}

fn just_name(a: &mut Args, cmd: &str) -> Result<(String,), CmdError> {
    let n = name(a, cmd)?;
    a.done(cmd)?;
    Ok((n,))
}

type CreateFields = (String, Kind, Option<String>);

/// `resources:create NAME postgres|redis [--version V]`.
fn parse_create(a: &mut Args, cmd: &str) -> Result<CreateFields, CmdError> {
    let n = name(a, cmd)?;
    let k = a.word(cmd)?;
    let kind = Kind::parse(&k).ok_or_else(|| {
        usage(format!(
            "unknown resource type '{}': postgres or redis",
            printable(&k)
        ))
    })?;
    let version = a.option_only("--version", "--version needs a version")?;
    if let Some(v) = &version {
        validate_version(v).map_err(CmdError::Usage)?;
    }
    Ok((n, kind, version))
}

/// `resources:link NAME APP [--as PREFIX]`.
fn parse_link(a: &mut Args, cmd: &str) -> Result<(String, String, Option<String>), CmdError> {
    let n = name(a, cmd)?;
    let app = a.app(cmd)?;
    let prefix = a.option_only("--as", "--as needs a PREFIX")?;
    if let Some(p) = &prefix {
        crate::names::validate_config_key(&format!("{p}_URL")).map_err(CmdError::Usage)?;
    }
    Ok((n, app, prefix))
}

fn parse_name_app(a: &mut Args, cmd: &str) -> Result<(String, String), CmdError> {
    let n = name(a, cmd)?;
    let app = a.app(cmd)?;
    a.done(cmd)?;
    Ok((n, app))
}

fn parse_restore(a: &mut Args, cmd: &str) -> Result<(String, String), CmdError> {
    let n = name(a, cmd)?;
    let b = a.word(cmd)?;
    a.done(cmd)?;
    Ok((n, b))
}

/// `resources:destroy NAME --confirm NAME`.
fn parse_destroy(a: &mut Args, cmd: &str) -> Result<(String, Option<String>), CmdError> {
    let n = name(a, cmd)?;
    let confirm = a.option_only("--confirm", "--confirm needs the resource's name")?;
    Ok((n, confirm))
}

async fn list<R>(ctx: &Ctx<'_, R>) -> Result<Output, CmdError> {
    let records = ctx.store().resources().await?;
    let mut items = Vec::new();
    for r in records {
        let links: Vec<&String> = r.links.keys().collect();
        items.push(json!({
            "name": r.name, "type": r.kind, "version": r.version,
            "linked": links.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
            "apps": links,
        }));
    }
    Ok(Output::list(
        &[
            ("NAME", "name"),
            ("TYPE", "type"),
            ("VERSION", "version"),
            ("LINKED", "linked"),
        ],
        items,
    ))
}

async fn create<R>(
    ctx: &mut Ctx<'_, R>,
    name: &str,
    kind: Kind,
    version: Option<&str>,
) -> Result<Output, CmdError> {
    let actor = ctx.who.key_name.as_str();
    let rec = ctx
        .deploying(|d, p| async move { d.create_resource(name, kind, version, actor, &p).await })
        .await?;
    Ok(Output::done(
        format!(
            "Created {name} ({kind} {}): resources:link {name} APP to use it",
            rec.version
        ),
        json!({ "name": name, "type": rec.kind, "version": rec.version, "image": rec.image }),
    ))
}

async fn info<R>(ctx: &Ctx<'_, R>, name: &str) -> Result<Output, CmdError> {
    let i = ctx.rack.deployer.resource_info(name).await?;
    let r = &i.record;
    let linked: serde_json::Map<String, Value> = r
        .links
        .iter()
        .map(|(app, p)| (app.clone(), Value::String(format!("{p}_URL"))))
        .collect();
    Ok(Output::info(
        name,
        json!({
            "name": r.name, "type": r.kind, "version": r.version, "image": r.image,
            "status": i.status, "host": i.host, "port": i.port,
            "linked": Value::Object(linked),
            "created_at": r.created_at, "created_by": r.created_by,
        }),
    ))
}

async fn url<R>(ctx: &Ctx<'_, R>, name: &str) -> Result<Output, CmdError> {
    Ok(Output::raw(
        "url",
        ctx.rack.deployer.resource_url(name).await?,
    ))
}

async fn link<R>(
    ctx: &mut Ctx<'_, R>,
    name: &str,
    app: &str,
    prefix: Option<&str>,
) -> Result<Output, CmdError> {
    let actor = ctx.who.key_name.as_str();
    let done = ctx
        .deploying(|d, p| async move { d.link_resource(name, app, prefix, actor, &p).await })
        .await?;
    Ok(linked(name, app, "Linked", done))
}

async fn unlink<R>(ctx: &mut Ctx<'_, R>, name: &str, app: &str) -> Result<Output, CmdError> {
    let actor = ctx.who.key_name.as_str();
    let done = ctx
        .deploying(|d, p| async move { d.unlink_resource(name, app, actor, &p).await })
        .await?;
    Ok(linked(name, app, "Unlinked", done))
}

fn linked(name: &str, app: &str, verb: &str, c: crate::deploy::ConfigChange) -> Output {
    let tail = match (c.version, c.release) {
        (Some(v), Some(r)) => format!("config v{v}; released as v{r}"),
        (Some(v), None) => {
            format!("config v{v}; no release was made because the app has no build yet")
        }
        (None, _) => "no config change".to_string(),
    };
    Output::done(
        format!("{verb} {name} and {app}: {tail}"),
        json!({ "resource": name, "app": app, "config_version": c.version, "release": c.release }),
    )
}

async fn console<R: AsyncRead + Unpin>(
    ctx: &mut Ctx<'_, R>,
    name: &str,
) -> Result<Output, CmdError> {
    ctx.store().resource(name).await?;
    let tty = ctx.tty.take().map(|t| Terminal {
        cols: t.cols,
        rows: t.rows,
        resize: t.resize,
    });
    let d = &ctx.rack.deployer;
    stream(ctx, true, |io| async move {
        d.resource_console(name, io, tty)
            .await
            .map_err(|e| RuntimeError::Other(e.to_string()))
    })
    .await
}

/// Streams the dump to stdout as it comes (a pipe of 256 KiB between).
async fn export<R>(ctx: &mut Ctx<'_, R>, name: &str) -> Result<Output, CmdError> {
    ctx.store().resource(name).await?;
    let (w, mut r) = tokio::io::duplex(256 * 1024);
    let d = &ctx.rack.deployer;
    let work = d.export_resource(name, Box::new(w));
    let out = &mut *ctx.stdout;
    let copy = async {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).await.is_err() {
                        break; // the client went away: dropping r ends the dump
                    }
                }
            }
        }
        drop(r);
        let _ = out.flush().await;
    };
    let (result, ()) = tokio::join!(work, copy);
    result?;
    Ok(Output::streamed(0))
}

/// Feeds stdin to the import as it comes.
async fn import<R: AsyncRead + Unpin>(
    ctx: &mut Ctx<'_, R>,
    name: &str,
) -> Result<Output, CmdError> {
    ctx.store().resource(name).await?;
    let (mut w, r) = tokio::io::duplex(256 * 1024);
    let d = &ctx.rack.deployer;
    let work = d.import_resource(name, Box::new(r));
    let input = &mut *ctx.stdin;
    let feed = async {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match input.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if w.write_all(&buf[..n]).await.is_err() {
                        break; // the import stopped reading (refused, failed)
                    }
                }
            }
        }
        let _ = w.shutdown().await;
    };
    let (result, ()) = tokio::join!(work, feed);
    result?;
    Ok(Output::message(format!("Imported the dump into {name}")))
}

async fn backup<R>(ctx: &Ctx<'_, R>, name: &str) -> Result<Output, CmdError> {
    let b = ctx.rack.deployer.backup_resource(name, "manual").await?;
    Ok(Output::raw("id", b.id))
}

async fn backups<R>(ctx: &Ctx<'_, R>, name: &str) -> Result<Output, CmdError> {
    let list = ctx.rack.deployer.resource_backups(name).await?;
    let items = list
        .into_iter()
        .rev()
        .map(
            |b| json!({ "id": b.id, "created": b.created, "bytes": b.bytes, "trigger": b.trigger }),
        )
        .collect();
    Ok(Output::list(
        &[
            ("ID", "id"),
            ("CREATED", "created"),
            ("BYTES", "bytes"),
            ("TRIGGER", "trigger"),
        ],
        items,
    ))
}

async fn restore<R>(ctx: &Ctx<'_, R>, name: &str, id: &str) -> Result<Output, CmdError> {
    ctx.rack.deployer.restore_resource(name, id).await?;
    Ok(Output::message(format!("Restored {name} from {id}")))
}

async fn destroy<R>(
    ctx: &Ctx<'_, R>,
    name: &str,
    confirm: Option<&str>,
) -> Result<Output, CmdError> {
    if confirm != Some(name) {
        return Err(CmdError::Usage(format!(
            "this removes {name}, its data and its backups: repeat with --confirm {name}"
        )));
    }
    ctx.rack.deployer.destroy_resource(name).await?;
    Ok(Output::message(format!("Destroyed {name}")))
}

// ---------------------------------------------------------------- commands

commands! {
    /// The `resources*` commands: admins only, reads included (a resource
    /// is every linked app's data).
    ResourcesCmd(ctx) {
        "resources" => List {}
            parse Args::nothing;
            access Access::Admin;
            run list(ctx);
        "resources:create" => Create { name: String, kind: Kind, version: Option<String> }
            parse parse_create; access Access::Admin;
            audit format!("resources:create {name} {kind}{}", super::with_space(version.as_deref()));
            run create(ctx, &name, kind, version.as_deref());
        "resources:info" => Info { name: String }
            parse just_name; access Access::Admin;
            run info(ctx, &name);
        "resources:url" => Url { name: String }
            parse just_name; access Access::Admin;
            // Not a change, but it hands out the password: recorded.
            audit format!("resources:url {name}");
            run url(ctx, &name);
        "resources:link" => Link { name: String, app: String, prefix: Option<String> }
            parse parse_link; access Access::Admin; app app;
            audit format!("resources:link {name} {app}{}", super::with_space(prefix.as_deref()));
            run link(ctx, &name, &app, prefix.as_deref());
        "resources:unlink" => Unlink { name: String, app: String }
            parse parse_name_app; access Access::Admin; app app;
            audit format!("resources:unlink {name} {app}");
            run unlink(ctx, &name, &app);
        "resources:console" => Console { name: String }
            parse just_name; access Access::Admin;
            audit format!("resources:console {name}");
            run console(ctx, &name);
        "resources:export" => Export { name: String }
            parse just_name; access Access::Admin;
            audit format!("resources:export {name}");
            run export(ctx, &name);
        "resources:import" => Import { name: String }
            parse just_name; access Access::Admin;
            audit format!("resources:import {name}");
            run import(ctx, &name);
        "resources:backup" => Backup { name: String }
            parse just_name; access Access::Admin;
            audit format!("resources:backup {name}");
            run backup(ctx, &name);
        "resources:backups" => Backups { name: String }
            parse just_name; access Access::Admin;
            run backups(ctx, &name);
        "resources:restore" => Restore { name: String, backup: String }
            parse parse_restore; access Access::Admin;
            audit format!("resources:restore {name} {}", printable(backup));
            run restore(ctx, &name, &backup);
        "resources:destroy" => Destroy { name: String, confirm: Option<String> }
            parse parse_destroy; access Access::Admin;
            audit format!("resources:destroy {name}");
            run destroy(ctx, &name, confirm.as_deref());
    }
}
