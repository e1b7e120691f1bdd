//! `AwsRuntime`: the [`Runtime`] on ECS Fargate.
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
//!   (minimum healthy 100%, maximum 200%) with the deployment circuit
//!   breaker rolling back a failing deployment.
//!
//! `start` updates the services and (unless `wait_for_rollout` is off)
//! waits until each service's PRIMARY deployment, running the new task
//! definition, reaches COMPLETED; FAILED or a circuit-breaker rollback is
//! `NotReady` and the services are pointed back at their previous task
//! definitions. On ECS the load balancer follows the service, so `switch`
//! only retires process types the release no longer has. A task definition
//! is reused when nothing in it changed (a scale rolls no new tasks).
//!
//! moto (the tests' double) never advances an updated service's deployment,
//! hence the `[aws] wait_for_rollout = false` switch; it never runs a task
//! either: `run` reports what DescribeTasks says, which there is exit code 0
//! at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition, ContainerOverride,
    DeploymentCircuitBreaker, DeploymentConfiguration, KeyValuePair, LaunchType, LoadBalancer,
    LogConfiguration, LogDriver, NetworkConfiguration, NetworkMode, PortMapping, Secret, Service,
    Tag, TaskDefinitionField, TaskOverride, TransportProtocol,
};
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::app::{self, AppOutputs};
use super::logs;
use super::rack::AwsSection;
use super::{AwsContext, AwsError, Result};
use crate::progress::Progress;
use crate::runtime::{
    LogLine, LogOptions, OneOff, OneOffIo, ProcessInfo, ProcessSpec, ReleaseSpec, RolloutHandle,
    Runtime, RuntimeError, Started,
};

/// Default time a rollout may take before it counts as failed.
pub const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const POLL: Duration = Duration::from_secs(5);
/// How often `logs -f` and `run` ask CloudWatch Logs for more.
const LOG_POLL: Duration = Duration::from_secs(1);
/// How far back `logs` looks for its tail.
const LOG_LOOKBACK: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_PORT: u16 = 5000;

/// `APP_TYPE`: app names hold no `_`, so the first `_` splits the two.
pub fn service_name(app: &str, kind: &str) -> String {
    format!("{app}_{kind}")
}

/// `rack-RACK_APP_TYPE`.
pub fn family(ctx: &AwsContext, app: &str, kind: &str) -> String {
    format!("rack-{}_{app}_{kind}", ctx.rack)
}

/// `/rack/RACK/APP/vN/KEY`
pub fn parameter_name(ctx: &AwsContext, app: &str, version: i64, key: &str) -> String {
    format!("/rack/{}/{app}/v{version}/{key}", ctx.rack)
}

impl From<AwsError> for RuntimeError {
    fn from(e: AwsError) -> RuntimeError {
        match e {
            AwsError::NotFound(m) => RuntimeError::NotFound(m),
            other => RuntimeError::Other(other.to_string()),
        }
    }
}

/// Fargate's CPU (units) and memory (MiB) for the requested limits:
/// the smallest valid combination that covers both (defaults 0.25 vCPU,
/// 512 MiB).
pub fn fargate_size(
    nano_cpus: Option<i64>,
    memory_bytes: Option<i64>,
) -> std::result::Result<(u32, u32), String> {
    let want_cpu = nano_cpus
        .map(|n| ((n as f64 / 1e9) * 1024.0).ceil() as u32)
        .unwrap_or(256)
        .max(256);
    let want_mem = memory_bytes
        .map(|b| (b as u64).div_ceil(1024 * 1024) as u32)
        .unwrap_or(512)
        .max(512);
    // (cpu, min MiB, max MiB, step)
    const TIERS: &[(u32, u32, u32, u32)] = &[
        (256, 512, 2048, 512),
        (512, 1024, 4096, 1024),
        (1024, 2048, 8192, 1024),
        (2048, 4096, 16384, 1024),
        (4096, 8192, 30720, 1024),
        (8192, 16384, 61440, 4096),
        (16384, 32768, 122880, 8192),
    ];
    for &(cpu, min, max, step) in TIERS {
        if cpu < want_cpu || max < want_mem {
            continue;
        }
        let mut mem = min;
        while mem < want_mem {
            mem += step;
        }
        // 256 CPU allows 512, 1024, 2048 only.
        if cpu == 256 && mem == 1536 {
            mem = 2048;
        }
        return Ok((cpu, mem));
    }
    Err(format!(
        "no Fargate size has {:.2} vCPU and {want_mem} MiB (at most 16 vCPU and 120 GiB)",
        want_cpu as f64 / 1024.0
    ))
}

