use super::*;

#[test]
fn rack_names() {
    for ok in ["a", "prod", "eu-1", "r2d2"] {
        validate_rack_name(ok).unwrap();
    }
    for bad in [
        "",
        "Prod",
        "1a",
        "-a",
        "a-",
        "a_b",
        "a.b",
        "abcdefghijklmnopqrstu",
    ] {
        assert!(validate_rack_name(bad).is_err(), "{bad}");
    }
}

/// `AwsContext::from_env` with `AWS_ENDPOINT_URL` and no region. The
/// variables are set on a second run of this test binary (running
/// [`from_env_probe`]), never in this process: the tests of one binary
/// share its environment.
#[test]
fn from_env_honours_aws_endpoint_url() {
    crate::testing::run_probe("aws::tests::from_env_probe", |c| {
        c.env("AWS_ENDPOINT_URL", testing::moto_url())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION");
    });
}

/// The body of [`from_env_honours_aws_endpoint_url`], in a process whose
/// environment points the SDK at moto.
#[tokio::test]
async fn from_env_probe() {
    // Only as the parent's child process: in the suite's own run this
    // process's environment is not the one under test.
    if !crate::testing::is_probe("from_env_probe") {
        return;
    }
    if testing::context("envurl").await.is_none() {
        return;
    }
    let ctx = AwsContext::from_env(&testing::unique_rack("fromenv"))
        .await
        .unwrap();
    assert_eq!(ctx.region, FALLBACK_REGION);
    let bucket = format!("rack-{}-fromenv", ctx.rack);
    // Path-style S3 against the endpoint: the bucket is reachable.
    ctx.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    ctx.s3.head_bucket().bucket(&bucket).send().await.unwrap();
    ctx.s3.delete_bucket().bucket(&bucket).send().await.unwrap();
    assert!(AwsContext::from_env("Bad_Name").await.is_err());
}

#[tokio::test]
async fn errors_carry_the_service_message() {
    let Some(ctx) = testing::context("errmsg").await else {
        return;
    };
    let err = ecs::describe_service(&ctx, "rack-no-such-cluster", "web")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Cluster not found"), "{err}");
    let err = state::S3State::new(ctx.clone(), "rack-no-such-bucket-xyz")
        .get_bytes("a")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bucket does not exist"), "{err}");
    assert_eq!(err.code(), Some("NoSuchBucket"));
}
