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
    super::super::rack::uninstall(&ctx, _dir.path(), &progress)
        .await
        .unwrap();
    assert!(app_outputs(&ctx, "web2").await.is_err());
}
