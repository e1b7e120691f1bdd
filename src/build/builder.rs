//! `Builder`: one image build through the Docker engine's classic builder,
//! with the rack's limits, streamed to the push and to the build log.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use git2::Oid;
use tokio::sync::Semaphore;

use super::buildpack;
use super::context::{self, ContextError, ContextSpec, ExtraFile};
use super::dockerfile;
use super::dockerignore::DockerIgnore;
use super::output::{follow_build, Out, StreamBroke};
use crate::progress::Progress;

/// The memory limit the build API can express (its field is an i32).
pub const MAX_BUILD_MEMORY: i64 = 2 * 1024 * 1024 * 1024;

/// Network of the build containers (`RUN` steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// A bridge network of the build's own (never Docker's default
    /// `docker0`), behind the host firewall.
    #[default]
    Bridge,
    /// No network at all: dependencies must come from the base image.
    None,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::None => "none",
        }
    }
}

impl FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bridge" | "default" => Ok(NetworkMode::Bridge),
            "none" => Ok(NetworkMode::None),
            other => Err(format!(
                "unknown build network mode {other:?} (bridge or none)"
            )),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Isolation of one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildLimits {
    /// Memory of each build container; None = unlimited. At most
    /// [`MAX_BUILD_MEMORY`] (the API's limit).
    pub memory_bytes: Option<i64>,
    /// CFS quota and period in microseconds (quota/period = CPUs).
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub network_mode: NetworkMode,
    /// Wall-clock limit from the moment a build slot is taken.
    pub timeout: Duration,
}

impl Default for BuildLimits {
    fn default() -> Self {
        BuildLimits {
            memory_bytes: Some(MAX_BUILD_MEMORY),
            cpu_quota: None,
            cpu_period: None,
            network_mode: NetworkMode::Bridge,
            // Long enough for a cold Rust build on a small machine.
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// Rack-wide build settings (from `rack.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Builds running at once across the rack; more wait in line.
    pub max_concurrent_builds: usize,
    pub limits: BuildLimits,
    /// Buildpack image overrides: `NAME` → its `BASE_IMAGE`, `NAME.ARG` →
    /// any other image arg (e.g. `go.RUN_IMAGE`). See `buildpacks/README.md`.
    pub base_images: HashMap<String, String>,
    /// The rack's namespace: names and labels the build networks.
    pub namespace: String,
    /// Largest build context (the tar sent to Docker, every path of a
    /// blob counted): `[build] max_context_bytes`.
    pub max_context_bytes: u64,
    /// Build log kept per build; the rest is dropped after a marker line:
    /// `[build] max_log_bytes`.
    pub max_log_bytes: u64,
}

/// Defaults of [`BuildOptions::max_context_bytes`] and `max_log_bytes`.
pub const DEFAULT_MAX_CONTEXT_BYTES: u64 = 2 * 1024 * 1024 * 1024;
pub const DEFAULT_MAX_LOG_BYTES: u64 = 16 * 1024 * 1024;

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            max_concurrent_builds: 2,
            limits: BuildLimits::default(),
            base_images: HashMap::new(),
            namespace: "rack".into(),
            max_context_bytes: DEFAULT_MAX_CONTEXT_BYTES,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
        }
    }
}

/// Receives every line the build prints (the same text as the progress
/// lines, without trailing newline), e.g. to keep it with the build record.
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// One build.
#[derive(Clone)]
pub struct BuildRequest {
    /// The app's repository (bare or not).
    pub repo_path: PathBuf,
    pub commit: Oid,
    pub app: String,
    /// From [`new_build_id`]; the image is tagged `rack/APP:BUILD_ID`.
    pub build_id: String,
    /// Candidate build args: the config keys named in the app's `build_args`
    /// setting, with their values. Only those the Dockerfile declares with
    /// `ARG` are passed (the others are named in the output and dropped).
    pub build_args: HashMap<String, String>,
    pub no_cache: bool,
    /// Image labels; usually none. The classic builder adds each label as
    /// a `LABEL` step of its own after the Dockerfile's last one, and a step
    /// whose value changes every build (a build id, a commit) is never
    /// cached: each costs a container create and a commit on every build
    /// (measured: 0.1–0.3 s apiece). What built an image is in the build
    /// record instead (`rack/APP:BUILD_ID` tag, commit, image id).
    pub labels: HashMap<String, String>,
    pub log: Option<LogSink>,
}

