//! `start` and `abort`: a release's config into SSM, a task definition per
//! process type, each service pointed at it, then (unless
//! `wait_for_rollout` is off) the wait for every ECS deployment; what was
//! changed is undone when anything fails, or when the pipeline aborts.

use std::collections::HashSet;
use std::time::Instant;

use aws_sdk_ecs::types::Service;

use super::{AwsRuntime, DEFAULT_PORT};
use crate::aws::ecs::task_definition::{self, TaskSpec};
use crate::aws::ecs::{self, rollout_state, service_name, Rollout, ServiceSpec, WebTarget};
use crate::aws::lifecycle::{self, AppOutputs};
use crate::aws::{ssm, AwsError, Result};
use crate::progress::Progress;
use crate::runtime::{ProcessSpec, ReleaseSpec, RolloutHandle, RuntimeError, Started};

const POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// What `start` changed on one service, for `abort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Change {
    pub(super) service: String,
    pub(super) previous: Option<String>,
    pub(super) new: String,
}

impl AwsRuntime {
    /// Puts every config value of the release as a SecureString under the
    /// rack's key; returns (KEY, parameter ARN) pairs.
    pub(super) async fn put_parameters(&self, spec: &ReleaseSpec) -> Result<Vec<(String, String)>> {
        ssm::put_config(
            &self.ctx,
            &self.rack.key_arn,
            self.rack.account_id(),
            &spec.app,
            spec.version,
            spec.env.pairs(),
        )
        .await
    }

    /// The task definition of one process type of the release.
    pub(super) fn task_spec(
        &self,
        spec: &ReleaseSpec,
        p: &ProcessSpec,
        app_out: &AppOutputs,
        secrets: &[(String, String)],
        volumes: Vec<task_definition::EfsMount>,
    ) -> Result<TaskSpec> {
        let (cpu, memory) =
            ecs::fargate_size(p.nano_cpus, p.memory_bytes).map_err(AwsError::Invalid)?;
        let port = spec.port.unwrap_or(DEFAULT_PORT);
        let mut environment = vec![
            ("PORT".to_string(), port.to_string()),
            ("RACK_APP".to_string(), spec.app.clone()),
            ("RACK_RELEASE".to_string(), format!("v{}", spec.version)),
        ];
        // Empty config values: SSM cannot store them, and an empty string
        // reveals nothing.
        environment.extend(
            spec.env
                .pairs()
                .filter(|(_, v)| v.is_empty())
                .map(|(k, _)| (k.to_string(), String::new())),
        );
        Ok(TaskSpec {
            family: task_definition::family(&self.ctx, &spec.app, &p.kind),
            kind: p.kind.clone(),
            image: spec.image.clone(),
            command: p.command.clone(),
            cpu,
            memory,
            environment,
            secrets: secrets.to_vec(),
            web_port: (p.kind == "web").then_some(port),
            log_group: app_out.log_group.clone(),
            execution_role_arn: self.rack.execution_role_arn.clone(),
            task_role_arn: app_out.task_role_arn.clone(),
            tags: vec![
                ("rack:app".into(), spec.app.clone()),
                ("rack:release".into(), spec.version.to_string()),
                ("rack:build".into(), spec.build_id.clone()),
            ],
            volumes,
        })
    }

    /// One process type: its task definition (reused when unchanged), its
    /// service pointed at it.
    async fn roll_type(
        &self,
        spec: &ReleaseSpec,
        p: &ProcessSpec,
        app_out: &AppOutputs,
        secrets: &[(String, String)],
        existing: Option<&Service>,
        progress: &Progress,
    ) -> Result<Change> {
        let volumes = self.efs_mounts(spec, Some(&p.kind), progress).await?;
        let td_spec = self.task_spec(spec, p, app_out, secrets, volumes)?;
        let current = existing.and_then(|s| s.task_definition());
        let td = task_definition::register_or_reuse(&self.ctx, &td_spec, current).await?;
        let web = (p.kind == "web").then(|| WebTarget {
            target_group_arn: &app_out.target_group_arn,
            port: spec.port.unwrap_or(DEFAULT_PORT),
            grace_seconds: spec.health.timeout.as_secs().min(3600) as i32,
        });
        let service = ServiceSpec {
            app: &spec.app,
            kind: &p.kind,
            task_definition: &td,
            count: p.count,
            web,
            single_writer: spec.single_writer(&p.kind),
        };
        let previous = ecs::put_service(
            &self.ctx,
            self.cluster(),
            self.network()?,
            &service,
            existing,
        )
        .await?;
        Ok(Change {
            service: service_name(&spec.app, &p.kind),
            previous,
            new: td,
        })
    }

