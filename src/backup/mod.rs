//! `rack backup` and `rack restore` on the rack's machine (local
//! provider): the data dir as one tar stream, safe while the server runs.
//!
//! What goes in: `rack-backup.json` first (format, rack version, schema
//! version, whether the master key is in), `state.db` as a consistent
//! snapshot (SQLite's online backup API, one read transaction; never a
//! file copy), each app's repo (`repos/APP.git`) as a consistent snapshot
//! (its refs, then its objects, hard-linked into a staging dir and checked
//! for connectivity before they are streamed; a repack racing the snapshot
//! makes it start over), the host key, the sealed config in the database,
//! the build logs, `rack.toml`, and whatever else the data dir holds (e.g.
//! certificates). The master key only with `--include-master-key`.
//! Sockets, SQLite's `-wal`/`-shm` and staging dirs stay out.
//!
//! Restore (`restore.rs`) unpacks into an empty data dir only, refusing
//! hostile entries, and checks that the master key opens the config.
//!
//! Does not know: the server, SSH or the router.

pub mod restore;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Settings;

/// The manifest's name, the tar's first entry.
pub const MANIFEST: &str = "rack-backup.json";

/// The backup format this binary writes and reads.
const FORMAT: u32 = 1;

/// Attempts at a consistent snapshot of one repo before giving up.
const SNAPSHOT_ATTEMPTS: usize = 5;

/// The first entry of a backup.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub rack_version: String,
    pub schema_version: i64,
    pub created_at: String,
    pub master_key_included: bool,
    /// `local` (the data dir) or `aws` (the bucket's current objects, under
    /// `bucket/`).
    #[serde(default = "local")]
    pub provider: String,
}

fn local() -> String {
    "local".into()
}

impl Manifest {
    /// The manifest of a backup written now.
    pub fn now(provider: &str, schema_version: i64, master_key_included: bool) -> Manifest {
        Manifest {
            format: FORMAT,
            rack_version: crate::version(),
            schema_version,
            created_at: crate::store::now_rfc3339(),
            master_key_included,
            provider: provider.into(),
        }
    }
}

/// Names in the data dir that are never backed up: live files of the
/// server and this module's own staging.
fn skipped(name: &str) -> bool {
    name == "control.sock"
        || name == "master.key"
        || name.starts_with("state.db")
        || name.starts_with(".backup-")
        || name.starts_with(".restore-")
}

