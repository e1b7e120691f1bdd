use super::prelude::*;
use super::*;

/// The conformance suite (`conformance.rs`) against SQLite, a fresh
/// database per check.
#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    super::conformance::run(|name| {
        let path = dir.path().join(format!("{name}.db"));
        async move { Box::new(SqliteStore::open(&path).unwrap()) as Box<dyn Store> }
    })
    .await;
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
