use super::*;
use crate::aws::testing;

async fn store(prefix: &str) -> Option<S3Store> {
    let ctx = testing::context(prefix).await?;
    let bucket = format!("rack-{}-store-test", ctx.rack);
    ctx.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let key = ctx.kms.create_key().send().await.unwrap();
    let arn = key.key_metadata().unwrap().arn().unwrap().to_string();
    Some(S3Store::new(S3State::new(ctx, bucket), arn))
}

fn key(name: &str, fp: &str, admin: bool) -> KeyRecord {
    KeyRecord {
        name: name.into(),
        fingerprint: fp.into(),
        public_key: format!("ssh-ed25519 AAAA{fp}"),
        admin,
        apps: if admin { vec![] } else { vec!["app".into()] },
        created_at: now_rfc3339(),
    }
}

#[tokio::test]
async fn keys_apps_configs_releases_domains_events() {
    let Some(s) = store("st").await else { return };
    // keys
    s.add_key(&key("alice", "fp1", true)).await.unwrap();
    assert!(matches!(
        s.add_key(&key("alice", "fp2", true)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.add_key(&key("bob", "fp1", true)).await,
        Err(StoreError::Conflict(_))
    ));
    s.add_key(&key("ci", "fp3", false)).await.unwrap();
    assert_eq!(
        s.key_by_fingerprint("fp3").await.unwrap().unwrap().apps,
        vec!["app"]
    );
    assert!(matches!(
        s.remove_key("alice").await,
        Err(StoreError::Refused(_))
    ));
    s.remove_key("ci").await.unwrap();
    assert_eq!(s.list_keys().await.unwrap().len(), 1);

    // apps
    s.create_app("app").await.unwrap();
    assert!(matches!(
        s.create_app("app").await,
        Err(StoreError::Conflict(_))
    ));
    s.set_app_settings("app", &BTreeMap::from([("port".into(), "8080".into())]))
        .await
        .unwrap();
    assert_eq!(s.app("app").await.unwrap().settings["port"], "8080");
    assert_eq!(s.list_apps().await.unwrap().len(), 1);
    assert!(matches!(s.app("nope").await, Err(StoreError::NotFound(_))));

    // config versions: a taken version is a Conflict
    assert_eq!(s.next_config_version("app").await.unwrap(), 1);
    let cv = ConfigVersion {
        version: 1,
        created_at: now_rfc3339(),
        created_by: "alice".into(),
        values: vec![SealedValue {
            key: "A".into(),
            nonce: vec![1; 24],
            ciphertext: vec![2; 20],
        }],
    };
    s.put_config_version("app", &cv).await.unwrap();
    assert!(matches!(
        s.put_config_version("app", &cv).await,
        Err(StoreError::Conflict(_))
    ));
    let back = s.latest_config("app").await.unwrap().unwrap();
    assert_eq!(back.values[0].ciphertext, vec![2; 20]);
    // In the bucket: key names and a KMS envelope of its own, nothing
    // of the sealed value; moved to another version, it does not open.
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
    s.state
        .ctx
        .s3
        .delete_object()
        .bucket(&s.state.bucket)
        .key("apps/app/config/v2.json")
        .send()
        .await
        .unwrap();

    // builds
    let mut b = BuildRecord {
        id: "b-1".into(),
        app: "app".into(),
        commit: "abc".into(),
        status: "running".into(),
        kind: None,
        push_options: vec![],
        created_by: "alice".into(),
        created_at: now_rfc3339(),
        finished_at: None,
        duration_ms: None,
        context_bytes: None,
        image_id: None,
        error: None,
    };
    s.insert_build(&b).await.unwrap();
    b.id = "b-2".into();
    s.insert_build(&b).await.unwrap();
    b.status = "succeeded".into();
    s.finish_build(&b).await.unwrap();
    assert_eq!(s.builds("app", 10).await.unwrap()[0].id, "b-2");
    assert_eq!(s.fail_running_builds("restarted").await.unwrap(), 1);
    assert_eq!(s.build("app", "b-1").await.unwrap().status, "failed");
    s.set_build_procfile("b-2", &BTreeMap::from([("web".into(), "x".into())]))
        .await
        .unwrap();
    assert!(s.build_procfile("b-2").await.unwrap().is_some());

    // releases and the commit point
    let r = ReleaseRecord {
        app: "app".into(),
        version: 0,
        build_id: "b-2".into(),
        config_version: 1,
        formation: BTreeMap::from([("web".into(), 1)]),
        description: "deploy".into(),
        created_by: "alice".into(),
        created_at: now_rfc3339(),
        status: "pending".into(),
        ref_update: Some("refs/heads/main a b".into()),
    };
    let r1 = s.create_release(r.clone()).await.unwrap();
    let r2 = s.create_release(r.clone()).await.unwrap();
    assert_eq!((r1.version, r2.version), (1, 2));
    s.commit_release("app", 1, "d1", &r.formation)
        .await
        .unwrap();
    s.clear_ref_update("app", 1).await.unwrap();
    assert_eq!(s.release("app", 1).await.unwrap().ref_update, None);
    assert_eq!(s.app_state("app").await.unwrap().current_release, Some(1));
    assert_eq!(s.fail_pending_releases().await.unwrap(), 1);
    let rs = s.releases("app", 10).await.unwrap();
    assert_eq!((rs[0].version, rs[0].status.as_str()), (2, "failed"));
    assert_eq!(rs[1].status, "succeeded");

    // domains are unique across apps
    s.create_app("other").await.unwrap();
    s.add_domain("app", "www.example.com").await.unwrap();
    assert!(matches!(
        s.add_domain("other", "www.example.com").await,
        Err(StoreError::Conflict(_))
    ));
    s.remove_domain("app", "www.example.com").await.unwrap();
    s.add_domain("other", "www.example.com").await.unwrap();
    assert_eq!(s.domains("other").await.unwrap(), vec!["www.example.com"]);

    // events: oldest first, filtered
    s.add_event("alice", Some("app"), "apps:create app", "ok")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    s.add_event("alice", None, "keys:add ci", "ok")
        .await
        .unwrap();
    let ev = s.events(None, None, 10).await.unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].action, "apps:create app");
    assert!(ev[0].id < ev[1].id);
    assert_eq!(
        s.events(None, Some(&["app".to_string()]), 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // delete_app keeps events, frees domains
    s.delete_app("other").await.unwrap();
    assert!(s.get_app("other").await.unwrap().is_none());
    s.add_domain("app", "www.example.com").await.unwrap();
    assert_eq!(s.events(None, None, 10).await.unwrap().len(), 2);
}
