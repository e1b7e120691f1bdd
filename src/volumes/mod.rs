//! Persistent volumes: what an app's volume is (`Volume`), the rules its
//! name and mount path must follow, the `[volumes]` limits, and the one
//! check every tar that enters a volume passes (`archive.rs`).
//!
//! A volume belongs to one app. Users name it (`NAME`, the app-name rule)
//! and say where it is mounted (`--path`) and into which process types;
//! the runtime alone derives where the data lives from the rack, the app
//! and the name (a Docker volume locally, an EFS file system on aws), so no
//! setting can make an app mount another app's data.
//!
//! This module knows nothing of Docker, AWS or the store's backends.

pub mod archive;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::names::printable;

/// One volume of an app, as the store keeps it and `volumes --json` shows
/// it (its serde form is stored data: keep field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    /// Where it is mounted in the containers: absolute and normalised.
    pub path: String,
    /// The process types it is mounted into (one-offs, the release phase
    /// and timers get every volume of the app).
    pub types: Vec<String>,
    /// `--shared`: several instances may write at once. Otherwise a type
    /// with this volume runs at most one instance, rolled out stop-first.
    #[serde(default)]
    pub shared: bool,
    pub created_at: String,
}

impl Volume {
    /// Whether this volume makes `kind` a single-writer type.
    pub fn single_writer_for(&self, kind: &str) -> bool {
        !self.shared && self.types.iter().any(|t| t == kind)
    }
}

/// The process types of `volumes` that run at most one instance.
pub fn single_writer_types(volumes: &[Volume]) -> Vec<String> {
    let mut types: Vec<String> = volumes
        .iter()
        .filter(|v| !v.shared)
        .flat_map(|v| v.types.iter().cloned())
        .collect();
    types.sort();
    types.dedup();
    types
}

/// `[volumes]` of `rack.toml`.
#[derive(Debug, Clone)]
pub struct VolumeLimits {
    /// Volumes one app may have.
    pub max_per_app: usize,
    /// Largest tar `volumes:import` accepts (bytes read from stdin).
    pub max_import_bytes: u64,
}

impl Default for VolumeLimits {
    fn default() -> Self {
        VolumeLimits {
            max_per_app: 10,
            max_import_bytes: 10 * 1024 * 1024 * 1024,
        }
    }
}

impl VolumeLimits {
    pub fn from_file(f: &crate::config::VolumesFile) -> anyhow::Result<VolumeLimits> {
        let d = VolumeLimits::default();
        let l = VolumeLimits {
            max_per_app: f.max_per_app.unwrap_or(d.max_per_app),
            max_import_bytes: f.max_import_bytes.unwrap_or(d.max_import_bytes),
        };
        if l.max_per_app == 0 || l.max_per_app > 100 {
            anyhow::bail!("volumes.max_per_app: expected 1 to 100");
        }
        if l.max_import_bytes == 0 {
            anyhow::bail!("volumes.max_import_bytes must be at least 1");
        }
        Ok(l)
    }
}

/// Volume names: the app-name rule, `^[a-z][a-z0-9-]{0,29}$`, so that
/// `NS.APP.NAME` is unambiguous (neither part may hold a `.`).
pub fn validate_name(name: &str) -> Result<(), String> {
    crate::names::validate_app(name)
        .map_err(|_| format!("invalid volume name '{}': use 1-30 characters a-z, 0-9 and '-', starting with a letter", printable(name)))
}

/// Directories a volume may not be mounted on or under: the container's
/// system directories (mounting over them breaks the container or hides
/// what the kernel and the runtime put there).
const FORBIDDEN: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr",
    "/boot",
    "/run",
    "/var/run",
    "/var/lib/dpkg",
];

/// The longest mount path accepted.
const MAX_PATH: usize = 256;

/// Checks a `--path`: absolute, normalised (no `.`/`..`/empty components,
/// no trailing `/`), not `/` and not on or under a system directory,
/// printable ASCII without spaces, quotes or `:` (Docker's mount syntax
/// splits on it). Returns it unchanged when valid.
pub fn validate_path(path: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("invalid volume path '{}': {why}", printable(path)));
    if path.len() > MAX_PATH {
        return bad(&format!("at most {MAX_PATH} characters"));
    }
    if !path.starts_with('/') {
        return bad("it must be absolute, e.g. /data");
    }
    if path == "/" {
        return bad("a volume cannot be mounted on /");
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
    {
        return bad("use letters, digits, '/', '.', '_' and '-'");
    }
    let parts: Vec<&str> = path[1..].split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return bad("it must be normalised (no '.', '..', '//' or trailing '/')");
    }
    for f in FORBIDDEN {
        if path == *f || path.starts_with(&format!("{f}/")) {
            return bad(&format!("{f} belongs to the container's system"));
        }
    }
    Ok(path.to_string())
}

/// Whether one of the two mount paths contains the other (`/data` and
/// `/data/x`): two such volumes of one type would shadow each other.
pub fn paths_overlap(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
}
