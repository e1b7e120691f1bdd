//! What a rack and its apps are made of on AWS, created and removed as a
//! whole: the one module that orchestrates several AWS APIs.
//!
//! - `rack install aws` ([`install_with`]): the rack's stack (`aws/rack.yml`,
//!   stack `rack-NAME`), then the `[aws]` table of `rack.toml`
//!   ([`super::section`]). Idempotent: the stored template and parameters
//!   are compared with what would be sent and an unchanged stack is left
//!   alone (see [`super::cfn`]). Network parameters not given keep the
//!   stack's current values, so a second `rack install aws --rack NAME`
//!   never moves a rack to a new VPC by accident.
//! - `apps:create` and `domains:*` ([`create_app`]): the app's stack
//!   (`aws/app.yml`, stack `rack-RACK-app-APP`): ECR repository
//!   (`EmptyOnDelete`, lifecycle policy keeping the last images), log
//!   group, target group, host-header rule on the rack's listener, task
//!   role. The rule's priority on the shared listener is unique per app: it
//!   is kept across updates and, for a new app, derived from the app's name
//!   and moved past the priorities other apps' stacks already hold.
//! - `apps:destroy` ([`destroy_app`]): the stack and what lives outside it
//!   (timer schedules, ECS services and task definitions, SSM parameters,
//!   the app's state objects).
//! - a volume of an app ([`ensure_volume`], [`destroy_volume`]): its own
//!   stack (`aws/volume.yml`, stack `rack-RACK-app-APP-V-NAME`): an
//!   encrypted EFS file system reachable over NFS from the rack's service
//!   security group only, with a mount target per subnet; deleted with
//!   the app.
//! - `rack uninstall aws` ([`uninstall`]): every app, the rack's config
//!   parameters, the bucket's objects, the stack, the rack in `rack.toml`.
//!
//! It knows the two templates and their outputs; what each API call does
//! is the business of the leaf modules.

pub mod update;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aws_sdk_cloudformation::types::Stack;

use super::cfn::{self, Outcome};
use super::section::{self, AwsSection};
use super::{ecr, ecs, scheduler, ssm, state};
use super::{AwsContext, AwsError, Result};
use crate::progress::Progress;

/// The rack's CloudFormation template.
pub const RACK_TEMPLATE: &str = include_str!("../../aws/rack.yml");

/// The app stack's template.
pub const APP_TEMPLATE: &str = include_str!("../../aws/app.yml");

/// A volume's template: an EFS file system with its mount targets.
pub const VOLUME_TEMPLATE: &str = include_str!("../../aws/volume.yml");

/// An ALB rule holds at most five host-header values.
pub const MAX_HOSTS: usize = 5;

/// Network placement of a new rack. `None` keeps what the stack has (a new
/// stack then creates its own VPC with two public subnets).
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    pub vpc_id: Option<String>,
    pub subnet_ids: Option<Vec<String>>,
}

/// The app stack's outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppOutputs {
    pub repository_name: String,
    pub repository_uri: String,
    pub log_group: String,
    pub target_group_arn: String,
    pub listener_rule_arn: String,
    pub task_role_arn: String,
    pub priority: u32,
}

/// Output `key` of stack `stack` (`hint`: what to tell when it is missing).
fn output(o: &BTreeMap<String, String>, stack: &str, key: &str, hint: &str) -> Result<String> {
    o.get(key)
        .cloned()
        .ok_or_else(|| AwsError::Stack(format!("stack {stack} has no output {key}{hint}")))
}

impl AppOutputs {
    fn from_outputs(name: &str, o: &BTreeMap<String, String>) -> Result<AppOutputs> {
        let get = |k: &str| output(o, name, k, "");
        Ok(AppOutputs {
            repository_name: get("RepositoryName")?,
            repository_uri: get("RepositoryUri")?,
            log_group: get("LogGroup")?,
            target_group_arn: get("TargetGroupArn")?,
            listener_rule_arn: get("ListenerRuleArn")?,
            task_role_arn: get("TaskRoleArn")?,
            priority: get("Priority")?.parse().unwrap_or(0),
        })
    }
}

