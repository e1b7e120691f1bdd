//! Where releases run. `Runtime` is the scheduler interface every provider
//! implements (the shape of dokku's scheduler plugins): start a release's
//! processes and wait until they are ready, switch traffic to them, abort,
//! list processes, stream logs, run one-off processes, create and destroy
//! an app's infrastructure, publish a build's image where releases run, say
//! which images the rack's engine keeps, and recover after a restart.
//!
//! A rollout is split in two so the deploy pipeline can put its commit point
//! between them: `start` (new instances up and ready) → the pipeline records
//! the release as current → `switch` → old instances drain and stop in the
//! background. `abort` undoes a `start` that will not be committed.
//!
//! What each provider guarantees before the commit point differs, and the
//! pipeline relies only on what both give (the new instances are ready;
//! `abort`, or `recover` after a crash, puts the previous release back):
//! - local: `start` switches nothing. The router moves traffic only in
//!   `switch`, after the commit point, to all new web instances at once.
//! - aws (ECS): `start` is a rolling update of each service, and ECS puts
//!   new tasks behind the app's target group as they pass its health check,
//!   so before the commit point both releases may serve requests. `abort`
//!   rolls the services back to their previous task definitions; `switch`
//!   only retires the process types the release no longer has.
//!
//! So a request is served by the committed release alone only once `switch`
//! returns.
//!
//! A process type with a single-writer volume (not `--shared`) runs at most
//! one instance, and two never run at once: its rollout is stop-first. In
//! `start` the old instance stops (locally the router first holds the
//! app's new requests and drains the old instance), then the new one
//! starts on the same volume and becomes ready; `switch` routes to it and
//! releases the held requests. A failed `start` or an `abort` starts the
//! old instance again on the same volume. On ECS the service of such a
//! type runs with `maximumPercent` 100 and `minimumHealthyPercent` 0, so
//! ECS stops the old task before it starts the new one. (Blue/green target groups switched in `switch` would make aws
//! match local, at the price of a second target group and listener-rule
//! swaps per app.)
//!
//! The runtime knows nothing of git, builds or the store; it is handed a
//! complete `ReleaseSpec`.

pub mod local;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::progress::Progress;
use crate::release::SecretEnv;

/// What most `Runtime` methods return.
pub type RuntimeFuture<'a, T> = BoxFuture<'a, Result<T, RuntimeError>>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The new instances never became ready; the message says why and
    /// carries the last lines of the failing instance's log.
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    NotFound(String),
    #[error("Docker engine: {0}")]
    Engine(String),
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Process type: `web`, `worker`, ...
    pub kind: String,
    /// The Procfile command (run with `/bin/sh -c`), or `None` for the
    /// image's own CMD.
    pub command: Option<String>,
    pub count: u32,
    pub memory_bytes: Option<i64>,
    /// CPUs × 1e9 (Docker's NanoCpus).
    pub nano_cpus: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// HTTP GET of `path` answering < 500.
    Http {
        path: String,
    },
    Tcp,
    /// Ready once running (web) — still subject to the 5 s no-restart rule.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: HealthKind,
    /// How long new instances may take to become ready.
    pub timeout: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            kind: HealthKind::Http { path: "/".into() },
            timeout: Duration::from_secs(60),
        }
    }
}

/// Everything a runtime needs to run one release.
pub struct ReleaseSpec {
    pub app: String,
    /// `vN` number.
    pub version: i64,
    /// Unique per rollout (a scale or restart rolls the same release again
    /// under a new id); labels the instances of this rollout.
    pub deploy_id: String,
    pub build_id: String,
    /// Image reference: `rack/APP:BUILD` locally, a digest on aws.
    pub image: String,
    /// The release's config. The runtime adds `PORT`, `RACK_APP`,
    /// `RACK_RELEASE`.
    pub env: SecretEnv,
    /// The app's `port` setting; `None`: the image's single EXPOSEd port,
    /// else 5000.
    pub port: Option<u16>,
    /// Every process type with its count (0 allowed). Never `release`.
    pub processes: Vec<ProcessSpec>,
    pub health: HealthCheck,
    /// Host names routed to web: `APP.DOMAIN` first, then the app's domains.
    pub hosts: Vec<String>,
    /// The app's persistent volumes. Each is mounted at its path into the
    /// instances of its types (and into every one-off). A type with a
    /// volume that is not `shared` runs at most one instance and is rolled
    /// out stop-first (see the module doc).
    pub volumes: Vec<crate::volumes::Volume>,
}

impl ReleaseSpec {
    /// The volumes mounted into instances of `kind`.
    pub fn volumes_for<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = &'a crate::volumes::Volume> {
        self.volumes
            .iter()
            .filter(move |v| v.types.iter().any(|t| t == kind))
    }

    /// Whether `kind` is a single-writer type (a non-shared volume).
    pub fn single_writer(&self, kind: &str) -> bool {
        self.volumes.iter().any(|v| v.single_writer_for(kind))
    }
}

