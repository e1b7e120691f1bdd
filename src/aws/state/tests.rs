use super::*;
use crate::aws::secrets::load_or_create_secret;
use crate::aws::testing;

async fn bucket(ctx: &AwsContext) -> S3State {
    let name = format!("rack-{}-state-test", ctx.rack);
    ctx.s3.create_bucket().bucket(&name).send().await.unwrap();
    S3State::new(ctx.clone(), name)
}

/// A fresh bucket holding app `app`'s head.
async fn bucket_with_app(prefix: &str) -> Option<S3State> {
    let ctx = testing::context(prefix).await?;
    let s = bucket(&ctx).await;
    s.create_head(&new_head("app")).await.unwrap();
    Some(s)
}

fn new_head(app: &str) -> Head {
    Head {
        app: app.into(),
        created_at: crate::store::now_rfc3339(),
        ..Head::default()
    }
}

#[tokio::test]
async fn a_stale_etag_gets_412_and_the_retry_loses_nothing() {
    let Some(s) = bucket_with_app("cas").await else {
        return;
    };
    assert!(matches!(
        s.create_head(&new_head("app")).await,
        Err(AwsError::Conflict(_))
    ));

    // Writer A reads; writer B changes the head in between.
    let (mut a_view, stale) = s.head("app").await.unwrap().unwrap();
    s.update_head("app", |h| {
        h.formation.insert("web".into(), 2);
        Ok(())
    })
    .await
    .unwrap();
    // A's write with the stale ETag is refused with 412 ...
    a_view.settings.insert("port".into(), "8080".into());
    let err = s
        .put_json(&head_key("app"), &a_view, Some(&stale))
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed(), "{err:?}");
    assert_eq!(err.status(), Some(412));
    // ... and its retry through update_head keeps B's change.
    s.update_head("app", |h| {
        h.settings.insert("port".into(), "8080".into());
        Ok(())
    })
    .await
    .unwrap();
    let (h, _) = s.head("app").await.unwrap().unwrap();
    assert_eq!(h.formation.get("web"), Some(&2));
    assert_eq!(h.settings.get("port").map(String::as_str), Some("8080"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_head_retries_when_another_writer_wins_the_window() {
    let Some(ctx) = testing::context("cas2").await else {
        return;
    };
    let s = bucket(&ctx).await;
    s.create_head(&new_head("app")).await.unwrap();
    let other = s.clone();
    let mut calls = 0;
    let head = s
        .update_head("app", |h| {
            calls += 1;
            if calls == 1 {
                // Another writer gets in between our read and our write.
                let other = other.clone();
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(async move {
                        other
                            .update_head("app", |h| {
                                h.domains.push("b.example.com".into());
                                Ok(())
                            })
                            .await
                            .unwrap();
                    })
                });
            }
            h.domains.push("a.example.com".into());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        calls, 2,
        "the first write must have got 412 and been retried"
    );
    assert_eq!(head.domains, vec!["b.example.com", "a.example.com"]);
    let (stored, _) = s.head("app").await.unwrap().unwrap();
    assert_eq!(stored.domains, head.domains);
}

#[tokio::test]
async fn versions_are_allocated_without_overwriting() {
    let Some(s) = bucket_with_app("ver").await else {
        return;
    };
    let ctx = s.ctx.clone();
    let (n1, _) = s
        .create_versioned("apps/app/releases", |n| serde_json::json!({ "v": n }))
        .await
        .unwrap();
    assert_eq!(n1, 1);
    // A writer that believes v1 is free (stale listing) gets 412 ...
    let err = s
        .put_json(
            "apps/app/releases/v1.json",
            &serde_json::json!({"v": "other"}),
            None,
        )
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed());
    // ... and allocation moves on.
    let (n2, _) = s
        .create_versioned("apps/app/releases", |n| serde_json::json!({ "v": n }))
        .await
        .unwrap();
    assert_eq!(n2, 2);
    let (v1, _) = s
        .get_json::<serde_json::Value>("apps/app/releases/v1.json")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1["v"], 1);

    let v = s
        .put_config_version("app", "admin", vec!["A".into()], b"sealed")
        .await
        .unwrap();
    assert_eq!(v, 1);
    assert_eq!(
        s.config_version("app", 1)
            .await
            .unwrap()
            .sealed_bytes()
            .unwrap(),
        b"sealed"
    );
    assert_eq!(s.head("app").await.unwrap().unwrap().0.config_version, 1);

    for i in 0..3 {
        s.add_event(&StoredEvent {
            time: crate::store::now_rfc3339(),
            actor: "admin".into(),
            app: Some(if i == 1 {
                "other-app".into()
            } else {
                "app".into()
            }),
            action: format!("action {i}"),
            outcome: "ok".into(),
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let all = s.events(None, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].action, "action 2", "newest first");
    let mine = s.events(Some("app"), 10).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert_eq!(s.events(Some("other-app"), 10).await.unwrap().len(), 1);

    assert!(delete_app_objects(&ctx, &s.bucket, "app").await.unwrap() >= 4);
    assert!(s.head("app").await.unwrap().is_none());
    assert_eq!(s.events(None, 10).await.unwrap().len(), 3, "events stay");
}

#[tokio::test]
async fn rack_secrets_are_sealed_and_kept() {
    let Some(ctx) = testing::context("sec").await else {
        return;
    };
    let s = bucket(&ctx).await;
    let key = testing::kms_key(&ctx).await;
    let secret = b"-----BEGIN OPENSSH PRIVATE KEY----- host".to_vec();
    let first = load_or_create_secret(&s, &key, "ssh_host_key", || secret.clone())
        .await
        .unwrap();
    assert_eq!(first, secret);
    // A new instance gets the stored one, not a new one.
    let again = load_or_create_secret(&s, &key, "ssh_host_key", || b"other".to_vec())
        .await
        .unwrap();
    assert_eq!(again, secret);
    let (raw, _) = s
        .get_bytes("rack/ssh_host_key.sealed")
        .await
        .unwrap()
        .unwrap();
    assert!(
        !raw.windows(9).any(|w| w == b"OPENSSH P"),
        "stored in plaintext"
    );
}

/// `owner` tries to take app `app`'s lease for a minute.
async fn take_lease(s: &S3State, owner: &str) -> LeaseOutcome {
    s.try_acquire_lease("app", owner, Duration::from_secs(60))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_deploy_lease_is_exclusive_until_it_expires() {
    let Some(s) = bucket_with_app("lease").await else {
        return;
    };
    let LeaseOutcome::Acquired(a) = take_lease(&s, "a").await else {
        panic!("a should get the lease")
    };
    assert_eq!(a.counter, 1);
    match take_lease(&s, "b").await {
        LeaseOutcome::Held(l) => assert_eq!(l.owner, "a"),
        other => panic!("{other:?}"),
    }
    let renewed = s
        .renew_lease("app", &a, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(renewed.counter, 1);
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Expired: b takes over, and a can no longer renew.
    let LeaseOutcome::Acquired(b) = take_lease(&s, "b").await else {
        panic!("b should take over an expired lease")
    };
    assert_eq!(b.counter, 2);
    assert!(s
        .renew_lease("app", &a, Duration::from_secs(60))
        .await
        .is_err());
    s.release_lease("app", &b).await.unwrap();
    assert!(matches!(
        take_lease(&s, "c").await,
        LeaseOutcome::Acquired(Lease { counter: 3, .. })
    ));
}
