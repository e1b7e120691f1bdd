//! `builds*` and `apps:deploy`.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::group::read;
use super::{output::Output, CmdError, Ctx};
use super::{usage, Args};
use crate::store::{BuildRecord, BuildStatus};

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
        let running = ctx.store().build(app, build).await?.status == BuildStatus::Running;
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
                // Lines quoting a Dockerfile or its output, for a terminal.
                let safe = crate::names::escape_control_bytes(&buf[..n]);
                ctx.stdout.write_all(&safe).await.map_err(io_err)?;
            }
            ctx.stdout.flush().await.map_err(io_err)?;
        }
        if !follow || !running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(Output::done(
        String::new(),
        json!({ "app": app, "build": build }),
    ))
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
    Ok(Output::done(
        format!(
            "Deployed {app} v{} (build {}) from {}",
            d.release.version, d.build.id, d.reference
        ),
        json!({ "build": build_json(&d.build), "release": d.release.version }),
    ))
}

fn io_err(e: std::io::Error) -> CmdError {
    CmdError::Failed(format!("reading the build log: {e}"))
}

// ---------------------------------------------------------------- commands

commands! {
    /// The `builds*` commands (read-only; `apps:deploy` is in the apps group).
    BuildsCmd(ctx) {
        "builds" => List { app: String }
            parse Args::just_app; access read(app); app app;
            run list(ctx, &app);
        "builds:info" => Info { app: String, build: String }
            parse Args::app_word; access read(app); app app;
            run info(ctx, &app, &build);
        "builds:logs" => Logs { app: String, build: String, follow: bool }
            parse parse_logs; access read(app); app app;
            run logs(ctx, &app, &build, follow);
    }
}

/// `builds:logs APP BUILD [-f]`.
fn parse_logs(a: &mut Args, cmd: &str) -> Result<(String, String, bool), CmdError> {
    let app = a.app(cmd)?;
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
    Ok((app, build, follow))
}