impl fmt::Debug for BuildRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Build arg values may be secrets: names only.
        f.debug_struct("BuildRequest")
            .field("repo_path", &self.repo_path)
            .field("commit", &self.commit)
            .field("app", &self.app)
            .field("build_id", &self.build_id)
            .field("build_args", &self.build_args.keys().collect::<Vec<_>>())
            .field("no_cache", &self.no_cache)
            .field("labels", &self.labels)
            .finish()
    }
}

/// How the image was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildKind {
    Dockerfile,
    Buildpack(&'static str),
}

impl fmt::Display for BuildKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildKind::Dockerfile => f.write_str("Dockerfile"),
            BuildKind::Buildpack(name) => write!(f, "buildpack {name}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuildResult {
    /// `sha256:...`
    pub image_id: String,
    /// `rack/APP:BUILD_ID`
    pub tag: String,
    pub kind: BuildKind,
    /// Size of the tar sent to Docker.
    pub context_bytes: u64,
    /// From the call to the end, waiting for a slot included.
    pub duration: Duration,
    /// Names of the build args passed.
    pub build_args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No Dockerfile and no buildpack matched.
    #[error("{0}")]
    NoBuildpack(String),
    /// BuildKit-only Dockerfile syntax.
    #[error("{0}")]
    BuildKit(String),
    #[error("build context: {0}")]
    Context(#[from] ContextError),
    #[error("Docker engine not reachable: {0}")]
    Unreachable(String),
    /// A build step failed (or Docker refused the build).
    #[error("{0}")]
    Failed(String),
    #[error("build timed out after {}s", .0.as_secs())]
    Timeout(Duration),
    /// Bad request or settings (rack's fault, not the app's).
    #[error("{0}")]
    Invalid(String),
}

/// The app's build arg values worth hiding (one to three characters would
/// blank out ordinary output and protect nothing).
fn secret_values(args: &HashMap<String, String>) -> Vec<String> {
    let mut v: Vec<String> = args.values().filter(|v| v.len() >= 4).cloned().collect();
    // Longest first: a value containing another is replaced whole.
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v
}

impl BuildError {
    /// The same error with every value of `secrets` replaced.
    fn redacted(self, secrets: &[String]) -> BuildError {
        use super::output::redact;
        let r = |s: String| redact(&s, secrets).into_owned();
        match self {
            BuildError::NoBuildpack(s) => BuildError::NoBuildpack(r(s)),
            BuildError::BuildKit(s) => BuildError::BuildKit(r(s)),
            BuildError::Unreachable(s) => BuildError::Unreachable(r(s)),
            BuildError::Failed(s) => BuildError::Failed(r(s)),
            BuildError::Invalid(s) => BuildError::Invalid(r(s)),
            e @ (BuildError::Context(_) | BuildError::Timeout(_)) => e,
        }
    }

    /// One line for the push output and the build record.
    pub fn reason(&self) -> String {
        let s = self.to_string();
        let first = s
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("build failed");
        first.to_string()
    }
}

/// Connects to the Docker engine (`host`: `unix:///path`, a socket path,
/// `tcp://...`; None: `DOCKER_HOST` or the local socket) and negotiates the
/// API version. The error names the address and says the engine is down.
pub async fn connect_docker(host: Option<&str>) -> Result<Docker, BuildError> {
    let addr = host
        .map(str::to_string)
        .or_else(|| std::env::var("DOCKER_HOST").ok());
    let shown = addr
        .clone()
        .unwrap_or_else(|| "/var/run/docker.sock".to_string());
    let docker = match addr.as_deref() {
        None => Docker::connect_with_local_defaults(),
        Some(a) if a.starts_with('/') => Docker::connect_with_host(&format!("unix://{a}")),
        Some(a) => Docker::connect_with_host(a),
    }
    .map_err(|e| BuildError::Unreachable(format!("{shown}: {e}")))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| BuildError::Unreachable(format!("{shown}: {e}")))
}

