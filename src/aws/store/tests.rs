use base64::Engine;

use super::*;
use crate::aws::state::StoredConfig;
use crate::aws::testing;
use crate::store::conformance::{self, sealed_config};
use crate::store::prelude::*;

async fn store(prefix: &str) -> Option<S3Store> {
    let ctx = testing::context(prefix).await?;
    let bucket = format!("rack-{}-store-test", ctx.rack);
    ctx.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let key = ctx.kms.create_key().send().await.unwrap();
    let arn = key.key_metadata().unwrap().arn().unwrap().to_string();
    Some(S3Store::new(S3State::new(ctx, bucket), arn))
}

/// The conformance suite (`store/conformance.rs`) against the S3 store on
/// moto, a fresh bucket per check.
#[tokio::test]
async fn s3_store_conforms() {
    conformance::run(|_name| async {
        Box::new(store("conf").await.expect("moto is required")) as Box<dyn Store>
    })
    .await;
}

/// In the bucket a config version holds key names and a KMS envelope of
/// its own, nothing of the sealed value; moved to another version, it does
/// not open.
#[tokio::test]
async fn config_versions_are_enveloped_in_the_bucket() {
    let Some(s) = store("st").await else { return };
    s.create_app("app").await.unwrap();
    s.put_config_version("app", &sealed_config(1, "A"))
        .await
        .unwrap();
    let (raw, _) = s
        .state
        .get_bytes("apps/app/config/v1.json")
        .await
        .unwrap()
        .unwrap();
    let json: StoredConfig = serde_json::from_slice(&raw).unwrap();
    assert_eq!(json.keys, vec!["A".to_string()]);
    assert!(json.sealed_bytes().unwrap().starts_with(b"RKE1"));
    let inner = B64.encode(vec![2u8; 20]);
    assert!(!String::from_utf8_lossy(&raw).contains(&inner));
    s.state
        .put_bytes("apps/app/config/v2.json", raw.clone(), None)
        .await
        .unwrap();
    assert!(s.config_version("app", 2).await.is_err());
    s.delete_object("apps/app/config/v2.json".into())
        .await
        .unwrap();
    assert_eq!(s.latest_config("app").await.unwrap().unwrap().version, 1);
}