/// Where a service's rollout to `task_definition` stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    InProgress,
    Completed,
    Failed(String),
    /// The circuit breaker rolled back to an earlier task definition.
    RolledBack(String),
}

/// Reads a DescribeServices answer: the PRIMARY deployment running
/// `task_definition` reached COMPLETED (done), FAILED (failed), or another
/// task definition became PRIMARY again (rolled back).
pub fn rollout_state(service: &Service, task_definition: &str) -> Rollout {
    let deployments = service.deployments();
    let ours = deployments
        .iter()
        .find(|d| d.task_definition() == Some(task_definition));
    let primary = deployments.iter().find(|d| d.status() == Some("PRIMARY"));
    let reason = |d: Option<&aws_sdk_ecs::types::Deployment>| {
        d.and_then(|d| d.rollout_state_reason())
            .unwrap_or("")
            .to_string()
    };
    match primary {
        Some(p) if p.task_definition() == Some(task_definition) => {
            match p.rollout_state().map(|s| s.as_str()) {
                Some("COMPLETED") => Rollout::Completed,
                Some("FAILED") => Rollout::Failed(reason(Some(p))),
                _ => Rollout::InProgress,
            }
        }
        Some(p) => match ours {
            // Our deployment lost PRIMARY to another task definition: the
            // circuit breaker rolled back.
            Some(_) => {
                let why = reason(ours);
                Rollout::RolledBack(if why.is_empty() { reason(Some(p)) } else { why })
            }
            // Ours is not (yet, or no longer) listed: the caller decides
            // from what it saw before.
            None => Rollout::InProgress,
        },
        None => match ours.and_then(|d| d.rollout_state()).map(|s| s.as_str()) {
            Some("FAILED") => Rollout::Failed(reason(ours)),
            _ => Rollout::InProgress,
        },
    }
}

