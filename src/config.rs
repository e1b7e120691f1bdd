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
    pub https: Option<String>,
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
    /// The router's HTTPS listener (none by default).
    pub https: Option<String>,
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
    pub acme: AcmeFile,
    #[serde(default)]
    pub containers: ContainersFile,
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
    /// Connections one client address may hold open (default 256); a
    /// trusted proxy's are not counted.
    pub max_connections_per_ip: Option<usize>,
    /// Seconds a client gets to send a request's headers (default 5).
    pub header_timeout_secs: Option<u64>,
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

/// `[acme]` in `rack.toml`: automatic certificates (RFC 8555).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeFile {
    /// Issue certificates automatically (default true when the rack has an
    /// HTTPS listener).
    pub enabled: Option<bool>,
    /// The ACME directory URL (default: Let's Encrypt's production one).
    pub directory: Option<String>,
    /// Contact address given to the ACME server.
    pub email: Option<String>,
    /// PEM file with the root the ACME server's own HTTPS is trusted by
    /// (a private ACME server); default: the system's roots.
    pub ca_bundle: Option<PathBuf>,
    /// Fraction of a certificate's lifetime after which it is renewed
    /// (default 0.6667: two thirds).
    pub renew_after: Option<f64>,
    /// First retry delay after a failed order, doubled per failure up to a
    /// day (default 60).
    pub retry_secs: Option<u64>,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// `[acme]` resolved.
#[derive(Debug, Clone)]
pub struct Acme {
    pub enabled: bool,
    pub directory: String,
    pub email: Option<String>,
    pub ca_bundle: Option<PathBuf>,
    pub renew_after: f64,
    pub retry: Duration,
}

impl Acme {
    fn resolve(f: &AcmeFile, https: bool) -> Result<Acme> {
        let renew_after = f.renew_after.unwrap_or(2.0 / 3.0);
        if !(0.0..1.0).contains(&renew_after) {
            bail!("acme.renew_after: expected a fraction of the lifetime, 0 to below 1");
        }
        let directory = f.directory.clone().unwrap_or_else(|| LETS_ENCRYPT.into());
        if !directory.starts_with("https://") {
            bail!("acme.directory: expected an https:// URL");
        }
        if let Some(e) = &f.email {
            if !e.contains('@') || e.len() > 254 || e.chars().any(|c| c.is_whitespace()) {
                bail!("acme.email: expected an email address");
            }
        }
        Ok(Acme {
            enabled: f.enabled.unwrap_or(https),
            directory,
            email: f.email.clone(),
            ca_bundle: f.ca_bundle.clone(),
            renew_after,
            retry: Duration::from_secs(f.retry_secs.unwrap_or(60).max(1)),
        })
    }
}

/// `[containers]` in `rack.toml`: what every app, release-phase, one-off
/// and timer container gets when the app sets no `resources.*` of its own.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContainersFile {
    /// Memory, e.g. "1g" (the default), or "unlimited".
    pub memory: Option<String>,
    /// CPUs, e.g. 2 (the default); 0 is unlimited.
    pub cpus: Option<f64>,
    /// Processes and threads per container (default 4096).
    pub pids: Option<i64>,
}

/// The rack-wide default limits of containers (`[containers]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerLimits {
    pub memory_bytes: Option<i64>,
    /// CPUs × 1e9 (Docker's NanoCpus).
    pub nano_cpus: Option<i64>,
    pub pids: Option<i64>,
}

impl Default for ContainerLimits {
    fn default() -> Self {
        ContainerLimits {
            memory_bytes: Some(1 << 30),
            nano_cpus: Some(2_000_000_000),
            pids: Some(4096),
        }
    }
}

