//! An app's stack (`aws/app.yml`, stack `rack-RACK-app-APP`): ECR
//! repository (`EmptyOnDelete`, lifecycle policy keeping the last images),
//! log group, target group, host-header rule on the rack's listener, task
//! role. `apps:create` makes it, `domains:*` update its host list,
//! `apps:destroy` removes it along with what lives outside the stack (ECS
//! services and task definitions, SSM parameters, the app's state objects).
//!
//! The rule's priority on the shared listener is unique per app: it is kept
//! across updates and, for a new app, derived from the app's name and moved
//! past the priorities other apps' stacks already hold.

use std::collections::BTreeSet;

use super::cfn;
use super::rack::AwsSection;
use super::{AwsContext, AwsError, Result};
use crate::progress::Progress;

/// The app stack's template.
pub const APP_TEMPLATE: &str = include_str!("../../aws/app.yml");

/// An ALB rule holds at most five host-header values.
pub const MAX_HOSTS: usize = 5;

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

impl AppOutputs {
    fn from_outputs(
        name: &str,
        o: &std::collections::BTreeMap<String, String>,
    ) -> Result<AppOutputs> {
        let get = |k: &str| {
            o.get(k)
                .cloned()
                .ok_or_else(|| AwsError::Stack(format!("stack {name} has no output {k}")))
        };
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

/// The app's stack outputs; `NotFound` when the app has no stack.
pub async fn app_outputs(ctx: &AwsContext, app: &str) -> Result<AppOutputs> {
    let name = ctx.app_stack_name(app);
    match cfn::describe(ctx, &name).await? {
        Some(s) if s.stack_status().map(|s| s.as_str()) != Some("DELETE_COMPLETE") => {
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
    for (stack, other) in super::rack::app_stacks(ctx).await? {
        let Some(s) = cfn::describe(ctx, &stack).await? else {
            continue;
        };
        let p = s
            .parameters()
            .iter()
            .find(|p| p.parameter_key() == Some("Priority"))
            .and_then(|p| p.parameter_value())
            .and_then(|v| v.parse::<u32>().ok());
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
    let cluster = ctx.stack_name();
    super::runtime::delete_services(ctx, &cluster, app, progress).await?;
    super::runtime::deregister_task_definitions(ctx, app).await?;
    let name = ctx.app_stack_name(app);
    if cfn::delete(ctx, &name, progress).await? {
        progress.detail(format!("deleted stack {name}"));
    }
    match ctx
        .ecr
        .delete_repository()
        .repository_name(ctx.repository_name(app))
        .force(true)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) => {
            let e = AwsError::api("ECR.DeleteRepository", e);
            if !e.is_not_found() {
                return Err(e);
            }
        }
    }
    super::rack::delete_parameters(ctx, &format!("/rack/{}/{app}", ctx.rack)).await?;
    if let Ok(rack) = AwsSection::load(ctx).await {
        super::state::delete_app_objects(ctx, &rack.bucket, app).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
