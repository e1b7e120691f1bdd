//! Tasks: a service's running tasks (for `ps`) and one-off tasks (`run`).

use aws_sdk_ecs::types::{ContainerOverride, LaunchType, NetworkConfiguration, Task, TaskOverride};

use crate::aws::{AwsContext, AwsError, Result};

/// The id at the end of a task ARN (`arn:...:task/CLUSTER/ID`).
pub fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// The service's tasks as DescribeTasks has them (ListTasks' first page:
/// DescribeTasks takes at most 100 anyway).
pub async fn service_tasks(ctx: &AwsContext, cluster: &str, service: &str) -> Result<Vec<Task>> {
    let listed = ctx
        .ecs
        .list_tasks()
        .cluster(cluster)
        .service_name(service)
        .send()
        .await
        .map_err(|e| AwsError::api("ECS.ListTasks", e))?;
    let arns = listed.task_arns().to_vec();
    if arns.is_empty() {
        return Ok(Vec::new());
    }
    describe_tasks(ctx, cluster, arns).await
}

/// DescribeTasks of up to 100 tasks.
async fn describe_tasks(ctx: &AwsContext, cluster: &str, arns: Vec<String>) -> Result<Vec<Task>> {
    let d = ctx
        .ecs
        .describe_tasks()
        .cluster(cluster)
        .set_tasks(Some(arns))
        .send()
        .await
        .map_err(|e| AwsError::api("ECS.DescribeTasks", e))?;
    Ok(d.tasks().to_vec())
}

/// A one-off task: `argv` in container `container` of `task_definition`.
pub struct OneOffTask<'a> {
    pub task_definition: &'a str,
    pub container: &'a str,
    pub argv: &'a [String],
    /// Who started it, as ECS shows it (`startedBy`).
    pub started_by: &'a str,
}

/// Starts a one-off task on Fargate; returns its ARN.
pub async fn run_task(
    ctx: &AwsContext,
    cluster: &str,
    network: NetworkConfiguration,
    task: &OneOffTask<'_>,
) -> Result<String> {
    let out = ctx
        .ecs
        .run_task()
        .cluster(cluster)
        .task_definition(task.task_definition)
        .launch_type(LaunchType::Fargate)
        .network_configuration(network)
        .started_by(task.started_by)
        .overrides(
            TaskOverride::builder()
                .container_overrides(
                    ContainerOverride::builder()
                        .name(task.container)
                        .set_command(Some(task.argv.to_vec()))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsError::api("ECS.RunTask", e))?;
    if let Some(f) = out.failures().first() {
        return Err(AwsError::Invalid(format!(
            "RunTask: {} {}",
            f.reason().unwrap_or(""),
            f.detail().unwrap_or("")
        )));
    }
    out.tasks()
        .first()
        .and_then(|t| t.task_arn())
        .map(str::to_string)
        .ok_or_else(|| AwsError::Invalid("RunTask started no task".into()))
}

/// The task as DescribeTasks has it now.
pub async fn describe_task(ctx: &AwsContext, cluster: &str, task: &str) -> Result<Option<Task>> {
    let tasks = describe_tasks(ctx, cluster, vec![task.to_string()]).await?;
    Ok(tasks.into_iter().next())
}

/// Stops the task, best effort.
pub async fn stop_task(ctx: &AwsContext, cluster: &str, task: &str, reason: &str) {
    let _ = ctx
        .ecs
        .stop_task()
        .cluster(cluster)
        .task(task)
        .reason(reason)
        .send()
        .await;
}