/// A new build id: `b-` + 9 base32 digits of milliseconds since the epoch
/// (strictly increasing within a process) + 2 random digits. Ids sort by
/// time as plain strings and are valid Docker tags.
pub fn new_build_id() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    const DIGITS: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    let ms = loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(p) => prev = p,
        }
    };
    let mut s = String::from("b-");
    for i in (0..9).rev() {
        s.push(DIGITS[((ms >> (i * 5)) & 31) as usize] as char);
    }
    let r: u16 = rand::random();
    s.push(DIGITS[(r & 31) as usize] as char);
    s.push(DIGITS[((r >> 5) & 31) as usize] as char);
    s
}

pub use crate::images::{app_image_tags, image_tag};

fn valid_tag_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// `${NAME}` / `$NAME` in a FROM image replaced by the build arg or the
/// global ARG default (for messages only).
fn substitute_args(image: &str, args: &HashMap<String, String>, dockerfile_text: &str) -> String {
    let globals = dockerfile::global_args(dockerfile_text);
    let mut out = image.to_string();
    for (name, default) in globals {
        let value = args.get(&name).cloned().or(default).unwrap_or_default();
        out = out
            .replace(&format!("${{{name}}}"), &value)
            .replace(&format!("${name}"), &value);
    }
    out
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Builds images; cheap to clone (clones share the concurrency limit).
#[derive(Clone)]
pub struct Builder {
    docker: Docker,
    options: Arc<BuildOptions>,
    slots: Arc<Semaphore>,
}

impl Builder {
    /// `docker` should come from [`connect_docker`] (version negotiated).
    pub fn new(docker: Docker, options: BuildOptions) -> Result<Builder, BuildError> {
        let l = &options.limits;
        if let Some(m) = l.memory_bytes {
            if !(4 * 1024 * 1024..=MAX_BUILD_MEMORY).contains(&m) {
                return Err(BuildError::Invalid(format!(
                    "build memory limit {m} bytes: must be between 4 MiB and 2 GiB (or unlimited)"
                )));
            }
        }
        for (name, v) in [("cpu quota", l.cpu_quota), ("cpu period", l.cpu_period)] {
            if v.is_some_and(|v| i32::try_from(v).is_err() || v < 1000) {
                return Err(BuildError::Invalid(format!(
                    "build {name} out of range: {v:?}"
                )));
            }
        }
        if options.max_concurrent_builds == 0 {
            return Err(BuildError::Invalid(
                "max_concurrent_builds must be at least 1".into(),
            ));
        }
        let slots = Arc::new(Semaphore::new(options.max_concurrent_builds));
        Ok(Builder {
            docker,
            options: Arc::new(options),
            slots,
        })
    }

    pub fn options(&self) -> &BuildOptions {
        &self.options
    }

    /// Removes build networks an earlier run of the rack left behind.
    pub async fn sweep_networks(&self) {
        super::network::sweep(&self.docker, &self.options.namespace).await;
    }

    /// Builds running now.
    pub fn running(&self) -> usize {
        self.options.max_concurrent_builds - self.slots.available_permits()
    }

    /// Builds `req.commit` into `rack/APP:BUILD_ID`.
    ///
    /// Prints `-----> Building APP SHORT (KIND)`, the build output as detail
    /// lines, and `-----> Build ID succeeded in Xs` or
    /// `-----> Build ID failed: REASON`; the same lines go to `req.log`.
    ///
    /// Dropping the returned future cancels the build: the request to Docker
    /// is closed, which makes the engine stop the build and remove its
    /// intermediate containers; the build slot is released.
    pub async fn build(
        &self,
        req: BuildRequest,
        progress: Progress,
    ) -> Result<BuildResult, BuildError> {
        let secrets = secret_values(&req.build_args);
        let out = Out {
            progress: &progress,
            log: req.log.as_ref(),
            secrets: &secrets,
        };
        let started = Instant::now();
        let result = self
            .build_inner(&req, &out, started)
            .await
            .map_err(|e| e.redacted(&secrets));
        if let Err(e) = &result {
            out.stage(&format!("Build {} failed: {}", req.build_id, e.reason()));
        }
        result
    }

    async fn build_inner(
        &self,
        req: &BuildRequest,
        out: &Out<'_>,
        started: Instant,
    ) -> Result<BuildResult, BuildError> {
        let plan = self.plan(req, out).await?;
        let permit = {
            let _queued = crate::metrics::GaugeGuard::new(&crate::metrics::get().builds_queued);
            self.wait_for_slot(out).await?
        };
        let _running = crate::metrics::GaugeGuard::new(&crate::metrics::get().builds_running);
        let limits = &self.options.limits;
        let docker = self.engine().await?;
        let network = match limits.network_mode {
            NetworkMode::Bridge => {
                Some(super::network::create(&docker, &self.options.namespace, &req.build_id).await?)
            }
            NetworkMode::None => None,
        };
        let network_name = network
            .as_ref()
            .map_or_else(|| "none".to_string(), |n| n.name.clone());
        let result = self
            .build_on(req, out, started, plan, permit, &docker, &network_name)
            .await;
        if let Some(n) = network {
            n.remove().await;
        }
        result
    }

    /// The build proper, on `network_name`, once a slot is taken.
    #[allow(clippy::too_many_arguments)]
    async fn build_on(
        &self,
        req: &BuildRequest,
        out: &Out<'_>,
        started: Instant,
        plan: Plan,
        permit: tokio::sync::OwnedSemaphorePermit,
        docker: &Docker,
        network_name: &str,
    ) -> Result<BuildResult, BuildError> {
        let limits = &self.options.limits;
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let warn_out = (out.progress.clone(), req.log.clone());
        let ctx = context::stream_context(
            ContextSpec {
                repo_path: req.repo_path.clone(),
                commit: req.commit,
                ignore: plan.ignore,
                extra_files: plan.extra_files,
                max_bytes: self.options.max_context_bytes,
            },
            move |line| {
                warn_out.0.detail(&line);
                if let Some(log) = &warn_out.1 {
                    log(&format!("       {line}"));
                }
            },
        );
        let opts = self.image_options(req, &plan.tag, &plan.build_args, network_name);
        let stream = docker.build_image(opts, None, Some(bollard::body_try_stream(ctx.body)));
        let ended = match follow_build(stream, deadline, out).await {
            Ok(ended) => ended,
            Err(StreamBroke::Timeout) => {
                ctx.done.abort();
                return Err(BuildError::Timeout(limits.timeout));
            }
            Err(StreamBroke::Engine(e)) => {
                // The upload may have failed because the context did.
                if let Ok(Ok(Err(ce))) =
                    tokio::time::timeout(Duration::from_secs(5), ctx.done).await
                {
                    return Err(BuildError::Context(ce));
                }
                return Err(BuildError::Unreachable(e.to_string()));
            }
        };
        let summary = match ctx.done.await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(ContextError::Aborted)) | Err(_) => None,
            Ok(Err(e)) => return Err(BuildError::Context(e)),
        };
        if let Some(msg) = ended.failure {
            return Err(failed(
                &msg,
                ended.last_step.as_deref(),
                &plan.build_args,
                &plan.dockerfile_text,
                out,
            ));
        }
        let summary = summary
            .ok_or_else(|| BuildError::Failed("the build context upload was cut short".into()))?;
        let tag = plan.tag;
        let image = docker
            .inspect_image(&tag)
            .await
            .map_err(|e| BuildError::Failed(format!("built image {tag} not found: {e}")))?;
        drop(permit);
        let mut image_id = image.id.unwrap_or_default();
        if plan.passed.iter().any(|k| req.build_args.contains_key(k)) {
            // App build args are config values: none may stay in the
            // image's history.
            let (repo, t) = tag.rsplit_once(':').unwrap_or((tag.as_str(), "latest"));
            image_id = super::flatten::flatten(docker, repo, t).await?;
        }
        let duration = started.elapsed();
        out.detail(&format!("Build context: {}", human_bytes(summary.bytes)));
        out.stage(&format!(
            "Build {} succeeded in {:.1}s",
            req.build_id,
            duration.as_secs_f64()
        ));
        Ok(BuildResult {
            image_id,
            tag,
            kind: plan.kind,
            context_bytes: summary.bytes,
            duration,
            build_args: plan.passed,
        })
    }

    /// What to build, decided from the tree before Docker is involved:
    /// Dockerfile or buildpack, the build args passed, the context's
    /// ignore rules. Prints the `Building` stage.
    async fn plan(&self, req: &BuildRequest, out: &Out<'_>) -> Result<Plan, BuildError> {
        if !valid_tag_part(&req.app) || !valid_tag_part(&req.build_id) {
            return Err(BuildError::Invalid(format!(
                "invalid app or build id for a tag: {}:{}",
                req.app, req.build_id
            )));
        }
        let tag = image_tag(&req.app, &req.build_id);
        let (repo_path, commit) = (req.repo_path.clone(), req.commit);
        let info = tokio::task::spawn_blocking(move || context::inspect_commit(&repo_path, commit))
            .await
            .map_err(|e| BuildError::Invalid(format!("inspecting the commit: {e}")))??;
        let (kind, dockerfile_text, mut build_args, extra_files) = match &info.dockerfile {
            Some(df) => (
                BuildKind::Dockerfile,
                df.clone(),
                HashMap::new(),
                Vec::new(),
            ),
            None => {
                let bp = buildpack::detect(&info).map_err(|e| BuildError::NoBuildpack(e.0))?;
                let extra = vec![ExtraFile {
                    path: "Dockerfile".into(),
                    data: bp.dockerfile.as_bytes().to_vec(),
                    mode: 0o644,
                }];
                (
                    BuildKind::Buildpack(bp.name),
                    bp.dockerfile.to_string(),
                    bp.image_build_args(&self.options.base_images),
                    extra,
                )
            }
        };
        let short = &info.commit[..info.commit.len().min(7)];
        out.stage(&format!("Building {} {short} ({kind})", req.app));
        dockerfile::check_classic(&dockerfile_text).map_err(BuildError::BuildKit)?;
        let passed = add_declared_args(&mut build_args, &req.build_args, &dockerfile_text, out);

        let mut ignore = DockerIgnore::parse(info.dockerignore.as_deref().unwrap_or(""))
            .map_err(ContextError::from)?;
        ignore.keep("Dockerfile");
        ignore.keep(".dockerignore");
        Ok(Plan {
            tag,
            kind,
            dockerfile_text,
            build_args,
            passed,
            ignore,
            extra_files,
        })
    }

    /// Waits for a build slot, saying so when none is free.
    async fn wait_for_slot(
        &self,
        out: &Out<'_>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, BuildError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        out.stage(&format!(
            "Waiting for a build slot ({} builds running)",
            self.running()
        ));
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| BuildError::Invalid("builder closed".into()))
    }

    /// The engine, with a timeout that fits the build, answering a ping.
    async fn engine(&self) -> Result<Docker, BuildError> {
        let mut docker = self.docker.clone();
        // bollard's timeout covers waiting for the response head, which the
        // engine sends only after the whole context arrived.
        docker.set_timeout(self.options.limits.timeout + Duration::from_secs(60));
        match tokio::time::timeout(Duration::from_secs(10), docker.ping()).await {
            Ok(Ok(_)) => Ok(docker),
            Ok(Err(e)) => Err(BuildError::Unreachable(e.to_string())),
            Err(_) => Err(BuildError::Unreachable(
                "no answer to ping within 10s".into(),
            )),
        }
    }

    /// The build API's options: tag, cache, build args and the limits.
    fn image_options(
        &self,
        req: &BuildRequest,
        tag: &str,
        build_args: &HashMap<String, String>,
        network: &str,
    ) -> bollard::query_parameters::BuildImageOptions {
        let limits = &self.options.limits;
        let mut opts = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .nocache(req.no_cache)
            .buildargs(build_args)
            .networkmode(network);
        if !req.labels.is_empty() {
            opts = opts.labels(&req.labels);
        }
        if let Some(m) = limits.memory_bytes {
            let m = i32::try_from(m).unwrap_or(i32::MAX);
            // memswap = memory: no swap on top of the limit.
            opts = opts.memory(m).memswap(m);
        }
        if let Some(q) = limits.cpu_quota {
            opts = opts.cpuquota(q as i32);
        }
        if let Some(p) = limits.cpu_period {
            opts = opts.cpuperiod(p as i32);
        }
        opts.build()
    }
}

