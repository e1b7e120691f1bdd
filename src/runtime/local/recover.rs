//! `recover`: after a restart, the current releases' instances kept (and
//! missing ones re-created), everything else of the rack's removed, and
//! the router pointed at what runs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::docker::{Instance, NewInstance};
use super::health::{Check, Probe};
use super::LocalRuntime;
use crate::progress::Progress;
use crate::runtime::{HealthKind, ReleaseSpec, RuntimeError};

/// Recovery of one current release: the instances kept, and the
/// (process index, number) pairs to re-create.
type Plan<'a> = (&'a ReleaseSpec, Vec<Instance>, Vec<(usize, u32)>);

impl LocalRuntime {
    pub(super) async fn recover_impl(
        &self,
        current: &[ReleaseSpec],
        progress: &Progress,
    ) -> Result<(), RuntimeError> {
        let all = self.list(None).await?;
        let mut keep: HashSet<String> = HashSet::new();
        let mut by_app: HashMap<&str, &ReleaseSpec> = HashMap::new();
        for spec in current {
            by_app.insert(spec.app.as_str(), spec);
        }
        // Per current release: the instances to keep (one per type/number).
        let mut plan: Vec<Plan<'_>> = Vec::new();
        for spec in current {
            let mut have: BTreeMap<(String, u32), Instance> = BTreeMap::new();
            for i in all
                .iter()
                .filter(|i| i.app == spec.app && i.deploy == spec.deploy_id && !i.oneoff)
            {
                let wanted = spec
                    .processes
                    .iter()
                    .any(|p| p.kind == i.kind && i.number >= 1 && i.number <= p.count);
                let alive = i.state != "dead" && i.state != "removing";
                if wanted && alive && !have.contains_key(&(i.kind.clone(), i.number)) {
                    have.insert((i.kind.clone(), i.number), i.clone());
                }
            }
            let mut missing = Vec::new();
            for (pi, p) in spec.processes.iter().enumerate() {
                for n in 1..=p.count {
                    if !have.contains_key(&(p.kind.clone(), n)) {
                        missing.push((pi, n));
                    }
                }
            }
            let kept: Vec<Instance> = have.into_values().collect();
            keep.extend(kept.iter().map(|i| i.id.clone()));
            plan.push((spec, kept, missing));
        }
        let strays: Vec<String> = all
            .iter()
            .filter(|i| !keep.contains(&i.id))
            .map(|i| i.id.clone())
            .collect();
        if !strays.is_empty() {
            progress.stage(format!("Removing {} stray container(s)", strays.len()));
        }
        // Strays first: an interrupted stop-first rollout's new instance
        // is gone before the current one starts again on its volume.
        join_all(strays.iter().map(|id| self.stop_and_remove(id))).await;
        join_all(plan.into_iter().map(|(spec, kept, missing)| async move {
            if let Err(e) = self.converge(spec, kept, missing, progress).await {
                progress.stage(format!("{}: {e}", spec.app));
                tracing::error!(app = %spec.app, error = %e, "recovering");
            }
        }))
        .await;
        Ok(())
    }

    /// Brings one current release back to its formation and routes to it.
    async fn converge(
        &self,
        spec: &ReleaseSpec,
        kept: Vec<Instance>,
        missing: Vec<(usize, u32)>,
        progress: &Progress,
    ) -> Result<(), RuntimeError> {
        let net = self.ensure_network(&spec.app).await?;
        let port = self.port_for(spec).await?;
        let mut ids: Vec<(String, String, bool)> = Vec::new();
        for i in &kept {
            if i.state != "running" && i.state != "restarting" {
                self.start_container(&i.id)
                    .await
                    .map_err(|e| RuntimeError::Engine(format!("starting {}: {e}", i.source())))?;
            }
            ids.push((i.id.clone(), i.source(), i.kind == "web"));
        }
        if !missing.is_empty() {
            progress.stage(format!(
                "{}: re-creating {} missing instance(s)",
                spec.app,
                missing.len()
            ));
        }
        for (pi, n) in missing {
            let p = &spec.processes[pi];
            let id = self
                .create_instance(
                    spec,
                    &net,
                    port,
                    &NewInstance {
                        process: p,
                        number: n,
                    },
                )
                .await?;
            if let Err(e) = self.start_container(&id).await {
                self.remove_all(std::slice::from_ref(&id)).await;
                return Err(RuntimeError::Engine(format!(
                    "starting {}.{n}: {e}",
                    p.kind
                )));
            }
            ids.push((id, format!("{}.{n}", p.kind), p.kind == "web"));
        }
        // Route to every web instance that answers; wait for them in
        // parallel (running ones answer on the first probe).
        let deadline = Instant::now() + spec.health.timeout;
        let host = spec.hosts.first().cloned();
        let web: Vec<&(String, String, bool)> = ids.iter().filter(|(_, _, w)| *w).collect();
        let results = join_all(web.iter().map(|(id, source, _)| {
            let probe = Probe {
                check: match &spec.health.kind {
                    // Recovery routes to what runs; no new settle period.
                    HealthKind::None => Check::Settle(Duration::ZERO),
                    k => Check::for_web(k, Duration::ZERO),
                },
                port,
                host: host.as_deref(),
                deadline,
                timeout: spec.health.timeout,
            };
            async move {
                let r = self.wait_ready(id, source, &probe).await;
                (id.clone(), source.clone(), r)
            }
        }))
        .await;
        let mut ready = Vec::new();
        for (id, source, r) in &results {
            match r {
                Ok(()) => ready.push(id.clone()),
                Err(reason) => {
                    progress.stage(format!("{}: {source} not ready: {reason}", spec.app))
                }
            }
        }
        let instances = self.list(Some(&spec.app)).await?;
        let addr_of = |id: &str| {
            instances
                .iter()
                .find(|i| i.id == id)
                .and_then(Instance::addr)
        };
        let mut backends: Vec<SocketAddr> = ready.iter().filter_map(|id| addr_of(id)).collect();
        if backends.is_empty() {
            // Better a flaky instance than none: route to what runs.
            backends = results
                .iter()
                .filter_map(|(id, _, _)| addr_of(id))
                .collect();
        }
        self.inner
            .router
            .set_app(&spec.app, spec.hosts.clone(), backends.clone());
        progress.stage(format!(
            "{}: v{} serving on {} web instance(s)",
            spec.app,
            spec.version,
            backends.len()
        ));
        Ok(())
    }
}
