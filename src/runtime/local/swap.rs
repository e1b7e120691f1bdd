//! Stop-first rollouts of single-writer process types (a type with a
//! volume that is not `--shared`): two instances never run on its volume
//! at once.
//!
//! Before `start` creates the new instances, `stop_old` holds the app's
//! new requests in the router (when the type is `web`), drains what is in
//! flight to the old instance and stops it (it is kept, stopped, until the
//! rollout is over). The new instance then starts on the same volume and
//! becomes ready; `switch` routes to it and drops the hold, which sends
//! the held requests to it. If the new instance fails, or the rollout is
//! aborted, `restore` starts the old instance again, waits until it
//! answers, routes to it and drops the hold.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::docker::Instance;
use super::health::{Check, Probe};
use super::LocalRuntime;
use crate::progress::Progress;
use crate::router::Hold;
use crate::runtime::{HealthKind, ReleaseSpec, RuntimeError};

/// The old instances a stop-first rollout stopped, and the hold on the
/// app's requests while its web instance is swapped.
#[derive(Debug)]
pub(super) struct Swap {
    app: String,
    hosts: Vec<String>,
    health: HealthKind,
    timeout: Duration,
    stopped: Vec<Instance>,
    hold: Option<Hold>,
}

impl Swap {
    /// Ends the hold (after the new backends are routed): the held
    /// requests go to them.
    pub(super) fn release(&mut self) {
        self.hold.take();
    }
}

impl LocalRuntime {
    /// Stops the running instances of `spec`'s single-writer types that
    /// belong to other rollouts (see the module doc). `None` when the
    /// release has no such type.
    pub(super) async fn stop_old(
        &self,
        spec: &ReleaseSpec,
        progress: &Progress,
    ) -> Result<Option<Swap>, RuntimeError> {
        let kinds: Vec<&str> = spec
            .processes
            .iter()
            .filter(|p| spec.single_writer(&p.kind))
            .map(|p| p.kind.as_str())
            .collect();
        if kinds.is_empty() {
            return Ok(None);
        }
        let old: Vec<Instance> = self
            .list(Some(&spec.app))
            .await?
            .into_iter()
            .filter(|i| {
                !i.oneoff
                    && i.deploy != spec.deploy_id
                    && kinds.contains(&i.kind.as_str())
                    && matches!(i.state.as_str(), "running" | "restarting" | "paused")
            })
            .collect();
        let mut swap = Swap {
            app: spec.app.clone(),
            hosts: spec.hosts.clone(),
            health: spec.health.kind.clone(),
            timeout: spec.health.timeout,
            stopped: Vec::new(),
            hold: None,
        };
        if old.is_empty() {
            return Ok(Some(swap));
        }
        let names: Vec<String> = old.iter().map(Instance::source).collect();
        progress.stage(format!(
            "Stopping {} first: a single-writer volume",
            names.join(", ")
        ));
        let web: Vec<SocketAddr> = old
            .iter()
            .filter(|i| i.kind == "web")
            .filter_map(Instance::addr)
            .collect();
        if old.iter().any(|i| i.kind == "web") {
            swap.hold = Some(self.inner.router.hold(&spec.app));
            if !web.is_empty() {
                self.inner
                    .router
                    .drain(&web, self.inner.opts.drain_max)
                    .await;
            }
        }
        let stops = join_all(old.iter().map(|i| self.stop_only(&i.id))).await;
        swap.stopped = old;
        if let Some(e) = stops.into_iter().find_map(Result::err) {
            self.restore(swap, progress).await;
            return Err(e);
        }
        Ok(Some(swap))
    }

    /// SIGTERM, SIGKILL after the grace period; the container stays.
    async fn stop_only(&self, id: &str) -> Result<(), RuntimeError> {
        use bollard::query_parameters::StopContainerOptionsBuilder;
        let t = self.inner.opts.stop_grace.as_secs().min(i32::MAX as u64) as i32;
        let opts = StopContainerOptionsBuilder::new().t(t).build();
        match self.docker().stop_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if super::docker::is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(RuntimeError::Engine(format!("stopping {id}: {e}"))),
        }
    }

    /// Brings the stopped old instances back on their volume, routes to
    /// the web ones that answer, and ends the hold. The new instances must
    /// be gone already.
    pub(super) async fn restore(&self, mut swap: Swap, progress: &Progress) {
        if swap.stopped.is_empty() {
            return;
        }
        progress.stage("Starting the previous instance again on its volume");
        for i in &swap.stopped {
            if let Err(e) = self.start_container(&i.id).await {
                tracing::error!(app = %swap.app, instance = %i.source(), error = %e, "restarting the previous instance");
            }
        }
        let port_of = |i: &Instance| i.port.unwrap_or(5000);
        let deadline = Instant::now() + swap.timeout;
        let host = swap.hosts.first().cloned();
        let web: Vec<&Instance> = swap.stopped.iter().filter(|i| i.kind == "web").collect();
        let waits = web.iter().map(|i| {
            let probe = Probe {
                check: match &swap.health {
                    HealthKind::None => Check::Settle(Duration::ZERO),
                    k => Check::for_web(k, Duration::ZERO),
                },
                port: port_of(i),
                host: host.as_deref(),
                deadline,
                timeout: swap.timeout,
            };
            let (id, source) = (i.id.clone(), i.source());
            async move {
                if let Err(e) = self.wait_ready(&id, &source, &probe).await {
                    tracing::error!(instance = %source, error = %e, "the previous instance is not ready again");
                }
            }
        });
        join_all(waits).await;
        if !web.is_empty() {
            // Its address on the app network may differ after a restart.
            let ids: Vec<&str> = web.iter().map(|i| i.id.as_str()).collect();
            let addrs: Vec<SocketAddr> = match self.list(Some(&swap.app)).await {
                Ok(list) => list
                    .iter()
                    .filter(|i| ids.contains(&i.id.as_str()))
                    .filter_map(Instance::addr)
                    .collect(),
                Err(e) => {
                    tracing::error!(app = %swap.app, error = %e, "listing instances");
                    Vec::new()
                }
            };
            self.inner
                .router
                .set_app(&swap.app, swap.hosts.clone(), addrs);
        }
        swap.release();
    }
}