/// Which images of its builds the rack's engine keeps. The deploy pipeline
/// picks the images to prune by it; the runtime removes them
/// (`prune_images`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Releases run from the engine's images: after each release, all but
    /// the images of the newest `[local] keep_releases` releases, the
    /// current one and the newest build go.
    Releases,
    /// Releases run from a registry with its own retention (aws: ECR's
    /// lifecycle policy): after each publish the engine keeps only the
    /// newest build's image, as the next build's cache.
    NewestBuild,
}

/// What `start` brought up, handed back to `switch` or `abort` of the same
/// runtime in the same process.
#[derive(Debug)]
pub struct Started {
    pub app: String,
    pub deploy_id: String,
    /// What only the runtime that made it reads (local: the container ids;
    /// aws: each service's previous and new task definition).
    pub handle: RolloutHandle,
}

/// A provider-private value carried from `start` to `switch` or `abort`.
/// Never journalled: a rollout a crash interrupts is undone by `recover`
/// from what runs, so the handle needs no serialised form.
pub struct RolloutHandle(Box<dyn std::any::Any + Send + Sync>);

impl RolloutHandle {
    pub fn new<T: std::any::Any + Send + Sync>(value: T) -> RolloutHandle {
        RolloutHandle(Box::new(value))
    }

    /// The value, when it is a `T` (it always is for the runtime that made
    /// it).
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }

    pub fn take<T: std::any::Any>(self) -> Option<T> {
        self.0.downcast().ok().map(|b| *b)
    }
}

impl std::fmt::Debug for RolloutHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RolloutHandle(..)")
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessInfo {
    /// `web.1`
    pub name: String,
    pub kind: String,
    pub number: u32,
    pub release: i64,
    /// running, starting, restarting, exited, ...
    pub state: String,
    /// RFC 3339, when running.
    pub started_at: Option<String>,
    pub id: String,
    /// The rollout it belongs to; instances of an earlier rollout are
    /// draining and about to stop.
    pub deploy_id: String,
}

#[derive(Debug, Clone)]
pub struct LogLine {
    /// RFC 3339 with fractional seconds, for merging in time order.
    pub time: String,
    /// `web.1`
    pub source: String,
    pub text: String,
}

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    /// Last N lines (across all instances) before following.
    pub tail: Option<usize>,
    pub kind: Option<String>,
}

/// A one-off process: `run APP -- CMD` and the release phase.
pub struct OneOff {
    pub argv: Vec<String>,
    /// Terminal size when the client asked for one (`ssh -t`).
    pub tty: Option<(u16, u16)>,
    /// Window size changes while it runs.
    pub resize: Option<mpsc::UnboundedReceiver<(u16, u16)>>,
    /// Killed (and reported as failed) after this long.
    pub timeout: Option<Duration>,
    /// Extra labels (e.g. `rack.release-phase`).
    pub labels: BTreeMap<String, String>,
    /// Memory and CPU limits of this one-off (`Deployer::oneoff_limits`:
    /// the app's `resources.*`); `None`: the runtime's default.
    pub memory_bytes: Option<i64>,
    /// CPUs × 1e9.
    pub nano_cpus: Option<i64>,
}

pub struct OneOffIo {
    /// `None`: no stdin (the process sees EOF).
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Box<dyn AsyncWrite + Send + Unpin>,
    /// Ignored with a tty (the terminal merges both streams).
    pub stderr: Box<dyn AsyncWrite + Send + Unpin>,
}

pub trait Runtime: Send + Sync {
    /// Brings up every instance of `spec` (each type at its count) and waits
    /// until all are ready. Locally nothing is switched; on ECS the new
    /// tasks may already serve (see the module doc). On failure nothing of
    /// this rollout is left running.
    fn start<'a>(
        &'a self,
        spec: &'a ReleaseSpec,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<Started, RuntimeError>>;

    /// After the commit point: moves traffic to the started instances at
    /// once (local; ECS's rolling update already did), then lets in-flight
    /// requests on the previous ones finish and stops them in the
    /// background.
    fn switch<'a>(
        &'a self,
        spec: &'a ReleaseSpec,
        started: Started,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// Removes what `start` brought up.
    fn abort(&self, started: Started) -> BoxFuture<'_, ()>;

    fn processes<'a>(
        &'a self,
        app: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ProcessInfo>, RuntimeError>>;

