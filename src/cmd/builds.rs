//! `builds*` and `apps:deploy`.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{output::Output, CmdError, Ctx};
use super::{usage, Access, Args};
use crate::store::BuildRecord;

fn build_json(b: &BuildRecord) -> serde_json::Value {
    json!({
        "id": b.id,
        "app": b.app,
        "commit": b.commit,
        "status": b.status,
        "kind": b.kind,
        "push_options": b.push_options,
        "created_by": b.created_by,
        "created_at": b.created_at,
        "finished_at": b.finished_at,
        "duration_ms": b.duration_ms,
        "context_bytes": b.context_bytes,
        "image_id": b.image_id,
        "error": b.error,
    })
}

pub async fn list<R>(ctx: &Ctx<'_, R>, app: &str) -> Result<Output, CmdError> {
    ctx.store().app(app).await?;
    let items = ctx
        .store()
        .builds(app, 50)
        .await?
        .iter()
        .map(build_json)
        .collect();
    Ok(Output::list(
        &[
            ("BUILD", "id"),
            ("STATUS", "status"),
            ("COMMIT", "commit"),
            ("KIND", "kind"),
            ("CREATED", "created_at"),
        ],
        items,
    ))
}

pub async fn info<R>(ctx: &Ctx<'_, R>, app: &str, build: &str) -> Result<Output, CmdError> {
    let b = ctx.store().build(app, build).await?;
    Ok(Output::info(
        &format!("{app} build {build}"),
        build_json(&b),
    ))
}

/// Prints the build's log; with `follow`, keeps printing until the build
/// ends.
pub async fn logs<R>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    build: &str,
    follow: bool,
) -> Result<Output, CmdError> {
    ctx.store().build(app, build).await?;
    let path = ctx.rack.build_log_path(app, build);
    let mut pos = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Read status before the file so the last lines are never missed.
        let running = ctx.store().build(app, build).await?.status == "running";
        if let Ok(mut f) = tokio::fs::File::open(&path).await {
            f.seek(std::io::SeekFrom::Start(pos))
                .await
                .map_err(io_err)?;
            loop {
                let n = f.read(&mut buf).await.map_err(io_err)?;
                if n == 0 {
                    break;
                }
                pos += n as u64;
                ctx.stdout.write_all(&buf[..n]).await.map_err(io_err)?;
            }
            ctx.stdout.flush().await.map_err(io_err)?;
        }
        if !follow || !running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut out = Output::message(String::new());
    out.json = json!({ "app": app, "build": build });
    Ok(out)
}

/// `apps:deploy APP [REF]`: builds a commit already in the repo.
pub async fn deploy<R>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    reference: Option<&str>,
    no_cache: bool,
) -> Result<Output, CmdError> {
    let actor = ctx.who.key_name.as_str();
    let d = ctx
        .deploying(|d, p| async move { d.deploy(app, reference, no_cache, actor, &p).await })
        .await?;
    let mut out = Output::message(format!(
        "Deployed {app} v{} (build {}) from {}",
        d.release.version, d.build.id, d.reference
    ));
    out.json = json!({ "build": build_json(&d.build), "release": d.release.version });
    Ok(out)
}

fn io_err(e: std::io::Error) -> CmdError {
    CmdError::Failed(format!("reading the build log: {e}"))
}

// ---------------------------------------------------------------- commands

/// The `builds*` commands (read-only; `apps:deploy` is in the apps group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildsCmd {
    List {
        app: String,
    },
    Info {
        app: String,
        build: String,
    },
    Logs {
        app: String,
        build: String,
        follow: bool,
    },
}

impl BuildsCmd {
    /// `None` when `name` is not a `builds*` command.
    pub(super) fn parse(name: &str, a: &mut Args) -> Result<Option<BuildsCmd>, CmdError> {
        Ok(Some(match name {
            "builds" => BuildsCmd::List {
                app: a.only_app(name)?,
            },
            "builds:info" => {
                let (app, build) = a.app_word(name)?;
                BuildsCmd::Info { app, build }
            }
            "builds:logs" => {
                let app = a.app(name)?;
                let mut build = None;
                let mut follow = false;
                for w in a.rest() {
                    match w.as_str() {
                        "-f" | "--follow" => follow = true,
                        _ if build.is_none() && !w.starts_with('-') => build = Some(w),
                        _ => {
                            return Err(usage(format!(
                                "unexpected argument '{}'",
                                crate::names::printable(&w)
                            )))
                        }
                    }
                }
                let build = build.ok_or_else(|| usage("usage: builds:logs APP BUILD [-f]"))?;
                BuildsCmd::Logs { app, build, follow }
            }
            _ => return Ok(None),
        }))
    }

    /// Exhaustive: a new command must say who may run it.
    pub(super) fn access(&self) -> Access {
        match self {
            BuildsCmd::List { app } | BuildsCmd::Info { app, .. } | BuildsCmd::Logs { app, .. } => {
                Access::Read(app.clone())
            }
        }
    }

    pub(super) fn app(&self) -> Option<&str> {
        match self {
            BuildsCmd::List { app } | BuildsCmd::Info { app, .. } | BuildsCmd::Logs { app, .. } => {
                Some(app)
            }
        }
    }

    pub(super) async fn execute<R>(self, ctx: &mut Ctx<'_, R>) -> Result<Output, CmdError> {
        match self {
            BuildsCmd::List { app } => list(ctx, &app).await,
            BuildsCmd::Info { app, build } => info(ctx, &app, &build).await,
            BuildsCmd::Logs { app, build, follow } => logs(ctx, &app, &build, follow).await,
        }
    }
}
