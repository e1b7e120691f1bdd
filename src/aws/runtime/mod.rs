//! `AwsRuntime`: the [`Runtime`] on ECS Fargate, built on the leaf
//! modules ([`super::ecs`], [`super::ssm`], [`super::logs`]) and the app's
//! stack ([`super::lifecycle`]).
//!
//! A release becomes, per process type:
//!
//! - SSM SecureString parameters `/rack/RACK/APP/vN/KEY`, encrypted under
//!   the rack's KMS key, one per config value;
//! - a task definition revision in family `rack-RACK_APP_TYPE`: image by
//!   digest, `PORT`/`RACK_APP`/`RACK_RELEASE` in `environment`, every config
//!   value in `secrets` as a reference to its parameter (a value never
//!   appears in a task definition), CPU and memory from the formation's
//!   limits rounded up to a Fargate size, logs to the app's log group;
//! - one ECS service `APP_TYPE` in the rack's cluster (web attached to the
//!   app's target group), desired count = the type's count, rolling
//!   (minimum healthy 100%, maximum 200%; stop-first, 0% and 100%, for a
//!   type with a single-writer volume) with the deployment circuit
//!   breaker rolling back a failing deployment;
//! - the app's volumes: an EFS file system each ([`volumes`]), mounted
//!   into the task definitions of their types and of one-offs and timers.
//!
//! `start` updates the services and (unless `wait_for_rollout` is off)
//! waits until each service's PRIMARY deployment, running the new task
//! definition, reaches COMPLETED; FAILED or a circuit-breaker rollback is
//! `NotReady` and the services are pointed back at their previous task
//! definitions ([`rollout`]). On ECS the load balancer follows the service,
//! so `switch` only retires process types the release no longer has. A
//! task definition is reused when nothing in it changed (a scale rolls no
//! new tasks).
//!
//! Timers ([`timers`]) are EventBridge Scheduler schedules, rewritten with
//! every release to run its task definition of type `timer`; the rack's
//! own scheduler stays idle (`fires_timers` is false).
//!
//! `ps` ([`ps`]) numbers an app's tasks; `logs` and `run` ([`oneoff`]) read
//! CloudWatch Logs.
//!
//! moto (the tests' double) never advances an updated service's deployment,
//! hence the `[aws] wait_for_rollout = false` switch; it never runs a task
//! either: `run` reports what DescribeTasks says, which there is exit code 0
//! at once.

mod oneoff;
mod ps;
mod rollout;
mod timers;
mod volumes;

/// What `volumes:export`/`import` answer on aws.
const NO_VOLUME_COPY: &str =
    "volumes:export and volumes:import are not available on the aws provider yet: copy files with `run` (e.g. tar over its output)";

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use aws_sdk_ecs::types::NetworkConfiguration;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::ecr;
use super::ecs::{self, service_name};
use super::lifecycle;
use super::section::AwsSection;
use super::{AwsContext, AwsError, Result};
use crate::progress::Progress;
use crate::runtime::{
    LogLine, LogOptions, OneOff, OneOffIo, ProcessInfo, ReleaseSpec, Runtime, RuntimeError,
    RuntimeFuture, Started,
};

/// Default time a rollout may take before it counts as failed.
pub const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const DEFAULT_PORT: u16 = 5000;

impl From<AwsError> for RuntimeError {
    fn from(e: AwsError) -> RuntimeError {
        match e {
            AwsError::NotFound(m) => RuntimeError::NotFound(m),
            other => RuntimeError::Other(other.to_string()),
        }
    }
}

/// The ECS runtime of one rack.
pub struct AwsRuntime {
    ctx: AwsContext,
    rack: AwsSection,
    wait_for_rollout: bool,
    rollout_timeout: Duration,
}

impl AwsRuntime {
    /// `rack`: the `[aws]` table of `rack.toml`; its `wait_for_rollout`
    /// (default true) decides whether `start` waits for ECS deployments.
    pub fn new(ctx: AwsContext, rack: AwsSection) -> AwsRuntime {
        let wait = rack.wait_for_rollout.unwrap_or(true);
        AwsRuntime {
            ctx,
            rack,
            wait_for_rollout: wait,
            rollout_timeout: ROLLOUT_TIMEOUT,
        }
    }

    pub fn with_rollout_timeout(mut self, t: Duration) -> AwsRuntime {
        self.rollout_timeout = t;
        self
    }

    pub fn context(&self) -> &AwsContext {
        &self.ctx
    }