/// What [`Builder::plan`] decided.
struct Plan {
    tag: String,
    kind: BuildKind,
    dockerfile_text: String,
    /// Passed to the build: image overrides, then the app's declared args.
    build_args: HashMap<String, String>,
    /// Their names, sorted.
    passed: Vec<String>,
    ignore: DockerIgnore,
    extra_files: Vec<ExtraFile>,
}

/// Adds the app's build args that the Dockerfile declares with `ARG` to
/// `build_args` (operator image overrides already there win), names the
/// others, and returns the names of all passed, sorted.
fn add_declared_args(
    build_args: &mut HashMap<String, String>,
    app_args: &HashMap<String, String>,
    dockerfile_text: &str,
    out: &Out<'_>,
) -> Vec<String> {
    let declared = dockerfile::declared_args(dockerfile_text);
    let mut ignored: Vec<&str> = Vec::new();
    for (k, v) in app_args {
        if !declared.contains(k) {
            ignored.push(k);
        } else if !build_args.contains_key(k) {
            // Operator image overrides win over app build args.
            build_args.insert(k.clone(), v.clone());
        }
    }
    ignored.sort();
    if !ignored.is_empty() {
        out.detail(&format!(
            "Not passing build args the Dockerfile does not declare with ARG: {}",
            ignored.join(", ")
        ));
    }
    let mut passed: Vec<String> = build_args.keys().cloned().collect();
    passed.sort();
    passed
}

/// The error of a failed build step, printed. A failing FROM is a base
/// image that is neither local nor pullable: name it, with the build args
/// substituted.
fn failed(
    msg: &str,
    last_step: Option<&str>,
    build_args: &HashMap<String, String>,
    dockerfile_text: &str,
    out: &Out<'_>,
) -> BuildError {
    let msg = super::output::clean_line(msg.trim());
    out.detail(&msg);
    let from = last_step
        .and_then(|s| s.split_once(" : "))
        .and_then(|(_, ins)| {
            ins.strip_prefix("FROM ")
                .or_else(|| ins.strip_prefix("from "))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .map(|image| substitute_args(image, build_args, dockerfile_text));
    BuildError::Failed(match from {
        Some(image) => format!("base image {image} unavailable: {msg}"),
        None => msg,
    })
}

#[cfg(test)]
mod tests;