impl ContainerLimits {
    fn from_file(f: &ContainersFile) -> Result<ContainerLimits> {
        let mut l = ContainerLimits::default();
        if let Some(m) = &f.memory {
            l.memory_bytes = if m == "unlimited" {
                None
            } else {
                match crate::appsettings::parse_memory(m) {
                    Some(v) if v >= 6 * 1024 * 1024 => Some(v as i64),
                    _ => {
                        bail!("containers.memory: expected a size of at least 6m, or \"unlimited\"")
                    }
                }
            };
        }
        if let Some(c) = f.cpus {
            if !(0.0..=256.0).contains(&c) {
                bail!("containers.cpus: expected a number of CPUs such as 1.5 (0: unlimited)");
            }
            l.nano_cpus = (c > 0.0).then_some((c * 1e9) as i64);
        }
        if let Some(p) = f.pids {
            if p < 16 {
                bail!("containers.pids: expected at least 16");
            }
            l.pids = Some(p);
        }
        Ok(l)
    }
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
    pub max_pack_objects: Option<u32>,
    pub max_ref_bytes: Option<usize>,
    pub max_push_commands_bytes: Option<usize>,
    pub max_sessions_per_connection: Option<usize>,
    pub max_sessions_per_key: Option<usize>,
    pub max_preauth_per_ip: Option<usize>,
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
    /// Objects in one pushed pack.
    pub max_pack_objects: u32,
    /// Length of a pushed ref name.
    pub max_ref_bytes: usize,
    /// All the ref updates of one push together, read before anything is
    /// checked against the repo.
    pub max_push_commands_bytes: usize,
    /// Channels one SSH connection may have open (running or not).
    pub max_sessions_per_connection: usize,
    /// Commands, pushes and fetches one key may run at once, across all
    /// its connections.
    pub max_sessions_per_key: usize,
    /// Connections one address may have open before they authenticate
    /// (all unauthenticated ones together: three quarters of
    /// `max_connections`).
    pub max_preauth_per_ip: usize,
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
            max_pack_objects: 1_000_000,
            max_ref_bytes: 1024,
            max_push_commands_bytes: 1024 * 1024,
            max_sessions_per_connection: 8,
            max_sessions_per_key: 16,
            max_preauth_per_ip: 8,
            update_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: String,
    pub http: String,
    /// The router's HTTPS listener, if any.
    pub https: Option<String>,
    /// `[acme]`: automatic certificates.
    pub acme: Acme,
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
    /// `[router]`'s bounds on slow and many clients.
    pub router_limits: crate::router::RouterLimits,
    /// `[timers]`: bounds on `app.json`'s scheduled jobs.
    pub timers: crate::timers::TimerLimits,
    /// `[containers]`: default limits of every app container.
    pub containers: ContainerLimits,
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
            max_pack_objects: l.max_pack_objects.unwrap_or(d.max_pack_objects),
            max_ref_bytes: l.max_ref_bytes.unwrap_or(d.max_ref_bytes),
            max_push_commands_bytes: l
                .max_push_commands_bytes
                .unwrap_or(d.max_push_commands_bytes),
            max_sessions_per_connection: l
                .max_sessions_per_connection
                .unwrap_or(d.max_sessions_per_connection),
            max_sessions_per_key: l.max_sessions_per_key.unwrap_or(d.max_sessions_per_key),
            max_preauth_per_ip: l.max_preauth_per_ip.unwrap_or(d.max_preauth_per_ip).max(1),
            update_timeout: l
                .update_timeout_secs
                .map(|s| Duration::from_secs(s.max(1)))
                .unwrap_or(d.update_timeout),
        };
        let mut build = build_options(&file.build)?;
        let router_threads = file.router.threads.unwrap_or(0);
        let mut router_limits = crate::router::RouterLimits::default();
        if let Some(n) = file.router.max_connections_per_ip {
            if n == 0 {
                bail!("router.max_connections_per_ip must be at least 1");
            }
            router_limits.max_connections_per_ip = n;
        }
        if let Some(t) = file.router.header_timeout_secs {
            router_limits.header_timeout = Duration::from_secs(t.max(1));
        }
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
        let https = o.https.or(file.https).filter(|s| !s.is_empty());
        let acme = Acme::resolve(&file.acme, https.is_some())?;
        build.namespace = namespace.clone();
        Ok(Settings {
            https,
            acme,
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
            router_limits,
            timers: crate::timers::TimerLimits::from_file(&file.timers)?,
            containers: ContainerLimits::from_file(&file.containers)?,
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

    /// Creates the data dir and its subdirectories, and makes them (and
    /// the files at its top: the state, keys, `rack.toml`) readable by
    /// this user only, whatever mode an earlier install left.
    pub fn ensure_dirs(&self) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        for dir in [self.data_dir.clone(), self.repos_dir(), self.logs_dir()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("making {} private", dir.display()))?;
        }
        for entry in std::fs::read_dir(&self.data_dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("making {} private", entry.path().display()))?;
            }
        }
        Ok(())
    }

    /// Takes the data dir's exclusive lock (`DATA_DIR/rack.lock`), held
    /// until the returned file is dropped: two `rack server` on one data
    /// dir would break each other's state. `wait`: until the holder lets go
    /// (else fail at once).
    pub fn lock_data_dir(&self, wait: bool) -> Result<std::fs::File> {
        let path = self.data_dir.join("rack.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor this function owns.
        let how = if wait {
            libc::LOCK_EX
        } else {
            libc::LOCK_EX | libc::LOCK_NB
        };
        if unsafe { libc::flock(file.as_raw_fd(), how) } == 0 {
            return Ok(file);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another rack server is running on {}",
                self.data_dir.display()
            );
        }
        Err(e).with_context(|| format!("locking {}", path.display()))
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