/// The `[aws]` table from the rack stack's outputs (`ClusterName`,
/// `BucketName`, ...).
fn rack_section(ctx: &AwsContext, o: &BTreeMap<String, String>) -> Result<AwsSection> {
    let stack = ctx.stack_name();
    let get = |k: &str| output(o, &stack, k, ": was it made by this version of rack?");
    Ok(AwsSection {
        region: ctx.region.clone(),
        stack: ctx.stack_name(),
        cluster: get("ClusterName")?,
        cluster_arn: get("ClusterArn")?,
        bucket: get("BucketName")?,
        key_arn: get("KeyArn")?,
        log_group: get("LogGroup")?,
        execution_role_arn: get("ExecutionRoleArn")?,
        // Optional: a stack installed before timers has no scheduler role.
        scheduler_role_arn: o.get("SchedulerRoleArn").cloned(),
        vpc_id: get("VpcId")?,
        subnets: get("Subnets")?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        service_security_group: get("ServiceSecurityGroup")?,
        load_balancer_arn: get("LoadBalancerArn")?,
        load_balancer_dns: get("LoadBalancerDns")?,
        listener_arn: get("ListenerArn")?,
        wait_for_rollout: None,
    })
}

/// The rack stack's tags, with the version of the templates it runs
/// (`rack update` reads it).
fn rack_tags(ctx: &AwsContext) -> [(&'static str, String); 3] {
    [
        ("rack:rack", ctx.rack.clone()),
        ("rack:role", "rack".to_string()),
        ("rack:version", update::this_version().to_string()),
    ]
}

/// The rack's outputs as its stack has them now.
pub async fn installed_section(ctx: &AwsContext) -> Result<AwsSection> {
    let stack = cfn::describe(ctx, &ctx.stack_name())
        .await?
        .ok_or_else(|| {
            AwsError::NotFound(format!(
                "rack {} is not installed (no stack {}): run `rack install aws --rack {}`",
                ctx.rack,
                ctx.stack_name(),
                ctx.rack
            ))
        })?;
    rack_section(ctx, &cfn::outputs(&stack))
}

/// Creates or updates the rack's stack, printing stack events, then writes
/// `rack.toml`. A second run with nothing changed sends no update.
pub async fn install(ctx: &AwsContext, data_dir: &Path, progress: &Progress) -> Result<AwsSection> {
    install_with(ctx, data_dir, &InstallOptions::default(), progress).await
}

pub async fn install_with(
    ctx: &AwsContext,
    data_dir: &Path,
    opts: &InstallOptions,
    progress: &Progress,
) -> Result<AwsSection> {
    let name = ctx.stack_name();
    let existing = cfn::describe(ctx, &name).await?;
    let previous = |key: &str| -> String {
        existing
            .as_ref()
            .and_then(|s| cfn::parameter(s, key))
            .unwrap_or("")
            .to_string()
    };
    let vpc = opts.vpc_id.clone().unwrap_or_else(|| previous("VpcId"));
    let subnets = opts
        .subnet_ids
        .as_ref()
        .map(|s| s.join(","))
        .unwrap_or_else(|| previous("SubnetIds"));
    if vpc.is_empty() != subnets.is_empty() {
        return Err(AwsError::Invalid(
            "give both a VPC and its subnets (two or more, in different zones), or neither".into(),
        ));
    }
    let params = [
        ("RackName", ctx.rack.clone()),
        ("VpcId", vpc),
        ("SubnetIds", subnets),
    ];
    let tags = rack_tags(ctx);
    let verb = if existing.is_some() {
        "Checking"
    } else {
        "Creating"
    };
    progress.stage(format!(
        "{verb} rack {} (stack {name}, region {})",
        ctx.rack, ctx.region
    ));
    let deployed = cfn::deploy(ctx, &name, RACK_TEMPLATE, &params, &tags, progress).await?;
    match deployed.outcome {
        Outcome::Created => progress.stage(format!("Created stack {name}")),
        Outcome::Updated => progress.stage(format!("Updated stack {name}")),
        Outcome::Unchanged => {
            progress.stage(format!("Stack {name} is up to date; nothing to change"))
        }
    }
    let section = rack_section(ctx, &deployed.outputs)?;
    section::write_rack_toml(data_dir, &ctx.rack, &section)?;
    progress.detail(format!("wrote {}", section::rack_toml(data_dir).display()));
    Ok(section)
}

/// Deletes the rack: its apps (as [`destroy_app`]), its config
/// parameters, the bucket's objects, then the stack; removes the rack from
/// `rack.toml`.
pub async fn uninstall(ctx: &AwsContext, data_dir: &Path, progress: &Progress) -> Result<()> {
    let name = ctx.stack_name();
    let Some(stack) = cfn::describe(ctx, &name).await? else {
        return Err(AwsError::NotFound(format!(
            "rack {} is not installed (no stack {name})",
            ctx.rack
        )));
    };
    let outputs = cfn::outputs(&stack);
    for (_, app) in app_stacks(ctx).await? {
        progress.stage(format!("Deleting app {app}"));
        destroy_app(ctx, &app, progress).await?;
    }
    if let Some(bucket) = outputs.get("BucketName") {
        progress.stage(format!("Emptying bucket {bucket}"));
        match state::empty_bucket(ctx, bucket).await {
            Ok(n) => progress.detail(format!("{n} objects deleted")),
            Err(e) if e.code() == Some("NoSuchBucket") => progress.detail("bucket already gone"),
            Err(e) => return Err(e),
        }
    }
    let n = ssm::delete_parameters(ctx, &ssm::rack_path(ctx)).await?;
    if n > 0 {
        progress.detail(format!("{n} config parameters deleted"));
    }
    progress.stage(format!("Deleting stack {name}"));
    cfn::delete(ctx, &name, progress).await?;
    // CloudFormation doubles may leave the cluster behind: make sure.
    if let Some(cluster) = outputs.get("ClusterName") {
        ecs::delete_cluster(ctx, cluster).await;
    }
    progress.stage(format!("Rack {} uninstalled", ctx.rack));
    section::forget_rack(data_dir, &ctx.rack)
}

/// The rack's apps and their stacks, found by their `rack:rack` tag.
async fn tagged_app_stacks(ctx: &AwsContext) -> Result<Vec<(String, Stack)>> {
    // ListStacks, then DescribeStacks by name: describing every stack of
    // the account at once is slow on AWS and, on moto, races with stacks
    // being created by others (it computes their outputs half-made).
    let mut out = Vec::new();
    for name in cfn::stack_names(ctx, &ctx.app_stack_name("")).await? {
        let Some(s) = cfn::describe(ctx, &name).await? else {
            continue;
        };
        // The tag, not the name, says whose app it is (rack `a` and rack
        // `a-app-b` share a name prefix).
        let ours = cfn::tag(&s, "rack:rack") == Some(ctx.rack.as_str())
            && cfn::tag(&s, "rack:role") == Some("app");
        if let Some(app) = cfn::tag(&s, "rack:app").filter(|_| ours) {
            out.push((app.to_string(), s));
        }
    }
    Ok(out)
}

/// The rack's apps and their stacks (`rack update` applies the app
/// template to each).
async fn app_stacks_full(ctx: &AwsContext) -> Result<Vec<(String, Stack)>> {
    tagged_app_stacks(ctx).await
}

/// Stacks (name, app) of the rack's apps, found by their `rack:rack` tag.
pub async fn app_stacks(ctx: &AwsContext) -> Result<Vec<(String, String)>> {
    Ok(tagged_app_stacks(ctx)
        .await?
        .into_iter()
        .map(|(app, s)| (s.stack_name().unwrap_or_default().to_string(), app))
        .collect())
}

/// The app's stack outputs; `NotFound` when the app has no stack.
pub async fn app_outputs(ctx: &AwsContext, app: &str) -> Result<AppOutputs> {
    let name = ctx.app_stack_name(app);
    match cfn::describe(ctx, &name).await? {
        Some(s) if cfn::status(&s) != "DELETE_COMPLETE" => {
            AppOutputs::from_outputs(&name, &cfn::outputs(&s))
        }
        _ => Err(AwsError::NotFound(format!(
            "app {app} has no stack {name} on rack {}",
            ctx.rack
        ))),
    }
}

fn preferred_priority(app: &str) -> u32 {
    // FNV-1a: stable across versions and platforms.
    let mut h: u32 = 0x811c9dc5;
    for b in app.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    1 + h % 49_000
}

/// The rule priority for `app`: its stack's, else a free one.
async fn priority(ctx: &AwsContext, app: &str) -> Result<u32> {
    let mut used = BTreeSet::new();
    for (other, s) in tagged_app_stacks(ctx).await? {
        let p = cfn::parameter(&s, "Priority").and_then(|v| v.parse::<u32>().ok());
        if let Some(p) = p {
            if other == app {
                return Ok(p);
            }
            used.insert(p);
        }
    }
    let mut p = preferred_priority(app);
    while used.contains(&p) {
        p = if p >= 49_999 { 1 } else { p + 1 };
    }
    Ok(p)
}

fn check_app(app: &str) -> Result<()> {
    crate::names::validate_app(app).map_err(AwsError::Invalid)
}

/// Creates the app's stack, or updates it (new host names); returns its
/// outputs. `hosts`: `APP.DOMAIN` first, then the app's domains (at most
/// [`MAX_HOSTS`]).
pub async fn create_app(
    ctx: &AwsContext,
    rack: &AwsSection,
    app: &str,
    hosts: &[String],
    progress: &Progress,
) -> Result<AppOutputs> {
    check_app(app)?;
    if hosts.len() > MAX_HOSTS {
        return Err(AwsError::Invalid(format!(
            "an app on aws takes at most {MAX_HOSTS} host names (the load balancer rule's limit); {app} has {}",
            hosts.len()
        )));
    }
    let hosts = if hosts.is_empty() {
        vec![format!("{app}.{}", rack.load_balancer_dns)]
    } else {
        hosts.to_vec()
    };
    let name = ctx.app_stack_name(app);
    let params = [
        ("RackName", ctx.rack.clone()),
        ("App", app.to_string()),
        ("VpcId", rack.vpc_id.clone()),
        ("ListenerArn", rack.listener_arn.clone()),
        ("Priority", priority(ctx, app).await?.to_string()),
        ("Hosts", hosts.join(",")),
    ];
    let tags = [
        ("rack:rack", ctx.rack.clone()),
        ("rack:role", "app".to_string()),
        ("rack:app", app.to_string()),
    ];
    let deployed = cfn::deploy(ctx, &name, APP_TEMPLATE, &params, &tags, progress).await?;
    AppOutputs::from_outputs(&name, &deployed.outputs)
}

/// Removes everything of the app on the rack: ECS services (scaled to 0
/// and deleted), task definitions, the stack (repository, log group,
/// target group, rule, role), the repository should the stack have left it,
/// the app's SSM parameters and its state objects in the bucket.
pub async fn destroy_app(ctx: &AwsContext, app: &str, progress: &Progress) -> Result<()> {
    check_app(app)?;
    scheduler::delete_app_schedules(ctx, app).await?;
    ecs::delete_app_services(ctx, &ctx.stack_name(), app, progress).await?;
    ecs::task_definition::deregister_app(ctx, app).await?;
    // The volumes, once no task mounts them any more.
    for name in cfn::stack_names(ctx, &ctx.volume_stack_name(app, "")).await? {
        if cfn::delete(ctx, &name, progress).await? {
            progress.detail(format!("deleted stack {name} (a volume and its files)"));
        }
    }
    let name = ctx.app_stack_name(app);
    if cfn::delete(ctx, &name, progress).await? {
        progress.detail(format!("deleted stack {name}"));
    }
    ecr::delete_repository(ctx, app).await?;
    ssm::delete_parameters(ctx, &ssm::app_path(ctx, app)).await?;
    if let Ok(rack) = installed_section(ctx).await {
        state::delete_app_objects(ctx, &rack.bucket, app).await?;
    }
    Ok(())
}

/// The EFS file system of the app's volume `volume`, creating its stack
/// on first use (an unchanged stack is left alone).
pub async fn ensure_volume(
    ctx: &AwsContext,
    rack: &AwsSection,
    app: &str,
    volume: &str,
    progress: &Progress,
) -> Result<String> {
    check_app(app)?;
    check_app(volume)?;
    let name = ctx.volume_stack_name(app, volume);
    let subnet = |i: usize| rack.subnets.get(i).cloned().unwrap_or_default();
    let params = [
        ("RackName", ctx.rack.clone()),
        ("App", app.to_string()),
        ("Volume", volume.to_string()),
        ("VpcId", rack.vpc_id.clone()),
        ("ServiceSecurityGroup", rack.service_security_group.clone()),
        ("Subnet1", subnet(0)),
        ("Subnet2", subnet(1)),
    ];
    let tags = [
        ("rack:rack", ctx.rack.clone()),
        ("rack:role", "volume".to_string()),
        ("rack:app", app.to_string()),
        ("rack:volume", volume.to_string()),
    ];
    let deployed = cfn::deploy(ctx, &name, VOLUME_TEMPLATE, &params, &tags, progress).await?;
    output(&deployed.outputs, &name, "FileSystemId", "")
}

/// Deletes the volume's stack: its file system and every file in it.
pub async fn destroy_volume(
    ctx: &AwsContext,
    app: &str,
    volume: &str,
    progress: &Progress,
) -> Result<bool> {
    check_app(app)?;
    check_app(volume)?;
    cfn::delete(ctx, &ctx.volume_stack_name(app, volume), progress).await
}

#[cfg(test)]
mod tests;
