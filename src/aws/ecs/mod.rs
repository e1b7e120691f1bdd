//! ECS on Fargate: an app's services (this file), its task definitions
//! ([`task_definition`]) and its tasks ([`tasks`]).
//!
//! Names: one service `APP_TYPE` per process type in the rack's cluster,
//! task definition family `rack-RACK_APP_TYPE`. Services roll (minimum
//! healthy 100%, maximum 200%) with the deployment circuit breaker rolling
//! back a failing deployment; [`rollout_state`] reads where a rollout
//! stands from one DescribeServices answer.
//!
//! This module knows nothing of releases, config or the `Runtime` trait:
//! it is handed names, counts and task definitions.

pub mod task_definition;
pub mod tasks;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, DeploymentCircuitBreaker, DeploymentConfiguration,
    LaunchType, LoadBalancer, NetworkConfiguration, Service, Tag,
};

use super::{AwsContext, AwsError, Result};
use crate::progress::Progress;

pub use task_definition::{family, fargate_size};

/// `APP_TYPE`: app names hold no `_`, so the first `_` splits the two.
pub fn service_name(app: &str, kind: &str) -> String {
    format!("{app}_{kind}")
}

/// The process type of service `APP_TYPE`.
pub fn service_kind(service: &str) -> &str {
    service.split_once('_').map(|(_, k)| k).unwrap_or(service)
}

/// Where the tasks of a service run: the rack's subnets, its service
/// security group, a public IP (to pull from ECR without a NAT gateway).
pub fn network(subnets: &[String], security_group: &str) -> Result<NetworkConfiguration> {
    Ok(NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .set_subnets(Some(subnets.to_vec()))
                .security_groups(security_group)
                .assign_public_ip(AssignPublicIp::Enabled)
                .build()
                .map_err(|e| AwsError::Invalid(e.to_string()))?,
        )
        .build())
}

/// Names of the app's services in the cluster (missing cluster: none).
pub async fn app_services(ctx: &AwsContext, cluster: &str, app: &str) -> Result<Vec<String>> {
    let prefix = format!("{app}_");
    let request = ctx.ecs.list_services().cluster(cluster);
    let arns = match paginated!("ECS.ListServices", request, |p| p.service_arns(), None) {
        Ok(arns) => arns,
        Err(e) if e.is_not_found() || e.to_string().contains("Cluster not found") => Vec::new(),
        Err(e) => return Err(e),
    };
    let out: Vec<String> = arns
        .iter()
        .map(|arn| arn.rsplit('/').next().unwrap_or(arn))
        .filter(|name| name.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    // Deleted services may still be listed for a while: keep live ones.
    let mut live = Vec::new();
    for chunk in out.chunks(10) {
        live.extend(
            describe_services(ctx, cluster, chunk)
                .await?
                .iter()
                .filter(|s| s.status() != Some("INACTIVE"))
                .filter_map(|s| s.service_name().map(str::to_string)),
        );
    }
    live.sort();
    Ok(live)
}

/// DescribeServices of up to ten services.
async fn describe_services(
    ctx: &AwsContext,
    cluster: &str,
    names: &[String],
) -> Result<Vec<Service>> {
    let out = ctx
        .ecs
        .describe_services()
        .cluster(cluster)
        .set_services(Some(names.to_vec()))
        .send()
        .await
        .map_err(|e| AwsError::api("ECS.DescribeServices", e))?;
    Ok(out.services().to_vec())
}

/// The service, if it exists and is ACTIVE.
pub async fn describe_service(
    ctx: &AwsContext,
    cluster: &str,
    name: &str,
) -> Result<Option<Service>> {
    let services = describe_services(ctx, cluster, &[name.to_string()]).await?;
    Ok(services.into_iter().find(|s| s.status() == Some("ACTIVE")))
}

/// Summary of a service for tests and `apps:info`: (task definition ARN,
/// desired count).
pub async fn service_state(
    ctx: &AwsContext,
    cluster: &str,
    app: &str,
    kind: &str,
) -> Result<Option<(String, i32)>> {
    Ok(describe_service(ctx, cluster, &service_name(app, kind))
        .await?
        .map(|s| {
            (
                s.task_definition().unwrap_or_default().to_string(),
                s.desired_count(),
            )
        }))
}

/// A service as [`put_service`] creates or updates it.
pub struct ServiceSpec<'a> {
    pub app: &'a str,
    pub kind: &'a str,
    pub task_definition: &'a str,
    pub count: u32,
    /// The web type's place behind the app's target group.
    pub web: Option<WebTarget<'a>>,
    /// A type with a single-writer volume: its old task stops before the
    /// new one starts (maximum 100 %, minimum healthy 0 %), so two never
    /// run on the volume at once.
    pub single_writer: bool,
}

