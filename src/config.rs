//! Server settings: flags, environment variables and `DATA_DIR/rack.toml`,
//! resolved once at start-up into one `Settings` value.
//!
//! Precedence: flag, then env var (clap merges those two), then `rack.toml`,
//! then the built-in default. This module knows nothing about SSH or Docker;
//! it only says what the operator asked for.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// What the command line and environment said; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub http: Option<String>,
    pub domain: Option<String>,
    pub provider: Option<String>,
    pub rack: Option<String>,
    pub trusted_proxy: Option<String>,
    pub docker: Option<String>,
    /// The Prometheus endpoint's address (`--metrics`); none: off.
    pub metrics: Option<String>,
    /// Test-only: the hidden `rack server --test-pause-at` (`testhook`).
    pub test_pause_at: Option<String>,
}

/// `DATA_DIR/rack.toml`: every field optional.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub http: Option<String>,
    pub domain: Option<String>,
    pub provider: Option<String>,
    pub rack: Option<String>,
    pub trusted_proxy: Option<String>,
    pub docker: Option<String>,
    /// Address of the Prometheus endpoint (`/metrics`); off when absent.
    pub metrics: Option<String>,
    /// Prefix of the Docker containers and networks this rack owns (and the
    /// only ones it ever touches); racks sharing one engine need different
    /// ones. Default `rack`.
    pub namespace: Option<String>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub build: BuildFile,
    #[serde(default)]
    pub local: LocalFile,
    #[serde(default)]
    pub router: RouterFile,
    #[serde(default)]
    pub timers: TimersFile,
    #[serde(default)]
    pub volumes: VolumesFile,
    #[serde(default)]
    pub resources: ResourcesFile,
    /// Written by `rack install aws` (read by the aws provider).
    pub aws: Option<toml::Table>,
}

/// `[build]` in `rack.toml`.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildFile {
    /// Builds at once across the rack (default 2).
    pub max_concurrent: Option<usize>,
    /// Memory of a build, e.g. "2g" (at most 2g, the API's limit) or "unlimited".
    pub memory: Option<String>,
    /// CPUs a build may use, e.g. 1.5.
    pub cpus: Option<f64>,
    /// "bridge" (default) or "none".
    pub network: Option<String>,
    pub timeout_secs: Option<u64>,
    /// Largest build context in bytes, every path of a blob counted
    /// (default 2 GiB).
    pub max_context_bytes: Option<u64>,
    /// Build log kept per build in bytes (default 16 MiB); then a marker.
    pub max_log_bytes: Option<u64>,
    /// Buildpack base image overrides: `node = "node:20-slim"`, `go.RUN_IMAGE = "..."`.
    #[serde(default)]
    pub base_images: std::collections::HashMap<String, String>,
}

/// `[local]` in `rack.toml`: the local provider.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalFile {
    /// Release images kept per app: those of the newest N releases (and the
    /// newest build); older ones are removed after each deploy. Default 10.
    pub keep_releases: Option<usize>,
    /// Install the host firewall at start-up (iptables rules keeping the
    /// rack's containers from the metadata address and the host's own
    /// addresses but the router port). Default true.
    pub firewall: Option<bool>,
}

/// `[router]` in `rack.toml`: the HTTP side.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouterFile {
    /// Threads serving HTTP, each with its own single-threaded runtime;
    /// 0 (the default) is one per CPU.
    pub threads: Option<usize>,
    /// Requests held for an app while its single-writer web process is
    /// swapped (stop-first rollout); more get 503 at once. Default 1024.
    pub hold_max_requests: Option<usize>,
    /// How long a held request waits for the new instance before it gets
    /// 503 (default 30 s).
    pub hold_timeout_secs: Option<u64>,
}

/// `[volumes]` in `rack.toml`: bounds on persistent volumes.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VolumesFile {
    /// Volumes one app may have (default 10).
    pub max_per_app: Option<usize>,
    /// Largest tar `volumes:import` reads from stdin (default 10 GiB).
    pub max_import_bytes: Option<u64>,
}

/// `[timers]` in `rack.toml`: bounds on the scheduled jobs of `app.json`.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimersFile {
    /// Timers one app may declare (default 20).
    pub max_per_app: Option<usize>,
    /// Largest `app.json` a build accepts (default 65536 bytes).
    pub max_app_json_bytes: Option<usize>,
}

/// `[resources]` in `rack.toml`: the databases the rack runs for apps.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesFile {
    /// Largest dump `resources:import` takes (default 10 GiB).
    pub max_import_bytes: Option<u64>,
    /// Backups kept per resource; older ones are removed (default 7).
    pub backup_keep: Option<usize>,
    /// A daily automatic backup of every resource at this UTC time
    /// ("HH:MM"); none by default.
    pub backup_schedule: Option<String>,
    /// Images by type (`postgres`, `redis`); default the official ones.
    #[serde(default)]
    pub images: std::collections::HashMap<String, String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_connections: Option<usize>,
    pub preauth_timeout_secs: Option<u64>,
    pub max_auth_attempts: Option<usize>,
    pub max_command_bytes: Option<usize>,
    pub max_stdin_bytes: Option<usize>,
    pub shutdown_grace_secs: Option<u64>,
    pub max_pack_bytes: Option<u64>,
    /// Most bytes one app's repository may hold (default 10 GiB).
    pub max_repo_bytes: Option<u64>,
    pub max_object_bytes: Option<u64>,
    pub update_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Local,
    Aws,
}

