//! `rack restore`: a backup's tar stream into an empty data dir.
//!
//! Unpacks into a staging dir beside the target, then renames it into
//! place, so a refused or failed restore leaves nothing behind. Refused:
//! an entry that is not a regular file or a directory (links of any
//! kind), a path that is absolute or has `..` (or any component but a
//! plain name), a stream without the manifest first, a format or schema
//! this binary does not know, and a master key that does not open the
//! config. Streamed: entries go straight to their files.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::{Manifest, FORMAT, MANIFEST};
use crate::config::Settings;
use crate::release::config::Configs;
use crate::release::crypto::MasterKey;
use crate::store::Store;

/// What a restore found, for the operator.
pub struct Restored {
    pub apps: usize,
    /// `APP vN (image rack/APP:BUILD)` of current releases whose image the
    /// engine does not have.
    pub missing_images: Vec<String>,
    /// Set when the engine could not be asked.
    pub engine_error: Option<String>,
}

/// Restores the backup read from `input` into `settings.data_dir`, which
/// must be empty or absent. `master_key`: the key file to use when the
/// backup has none.
pub async fn restore(
    settings: &Settings,
    input: impl Read,
    master_key: Option<&Path>,
) -> Result<Restored> {
    let target = settings.data_dir.clone();
    if target.exists()
        && std::fs::read_dir(&target)
            .with_context(|| format!("reading {}", target.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: restore into a new (or empty) data dir",
            target.display()
        );
    }
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)?;
    let staging = parent.join(format!(
        ".restore-{}-{}",
        target.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    let result = async {
        let manifest = unpack(input, &staging)?;
        let key_path = staging.join("master.key");
        match (manifest.master_key_included, master_key) {
            (true, Some(_)) => bail!("the backup includes the master key: leave out --master-key"),
            (true, None) => {}
            (false, Some(k)) => {
                let bytes = std::fs::read(k).with_context(|| format!("reading {}", k.display()))?;
                if !crate::secret_file::create_new(&key_path, &bytes)? {
                    bail!("the backup holds a master.key it did not declare");
                }
            }
            (false, None) => bail!(
                "the backup does not include the master key: pass --master-key FILE (the rack's \
                 DATA_DIR/master.key), or back up with --include-master-key"
            ),
        }
        verify(&staging).await
    }
    .await;
    let counts = match result {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if target.exists() {
        std::fs::remove_dir(&target)?;
    }
    std::fs::rename(&staging, &target)
        .with_context(|| format!("moving the restored state to {}", target.display()))?;
    let (missing_images, engine_error) = match missing_images(settings, &counts.1).await {
        Ok(m) => (m, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    Ok(Restored {
        apps: counts.0,
        missing_images,
        engine_error,
    })
}

/// Extracts the stream under `dir`, refusing hostile entries.
fn unpack(input: impl Read, dir: &Path) -> Result<Manifest> {
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    let mut archive = tar::Archive::new(input);
    let mut manifest: Option<Manifest> = None;
    for entry in archive.entries().context("reading the backup")? {
        let mut entry = entry.context("reading the backup")?;
        let path = entry.path().context("an entry's path")?.into_owned();
        let shown = crate::names::printable(&path.to_string_lossy());
        let rel = safe_path(&path).with_context(|| format!("refused entry {shown:?}"))?;
        if manifest.is_none() {
            if rel != Path::new(MANIFEST) {
                bail!("not a rack backup: it does not start with {MANIFEST}");
            }
            let mut text = String::new();
            (&mut entry).take(64 * 1024).read_to_string(&mut text)?;
            let m: Manifest = serde_json::from_str(&text).context("reading the manifest")?;
            if m.provider != "local" {
                bail!(
                    "a backup of an {} rack (its bucket's objects): restore it into the bucket, not a data dir",
                    crate::names::printable(&m.provider)
                );
            }
            if m.format != FORMAT {
                bail!(
                    "backup format {} is not one this rack reads ({FORMAT})",
                    m.format
                );
            }
            manifest = Some(m);
            continue;
        }
        let out = dir.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&out)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = out.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(p)?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&out)
                    .with_context(|| format!("refused entry {shown:?}: it is there twice"))?;
                std::io::copy(&mut entry, &mut f).with_context(|| format!("writing {shown}"))?;
            }
            other => {
                bail!("refused entry {shown:?}: a {other:?} entry (only files and directories)")
            }
        }
    }
    manifest.ok_or_else(|| anyhow::anyhow!("not a rack backup: the stream is empty"))
}

/// `path` if it is relative and made of plain names only.
fn safe_path(path: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => bail!("only relative paths of plain names are accepted"),
        }
    }
    if out.as_os_str().is_empty() {
        bail!("an empty path");
    }
    Ok(out)
}

/// The restored state opens: schema known, master key opens every app's
/// config. Returns the number of apps and their current images.
async fn verify(dir: &Path) -> Result<(usize, Vec<(String, i64, String)>)> {
    let store: Arc<dyn Store> = Arc::new(
        crate::store::SqliteStore::open(&dir.join("state.db"))
            .context("opening the restored state")?,
    );
    let key = MasterKey::load_or_create(&dir.join("master.key"))?;
    let configs = Configs::new(store.clone(), key);
    let apps = store.list_apps().await?;
    let mut current = Vec::new();
    for app in &apps {
        configs.current(&app.name).await.map_err(|e| {
            anyhow::anyhow!(
                "the master key does not open the config of {} ({e}): wrong --master-key?",
                app.name
            )
        })?;
        let state = store.app_state(&app.name).await?;
        if let Some(v) = state.current_release {
            let release = store.release(&app.name, v).await?;
            current.push((app.name.clone(), v, release.build_id));
        }
    }
    Ok((apps.len(), current))
}

/// The current releases whose image the engine does not have.
async fn missing_images(
    settings: &Settings,
    current: &[(String, i64, String)],
) -> Result<Vec<String>, String> {
    if current.is_empty() {
        return Ok(Vec::new());
    }
    let docker = crate::build::connect_docker(settings.docker.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let mut missing = Vec::new();
    for (app, v, build) in current {
        let tag = crate::images::image_tag(app, build);
        if docker.inspect_image(&tag).await.is_err() {
            missing.push(format!("{app} v{v} (image {tag})"));
        }
    }
    Ok(missing)
}