/// How a service of `spec` rolls: start-first (minimum healthy 100 %,
/// maximum 200 %), or stop-first for a single-writer type; the circuit
/// breaker rolls a failing deployment back either way.
fn deployment(spec: &ServiceSpec<'_>) -> DeploymentConfiguration {
    let (min, max) = if spec.single_writer {
        (0, 100)
    } else {
        (100, 200)
    };
    DeploymentConfiguration::builder()
        .minimum_healthy_percent(min)
        .maximum_percent(max)
        .deployment_circuit_breaker(
            DeploymentCircuitBreaker::builder()
                .enable(true)
                .rollback(true)
                .build(),
        )
        .build()
}

/// Where the load balancer sends the web type's requests.
pub struct WebTarget<'a> {
    pub target_group_arn: &'a str,
    pub port: u16,
    /// How long new tasks may take to pass the health check.
    pub grace_seconds: i32,
}

/// Creates the type's service, or points the `existing` one at the task
/// definition with the new count; returns its previous task definition
/// (`None`: created now).
pub async fn put_service(
    ctx: &AwsContext,
    cluster: &str,
    network: NetworkConfiguration,
    spec: &ServiceSpec<'_>,
    existing: Option<&Service>,
) -> Result<Option<String>> {
    let name = service_name(spec.app, spec.kind);
    if let Some(s) = existing {
        ctx.ecs
            .update_service()
            .cluster(cluster)
            .service(&name)
            .task_definition(spec.task_definition)
            .desired_count(spec.count as i32)
            .deployment_configuration(deployment(spec))
            .send()
            .await
            .map_err(|e| AwsError::api("ECS.UpdateService", e))?;
        return Ok(s.task_definition().map(str::to_string));
    }
    let mut req = ctx
        .ecs
        .create_service()
        .cluster(cluster)
        .service_name(&name)
        .task_definition(spec.task_definition)
        .desired_count(spec.count as i32)
        .launch_type(LaunchType::Fargate)
        .network_configuration(network)
        .deployment_configuration(deployment(spec))
        .tags(Tag::builder().key("rack:app").value(spec.app).build())
        .tags(Tag::builder().key("rack:type").value(spec.kind).build());
    if let Some(web) = &spec.web {
        req = req
            .load_balancers(
                LoadBalancer::builder()
                    .target_group_arn(web.target_group_arn)
                    .container_name(spec.kind)
                    .container_port(web.port as i32)
                    .build(),
            )
            .health_check_grace_period_seconds(web.grace_seconds);
    }
    req.send()
        .await
        .map_err(|e| AwsError::api("ECS.CreateService", e))?;
    Ok(None)
}

/// Points the service at `task_definition` and/or sets its desired count
/// (what is `None` stays as it is).
pub async fn update_service(
    ctx: &AwsContext,
    cluster: &str,
    name: &str,
    task_definition: Option<&str>,
    desired_count: Option<i32>,
) -> Result<()> {
    ctx.ecs
        .update_service()
        .cluster(cluster)
        .service(name)
        .set_task_definition(task_definition.map(str::to_string))
        .set_desired_count(desired_count)
        .send()
        .await
        .map_err(|e| AwsError::api("ECS.UpdateService", e))?;
    Ok(())
}

/// Deletes a service: scaled to 0 first (best effort), then deleted with
/// `force`, so its tasks stop whatever their state.
pub async fn delete_service(ctx: &AwsContext, cluster: &str, name: &str) -> Result<()> {
    let _ = update_service(ctx, cluster, name, None, Some(0)).await;
    ctx.ecs
        .delete_service()
        .cluster(cluster)
        .service(name)
        .force(true)
        .send()
        .await
        .map_err(|e| AwsError::api("ECS.DeleteService", e))?;
    Ok(())
}

/// Deletes the app's ECS services (a service already gone is no error).
pub async fn delete_app_services(
    ctx: &AwsContext,
    cluster: &str,
    app: &str,
    progress: &Progress,
) -> Result<()> {
    for name in app_services(ctx, cluster, app).await? {
        match delete_service(ctx, cluster, &name).await {
            Ok(()) => progress.detail(format!("deleted service {name}")),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes the cluster, best effort (CloudFormation doubles may leave it
/// behind when its stack is deleted).
pub async fn delete_cluster(ctx: &AwsContext, cluster: &str) {
    let _ = ctx.ecs.delete_cluster().cluster(cluster).send().await;
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

#[cfg(test)]
mod tests;
