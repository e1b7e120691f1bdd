use base64::Engine;

use super::*;
use crate::aws::state::StoredConfig;
use crate::aws::testing;
use crate::store::conformance::{self, release, sealed_config};
use crate::store::prelude::*;
use crate::store::{BuildRecord, ReleaseStatus};

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

/// An object's JSON and ETag, as stored.
async fn object(s: &S3Store, key: &str) -> (serde_json::Value, String) {
    let (raw, etag) = s.state.get_bytes(key).await.unwrap().unwrap();
    (serde_json::from_slice(&raw).unwrap(), etag)
}

/// Build and release objects keep the JSON they had when statuses and the
/// journal were plain strings, so existing buckets keep working.
#[tokio::test]
async fn objects_keep_their_status_and_journal_text() {
    let Some(s) = store("txt").await else { return };
    s.create_app("app").await.unwrap();
    let b = BuildRecord::running("b-1", "app", "abc", vec![], "alice");
    s.insert_build(&b).await.unwrap();
    let r = s.create_release(release("app", "b-1")).await.unwrap();
    let (build, _) = object(&s, "apps/app/builds/b-1.json").await;
    assert_eq!(build["status"], "running");
    let key = format!("apps/app/releases/v{}.json", r.version);
    let (mut release, etag) = object(&s, &key).await;
    assert_eq!(release["status"], "pending");
    assert_eq!(release["ref_update"], "refs/heads/main a b");

    // An object as an older rack wrote it reads as the typed record.
    release["status"] = "failed".into();
    release["ref_update"] = serde_json::Value::Null;
    let raw = serde_json::to_vec(&release).unwrap();
    s.state.put_bytes(&key, raw, Some(&etag)).await.unwrap();
    let back = s.release("app", r.version).await.unwrap();
    assert_eq!(back.status, ReleaseStatus::Failed);
    assert_eq!(back.ref_update, None);
}

/// `events -n N` reads only the N events it returns: an unreadable older
/// event object (never read) does not fail it, and a deploy key's filter
/// is decided from the keys.
#[tokio::test]
async fn newest_events_are_read_without_reading_the_whole_trail() {
    let Some(s) = store("ev").await else { return };
    // The oldest key there can be: garbage a full read would trip on.
    s.state
        .ctx
        .s3
        .put_object()
        .bucket(&s.state.bucket)
        .key("events/9999999999999-app-00000000.json")
        .body(b"not json".to_vec().into())
        .send()
        .await
        .unwrap();
    for i in 0..5 {
        s.add_event("k", Some("app"), &format!("deploy {i}"), "ok")
            .await
            .unwrap();
        s.add_event("k", None, &format!("rack {i}"), "ok")
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let newest = s.events(None, None, 1).await.unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].action, "rack 4");
    let apps = vec!["app".to_string()];
    let mine = s.events(None, Some(&apps), 3).await.unwrap();
    let actions: Vec<&str> = mine.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["deploy 2", "deploy 3", "deploy 4"]);
    let of_app = s.events(Some("app"), None, 2).await.unwrap();
    assert_eq!(of_app.len(), 2);
    assert!(of_app.iter().all(|e| e.app.as_deref() == Some("app")));
    // Asking for everything does reach the garbage, and says so.
    assert!(s.events(None, None, 100).await.is_err());
}
