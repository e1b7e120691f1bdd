//! The local provider: one Docker container per process instance, on the
//! app's own bridge network, behind the built-in router.
//!
//! - `docker.rs`: names, labels, listing, the network, container creation.
//!   Everything rack creates carries `rack.managed=1` and `rack.ns=NS` (the
//!   namespace, `rack` by default), so a rack only ever touches its own
//!   containers, even when several share one engine (tests do).
//! - `health.rs`: readiness. Web instances are probed at the container's own
//!   address on the app network (never through a published port: there is
//!   none); other types must run 5 s without a restart.
//! - `logs.rs`: merged, time-ordered logs of an app's instances, following
//!   across deploys.
//! - `oneoff.rs`: `run` (attach, tty, resize, timeout, always removed).
//! - `recover.rs`: start-up recovery of the current releases.
//! - `volumes.rs`: the apps' named Docker volumes, their mounts, export and
//!   import.
//! - `swap.rs`: the stop-first rollout of single-writer process types
//!   (router hold, old instance stopped first, restored on failure).
//!
//! What this module does NOT know: git, builds, the store, releases beyond
//! the `ReleaseSpec` it is handed. It never decides which release is
//! current: `recover` is told.

mod docker;
mod health;
mod logs;
mod oneoff;
mod recover;
mod restarts;
mod swap;
#[cfg(test)]
mod tests;
mod volumes;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use futures::future::{join_all, BoxFuture};
use futures::FutureExt;
use tokio::sync::mpsc;

use crate::progress::Progress;
use crate::router::Router;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::runtime::{
    LogLine, LogOptions, OneOff, OneOffIo, ProcessInfo, ReleaseSpec, RolloutHandle, Runtime,
    RuntimeError, RuntimeFuture, Started,
};

use docker::{Instance, NewInstance};
use health::{Check, Probe};

/// Tunables of the local runtime. `Default` is what the server uses.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// `docker stop` grace period: SIGTERM, then SIGKILL after this long.
    pub stop_grace: Duration,
    /// How long the old instances may finish in-flight requests after a
    /// switch before they are stopped anyway.
    pub drain_max: Duration,
    /// json-file log rotation of every container.
    pub log_max_size: String,
    pub log_max_file: u32,
    /// Processes (and threads) per container; `None`: unlimited.
    pub pids_limit: Option<i64>,
    /// Names (`NS-APP`, `NS-APP-web-1-DEPLOY`) and the `rack.ns` label. Two
    /// racks sharing one engine need different namespaces.
    pub namespace: String,
    /// How long a non-web instance must run without a restart to be ready.
    pub settle: Duration,
    /// Test-only pause point of a rollout (`testhook`); `None` in use.
    pub pause_at: Option<String>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            stop_grace: Duration::from_secs(10),
            drain_max: Duration::from_secs(30),
            log_max_size: "10m".into(),
            log_max_file: 3,
            pids_limit: Some(4096),
            namespace: "rack".into(),
            settle: Duration::from_secs(5),
            pause_at: None,
        }
    }
}

/// The containers a `start` created, and the old single-writer instances
/// it stopped first: `Started::handle` of this runtime.
#[derive(Debug, Default)]
struct Containers(Vec<String>, Option<swap::Swap>);

impl LocalRuntime {
    /// The ids of the containers `started` names.
    pub fn started_containers(started: &Started) -> &[String] {
        started
            .handle
            .get::<Containers>()
            .map(|c| c.0.as_slice())
            .unwrap_or_default()
    }
}

/// The Docker-backed `Runtime`. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct LocalRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    router: Router,
    opts: LocalOptions,
    /// Serialises network creation: Docker's API 1.41 lets two networks
    /// share a name, which would make the name ambiguous.
    net_lock: tokio::sync::Mutex<()>,
}