    fn cluster(&self) -> &str {
        &self.rack.cluster
    }

    fn network(&self) -> Result<NetworkConfiguration> {
        ecs::network(&self.rack.subnets, &self.rack.service_security_group)
    }

    /// Retires the app's services of process types `spec` no longer has.
    async fn retire_dropped_types(
        &self,
        spec: &ReleaseSpec,
        progress: &Progress,
    ) -> Result<(), RuntimeError> {
        let keep: HashSet<String> = spec
            .processes
            .iter()
            .map(|p| service_name(&spec.app, &p.kind))
            .collect();
        for name in ecs::app_services(&self.ctx, self.cluster(), &spec.app).await? {
            if !keep.contains(&name) {
                ecs::delete_service(&self.ctx, self.cluster(), &name).await?;
                progress.detail(format!(
                    "removed service {name} (no longer in the Procfile)"
                ));
            }
        }
        Ok(())
    }
}

impl Runtime for AwsRuntime {
    fn start<'a>(
        &'a self,
        spec: &'a ReleaseSpec,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<Started, RuntimeError>> {
        Box::pin(self.start_inner(spec, progress))
    }

    fn switch<'a>(
        &'a self,
        spec: &'a ReleaseSpec,
        _started: Started,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        // The load balancer already follows the services.
        Box::pin(self.retire_dropped_types(spec, progress))
    }

    fn abort(&self, started: Started) -> BoxFuture<'_, ()> {
        Box::pin(self.abort_inner(started))
    }

    fn processes<'a>(
        &'a self,
        app: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ProcessInfo>, RuntimeError>> {
        Box::pin(async move { Ok(self.processes_inner(app).await?) })
    }

    fn logs<'a>(
        &'a self,
        app: &'a str,
        opts: LogOptions,
        tx: mpsc::Sender<LogLine>,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move { Ok(self.logs_inner(app, opts, tx).await?) })
    }

    fn run<'a>(
        &'a self,
        spec: &'a ReleaseSpec,
        cmd: OneOff,
        io: OneOffIo,
    ) -> BoxFuture<'a, Result<i64, RuntimeError>> {
        Box::pin(self.run_inner(spec, cmd, io))
    }

    fn set_hosts<'a>(
        &'a self,
        app: &'a str,
        hosts: Vec<String>,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            lifecycle::create_app(&self.ctx, &self.rack, app, &hosts, &Progress::discard()).await?;
            Ok(())
        })
    }

    fn destroy<'a>(&'a self, app: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            lifecycle::destroy_app(&self.ctx, app, &Progress::discard()).await?;
            Ok(())
        })
    }

    fn has_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<bool, RuntimeError>> {
        Box::pin(async move { Ok(ecr::image_exists(&self.ctx, image).await?) })
    }

    fn fires_timers(&self) -> bool {
        false
    }

    fn set_timers<'a>(
        &'a self,
        spec: &'a ReleaseSpec,
        timers: &'a [crate::timers::Timer],
        suspended: &'a [String],
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move { Ok(self.set_timers_inner(spec, timers, suspended).await?) })
    }

    fn volume_sizes<'a>(
        &'a self,
        app: &'a str,
        names: &'a [String],
    ) -> RuntimeFuture<'a, BTreeMap<String, Option<u64>>> {
        Box::pin(async move { Ok(self.volume_sizes_inner(app, names).await?) })
    }

    fn destroy_volume<'a>(&'a self, app: &'a str, name: &'a str) -> RuntimeFuture<'a, ()> {
        Box::pin(async move { Ok(self.destroy_volume_inner(app, name).await?) })
    }

    /// Reading an EFS file system takes a task that mounts it; not built
    /// yet.
    fn export_volume<'a>(
        &'a self,
        _app: &'a str,
        _name: &'a str,
        _out: &'a mut (dyn AsyncWrite + Send + Unpin),
    ) -> RuntimeFuture<'a, ()> {
        Box::pin(async { Err(RuntimeError::Other(NO_VOLUME_COPY.into())) })
    }

    fn import_volume<'a>(
        &'a self,
        _app: &'a str,
        _name: &'a str,
        _tar: Box<dyn AsyncRead + Send + Unpin>,
    ) -> RuntimeFuture<'a, ()> {
        Box::pin(async { Err(RuntimeError::Other(NO_VOLUME_COPY.into())) })
    }

    fn recover<'a>(
        &'a self,
        _current: &'a [ReleaseSpec],
        _progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        // ECS keeps services running across a rack restart; nothing to do.
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests;
