use super::*;
use crate::aws::testing;

#[test]
fn rack_toml_keeps_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rack.toml"),
        "domain = \"example.com\"\n[aws]\nwait_for_rollout = false\n",
    )
    .unwrap();
    let section = AwsSection {
        region: "us-east-1".into(),
        stack: "rack-x".into(),
        subnets: vec!["subnet-1".into(), "subnet-2".into()],
        ..AwsSection::default()
    };
    write_rack_toml(dir.path(), "x", &section).unwrap();
    let text = std::fs::read_to_string(dir.path().join("rack.toml")).unwrap();
    assert!(text.contains("domain = \"example.com\""), "{text}");
    assert!(text.contains("provider = \"aws\""), "{text}");
    let back = AwsSection::from_file(dir.path()).unwrap().unwrap();
    assert_eq!(back.subnets, section.subnets);
    assert_eq!(back.wait_for_rollout, Some(false));
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
