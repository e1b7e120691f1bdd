//! `volumes*`: an app's persistent volumes (admin only). Creating and
//! destroying one is a new release (`Deployer::create_volume`,
//! `destroy_volume`); export streams a tar to stdout; import streams one
//! from stdin through `volumes::archive` into a temporary file under the
//! data dir, and only once all of it passed into the volume.

use serde_json::json;
use tokio::io::AsyncRead;

use super::{output::Output, CmdError, Ctx};
use super::{usage, usage_of, Access, Args};
use crate::deploy::NewVolume;
use crate::names::{printable, validate_process_type};
use crate::volumes::{validate_name, validate_path};

pub async fn list<R>(ctx: &Ctx<'_, R>, app: &str) -> Result<Output, CmdError> {
    ctx.store().app(app).await?;
    let volumes = ctx.store().volumes(app).await?;
    let names: Vec<String> = volumes.iter().map(|v| v.name.clone()).collect();
    let sizes = match ctx.runtime().await {
        Ok(rt) => rt.volume_sizes(app, &names).await.unwrap_or_default(),
        Err(_) => Default::default(),
    };
    let items = volumes
        .iter()
        .map(|v| {
            let size = sizes.get(&v.name).copied().flatten();
            json!({
                "name": v.name,
                "path": v.path,
                "types": v.types,
                "type_list": v.types.join(","),
                "shared": v.shared,
                "size_bytes": size,
                "size": size.map(human_size),
                "created_at": v.created_at,
            })
        })
        .collect();
    Ok(Output::list(
        &[
            ("NAME", "name"),
            ("PATH", "path"),
            ("TYPES", "type_list"),
            ("SHARED", "shared"),
            ("SIZE", "size"),
        ],
        items,
    ))
}

fn human_size(b: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub async fn create<R>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    name: &str,
    path: &str,
    types: &[String],
    shared: bool,
) -> Result<Output, CmdError> {
    let new = NewVolume {
        name: name.to_string(),
        path: path.to_string(),
        types: types.to_vec(),
        shared,
    };
    let actor = ctx.who.key_name.clone();
    let release = ctx
        .deploying(|d, p| async move { d.create_volume(app, new, &actor, &p).await })
        .await?;
    let text = match release {
        Some(v) => format!("Created volume {name} of {app} at {path}; v{v} mounts it"),
        None => format!("Created volume {name} of {app} at {path}; the first deploy mounts it"),
    };
    Ok(Output::done(
        text,
        json!({ "app": app, "volume": name, "path": path, "types": types, "shared": shared, "release": release }),
    ))
}

pub async fn destroy<R>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    name: &str,
    confirm: Option<&str>,
) -> Result<Output, CmdError> {
    if confirm != Some(name) {
        return Err(usage(format!(
            "this deletes the volume {name} of {app} and every file in it; confirm with: volumes:destroy {app} {name} --confirm {name}"
        )));
    }
    let actor = ctx.who.key_name.clone();
    let release = ctx
        .deploying(|d, p| async move { d.destroy_volume(app, name, &actor, &p).await })
        .await?;
    Ok(Output::done(
        format!("Destroyed volume {name} of {app}"),
        json!({ "app": app, "volume": name, "release": release }),
    ))
}

pub async fn export<R>(ctx: &mut Ctx<'_, R>, app: &str, name: &str) -> Result<Output, CmdError> {
    ctx.rack.deployer.volume(app, name).await?;
    let runtime = ctx.runtime().await?;
    runtime
        .export_volume(app, name, &mut *ctx.stdout)
        .await
        .map_err(|e| CmdError::Failed(e.to_string()))?;
    Ok(Output::streamed(0))
}

pub async fn import<R: AsyncRead + Unpin>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    name: &str,
) -> Result<Output, CmdError> {
    // Refused before reading a byte when the volume does not exist.
    ctx.rack.deployer.volume(app, name).await?;
    let settings = &ctx.rack.settings;
    let limit = settings.volumes.max_import_bytes;
    let dir = settings.data_dir.join("tmp");
    std::fs::create_dir_all(&dir)
        .map_err(|e| CmdError::Failed(format!("creating {}: {e}", dir.display())))?;
    // Removed when dropped, whatever happens; a crash leaves it in
    // DATA_DIR/tmp, which start-up empties.
    let staged = tempfile::NamedTempFile::new_in(&dir)
        .map_err(|e| CmdError::Failed(format!("staging the tar: {e}")))?;
    let file = staged
        .reopen()
        .map_err(|e| CmdError::Failed(format!("staging the tar: {e}")))?;
    let sum = crate::volumes::archive::sanitize_stream(&mut *ctx.stdin, limit, file)
        .await
        .map_err(|e| CmdError::Failed(e.to_string()))?;
    let reader = tokio::fs::File::open(staged.path())
        .await
        .map_err(|e| CmdError::Failed(format!("reading the staged tar: {e}")))?;
    ctx.deploying(|d, p| async move { d.import_volume(app, name, Box::new(reader), &p).await })
        .await?;
    Ok(Output::done(
        format!(
            "Imported {} files, {} directories and {} links ({} bytes) into {name} of {app}",
            sum.files, sum.dirs, sum.links, sum.bytes
        ),
        json!({ "app": app, "volume": name, "files": sum.files, "dirs": sum.dirs, "links": sum.links, "bytes": sum.bytes }),
    ))
}

