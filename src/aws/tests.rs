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

#[tokio::test]
async fn from_env_honours_aws_endpoint_url() {
    // Only this test sets AWS_* variables in the lib test binary.
    let url = testing::moto_url();
    if testing::context("envurl").await.is_none() {
        return;
    }
    std::env::set_var("AWS_ENDPOINT_URL", &url);
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::remove_var("AWS_REGION");
    std::env::remove_var("AWS_DEFAULT_REGION");
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
