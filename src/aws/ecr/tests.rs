use super::*;
use crate::aws::testing;

#[test]
fn digests_are_parsed_from_the_final_status() {
    let d = format!("sha256:{}", "a".repeat(64));
    assert_eq!(digest_in(&format!("b-1: digest: {d} size: 527")), Some(d));
    assert_eq!(digest_in("Pushed"), None);
    assert_eq!(digest_in("digest: sha256:short size: 1"), None);
}

#[tokio::test]
async fn pushes_by_digest_to_the_registry() {
    let Some(ctx) = testing::context("ecr").await else {
        return;
    };
    let Ok(docker) = crate::build::connect_docker(None).await else {
        eprintln!("skipped: Docker engine not reachable");
        return;
    };
    if docker.inspect_image(testing::BASE_IMAGE).await.is_err() {
        eprintln!(
            "skipped: {} missing (scripts/test builds it)",
            testing::BASE_IMAGE
        );
        return;
    }
    let local = format!("rack/ecrtest:{}", ctx.rack);
    docker
        .tag_image(
            testing::BASE_IMAGE,
            Some(
                TagImageOptionsBuilder::new()
                    .repo("rack/ecrtest")
                    .tag(&ctx.rack)
                    .build(),
            ),
        )
        .await
        .unwrap();
    ctx.ecr
        .create_repository()
        .repository_name(ctx.repository_name("ecrtest"))
        .send()
        .await
        .unwrap();
    let (progress, mut rx) = Progress::channel();
    let registry = testing::registry();
    let pushed = push_image_to(
        &ctx,
        &docker,
        &local,
        "ecrtest",
        "b-1",
        Some(registry.clone()),
        &progress,
    )
    .await
    .unwrap();
    assert!(pushed
        .reference
        .starts_with(&format!("{registry}/rack-{}/ecrtest@sha256:", ctx.rack)));
    let mut lines = Vec::new();
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    assert!(
        lines.iter().any(|l| l.contains(&pushed.digest)),
        "{lines:?}"
    );

    // The registry has the manifest under that digest.
    let path = format!("/v2/rack-{}/ecrtest/manifests/{}", ctx.rack, pushed.digest);
    let status = testing::registry_get_status(&registry, &path).await;
    assert_eq!(status, 200, "GET {path}");
    // The transport tag is gone from the engine; the local tag stays.
    assert!(docker.inspect_image(&pushed.tagged).await.is_err());
    docker.inspect_image(&local).await.unwrap();
    untag(&docker, &local).await;
}