// ---------------------------------------------------------------- parsing

/// `volumes:create APP NAME --path P [--type T]... [--shared]`.
fn parse_create(
    a: &mut Args,
    cmd: &str,
) -> Result<(String, String, String, Vec<String>, bool), CmdError> {
    let app = a.app(cmd)?;
    let name = a.word(cmd)?;
    validate_name(&name).map_err(CmdError::Usage)?;
    let (mut path, mut types, mut shared) = (None, Vec::new(), false);
    let rest = a.rest();
    let mut it = rest.into_iter();
    while let Some(w) = it.next() {
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (w.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| usage(format!("{flag} needs {what}; usage: {}", usage_of(cmd))))
        };
        match flag.as_str() {
            "--path" => path = Some(value("a path")?),
            "--type" => types.extend(value("a process type")?.split(',').map(str::to_string)),
            "--shared" if inline.is_none() => shared = true,
            _ => {
                return Err(usage(format!(
                    "unexpected argument '{}'; usage: {}",
                    printable(&w),
                    usage_of(cmd)
                )))
            }
        }
    }
    let path =
        path.ok_or_else(|| usage(format!("--path is required; usage: {}", usage_of(cmd))))?;
    let path = validate_path(&path).map_err(CmdError::Usage)?;
    if types.is_empty() {
        types.push("web".into());
    }
    for t in &types {
        validate_process_type(t).map_err(CmdError::Usage)?;
        if t == "release" || t == "run" || t == "timer" {
            return Err(usage(format!(
                "'{t}' is not a process type: one-offs, the release phase and timers get every volume of the app"
            )));
        }
    }
    types.sort();
    types.dedup();
    if types.len() > 20 {
        return Err(usage("at most 20 process types per volume"));
    }
    Ok((app, name, path, types, shared))
}

/// `CMD APP NAME` with a valid volume name.
fn app_volume(a: &mut Args, cmd: &str) -> Result<(String, String), CmdError> {
    let (app, name) = a.app_word(cmd)?;
    validate_name(&name).map_err(CmdError::Usage)?;
    Ok((app, name))
}

/// `volumes:destroy APP NAME [--confirm NAME]`.
fn parse_destroy(a: &mut Args, cmd: &str) -> Result<(String, String, Option<String>), CmdError> {
    let app = a.app(cmd)?;
    let name = a.word(cmd)?;
    validate_name(&name).map_err(CmdError::Usage)?;
    let confirm = a.option_only("--confirm", "--confirm needs the volume name")?;
    Ok((app, name, confirm))
}

// ---------------------------------------------------------------- commands

commands! {
    /// The `volumes*` commands (admin only).
    VolumesCmd(ctx) {
        "volumes" => List { app: String }
            parse Args::just_app; access Access::Admin; app app;
            run list(ctx, &app);
        "volumes:create" => Create { app: String, name: String, path: String, types: Vec<String>, shared: bool }
            parse parse_create; access Access::Admin; app app;
            audit format!("volumes:create {app} {name} --path {path} --type {}{}", types.join(","), if *shared { " --shared" } else { "" });
            run create(ctx, &app, &name, &path, &types, shared);
        "volumes:destroy" => Destroy { app: String, name: String, confirm: Option<String> }
            parse parse_destroy; access Access::Admin; app app;
            audit format!("volumes:destroy {app} {name}");
            run destroy(ctx, &app, &name, confirm.as_deref());
        "volumes:export" => Export { app: String, name: String }
            parse app_volume; access Access::Admin; app app;
            audit format!("volumes:export {app} {name}");
            run export(ctx, &app, &name);
        "volumes:import" => Import { app: String, name: String }
            parse app_volume; access Access::Admin; app app;
            audit format!("volumes:import {app} {name}");
            run import(ctx, &app, &name);
    }
}