impl LocalRuntime {
    /// `docker` should come from `build::connect_docker` (version
    /// negotiated).
    pub fn new(docker: Docker, router: Router) -> LocalRuntime {
        LocalRuntime::with_options(docker, router, LocalOptions::default())
    }

    pub fn with_options(docker: Docker, router: Router, opts: LocalOptions) -> LocalRuntime {
        restarts::watch(docker.clone(), opts.namespace.clone());
        LocalRuntime {
            inner: Arc::new(Inner {
                docker,
                router,
                opts,
                net_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    pub fn options(&self) -> &LocalOptions {
        &self.inner.opts
    }

    fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// The engine, for the local provider's resources (same engine).
    pub fn engine(&self) -> &Docker {
        &self.inner.docker
    }

    /// The app's network (`NS-APP`), created on first use: a resource
    /// linked to the app joins it.
    pub async fn app_network(&self, app: &str) -> Result<String, RuntimeError> {
        self.ensure_network(app).await
    }

    /// Removes the app's images (`rack/APP:BUILD`) named in `remove` that
    /// the engine has and that no container (in any state) was created
    /// from. Returns the references removed.
    pub async fn prune_images(
        &self,
        app: &str,
        remove: &[String],
    ) -> Result<Vec<String>, RuntimeError> {
        let remove: HashSet<&str> = remove.iter().map(String::as_str).collect();
        // Untagging succeeds even while a container runs the image (when
        // another tag names it): never untag what a container was made from.
        let in_use = self.images_in_use().await?;
        let mut removed = Vec::new();
        for tag in self.app_image_tags(app).await? {
            if !remove.contains(tag.as_str()) || in_use.contains(&tag) {
                continue;
            }
            if self.remove_image_tag(&tag).await {
                removed.push(tag);
            }
        }
        Ok(removed)
    }

    // ---- start ------------------------------------------------------------

    async fn start_impl(
        &self,
        spec: &ReleaseSpec,
        progress: &Progress,
    ) -> Result<Started, RuntimeError> {
        let swap = self.stop_old(spec, progress).await?;
        match self.start_new(spec, progress).await {
            Ok(ids) => Ok(Started {
                app: spec.app.clone(),
                deploy_id: spec.deploy_id.clone(),
                handle: RolloutHandle::new(Containers(ids, swap)),
            }),
            Err(e) => {
                if let Some(swap) = swap {
                    // Single writer: this rollout's instances are gone
                    // before the old one starts again.
                    if let Ok(list) = self.list(Some(&spec.app)).await {
                        let ids: Vec<String> = list
                            .into_iter()
                            .filter(|i| i.deploy == spec.deploy_id && !i.oneoff)
                            .map(|i| i.id)
                            .collect();
                        self.remove_all(&ids).await;
                    }
                    self.restore(swap, progress).await;
                }
                Err(e)
            }
        }
    }

    /// Creates, starts and waits for every instance of `spec`; returns
    /// their ids. On failure none of them is left running.
    async fn start_new(
        &self,
        spec: &ReleaseSpec,
        progress: &Progress,
    ) -> Result<Vec<String>, RuntimeError> {
        let t0 = Instant::now();
        let (net, port) = futures::try_join!(self.ensure_network(&spec.app), self.port_for(spec))?;
        let mut guard = RemoveOnDrop::new(self.clone());

        // Create every instance, then start them together.
        let mut wanted = Vec::new();
        for p in spec.processes.iter().filter(|p| p.count > 0) {
            for n in 1..=p.count {
                wanted.push(NewInstance {
                    process: p,
                    number: n,
                });
            }
        }
        let mut created: Vec<(String, String, bool)> = Vec::new(); // (id, source, web)
        for w in &wanted {
            let id = self.create_instance(spec, &net, port, w).await?;
            guard.ids.push(id.clone());
            created.push((
                id,
                format!("{}.{}", w.process.kind, w.number),
                w.process.kind == "web",
            ));
        }
        let starts = join_all(created.iter().map(|(id, _, _)| self.start_container(id))).await;
        for ((_, source, _), r) in created.iter().zip(starts) {
            r.map_err(|e| RuntimeError::Engine(format!("starting {source}: {e}")))?;
        }
        crate::testhook::pause_at(
            self.inner.opts.pause_at.as_deref(),
            "before_ready",
            spec.version,
            Some(progress),
        )
        .await;

        // Readiness, all in parallel under one deadline.
        let deadline = Instant::now() + spec.health.timeout;
        let tally = Tally::new(spec, progress);
        let host = spec.hosts.first().cloned();
        let settle = self.inner.opts.settle;
        let checks = created.iter().map(|(id, source, web)| {
            let tally = &tally;
            let probe = Probe {
                check: if *web {
                    Check::for_web(&spec.health.kind, settle)
                } else {
                    Check::Settle(settle)
                },
                port,
                host: host.as_deref(),
                deadline,
                timeout: spec.health.timeout,
            };
            let kind_name = source.split('.').next().unwrap_or("").to_string();
            async move {
                let r = self.wait_ready(id, source, &probe).await;
                if r.is_ok() {
                    tally.ready(&kind_name);
                }
                r.map_err(|reason| (id.clone(), source.clone(), reason))
            }
        });
        let results = first_error(checks).await;
        if let Err((id, source, reason)) = results {
            let lines = self.last_log_lines(&id, 10).await;
            let ids = std::mem::take(&mut guard.ids);
            self.remove_all(&ids).await;
            let mut msg = reason;
            if lines.is_empty() {
                msg.push_str(&format!("\n(no output from {source})"));
            } else {
                msg.push_str(&format!("\nlast log lines of {source}:"));
                for l in lines {
                    msg.push_str("\n  ");
                    msg.push_str(&l);
                }
            }
            return Err(RuntimeError::NotReady(msg));
        }
        tracing::info!(app = %spec.app, deploy = %spec.deploy_id, instances = created.len(),
            ms = t0.elapsed().as_millis() as u64, "instances ready");
        Ok(std::mem::take(&mut guard.ids))
    }

    // ---- switch -------------------------------------------------------------

    async fn switch_impl(
        &self,
        spec: &ReleaseSpec,
        started: Started,
        progress: &Progress,
    ) -> Result<(), RuntimeError> {
        let all = self.list(Some(&spec.app)).await?;
        let mut web: Vec<&Instance> = all
            .iter()
            .filter(|i| i.deploy == started.deploy_id && i.kind == "web" && !i.oneoff)
            .collect();
        web.sort_by_key(|i| i.number);
        let mut backends = Vec::new();
        for i in web {
            match i.addr() {
                Some(a) => backends.push(a),
                // Restarting right now. The release is committed: route to
                // the others rather than fail.
                None => tracing::warn!(app = %spec.app, instance = %i.source(),
                    "no address on the app network; not routed"),
            }
        }
        self.inner
            .router
            .set_app(&spec.app, spec.hosts.clone(), backends);
        // A stop-first rollout's held requests go to the new instance now.
        if let Some(mut swap) = started.handle.take::<Containers>().and_then(|c| c.1) {
            swap.release();
        }
        crate::testhook::pause_at(
            self.inner.opts.pause_at.as_deref(),
            "after_switch",
            spec.version,
            Some(progress),
        )
        .await;
        let old: Vec<Instance> = all
            .into_iter()
            .filter(|i| i.deploy != started.deploy_id && !i.oneoff)
            .collect();
        if !old.is_empty() {
            let me = self.clone();
            let version = spec.version;
            tokio::spawn(async move { me.retire(old, version).await });
        }
        Ok(())
    }

    /// Drains the old web instances, then stops and removes everything old.
    /// Non-web instances stop at once.
    /// `version`: the release now serving (for the test pause point).
    async fn retire(&self, old: Vec<Instance>, version: i64) {
        let (web, other): (Vec<Instance>, Vec<Instance>) =
            old.into_iter().partition(|i| i.kind == "web");
        let addrs: Vec<SocketAddr> = web.iter().filter_map(Instance::addr).collect();
        let drain = async {
            if !addrs.is_empty() {
                self.inner
                    .router
                    .drain(&addrs, self.inner.opts.drain_max)
                    .await;
            }
            crate::testhook::pause_at(
                self.inner.opts.pause_at.as_deref(),
                "during_cleanup",
                version,
                None,
            )
            .await;
            join_all(web.iter().map(|i| self.stop_and_remove(&i.id))).await;
        };
        let others = join_all(other.iter().map(|i| self.stop_and_remove(&i.id)));
        futures::join!(drain, others);
    }

    // ---- processes ----------------------------------------------------------

    async fn processes_impl(&self, app: &str) -> Result<Vec<ProcessInfo>, RuntimeError> {
        let mut list = self.list(Some(app)).await?;
        // A timer run that exited is kept only for `logs`.
        list.retain(|i| i.timer.is_none() || i.state == "running");
        let infos = join_all(list.into_iter().map(|i| async move {
            let started_at = if i.state == "running" || i.state == "restarting" {
                self.started_at(&i.id).await
            } else {
                None
            };
            ProcessInfo {
                name: i.source(),
                kind: i.kind.clone(),
                number: i.number,
                release: i.release,
                state: i.state.clone(),
                started_at,
                id: i.id.clone(),
                deploy_id: i.deploy.clone(),
            }
        }))
        .await;
        let mut infos = infos;
        infos.sort_by(|a, b| {
            (a.kind != "web", &a.kind, a.number, a.release).cmp(&(
                b.kind != "web",
                &b.kind,
                b.number,
                b.release,
            ))
        });
        Ok(infos)
    }

    // ---- destroy ------------------------------------------------------------

    async fn destroy_impl(&self, app: &str) -> Result<(), RuntimeError> {
        self.inner.router.remove_app(app);
        let list = self.list(Some(app)).await?;
        let ids: Vec<String> = list.into_iter().map(|i| i.id).collect();
        self.remove_all(&ids).await;
        self.remove_network(app).await?;
        self.destroy_app_volumes(app).await?;
        Ok(())
    }

    /// `-----> web.1`-style helpers shared by the submodules.
    async fn remove_all(&self, ids: &[String]) {
        join_all(ids.iter().map(|id| self.force_remove(id))).await;
    }
}

/// Runs every future; the first `Err` wins (the others are dropped).
async fn first_error<T, E>(
    futs: impl IntoIterator<Item = impl std::future::Future<Output = Result<T, E>>>,
) -> Result<Vec<T>, E> {
    futures::future::try_join_all(futs).await
}

/// `-----> web: 1/2 healthy` as instances become ready.
struct Tally<'a> {
    progress: &'a Progress,
    counts: Mutex<BTreeMap<String, (u32, u32)>>,
}

impl<'a> Tally<'a> {
    fn new(spec: &ReleaseSpec, progress: &'a Progress) -> Tally<'a> {
        let counts = spec
            .processes
            .iter()
            .filter(|p| p.count > 0)
            .map(|p| (p.kind.clone(), (0, p.count)))
            .collect();
        Tally {
            progress,
            counts: Mutex::new(counts),
        }
    }

    fn ready(&self, kind: &str) {
        let line = {
            let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let Some(entry) = c.get_mut(kind) else { return };
            entry.0 += 1;
            let word = if kind == "web" { "healthy" } else { "running" };
            format!("{kind}: {}/{} {word}", entry.0, entry.1)
        };
        self.progress.stage(line);
    }
}

/// Containers of a rollout in progress: removed (in the background) if the
/// future creating them is dropped before it hands them over.
struct RemoveOnDrop {
    rt: LocalRuntime,
    ids: Vec<String>,
}

impl RemoveOnDrop {
    fn new(rt: LocalRuntime) -> RemoveOnDrop {
        RemoveOnDrop {
            rt,
            ids: Vec::new(),
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.ids);
        let rt = self.rt.clone();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move { rt.remove_all(&ids).await });
        }
    }
}

impl Runtime for LocalRuntime {
    fn start<'a>(
        &'a self,
        spec: &'a ReleaseSpec,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<Started, RuntimeError>> {
        self.start_impl(spec, progress).boxed()
    }

    fn switch<'a>(
        &'a self,
        spec: &'a ReleaseSpec,
        started: Started,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.switch_impl(spec, started, progress).boxed()
    }

