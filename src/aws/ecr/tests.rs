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

/// `has_image` on aws asks ECR (moto here) whether the image is there.
#[tokio::test]
async fn image_exists_asks_ecr() {
    let Some(ctx) = testing::context("ecrhas").await else {
        return;
    };
    let repo = ctx.repository_name("hasimg");
    ctx.ecr
        .create_repository()
        .repository_name(&repo)
        .send()
        .await
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": 2, "digest": format!("sha256:{}", "c".repeat(64))},
        "layers": []
    })
    .to_string();
    let put = ctx
        .ecr
        .put_image()
        .repository_name(&repo)
        .image_manifest(&manifest)
        .image_tag("b-1")
        .send()
        .await
        .unwrap();
    let digest = put
        .image()
        .unwrap()
        .image_id()
        .unwrap()
        .image_digest()
        .unwrap()
        .to_string();
    let host = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    assert!(
        std::env::var_os(REGISTRY_ENV).is_none(),
        "{REGISTRY_ENV} set: this test asks ECR itself"
    );
    assert!(image_exists(&ctx, &format!("{host}/{repo}@{digest}"))
        .await
        .unwrap());
    assert!(image_exists(&ctx, &format!("{host}/{repo}:b-1"))
        .await
        .unwrap());
    let other = format!("sha256:{}", "d".repeat(64));
    assert!(!image_exists(&ctx, &format!("{host}/{repo}@{other}"))
        .await
        .unwrap());
    assert!(!image_exists(&ctx, &format!("{host}/{repo}-gone@{digest}"))
        .await
        .unwrap());
}
