//! `ps` on ECS: the app's tasks per service, numbered `TYPE.N` in the
//! order they started, each with the release its task definition is tagged
//! with.

use std::collections::HashMap;

use aws_sdk_ecs::primitives::DateTimeFormat;
use aws_sdk_ecs::types::{Service, Task};

use super::AwsRuntime;
use crate::aws::ecs::{self, task_definition, tasks};
use crate::aws::Result;
use crate::runtime::ProcessInfo;

impl AwsRuntime {
    pub(super) async fn processes_inner(&self, app: &str) -> Result<Vec<ProcessInfo>> {
        let mut out = Vec::new();
        let mut releases: HashMap<String, i64> = HashMap::new();
        for name in ecs::app_services(&self.ctx, self.cluster(), app).await? {
            let Some(svc) = ecs::describe_service(&self.ctx, self.cluster(), &name).await? else {
                continue;
            };
            let kind = ecs::service_kind(&name);
            let tasks = tasks::service_tasks(&self.ctx, self.cluster(), &name).await?;
            let mut infos = Vec::new();
            for row in rows(&name, &svc, &tasks) {
                let release = self.release_of(&row.task_definition, &mut releases).await;
                infos.push(ProcessInfo {
                    name: String::new(),
                    kind: kind.to_string(),
                    number: 0,
                    release,
                    state: row.state,
                    started_at: row.started_at,
                    id: row.id,
                    deploy_id: String::new(),
                });
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

    /// The release a task definition runs (its `rack:release` tag; 0 when
    /// unknown), asked once per task definition.
    async fn release_of(&self, td: &str, cache: &mut HashMap<String, i64>) -> i64 {
        if let Some(r) = cache.get(td) {
            return *r;
        }
        let r = match task_definition::tags(&self.ctx, td).await {
            Ok(tags) => task_definition::tag(&tags, "rack:release")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            Err(_) => 0,
        };
        cache.insert(td.to_string(), r);
        r
    }

    /// `TYPE.N` of the app's running tasks (as `ps` numbers them), by task
    /// id; a task that is gone shows as `TYPE.<task id>`.
    pub(super) async fn task_names(&self, app: &str) -> HashMap<String, String> {
        match self.processes_inner(app).await {
            Ok(ps) => ps.into_iter().map(|p| (p.id, p.name)).collect(),
            Err(e) => {
                tracing::debug!(app, error = %e, "naming tasks for logs");
                HashMap::new()
            }
        }
    }
}

/// One process of a service, before it is numbered.
struct Row {
    task_definition: String,
    state: String,
    started_at: Option<String>,
    id: String,
}

/// The service's tasks; when none is listed (a double that does not run
/// tasks), the service's own counts: desired many, the first `running`
/// of them running.
fn rows(service: &str, svc: &Service, tasks: &[Task]) -> Vec<Row> {
    if !tasks.is_empty() {
        return tasks
            .iter()
            .map(|t| Row {
                task_definition: t.task_definition_arn().unwrap_or_default().to_string(),
                state: t.last_status().unwrap_or("unknown").to_ascii_lowercase(),
                started_at: t
                    .started_at()
                    .and_then(|d| d.fmt(DateTimeFormat::DateTime).ok()),
                id: tasks::task_id(t.task_arn().unwrap_or_default()).to_string(),
            })
            .collect();
    }
    (0..svc.desired_count().max(0))
        .map(|i| Row {
            task_definition: svc.task_definition().unwrap_or_default().to_string(),
            state: if i < svc.running_count() {
                "running"
            } else {
                "pending"
            }
            .into(),
            started_at: None,
            id: service.to_string(),
        })
        .collect()
}