    fn abort(&self, started: Started) -> BoxFuture<'_, ()> {
        async move {
            let Containers(ids, swap) = started.handle.take::<Containers>().unwrap_or_default();
            self.remove_all(&ids).await;
            if let Some(swap) = swap {
                self.restore(swap, &Progress::discard()).await;
            }
        }
        .boxed()
    }

    fn processes<'a>(
        &'a self,
        app: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ProcessInfo>, RuntimeError>> {
        self.processes_impl(app).boxed()
    }

    fn logs<'a>(
        &'a self,
        app: &'a str,
        opts: LogOptions,
        tx: mpsc::Sender<LogLine>,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.logs_impl(app, opts, tx).boxed()
    }

    fn run<'a>(
        &'a self,
        spec: &'a ReleaseSpec,
        cmd: OneOff,
        io: OneOffIo,
    ) -> BoxFuture<'a, Result<i64, RuntimeError>> {
        self.run_impl(spec, cmd, io).boxed()
    }

    fn set_hosts<'a>(
        &'a self,
        app: &'a str,
        hosts: Vec<String>,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async move {
            self.inner.router.set_hosts(app, hosts);
            Ok(())
        }
        .boxed()
    }

    fn destroy<'a>(&'a self, app: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.destroy_impl(app).boxed()
    }

    fn prune_images<'a>(
        &'a self,
        app: &'a str,
        remove: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, RuntimeError>> {
        LocalRuntime::prune_images(self, app, remove).boxed()
    }

    fn has_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        async move {
            match self.docker().inspect_image(image).await {
                Ok(_) => Ok(true),
                Err(e) if docker::is_not_found(&e) => Ok(false),
                Err(e) => Err(RuntimeError::Engine(format!("inspecting {image}: {e}"))),
            }
        }
        .boxed()
    }

    /// The rack's scheduler fires the timers (`timers::Scheduler`).
    fn fires_timers(&self) -> bool {
        true
    }

    fn set_timers<'a>(
        &'a self,
        _spec: &'a ReleaseSpec,
        _timers: &'a [crate::timers::Timer],
        _suspended: &'a [String],
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async { Ok(()) })
    }

    fn volume_sizes<'a>(
        &'a self,
        app: &'a str,
        names: &'a [String],
    ) -> RuntimeFuture<'a, BTreeMap<String, Option<u64>>> {
        self.volume_sizes_impl(app, names).boxed()
    }

    fn destroy_volume<'a>(&'a self, app: &'a str, name: &'a str) -> RuntimeFuture<'a, ()> {
        self.destroy_volume_impl(app, name).boxed()
    }

    fn export_volume<'a>(
        &'a self,
        app: &'a str,
        name: &'a str,
        out: &'a mut (dyn AsyncWrite + Send + Unpin),
    ) -> RuntimeFuture<'a, ()> {
        self.export_volume_impl(app, name, out).boxed()
    }

    fn import_volume<'a>(
        &'a self,
        app: &'a str,
        name: &'a str,
        tar: Box<dyn AsyncRead + Send + Unpin>,
    ) -> RuntimeFuture<'a, ()> {
        self.import_volume_impl(app, name, tar).boxed()
    }

    fn recover<'a>(
        &'a self,
        current: &'a [ReleaseSpec],
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.recover_impl(current, progress).boxed()
    }
}