/// Deletes the app's ECS services (scaled to 0 first).
pub async fn delete_services(
    ctx: &AwsContext,
    cluster: &str,
    app: &str,
    progress: &Progress,
) -> Result<()> {
    for name in app_services(ctx, cluster, app).await? {
        let _ = ctx
            .ecs
            .update_service()
            .cluster(cluster)
            .service(&name)
            .desired_count(0)
            .send()
            .await;
        match ctx
            .ecs
            .delete_service()
            .cluster(cluster)
            .service(&name)
            .force(true)
            .send()
            .await
        {
            Ok(_) => progress.detail(format!("deleted service {name}")),
            Err(e) => {
                let e = AwsError::api("ECS.DeleteService", e);
                if !e.is_not_found() {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Names of the app's services in the cluster (missing cluster: none).
pub async fn app_services(ctx: &AwsContext, cluster: &str, app: &str) -> Result<Vec<String>> {
    let prefix = format!("{app}_");
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = match ctx
            .ecs
            .list_services()
            .cluster(cluster)
            .set_next_token(token)
            .send()
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let e = AwsError::api("ECS.ListServices", e);
                return if e.is_not_found() || e.to_string().contains("Cluster not found") {
                    Ok(out)
                } else {
                    Err(e)
                };
            }
        };
        for arn in page.service_arns() {
            let name = arn.rsplit('/').next().unwrap_or(arn);
            if name.starts_with(&prefix) {
                out.push(name.to_string());
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    // Deleted services may still be listed for a while: keep live ones.
    let mut live = Vec::new();
    for chunk in out.chunks(10) {
        let d = ctx
            .ecs
            .describe_services()
            .cluster(cluster)
            .set_services(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::api("ECS.DescribeServices", e))?;
        live.extend(
            d.services()
                .iter()
                .filter(|s| s.status() != Some("INACTIVE"))
                .filter_map(|s| s.service_name().map(str::to_string)),
        );
    }
    live.sort();
    Ok(live)
}

/// Deregisters every task definition revision of the app's families.
pub async fn deregister_task_definitions(ctx: &AwsContext, app: &str) -> Result<()> {
    let prefix = format!("rack-{}_{app}_", ctx.rack);
    let mut token = None;
    let mut arns = Vec::new();
    loop {
        let page = ctx
            .ecs
            .list_task_definitions()
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| AwsError::api("ECS.ListTaskDefinitions", e))?;
        for arn in page.task_definition_arns() {
            // arn:...:task-definition/FAMILY:REV
            let fam = arn
                .rsplit('/')
                .next()
                .and_then(|s| s.rsplit_once(':'))
                .map(|(f, _)| f);
            if fam.is_some_and(|f| f.starts_with(&prefix)) {
                arns.push(arn.clone());
            }
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    for arn in arns {
        let _ = ctx
            .ecs
            .deregister_task_definition()
            .task_definition(&arn)
            .send()
            .await;
    }
    Ok(())
}

/// Stable FNV-1a 64 hash (task definition fingerprints).
fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The ECS runtime of one rack.
pub struct AwsRuntime {
    ctx: AwsContext,
    rack: AwsSection,
    wait_for_rollout: bool,
    rollout_timeout: Duration,
}

/// What `start` changed on one service, for `abort`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    service: String,
    previous: Option<String>,
    new: String,
}

impl AwsRuntime {
    /// `rack`: the `[aws]` table (or [`AwsSection::load`]); its
    /// `wait_for_rollout` (default true) decides whether `start` waits for
    /// ECS deployments.
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

    fn parameter_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:ssm:{}:{}:parameter{name}",
            self.ctx.region,
            self.rack.account_id()
        )
    }

    /// Puts every config value of the release as a SecureString under the
    /// rack's key; returns (KEY, parameter ARN) pairs.
    async fn put_parameters(&self, spec: &ReleaseSpec) -> Result<Vec<(String, String)>> {
        let mut refs = Vec::new();
        for (key, value) in spec.env.pairs() {
            if value.is_empty() {
                // SSM cannot hold an empty value; an empty string reveals
                // nothing, so it goes to `environment` (see task_definition).
                continue;
            }
            let name = parameter_name(&self.ctx, &spec.app, spec.version, key);
            self.ctx
                .ssm
                .put_parameter()
                .name(&name)
                .value(value)
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .key_id(&self.rack.key_arn)
                .overwrite(true)
                .description(format!(
                    "rack {} app {} v{} {key}",
                    self.ctx.rack, spec.app, spec.version
                ))
                .send()
                .await
                .map_err(|e| AwsError::api("SSM.PutParameter", e))?;
            refs.push((key.to_string(), self.parameter_arn(&name)));
        }
        Ok(refs)
    }

    /// Registers the task definition of one process type (or reuses the
    /// service's current one when nothing in it changed).
    async fn task_definition(
        &self,
        spec: &ReleaseSpec,
        p: &ProcessSpec,
        app_out: &AppOutputs,
        secrets: &[(String, String)],
        current: Option<&str>,
    ) -> Result<String> {
        let (cpu, mem) = fargate_size(p.nano_cpus, p.memory_bytes).map_err(AwsError::Invalid)?;
        let port = spec.port.unwrap_or(DEFAULT_PORT);
        let mut env = vec![
            ("PORT", port.to_string()),
            ("RACK_APP", spec.app.clone()),
            ("RACK_RELEASE", format!("v{}", spec.version)),
        ];
        // Empty config values (SSM cannot store them; nothing secret).
        env.extend(
            spec.env
                .pairs()
                .filter(|(_, v)| v.is_empty())
                .map(|(k, _)| (k, String::new())),
        );
        let fingerprint = {
            let doc = serde_json::json!({
                "image": spec.image, "command": p.command, "cpu": cpu, "mem": mem,
                "env": env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "secrets": secrets, "web": p.kind == "web",
                "roles": [&self.rack.execution_role_arn, &app_out.task_role_arn],
                "logs": app_out.log_group,
            });
            format!("{:016x}", fnv64(doc.to_string().as_bytes()))
        };
        if let Some(cur) = current {
            if let Ok(d) = self
                .ctx
                .ecs
                .describe_task_definition()
                .task_definition(cur)
                .include(TaskDefinitionField::Tags)
                .send()
                .await
            {
                let same = d.tags().iter().any(|t| {
                    t.key() == Some("rack:spec") && t.value() == Some(fingerprint.as_str())
                });
                if same {
                    return Ok(cur.to_string());
                }
            }
        }

        let mut c = ContainerDefinition::builder()
            .name(&p.kind)
            .image(&spec.image)
            .essential(true)
            // The container may use the whole task (moto also needs these).
            .cpu(cpu as i32)
            .memory(mem as i32)
            .set_environment(Some(
                env.iter()
                    .map(|(k, v)| KeyValuePair::builder().name(*k).value(v).build())
                    .collect(),
            ))
            .set_secrets(Some(
                secrets
                    .iter()
                    .map(|(k, arn)| Secret::builder().name(k).value_from(arn).build())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| AwsError::Invalid(e.to_string()))?,
            ))
            .log_configuration(
                LogConfiguration::builder()
                    .log_driver(LogDriver::Awslogs)
                    .options("awslogs-group", &app_out.log_group)
                    .options("awslogs-region", &self.ctx.region)
                    .options("awslogs-stream-prefix", &p.kind)
                    .build()
                    .map_err(|e| AwsError::Invalid(e.to_string()))?,
            );
        if let Some(cmd) = &p.command {
            c = c.command("/bin/sh").command("-c").command(cmd);
        }
        if p.kind == "web" {
            c = c.port_mappings(
                PortMapping::builder()
                    .container_port(port as i32)
                    .protocol(TransportProtocol::Tcp)
                    .build(),
            );
        }
        let out = self
            .ctx
            .ecs
            .register_task_definition()
            .family(family(&self.ctx, &spec.app, &p.kind))
            .container_definitions(c.build())
            .cpu(cpu.to_string())
            .memory(mem.to_string())
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .execution_role_arn(&self.rack.execution_role_arn)
            .task_role_arn(&app_out.task_role_arn)
            .tags(Tag::builder().key("rack:app").value(&spec.app).build())
            .tags(
                Tag::builder()
                    .key("rack:release")
                    .value(spec.version.to_string())
                    .build(),
            )
            .tags(
                Tag::builder()
                    .key("rack:build")
                    .value(&spec.build_id)
                    .build(),
            )
            .tags(Tag::builder().key("rack:spec").value(&fingerprint).build())
            .send()
            .await
            .map_err(|e| AwsError::api("ECS.RegisterTaskDefinition", e))?;
        out.task_definition()
            .and_then(|t| t.task_definition_arn())
            .map(str::to_string)
            .ok_or_else(|| {
                AwsError::Invalid("ECS registered a task definition without an ARN".into())
            })
    }

    /// The service, if it exists and is ACTIVE.
    async fn service(&self, name: &str) -> Result<Option<Service>> {
        let out = self
            .ctx
            .ecs
            .describe_services()
            .cluster(self.cluster())
            .services(name)
            .send()
            .await
            .map_err(|e| AwsError::api("ECS.DescribeServices", e))?;
        Ok(out
            .services()
            .iter()
            .find(|s| s.status() == Some("ACTIVE"))
            .cloned())
    }

    fn network(&self) -> Result<NetworkConfiguration> {
        Ok(NetworkConfiguration::builder()
            .awsvpc_configuration(
                AwsVpcConfiguration::builder()
                    .set_subnets(Some(self.rack.subnets.clone()))
                    .security_groups(&self.rack.service_security_group)
                    .assign_public_ip(AssignPublicIp::Enabled)
                    .build()
                    .map_err(|e| AwsError::Invalid(e.to_string()))?,
            )
            .build())
    }

    /// Creates or updates the type's service; returns its previous task
    /// definition (`None`: created now).
    async fn apply_service(
        &self,
        spec: &ReleaseSpec,
        p: &ProcessSpec,
        app_out: &AppOutputs,
        existing: Option<&Service>,
        task_definition: &str,
    ) -> Result<Option<String>> {
        let name = service_name(&spec.app, &p.kind);
        if let Some(s) = existing {
            self.ctx
                .ecs
                .update_service()
                .cluster(self.cluster())
                .service(&name)
                .task_definition(task_definition)
                .desired_count(p.count as i32)
                .send()
                .await
                .map_err(|e| AwsError::api("ECS.UpdateService", e))?;
            return Ok(s.task_definition().map(str::to_string));
        }
        let mut req = self
            .ctx
            .ecs
            .create_service()
            .cluster(self.cluster())
            .service_name(&name)
            .task_definition(task_definition)
            .desired_count(p.count as i32)
            .launch_type(LaunchType::Fargate)
            .network_configuration(self.network()?)
            .deployment_configuration(
                DeploymentConfiguration::builder()
                    .minimum_healthy_percent(100)
                    .maximum_percent(200)
                    .deployment_circuit_breaker(
                        DeploymentCircuitBreaker::builder()
                            .enable(true)
                            .rollback(true)
                            .build(),
                    )
                    .build(),
            )
            .tags(Tag::builder().key("rack:app").value(&spec.app).build())
            .tags(Tag::builder().key("rack:type").value(&p.kind).build());
        if p.kind == "web" {
            req = req
                .load_balancers(
                    LoadBalancer::builder()
                        .target_group_arn(&app_out.target_group_arn)
                        .container_name("web")
                        .container_port(spec.port.unwrap_or(DEFAULT_PORT) as i32)
                        .build(),
                )
                .health_check_grace_period_seconds(spec.health.timeout.as_secs().min(3600) as i32);
        }
        req.send()
            .await
            .map_err(|e| AwsError::api("ECS.CreateService", e))?;
        Ok(None)
    }

    /// Polls the services until every rollout completed; streams service
    /// events.
    async fn wait_rollouts(
        &self,
        changes: &[Change],
        progress: &Progress,
    ) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let mut seen: HashSet<String> = HashSet::new();
        let mut pending: Vec<&Change> = changes.iter().collect();
        // Services whose new deployment we have seen listed: if it vanishes
        // while another task definition is PRIMARY, it was rolled back.
        let mut listed: HashSet<String> = HashSet::new();
        // Events older than the rollout are not news.
        for c in &pending {
            if let Ok(Some(s)) = self.service(&c.service).await {
                seen.extend(s.events().iter().filter_map(|e| e.id().map(str::to_string)));
            }
        }
        while !pending.is_empty() {
            let mut still = Vec::new();
            for c in pending {
                let s = self.service(&c.service).await?.ok_or_else(|| {
                    RuntimeError::NotReady(format!("service {} disappeared", c.service))
                })?;
                let mut fresh: Vec<_> = s
                    .events()
                    .iter()
                    .filter(|e| e.id().is_some_and(|id| !seen.contains(id)))
                    .collect();
                fresh.reverse();
                for e in fresh {
                    seen.insert(e.id().unwrap_or_default().to_string());
                    progress.detail(format!("{}: {}", c.service, e.message().unwrap_or("")));
                }
                let ours_listed = s
                    .deployments()
                    .iter()
                    .any(|d| d.task_definition() == Some(c.new.as_str()));
                if ours_listed {
                    listed.insert(c.service.clone());
                } else if listed.contains(&c.service) {
                    return Err(RuntimeError::NotReady(format!(
                        "{}: the deployment circuit breaker rolled back",
                        c.service
                    )));
                }
                match rollout_state(&s, &c.new) {
                    Rollout::Completed => progress.detail(format!(
                        "{}: {}/{} running",
                        c.service,
                        s.running_count(),
                        s.desired_count()
                    )),
                    Rollout::InProgress => still.push(c),
                    Rollout::Failed(why) => {
                        return Err(RuntimeError::NotReady(format!(
                            "{}: deployment failed: {why}",
                            c.service
                        )))
                    }
                    Rollout::RolledBack(why) => {
                        return Err(RuntimeError::NotReady(format!(
                            "{}: the deployment circuit breaker rolled back: {why}",
                            c.service
                        )))
                    }
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

    async fn undo(&self, changes: &[Change]) {
        for c in changes {
            let r = match &c.previous {
                Some(prev) => self
                    .ctx
                    .ecs
                    .update_service()
                    .cluster(self.cluster())
                    .service(&c.service)
                    .task_definition(prev)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::api("ECS.UpdateService", e)),
                None => self
                    .ctx
                    .ecs
                    .delete_service()
                    .cluster(self.cluster())
                    .service(&c.service)
                    .force(true)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::api("ECS.DeleteService", e)),
            };
            if let Err(e) = r {
                tracing::warn!(service = %c.service, error = %e, "undoing a rollout");
            }
        }
    }

    async fn start_inner(
        &self,
        spec: &ReleaseSpec,
        progress: &Progress,
    ) -> Result<Started, RuntimeError> {
        let app_out = app::app_outputs(&self.ctx, &spec.app).await?;
        // Read every service first: an unknown cluster fails here, before
        // anything was written.
        let mut existing = Vec::new();
        for p in &spec.processes {
            existing.push(self.service(&service_name(&spec.app, &p.kind)).await?);
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
            let name = service_name(&spec.app, &p.kind);
            let step = async {
                let td = self
                    .task_definition(
                        spec,
                        p,
                        &app_out,
                        &secrets,
                        existing.as_ref().and_then(|s| s.task_definition()),
                    )
                    .await?;
                let prev = self
                    .apply_service(spec, p, &app_out, existing.as_ref(), &td)
                    .await?;
                Ok::<_, AwsError>(Change {
                    service: name.clone(),
                    previous: prev,
                    new: td,
                })
            };
            match step.await {
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

    async fn processes_inner(&self, app: &str) -> Result<Vec<ProcessInfo>> {
        let mut out = Vec::new();
        let mut releases: HashMap<String, i64> = HashMap::new();
        for name in app_services(&self.ctx, self.cluster(), app).await? {
            let Some(svc) = self.service(&name).await? else {
                continue;
            };
            let kind = name
                .split_once('_')
                .map(|(_, k)| k)
                .unwrap_or(&name)
                .to_string();
            let tasks = self
                .ctx
                .ecs
                .list_tasks()
                .cluster(self.cluster())
                .service_name(&name)
                .send()
                .await
                .map_err(|e| AwsError::api("ECS.ListTasks", e))?;
            let arns: Vec<String> = tasks.task_arns().to_vec();
            let mut infos = Vec::new();
            if !arns.is_empty() {
                let d = self
                    .ctx
                    .ecs
                    .describe_tasks()
                    .cluster(self.cluster())
                    .set_tasks(Some(arns))
                    .send()
                    .await
                    .map_err(|e| AwsError::api("ECS.DescribeTasks", e))?;
                for t in d.tasks() {
                    let td = t.task_definition_arn().unwrap_or_default().to_string();
                    let release = self.release_of(&td, &mut releases).await;
                    infos.push(ProcessInfo {
                        name: String::new(),
                        kind: kind.clone(),
                        number: 0,
                        release,
                        state: t.last_status().unwrap_or("unknown").to_ascii_lowercase(),
                        started_at: t.started_at().and_then(|d| {
                            d.fmt(aws_sdk_ecs::primitives::DateTimeFormat::DateTime)
                                .ok()
                        }),
                        id: t
                            .task_arn()
                            .and_then(|a| a.rsplit('/').next())
                            .unwrap_or_default()
                            .to_string(),
                        deploy_id: String::new(),
                    });
                }
            } else {
                // No task listed (a double that does not run tasks): show
                // the service's own counts.
                let td = svc.task_definition().unwrap_or_default().to_string();
                let release = self.release_of(&td, &mut releases).await;
                for i in 0..svc.desired_count().max(0) {
                    infos.push(ProcessInfo {
                        name: String::new(),
                        kind: kind.clone(),
                        number: 0,
                        release,
                        state: if i < svc.running_count() {
                            "running"
                        } else {
                            "pending"
                        }
                        .into(),
                        started_at: None,
                        id: name.clone(),
                        deploy_id: String::new(),
                    });
                }
            }
            infos.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
            for (i, mut p) in infos.into_iter().enumerate() {
                p.number = i as u32 + 1;
                p.name = format!("{}.{}", p.kind, p.number);
                out.push(p);
            }
        }
        out.sort_by(|a, b| a.kind.cmp(&b.kind).then(a.number.cmp(&b.number)));
        Ok(out)
    }

    async fn release_of(&self, td: &str, cache: &mut HashMap<String, i64>) -> i64 {
        if let Some(r) = cache.get(td) {
            return *r;
        }
        let r = match self
            .ctx
            .ecs
            .describe_task_definition()
            .task_definition(td)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
        {
            Ok(d) => d
                .tags()
                .iter()
                .find(|t| t.key() == Some("rack:release"))
                .and_then(|t| t.value())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            Err(_) => 0,
        };
        cache.insert(td.to_string(), r);
        r
    }

    /// `TYPE.N` of the app's running tasks (as `ps` numbers them), by task
    /// id; a task that is gone shows as `TYPE.<task id>`.
    async fn task_names(&self, app: &str) -> HashMap<String, String> {
        match self.processes_inner(app).await {
            Ok(ps) => ps.into_iter().map(|p| (p.id, p.name)).collect(),
            Err(e) => {
                tracing::debug!(app, error = %e, "naming tasks for logs");
                HashMap::new()
            }
        }
    }

    async fn logs_inner(
        &self,
        app: &str,
        opts: LogOptions,
        tx: mpsc::Sender<LogLine>,
    ) -> Result<()> {
        let app_out = app::app_outputs(&self.ctx, app).await?;
        let mut names = self.task_names(app).await;
        let since = super::state::now_ms() - LOG_LOOKBACK.as_millis() as i64;
        let mut reader = logs::GroupReader::new(&self.ctx, &app_out.log_group, opts.kind, since);
        // The tail: only the last N events are ever held.
        let keep = opts.tail.unwrap_or(usize::MAX);
        let mut tail: VecDeque<logs::Event> = VecDeque::new();
        reader
            .next_batch(|e| {
                if keep > 0 {
                    if tail.len() == keep {
                        tail.pop_front();
                    }
                    tail.push_back(e);
                }
            })
            .await?;
        let line = |names: &HashMap<String, String>, e: logs::Event| LogLine {
            time: logs::rfc3339(e.timestamp),
            source: names
                .get(&e.task)
                .cloned()
                .unwrap_or_else(|| format!("{}.{}", e.kind, e.task)),
            text: e.message,
        };
        for e in tail {
            if tx.send(line(&names, e)).await.is_err() {
                return Ok(());
            }
        }
        if !opts.follow {
            return Ok(());
        }
        loop {
            tokio::select! {
                _ = tx.closed() => return Ok(()),
                _ = tokio::time::sleep(LOG_POLL) => {}
            }
            let mut batch = Vec::new();
            reader.next_batch(|e| batch.push(e)).await?;
            if batch.iter().any(|e| !names.contains_key(&e.task)) {
                // A new task (a deploy or a restart): learn its number.
                names = self.task_names(app).await;
            }
            for e in batch {
                if tx.send(line(&names, e)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    async fn run_inner(
        &self,
        spec: &ReleaseSpec,
        cmd: OneOff,
        mut io: OneOffIo,
    ) -> Result<i64, RuntimeError> {
        use tokio::io::AsyncWriteExt;
        if cmd.argv.is_empty() {
            return Err(RuntimeError::Other("nothing to run".into()));
        }
        let app_out = app::app_outputs(&self.ctx, &spec.app).await?;
        let secrets = self.put_parameters(spec).await?;
        let p = ProcessSpec {
            kind: "run".into(),
            command: None,
            count: 0,
            memory_bytes: spec.processes.first().and_then(|p| p.memory_bytes),
            nano_cpus: spec.processes.first().and_then(|p| p.nano_cpus),
        };
        let td = self
            .task_definition(spec, &p, &app_out, &secrets, None)
            .await?;
        let out = self
            .ctx
            .ecs
            .run_task()
            .cluster(self.cluster())
            .task_definition(&td)
            .launch_type(LaunchType::Fargate)
            .network_configuration(self.network()?)
            .started_by("rack-run")
            .overrides(
                TaskOverride::builder()
                    .container_overrides(
                        ContainerOverride::builder()
                            .name("run")
                            .set_command(Some(cmd.argv.clone()))
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .map_err(|e| AwsError::api("ECS.RunTask", e))?;
        if let Some(f) = out.failures().first() {
            return Err(RuntimeError::Other(format!(
                "RunTask: {} {}",
                f.reason().unwrap_or(""),
                f.detail().unwrap_or("")
            )));
        }
        let task = out
            .tasks()
            .first()
            .and_then(|t| t.task_arn())
            .map(str::to_string)
            .ok_or_else(|| RuntimeError::Other("RunTask started no task".into()))?;
        let task_id = task.rsplit('/').next().unwrap_or(&task).to_string();
        let note = format!("rack: one-off task {task_id} started\n");
        let _ = io.stderr.write_all(note.as_bytes()).await;
        // Its output, as the awslogs driver writes it: streamed while the
        // task runs, and drained once it has stopped.
        let mut output =
            logs::StreamReader::new(&self.ctx, &app_out.log_group, &format!("run/run/{task_id}"));
        let deadline = cmd.timeout.map(|t| Instant::now() + t);
        loop {
            copy_lines(&mut output, &mut io.stdout).await?;
            let d = self
                .ctx
                .ecs
                .describe_tasks()
                .cluster(self.cluster())
                .tasks(&task)
                .send()
                .await
                .map_err(|e| AwsError::api("ECS.DescribeTasks", e))?;
            if let Some(t) = d.tasks().first() {
                let container = t.containers().iter().find(|c| c.name() == Some("run"));
                let code = container.and_then(|c| c.exit_code());
                // Done when the task stopped, or when its container reports
                // an exit code (the only thing a double that never runs
                // tasks does report).
                if t.last_status() == Some("STOPPED") || code.is_some() {
                    // The driver may still be shipping the last lines.
                    for _ in 0..3 {
                        if copy_lines(&mut output, &mut io.stdout).await? == 0 {
                            break;
                        }
                    }
                    return match code {
                        Some(c) => Ok(c as i64),
                        None => Err(RuntimeError::Other(format!(
                            "one-off task {task_id} stopped without an exit code: {}",
                            t.stopped_reason().unwrap_or("")
                        ))),
                    };
                }
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                let _ = self
                    .ctx
                    .ecs
                    .stop_task()
                    .cluster(self.cluster())
                    .task(&task)
                    .reason("rack: timed out")
                    .send()
                    .await;
                return Err(RuntimeError::Other(format!(
                    "one-off task {task_id} timed out"
                )));
            }
            tokio::time::sleep(LOG_POLL).await;
        }
    }
}

/// Writes a one-off task's new output lines to `out`; returns how many.
/// A client that went away does not stop the task's bookkeeping.
async fn copy_lines(
    output: &mut logs::StreamReader,
    out: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
) -> Result<usize> {
    use tokio::io::AsyncWriteExt;
    let lines = output.next_batch().await?;
    for line in &lines {
        let _ = out.write_all(line.as_bytes()).await;
        let _ = out.write_all(b"\n").await;
    }
    let _ = out.flush().await;
    Ok(lines.len())
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
        Box::pin(async move {
            // The load balancer already follows the services. Retire the
            // process types this release no longer has.
            let keep: HashSet<String> = spec
                .processes
                .iter()
                .map(|p| service_name(&spec.app, &p.kind))
                .collect();
            for name in app_services(&self.ctx, self.cluster(), &spec.app).await? {
                if !keep.contains(&name) {
                    let _ = self
                        .ctx
                        .ecs
                        .update_service()
                        .cluster(self.cluster())
                        .service(&name)
                        .desired_count(0)
                        .send()
                        .await;
                    self.ctx
                        .ecs
                        .delete_service()
                        .cluster(self.cluster())
                        .service(&name)
                        .force(true)
                        .send()
                        .await
                        .map_err(|e| AwsError::api("ECS.DeleteService", e))?;
                    progress.detail(format!(
                        "removed service {name} (no longer in the Procfile)"
                    ));
                }
            }
            Ok(())
        })
    }

    fn abort(&self, started: Started) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let changes: Vec<Change> = started.handle.take().unwrap_or_default();
            self.undo(&changes).await;
        })
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
            app::create_app(&self.ctx, &self.rack, app, &hosts, &Progress::discard()).await?;
            Ok(())
        })
    }

    fn destroy<'a>(&'a self, app: &'a str) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            app::destroy_app(&self.ctx, app, &Progress::discard()).await?;
            Ok(())
        })
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

/// Summary of a service for tests and `apps:info`: (task definition ARN,
/// desired count).
pub async fn service_state(
    ctx: &AwsContext,
    cluster: &str,
    app: &str,
    kind: &str,
) -> Result<Option<(String, i32)>> {
    let out = ctx
        .ecs
        .describe_services()
        .cluster(cluster)
        .services(service_name(app, kind))
        .send()
        .await
        .map_err(|e| AwsError::api("ECS.DescribeServices", e))?;
    Ok(out
        .services()
        .iter()
        .find(|s| s.status() == Some("ACTIVE"))
        .map(|s| {
            (
                s.task_definition().unwrap_or_default().to_string(),
                s.desired_count(),
            )
        }))
}

#[cfg(test)]
mod tests;
