use super::*;
use crate::aws::testing;

#[test]
fn priorities_are_stable_and_in_range() {
    let p = preferred_priority("myapp");
    assert_eq!(p, preferred_priority("myapp"));
    assert!((1..=49_000).contains(&p));
    assert_ne!(preferred_priority("a"), preferred_priority("b"));
}

#[tokio::test]
async fn create_and_destroy_an_app_stack() {
    let Some((ctx, rack, _dir)) = testing::installed("app").await else {
        return;
    };
    let progress = Progress::discard();
    let hosts = vec!["web1.example.com".to_string()];
    let out = create_app(&ctx, &rack, "web1", &hosts, &progress)
        .await
        .unwrap();
    assert_eq!(out.repository_name, ctx.repository_name("web1"));
    assert!(
        out.repository_uri.ends_with(&ctx.repository_name("web1")),
        "{}",
        out.repository_uri
    );
    // A second app gets another priority on the same listener.
    let other = create_app(&ctx, &rack, "web2", &[], &progress)
        .await
        .unwrap();
    assert_ne!(out.priority, other.priority);
    // Updating with the same hosts changes nothing; new hosts update.
    let again = create_app(&ctx, &rack, "web1", &hosts, &progress)
        .await
        .unwrap();
    assert_eq!(again, out);
    let hosts2 = vec![
        "web1.example.com".to_string(),
        "www.example.org".to_string(),
    ];
    let updated = create_app(&ctx, &rack, "web1", &hosts2, &progress)
        .await
        .unwrap();
    assert_eq!(updated.priority, out.priority);

    let repos = ctx
        .ecr
        .describe_repositories()
        .repository_names(ctx.repository_name("web1"))
        .send()
        .await
        .unwrap();
    assert_eq!(repos.repositories().len(), 1);
    assert_eq!(
        app_outputs(&ctx, "web1").await.unwrap().target_group_arn,
        updated.target_group_arn
    );

    destroy_app(&ctx, "web1", &progress).await.unwrap();
    assert!(app_outputs(&ctx, "web1").await.unwrap_err().is_not_found());
    let gone = ctx
        .ecr
        .describe_repositories()
        .repository_names(ctx.repository_name("web1"))
        .send()
        .await;
    assert!(gone.is_err(), "repository still there");
    // The other app is untouched.
    app_outputs(&ctx, "web2").await.unwrap();
    uninstall(&ctx, _dir.path(), &progress).await.unwrap();
    assert!(app_outputs(&ctx, "web2").await.is_err());
}

#[tokio::test]
async fn install_is_idempotent_and_uninstall_removes_everything() {
    let Some(ctx) = testing::context("inst").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (progress, mut rx) = Progress::channel();
    let opts = testing::default_vpc().await;
    let first = install_with(&ctx, dir.path(), &opts, &progress)
        .await
        .unwrap();
    let id = cfn::describe(&ctx, &ctx.stack_name())
        .await
        .unwrap()
        .unwrap();
    let id = id.stack_id().unwrap().to_string();
    let events = cfn::events(&ctx, &id).await.unwrap().len();
    assert!(events > 0);

    // Second run: no options (keeps the VPC), no update, no new event.
    let second = install(&ctx, dir.path(), &progress).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(cfn::events(&ctx, &id).await.unwrap().len(), events);
    let mut lines = Vec::new();
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    assert!(lines.iter().any(|l| l.contains("up to date")), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("CREATE_COMPLETE")),
        "{lines:?}"
    );

    let text = std::fs::read_to_string(dir.path().join("rack.toml")).unwrap();
    assert!(text.contains(&format!("rack = \"{}\"", ctx.rack)), "{text}");
    let file = AwsSection::from_file(dir.path()).unwrap().unwrap();
    assert_eq!(file, first);
    assert_eq!(file.cluster, format!("rack-{}", ctx.rack));
    assert_eq!(file.subnets.len(), 2);

    // The role the timers' schedules run as: EventBridge Scheduler of this
    // account may assume it, and it may only run the rack's task
    // definitions on its cluster and hand its roles to ECS.
    let role = file.scheduler_role_arn.clone().expect("SchedulerRoleArn");
    assert_ne!(role, file.execution_role_arn);
    let (trust, inline) = testing::iam_role_documents(&role, "rack-timers").await;
    assert!(trust.contains("scheduler.amazonaws.com"), "{trust}");
    assert!(trust.contains("SourceAccount"), "{trust}");
    assert!(!trust.contains("ecs-tasks.amazonaws.com"), "{trust}");
    for want in ["RunTask", "PassRole", "PassedToService"] {
        assert!(inline.contains(want), "{want}: {inline}");
    }
    assert!(inline.contains(&format!("rack-{}_", ctx.rack)), "{inline}");

    // An object in the bucket does not stop uninstall.
    ctx.s3
        .put_object()
        .bucket(&first.bucket)
        .key("apps/x/head.json")
        .body(b"{}".to_vec().into())
        .send()
        .await
        .unwrap();
    uninstall(&ctx, dir.path(), &progress).await.unwrap();
    assert!(cfn::describe(&ctx, &ctx.stack_name())
        .await
        .unwrap()
        .is_none_or(|s| { s.stack_status().map(|s| s.as_str()) == Some("DELETE_COMPLETE") }));
    let err = ctx.s3.head_bucket().bucket(&first.bucket).send().await;
    assert!(err.is_err(), "bucket still there");
    let text = std::fs::read_to_string(dir.path().join("rack.toml")).unwrap();
    assert!(!text.contains("[aws]"), "{text}");
}

#[test]
fn update_never_skips_a_required_version_nor_goes_back() {
    use super::update::check_path;
    check_path(Some("0.1.0"), "0.3.0", &[]).unwrap();
    check_path(None, "0.3.0", &["0.0.5"]).unwrap_err();
    let e = check_path(Some("0.1.0"), "0.3.0", &["0.2.0"]).unwrap_err();
    assert!(
        e.to_string().contains("update the rack to 0.2.0 first"),
        "{e}"
    );
    // Stopping at the required version, and going on from it, are fine.
    check_path(Some("0.1.0"), "0.2.0", &["0.2.0"]).unwrap();
    check_path(Some("0.2.0"), "0.3.0", &["0.2.0"]).unwrap();
    let e = check_path(Some("0.4.0"), "0.3.0", &[]).unwrap_err();
    assert!(e.to_string().contains("newer than this binary"), "{e}");
}
