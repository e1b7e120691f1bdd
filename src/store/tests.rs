use super::*;

fn key(name: &str, admin: bool) -> KeyRecord {
    KeyRecord {
        name: name.into(),
        fingerprint: format!("SHA256:{name}"),
        public_key: format!("ssh-ed25519 {name}"),
        admin,
        apps: if admin { vec![] } else { vec!["a".into()] },
        created_at: now_rfc3339(),
    }
}

#[tokio::test]
async fn last_admin_cannot_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("db")).unwrap();
    s.add_key(&key("root", true)).await.unwrap();
    s.add_key(&key("ci", false)).await.unwrap();
    assert!(matches!(
        s.remove_key("root").await,
        Err(StoreError::Refused(_))
    ));
    s.add_key(&key("root2", true)).await.unwrap();
    s.remove_key("root").await.unwrap();
    assert_eq!(s.list_keys().await.unwrap().len(), 2);
    assert_eq!(
        s.key_by_fingerprint("SHA256:ci")
            .await
            .unwrap()
            .unwrap()
            .apps,
        vec!["a".to_string()]
    );
}

#[tokio::test]
async fn migrations_are_idempotent_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    SqliteStore::open(&path)
        .unwrap()
        .create_app("a")
        .await
        .unwrap();
    let s = SqliteStore::open(&path).unwrap();
    assert!(matches!(
        s.create_app("a").await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.list_apps().await.unwrap().len(), 1);
}