/// Writes the backup of `settings`' data dir to `out` as a tar stream.
pub fn backup(settings: &Settings, include_master_key: bool, out: impl Write) -> Result<()> {
    let data = &settings.data_dir;
    if !settings.db_path().exists() {
        bail!("no rack state in {} (is --data-dir right?)", data.display());
    }
    let staging = Staging::new(data)?;
    let db = staging.path.join("state.db");
    let schema_version = crate::store::SqliteStore::snapshot(&settings.db_path(), &db)?;
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let manifest = Manifest::now("local", schema_version, include_master_key);
    let json = serde_json::to_vec_pretty(&manifest)?;
    append_bytes(&mut tar, MANIFEST, &json)?;
    tar.append_path_with_name(&db, "state.db")
        .context("writing state.db")?;
    std::fs::remove_file(&db)?;
    if include_master_key {
        tar.append_path_with_name(settings.master_key_path(), "master.key")
            .context("writing master.key")?;
    }
    for entry in sorted_dir(data)? {
        let name = entry
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if skipped(&name) {
            continue;
        }
        if name == "repos" && entry.is_dir() {
            for repo in sorted_dir(&entry)? {
                let rel = format!(
                    "repos/{}",
                    repo.file_name().unwrap_or_default().to_string_lossy()
                );
                let snap = snapshot_repo(&repo, &staging.path)?;
                append_tree(&mut tar, &snap, &rel)?;
                std::fs::remove_dir_all(&snap)?;
            }
            continue;
        }
        append_tree(&mut tar, &entry, &name)?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// A staging dir in the data dir (same file system: hard links work),
/// removed when dropped.
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn new(data: &Path) -> Result<Staging> {
        let path = data.join(format!(".backup-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Staging { path })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    v.sort();
    Ok(v)
}

/// One regular file entry, mode 0600.
pub fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, bytes)?;
    Ok(())
}

/// Regular files and directories under `path` as `name/...`; anything
/// else (sockets, links) is left out.
fn append_tree<W: Write>(tar: &mut tar::Builder<W>, path: &Path, name: &str) -> Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_file() {
        tar.append_path_with_name(path, name)
            .with_context(|| format!("writing {name}"))?;
    } else if meta.is_dir() {
        tar.append_dir(name, path)?;
        for child in sorted_dir(path)? {
            let child_name = format!(
                "{name}/{}",
                child.file_name().unwrap_or_default().to_string_lossy()
            );
            append_tree(tar, &child, &child_name)?;
        }
    }
    Ok(())
}

/// A consistent copy of a bare repo, hard-linked under `staging`: its refs
/// first, then its loose objects, then its packs (git writes new objects
/// before it moves a ref, and a repack writes its pack before it deletes
/// what it packed), checked for connectivity; a repack racing the copy
/// makes it start over.
fn snapshot_repo(repo: &Path, staging: &Path) -> Result<PathBuf> {
    let name = repo.file_name().unwrap_or_default();
    let snap = staging.join(name);
    let mut last = None;
    for _ in 0..SNAPSHOT_ATTEMPTS {
        if snap.exists() {
            std::fs::remove_dir_all(&snap)?;
        }
        let copied = (|| {
            link_tree(repo, &snap, &|rel| !rel.starts_with("objects"))?;
            link_tree(&repo.join("objects"), &snap.join("objects"), &|rel| {
                !rel.starts_with("pack")
            })?;
            link_tree(
                &repo.join("objects/pack"),
                &snap.join("objects/pack"),
                &|_| true,
            )?;
            check_connected(&snap)
        })();
        match copied {
            Ok(()) => return Ok(snap),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one attempt")).with_context(|| {
        format!(
            "taking a consistent copy of {} (it kept changing)",
            repo.display()
        )
    })
}

/// Hard-links the regular files under `from` (whose path relative to
/// `from` passes `keep`) into `to`, creating directories.
fn link_tree(from: &Path, to: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<()> {
    fn walk(root: &Path, dir: &Path, to: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<()> {
        std::fs::create_dir_all(to.join(dir.strip_prefix(root)?))?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let rel = path.strip_prefix(root)?.to_path_buf();
            if !keep(&rel) {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(root, &path, to, keep)?;
            } else if kind.is_file() {
                match std::fs::hard_link(&path, to.join(&rel)) {
                    Ok(()) => {}
                    // Gone since the listing (a lock file, a repacked pack):
                    // the connectivity check decides whether it mattered.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
    if !from.exists() {
        return Ok(());
    }
    walk(from, from, to, keep)
}

/// Every object reachable from the snapshot's refs is in it.
fn check_connected(repo: &Path) -> Result<()> {
    let r = git2::Repository::open_bare(repo)?;
    let mut walk = r.revwalk()?;
    for reference in r.references()? {
        let reference = reference?;
        if let Ok(commit) = reference.peel_to_commit() {
            walk.push(commit.id())?;
        }
    }
    let odb = r.odb()?;
    // Trees and blobs shared between commits are checked once.
    let mut seen = std::collections::HashSet::new();
    for id in walk {
        let commit = r.find_commit(id?)?;
        let mut missing = None;
        commit.tree()?.walk(git2::TreeWalkMode::PreOrder, |_, e| {
            if !seen.insert(e.id()) {
                return git2::TreeWalkResult::Skip;
            }
            if !odb.exists(e.id()) {
                missing = Some(e.id());
                return git2::TreeWalkResult::Abort;
            }
            git2::TreeWalkResult::Ok
        })?;
        if let Some(m) = missing {
            bail!("object {m} is missing");
        }
    }
    Ok(())
}
