use super::*;
use crate::aws::testing;

#[tokio::test]
async fn config_round_trips_and_is_bound_to_app_and_version() {
    let Some(ctx) = testing::context("env").await else {
        return;
    };
    let key = testing::kms_key(&ctx).await;
    let value = "multi\nline = \"quoted\" ünïcode";
    let sealed = seal_config(&ctx, &key, "app", 3, value.as_bytes())
        .await
        .unwrap();
    assert!(!sealed.windows(value.len()).any(|w| w == value.as_bytes()));
    let back = open_config(&ctx, "app", 3, &sealed).await.unwrap();
    assert_eq!(back, value.as_bytes());

    assert!(open_config(&ctx, "other", 3, &sealed).await.is_err());
    assert!(open_config(&ctx, "app", 4, &sealed).await.is_err());
    let mut flipped = sealed.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(open_config(&ctx, "app", 3, &flipped).await.is_err());
    assert!(open_config(&ctx, "app", 3, b"garbage").await.is_err());
}

#[tokio::test]
async fn an_unknown_key_fails_with_the_kms_message() {
    let Some(ctx) = testing::context("envk").await else {
        return;
    };
    let bad = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000";
    let err = seal_config(&ctx, bad, "app", 1, b"A=b").await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("00000000-0000-0000-0000-000000000000"),
        "{msg}"
    );
    assert!(!msg.contains('b') || !msg.contains("\"b\""), "{msg}");
}
