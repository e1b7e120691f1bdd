//! A release's timers on ECS: a task definition of type `timer` (the
//! release's image and config, `resources.timer.*` else the first type's
//! size) and one EventBridge schedule per timer that runs it.

use super::AwsRuntime;
use crate::aws::ecs::task_definition;
use crate::aws::scheduler::{self, EcsTarget};
use crate::aws::{lifecycle, AwsError, Result};
use crate::progress::Progress;
use crate::runtime::{ProcessSpec, ReleaseSpec};
use crate::timers::Timer;

/// The container (and process type) of the timers' task definition.
const TIMER: &str = "timer";

impl AwsRuntime {
    pub(super) async fn set_timers_inner(
        &self,
        spec: &ReleaseSpec,
        timers: &[Timer],
        suspended: &[String],
    ) -> Result<()> {
        if timers.is_empty() {
            return scheduler::delete_app_schedules(&self.ctx, &spec.app).await;
        }
        let role_arn = self.rack.scheduler_role_arn.as_deref().ok_or_else(|| {
            AwsError::NotFound(format!(
                "rack {} has no scheduler role for its timers: run `rack install aws --rack {}` again to add the scheduler role",
                self.ctx.rack, self.ctx.rack
            ))
        })?;
        let app_out = lifecycle::app_outputs(&self.ctx, &spec.app).await?;
        let secrets = self.put_parameters(spec).await?;
        let size = spec
            .processes
            .iter()
            .find(|p| p.kind == TIMER)
            .or(spec.processes.first());
        let p = ProcessSpec {
            kind: TIMER.into(),
            command: None,
            count: 0,
            memory_bytes: size.and_then(|p| p.memory_bytes),
            nano_cpus: size.and_then(|p| p.nano_cpus),
        };
        let volumes = self.efs_mounts(spec, None, &Progress::discard()).await?;
        let td_spec = self.task_spec(spec, &p, &app_out, &secrets, volumes)?;
        let td = task_definition::register_or_reuse(&self.ctx, &td_spec, None).await?;
        let target = EcsTarget {
            cluster_arn: &self.rack.cluster_arn,
            role_arn,
            task_definition: &td,
            container: TIMER,
            subnets: &self.rack.subnets,
            security_group: &self.rack.service_security_group,
        };
        scheduler::put_app_schedules(&self.ctx, &spec.app, &target, timers, suspended).await
    }
}