/// Bounds on everything a hostile client can grow. Defaults are sized for
/// a small team's rack on one machine.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent SSH connections; beyond this new ones are refused at once
    /// rather than queued, so a flood cannot pin memory.
    pub max_connections: usize,
    /// Time from TCP accept to successful authentication.
    pub preauth_timeout: Duration,
    pub max_auth_attempts: usize,
    /// An exec request longer than this is refused (git's own exec strings
    /// are < 300 bytes; config:set lines with PEM keys should use --stdin).
    pub max_command_bytes: usize,
    /// `--stdin` values and `keys:add` input.
    pub max_stdin_bytes: usize,
    /// How long running sessions may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    pub max_pack_bytes: u64,
    pub max_repo_bytes: u64,
    pub max_object_bytes: u64,
    /// How long `rack update` waits for the new process to be ready (its
    /// migrations included) before it stops it and keeps the old one.
    pub update_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            preauth_timeout: Duration::from_secs(20),
            max_auth_attempts: 6,
            max_command_bytes: 64 * 1024,
            max_stdin_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            max_pack_bytes: 2 * 1024 * 1024 * 1024,
            max_repo_bytes: 10 * 1024 * 1024 * 1024,
            max_object_bytes: 100 * 1024 * 1024,
            update_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: String,
    pub http: String,
    pub domain: String,
    pub provider: Provider,
    pub rack: Option<String>,
    pub trusted_proxy: Option<String>,
    pub docker: Option<String>,
    /// The Prometheus endpoint (`--metrics`, `metrics` in `rack.toml`).
    pub metrics: Option<String>,
    pub limits: Limits,
    pub build: crate::build::BuildOptions,
    pub namespace: String,
    /// Images of the newest N releases of an app (and its newest build) are
    /// kept; `[local] keep_releases`, default 10.
    pub keep_releases: usize,
    /// `[local] firewall` (default true): see `crate::firewall`.
    pub firewall: bool,
    /// Router threads (`[router] threads`); 0 is one per CPU.
    pub router_threads: usize,
    /// `[timers]`: bounds on `app.json`'s scheduled jobs.
    pub timers: crate::timers::TimerLimits,
    /// `[volumes]`: bounds on persistent volumes.
    pub volumes: crate::volumes::VolumeLimits,
    /// `[router]`: how requests are held during a stop-first rollout.
    pub hold: crate::router::HoldLimits,
    /// `[resources]`: images, import limit, backups.
    pub resources: crate::resources::ResourceSettings,
    /// Test-only pause point of rollouts (`testhook`); never from
    /// `rack.toml`.
    pub test_pause_at: Option<String>,
}

pub const DEFAULT_KEEP_RELEASES: usize = 10;

pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("rack");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/share/rack")
}

