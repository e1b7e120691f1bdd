use aws_sdk_ecs::types::DeploymentRolloutState::{Completed, Failed, InProgress};
use aws_sdk_ecs::types::{Deployment, DeploymentRolloutState};

use super::*;

// ---------------------------------------------------------------- sizes

#[test]
fn fargate_sizes_cover_the_request() {
    assert_eq!(fargate_size(None, None).unwrap(), (256, 512));
    assert_eq!(
        fargate_size(Some(250_000_000), Some(512 << 20)).unwrap(),
        (256, 512)
    );
    assert_eq!(fargate_size(None, Some(1500 << 20)).unwrap(), (256, 2048));
    assert_eq!(
        fargate_size(Some(1_000_000_000), None).unwrap(),
        (1024, 2048)
    );
    assert_eq!(
        fargate_size(Some(500_000_000), Some(3 << 30)).unwrap(),
        (512, 3072)
    );
    assert_eq!(fargate_size(None, Some(5 << 30)).unwrap(), (1024, 5120));
    assert_eq!(
        fargate_size(Some(2_000_000_000), Some(20 << 30)).unwrap(),
        (4096, 20480)
    );
    assert!(fargate_size(Some(32_000_000_000), None).is_err());
    assert!(fargate_size(None, Some(200 << 30)).is_err());
}

// ------------------------------------------- the waiter over recorded answers

const OLD: &str = "arn:aws:ecs:us-east-1:1:task-definition/rack-r_app_web:1";
const NEW: &str = "arn:aws:ecs:us-east-1:1:task-definition/rack-r_app_web:2";

/// `rollout_state` of a service with these deployments (status, task
/// definition, rollout state, reason), for a rollout to `NEW`.
fn state_of(deployments: &[(&str, &str, DeploymentRolloutState, &str)]) -> Rollout {
    let s = Service::builder()
        .service_name("app_web")
        .status("ACTIVE")
        .set_deployments(Some(
            deployments
                .iter()
                .map(|(status, td, state, reason)| {
                    Deployment::builder()
                        .id(format!("ecs-svc/{td}"))
                        .status(*status)
                        .task_definition(*td)
                        .rollout_state(state.clone())
                        .rollout_state_reason(*reason)
                        .build()
                })
                .collect(),
        ))
        .build();
    rollout_state(&s, NEW)
}

#[test]
fn waiter_completed() {
    let state = state_of(&[(
        "PRIMARY",
        NEW,
        Completed,
        "ECS deployment ecs-svc/1 completed.",
    )]);
    assert_eq!(state, Rollout::Completed);
}

#[test]
fn waiter_in_progress_while_old_tasks_drain() {
    let state = state_of(&[
        ("PRIMARY", NEW, InProgress, "ECS deployment in progress."),
        ("ACTIVE", OLD, Completed, ""),
    ]);
    assert_eq!(state, Rollout::InProgress);
}

#[test]
fn waiter_failed() {
    let why = "ECS deployment circuit breaker: tasks failed to start.";
    let state = state_of(&[("PRIMARY", NEW, Failed, why)]);
    assert_eq!(state, Rollout::Failed(why.into()));
}

#[test]
fn waiter_rolled_back() {
    // The circuit breaker made a new PRIMARY deployment of the old task
    // definition; ours is ACTIVE and FAILED.
    let why = "ECS deployment circuit breaker: task failed health checks.";
    let state = state_of(&[
        (
            "PRIMARY",
            OLD,
            InProgress,
            "ECS deployment detected rollback.",
        ),
        ("ACTIVE", NEW, Failed, why),
    ]);
    assert_eq!(state, Rollout::RolledBack(why.into()));
}

#[test]
fn waiter_waits_while_our_deployment_is_not_listed() {
    // Right after UpdateService a double may still list only the old
    // deployment.
    let state = state_of(&[("PRIMARY", OLD, Completed, "")]);
    assert_eq!(state, Rollout::InProgress);
}

#[test]
fn single_writer_services_roll_stop_first() {
    let spec = |single_writer| ServiceSpec {
        app: "a",
        kind: "web",
        task_definition: "td",
        count: 1,
        web: None,
        single_writer,
    };
    let d = deployment(&spec(true));
    assert_eq!(d.minimum_healthy_percent(), Some(0));
    assert_eq!(d.maximum_percent(), Some(100));
    let d = deployment(&spec(false));
    assert_eq!(d.minimum_healthy_percent(), Some(100));
    assert_eq!(d.maximum_percent(), Some(200));
    assert!(d.deployment_circuit_breaker().unwrap().rollback());
}