    /// Sends log lines of the app's running instances to `tx`, merged in
    /// time order with `TYPE.N` sources; with `follow`, keeps going (also
    /// across deploys) until `tx` is closed.
    fn logs<'a>(
        &'a self,
        app: &'a str,
        opts: LogOptions,
        tx: mpsc::Sender<LogLine>,
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// Runs a one-off process from `spec`'s image and config, streams its
    /// output, removes it, and returns its exit code.
    fn run<'a>(
        &'a self,
        spec: &'a ReleaseSpec,
        cmd: OneOff,
        io: OneOffIo,
    ) -> BoxFuture<'a, Result<i64, RuntimeError>>;

    /// The router's host names for the app changed (`domains:add`).
    fn set_hosts<'a>(
        &'a self,
        app: &'a str,
        hosts: Vec<String>,
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// Creates what an app needs before its first release (`apps:create`,
    /// with its host names): nothing locally; the app's stack on aws.
    fn create_app<'a>(
        &'a self,
        _app: &'a str,
        _hosts: Vec<String>,
        _progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async { Ok(()) })
    }

    /// Removes every instance, network and volume of the app, and on aws
    /// all of its infrastructure (its images go with `prune_images`: only the caller
    /// knows which builds are its own).
    fn destroy<'a>(&'a self, app: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// Makes a finished build's image (`images::image_tag(app, build_id)`
    /// on the rack's engine, whose id is `image_id`) runnable where releases
    /// run, and returns what the build record keeps as its image: locally
    /// `image_id` as it is (nothing moves); on aws the push to the app's ECR
    /// repository, and the reference by digest.
    fn publish_image<'a>(
        &'a self,
        _app: &'a str,
        _build_id: &'a str,
        image_id: String,
        _progress: &'a Progress,
    ) -> BoxFuture<'a, Result<String, RuntimeError>> {
        Box::pin(async { Ok(image_id) })
    }

    /// The reference releases of a build run (`ReleaseSpec::image`), given
    /// what its record keeps (`publish_image`'s answer; `None` when the
    /// record is gone): locally the build's tag, `rack/APP:BUILD`.
    fn release_image(&self, app: &str, build_id: &str, _recorded: Option<&str>) -> String {
        crate::images::image_tag(app, build_id)
    }

    /// Which images of its builds the rack's engine keeps (see
    /// [`Retention`]).
    fn retention(&self) -> Retention {
        Retention::Releases
    }

    /// Removes the app's build images named in `remove` (tags
    /// `rack/APP:BUILD` on the rack's engine, of this rack's own builds:
    /// another rack on the same engine may hold images of an app of the same
    /// name) that exist and that no instance uses. Returns the tags removed.
    /// What [`Runtime::retention`] keeps is the caller's choice of `remove`.
    fn prune_images<'a>(
        &'a self,
        _app: &'a str,
        _remove: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, RuntimeError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Whether `image` (as in `ReleaseSpec::image`) can still be run: a
    /// rollback to a release whose image was pruned is refused up front.
    fn has_image<'a>(&'a self, _image: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        Box::pin(async { Ok(true) })
    }

    /// Whether the rack's own scheduler fires the apps' timers (`true`), or
    /// the provider does from what `set_timers` wrote (aws). No default: a
    /// runtime that wraps another must pass both timer methods on.
    fn fires_timers(&self) -> bool;

    /// `spec` is about to become the app's current release with these
    /// timers (none: remove the app's schedules), of which `suspended`
    /// (names) must not fire; called again when that set changes.
    /// Providers that schedule by themselves write their schedules here; a
    /// no-op where the rack fires them. A failure fails the release.
    fn set_timers<'a>(
        &'a self,
        spec: &'a ReleaseSpec,
        timers: &'a [crate::timers::Timer],
        suspended: &'a [String],
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;

    /// How much disk each of the app's volumes `names` uses, in bytes
    /// (`None`: not known, or not made yet).
    fn volume_sizes<'a>(
        &'a self,
        app: &'a str,
        names: &'a [String],
    ) -> RuntimeFuture<'a, BTreeMap<String, Option<u64>>>;

    /// Removes one volume of the app and its data. The release that no
    /// longer mounts it is already current; instances of the one before
    /// may still be stopping.
    fn destroy_volume<'a>(&'a self, app: &'a str, name: &'a str) -> RuntimeFuture<'a, ()>;

    /// Writes the volume's contents as a tar to `out`, streamed (paths
    /// relative to the volume's root).
    fn export_volume<'a>(
        &'a self,
        app: &'a str,
        name: &'a str,
        out: &'a mut (dyn AsyncWrite + Send + Unpin),
    ) -> RuntimeFuture<'a, ()>;

    /// Unpacks `tar` into the volume (files in it replace the volume's of
    /// the same path; others stay). `tar` has passed
    /// `volumes::archive::sanitize`: relative paths only, links that stay
    /// inside.
    fn import_volume<'a>(
        &'a self,
        app: &'a str,
        name: &'a str,
        tar: Box<dyn AsyncRead + Send + Unpin>,
    ) -> RuntimeFuture<'a, ()>;

    /// After a restart: `current` is every app's current release. Keep its
    /// instances (re-create missing ones), route to them, remove every other
    /// instance of rack's (stray rollouts, one-off processes).
    fn recover<'a>(
        &'a self,
        current: &'a [ReleaseSpec],
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;
}