impl Settings {
    /// Resolve settings; reads `rack.toml` from the data dir when present.
    pub fn resolve(o: Overrides) -> Result<Settings> {
        let data_dir = o.data_dir.clone().unwrap_or_else(default_data_dir);
        let file = read_file_config(&data_dir)?;
        let pick = |flag: Option<String>, file: Option<String>, default: &str| {
            flag.or(file).unwrap_or_else(|| default.to_string())
        };
        let provider = match pick(o.provider, file.provider.clone(), "local").as_str() {
            "local" => Provider::Local,
            "aws" => Provider::Aws,
            other => bail!("unknown provider '{other}': use local or aws"),
        };
        let d = Limits::default();
        let l = &file.limits;
        let limits = Limits {
            max_connections: l.max_connections.unwrap_or(d.max_connections),
            preauth_timeout: l
                .preauth_timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(d.preauth_timeout),
            max_auth_attempts: l.max_auth_attempts.unwrap_or(d.max_auth_attempts),
            max_command_bytes: l.max_command_bytes.unwrap_or(d.max_command_bytes),
            max_stdin_bytes: l.max_stdin_bytes.unwrap_or(d.max_stdin_bytes),
            shutdown_grace: l
                .shutdown_grace_secs
                .map(Duration::from_secs)
                .unwrap_or(d.shutdown_grace),
            max_pack_bytes: l.max_pack_bytes.unwrap_or(d.max_pack_bytes),
            max_repo_bytes: l.max_repo_bytes.unwrap_or(d.max_repo_bytes),
            max_object_bytes: l.max_object_bytes.unwrap_or(d.max_object_bytes),
            update_timeout: l
                .update_timeout_secs
                .map(|s| Duration::from_secs(s.max(1)))
                .unwrap_or(d.update_timeout),
        };
        let mut build = build_options(&file.build)?;
        let router_threads = file.router.threads.unwrap_or(0);
        if router_threads > 1024 {
            bail!("router.threads: expected 0 (one per CPU) to 1024");
        }
        let namespace = file.namespace.clone().unwrap_or_else(|| "rack".into());
        if namespace.is_empty()
            || namespace.len() > 20
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!("namespace: use 1-20 characters a-z, 0-9 and '-'");
        }
        let keep_releases = file.local.keep_releases.unwrap_or(DEFAULT_KEEP_RELEASES);
        if keep_releases == 0 {
            bail!("local.keep_releases must be at least 1");
        }
        build.namespace = namespace.clone();
        Ok(Settings {
            build,
            namespace,
            firewall: file.local.firewall.unwrap_or(true),
            keep_releases,
            listen: pick(o.listen, file.listen, "0.0.0.0:2222"),
            http: pick(o.http, file.http, "0.0.0.0:8080"),
            domain: pick(o.domain, file.domain, "localhost"),
            provider,
            rack: o.rack.or(file.rack),
            trusted_proxy: o.trusted_proxy.or(file.trusted_proxy),
            docker: o.docker.or(file.docker),
            metrics: o.metrics.or(file.metrics).filter(|m| !m.is_empty()),
            limits,
            data_dir,
            router_threads,
            timers: crate::timers::TimerLimits::from_file(&file.timers)?,
            volumes: crate::volumes::VolumeLimits::from_file(&file.volumes)?,
            hold: crate::router::HoldLimits::from_file(&file.router)?,
            resources: crate::resources::ResourceSettings::from_file(&file.resources)?,
            test_pause_at: o.test_pause_at,
        })
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("state.db")
    }
    pub fn host_key_path(&self) -> PathBuf {
        self.data_dir.join("ssh_host_ed25519_key")
    }
    pub fn master_key_path(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }
    pub fn repos_dir(&self) -> PathBuf {
        self.data_dir.join("repos")
    }
    /// Where `rack update` reaches the running server.
    pub fn control_socket_path(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// Port clients should use in hints (`ssh -p PORT ...`).
    pub fn ssh_port(&self) -> u16 {
        self.listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(2222)
    }

    /// Create the data dir and its subdirectories (owner-only).
    /// The app's bare repository.
    pub fn repo_path(&self, app: &str) -> PathBuf {
        self.repos_dir().join(format!("{app}.git"))
    }

    /// One build's log file.
    pub fn build_log_path(&self, app: &str, build_id: &str) -> PathBuf {
        self.logs_dir()
            .join("builds")
            .join(app)
            .join(format!("{build_id}.log"))
    }

    /// `ssh -p PORT git@HOST` as users should type it in hints.
    pub fn ssh_hint(&self) -> String {
        format!("ssh -p {} git@HOST", self.ssh_port())
    }

    /// The app's git remote as users should type it.
    pub fn git_url(&self, app: &str) -> String {
        format!("ssh://git@HOST:{}/{app}", self.ssh_port())
    }

    /// Where the router serves the app.
    pub fn web_url(&self, app: &str) -> String {
        let port = self
            .http
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(80);
        if port == 80 {
            format!("http://{app}.{}", self.domain)
        } else {
            format!("http://{app}.{}:{port}", self.domain)
        }
    }

    pub fn ensure_dirs(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for dir in [self.data_dir.clone(), self.repos_dir(), self.logs_dir()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }
}

fn build_options(b: &BuildFile) -> Result<crate::build::BuildOptions> {
    use crate::build::{BuildOptions, MAX_BUILD_MEMORY};
    let mut o = BuildOptions::default();
    if let Some(n) = b.max_concurrent {
        if n == 0 {
            bail!("build.max_concurrent must be at least 1");
        }
        o.max_concurrent_builds = n;
    }
    if let Some(m) = &b.memory {
        o.limits.memory_bytes = if m == "unlimited" {
            None
        } else {
            match crate::appsettings::parse_memory(m) {
                Some(v) if v as i64 <= MAX_BUILD_MEMORY && v >= 6 * 1024 * 1024 => Some(v as i64),
                _ => bail!("build.memory: expected a size from 6m to 2g, or \"unlimited\""),
            }
        };
    }
    if let Some(c) = b.cpus {
        if !(c > 0.0 && c <= 256.0) {
            bail!("build.cpus: expected a number of CPUs such as 1.5");
        }
        o.limits.cpu_period = Some(100_000);
        o.limits.cpu_quota = Some((c * 100_000.0) as i64);
    }
    if let Some(n) = &b.network {
        o.limits.network_mode = n
            .parse()
            .map_err(|e: String| anyhow::anyhow!("build.network: {e}"))?;
    }
    if let Some(t) = b.timeout_secs {
        o.limits.timeout = Duration::from_secs(t.max(1));
    }
    if let Some(n) = b.max_context_bytes {
        if n < 1024 {
            bail!("build.max_context_bytes: expected at least 1024");
        }
        o.max_context_bytes = n;
    }
    if let Some(n) = b.max_log_bytes {
        if n < 1024 {
            bail!("build.max_log_bytes: expected at least 1024");
        }
        o.max_log_bytes = n;
    }
    o.base_images = b.base_images.clone();
    Ok(o)
}

fn read_file_config(data_dir: &Path) -> Result<FileConfig> {
    let path = data_dir.join("rack.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests;