    pub(super) async fn start_inner(
        &self,
        spec: &ReleaseSpec,
        progress: &Progress,
    ) -> Result<Started, RuntimeError> {
        let app_out = lifecycle::app_outputs(&self.ctx, &spec.app).await?;
        // Read every service first: an unknown cluster fails here, before
        // anything was written.
        let mut existing = Vec::new();
        for p in &spec.processes {
            let name = service_name(&spec.app, &p.kind);
            existing.push(ecs::describe_service(&self.ctx, self.cluster(), &name).await?);
        }
        let secrets = self.put_parameters(spec).await?;
        if !secrets.is_empty() {
            progress.detail(format!(
                "{} config values in SSM under /rack/{}/{}/v{}/",
                secrets.len(),
                self.ctx.rack,
                spec.app,
                spec.version
            ));
        }
        let mut changes = Vec::new();
        for (p, existing) in spec.processes.iter().zip(existing) {
            match self
                .roll_type(spec, p, &app_out, &secrets, existing.as_ref(), progress)
                .await
            {
                Ok(c) => {
                    progress.detail(format!(
                        "{}: {} x {}",
                        p.kind,
                        p.count,
                        c.new.rsplit('/').next().unwrap_or(&c.new)
                    ));
                    changes.push(c);
                }
                Err(e) => {
                    self.undo(&changes).await;
                    return Err(e.into());
                }
            }
        }
        if self.wait_for_rollout {
            let waiting: Vec<Change> = changes
                .iter()
                .filter(|c| c.previous.as_deref() != Some(c.new.as_str()) || c.previous.is_none())
                .cloned()
                .collect();
            if let Err(e) = self.wait_rollouts(&waiting, progress).await {
                self.undo(&changes).await;
                return Err(e);
            }
        } else {
            progress.detail(
                "not waiting for ECS deployments to complete ([aws] wait_for_rollout = false)",
            );
        }
        Ok(Started {
            app: spec.app.clone(),
            deploy_id: spec.deploy_id.clone(),
            handle: RolloutHandle::new(changes),
        })
    }

    /// Polls the services until every rollout completed; streams service
    /// events.
    async fn wait_rollouts(
        &self,
        changes: &[Change],
        progress: &Progress,
    ) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let mut watch = Watch::default();
        let mut pending: Vec<&Change> = changes.iter().collect();
        // Events older than the rollout are not news.
        for c in &pending {
            if let Ok(Some(s)) = ecs::describe_service(&self.ctx, self.cluster(), &c.service).await
            {
                watch.seen_events(&s);
            }
        }
        while !pending.is_empty() {
            let mut still = Vec::new();
            for c in pending {
                let s = ecs::describe_service(&self.ctx, self.cluster(), &c.service)
                    .await?
                    .ok_or_else(|| {
                        RuntimeError::NotReady(format!("service {} disappeared", c.service))
                    })?;
                if !watch.done(c, &s, progress)? {
                    still.push(c);
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if started.elapsed() > self.rollout_timeout {
                let names: Vec<&str> = pending.iter().map(|c| c.service.as_str()).collect();
                return Err(RuntimeError::NotReady(format!(
                    "rollout of {} not complete after {}s",
                    names.join(", "),
                    self.rollout_timeout.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// Points each changed service back at its previous task definition;
    /// one created by the rollout is deleted.
    async fn undo(&self, changes: &[Change]) {
        for c in changes {
            let r = match &c.previous {
                Some(prev) => {
                    let cluster = self.cluster();
                    ecs::update_service(&self.ctx, cluster, &c.service, Some(prev), None).await
                }
                None => ecs::delete_service(&self.ctx, self.cluster(), &c.service).await,
            };
            if let Err(e) = r {
                tracing::warn!(service = %c.service, error = %e, "undoing a rollout");
            }
        }
    }

    pub(super) async fn abort_inner(&self, started: Started) {
        let changes: Vec<Change> = started.handle.take().unwrap_or_default();
        self.undo(&changes).await;
    }
}

/// What the waiter has seen of the services so far.
#[derive(Default)]
struct Watch {
    /// Service events already shown.
    seen: HashSet<String>,
    /// Services whose new deployment we have seen listed: if it vanishes
    /// while another task definition is PRIMARY, it was rolled back.
    listed: HashSet<String>,
}

impl Watch {
    fn seen_events(&mut self, s: &Service) {
        self.seen
            .extend(s.events().iter().filter_map(|e| e.id().map(str::to_string)));
    }

    /// Shows the service's new events and tells whether its rollout to
    /// `c.new` is done (`Err`: it failed or was rolled back).
    fn done(&mut self, c: &Change, s: &Service, progress: &Progress) -> Result<bool, RuntimeError> {
        let mut fresh: Vec<_> = s
            .events()
            .iter()
            .filter(|e| e.id().is_some_and(|id| !self.seen.contains(id)))
            .collect();
        fresh.reverse();
        for e in fresh {
            self.seen.insert(e.id().unwrap_or_default().to_string());
            progress.detail(format!("{}: {}", c.service, e.message().unwrap_or("")));
        }
        let ours_listed = s
            .deployments()
            .iter()
            .any(|d| d.task_definition() == Some(c.new.as_str()));
        if ours_listed {
            self.listed.insert(c.service.clone());
        } else if self.listed.contains(&c.service) {
            return Err(RuntimeError::NotReady(format!(
                "{}: the deployment circuit breaker rolled back",
                c.service
            )));
        }
        match rollout_state(s, &c.new) {
            Rollout::Completed => {
                progress.detail(format!(
                    "{}: {}/{} running",
                    c.service,
                    s.running_count(),
                    s.desired_count()
                ));
                Ok(true)
            }
            Rollout::InProgress => Ok(false),
            Rollout::Failed(why) => Err(RuntimeError::NotReady(format!(
                "{}: deployment failed: {why}",
                c.service
            ))),
            Rollout::RolledBack(why) => Err(RuntimeError::NotReady(format!(
                "{}: the deployment circuit breaker rolled back: {why}",
                c.service
            ))),
        }
    }
}
