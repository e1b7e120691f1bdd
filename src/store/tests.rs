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

/// Each value shows, parses and serializes as its text.
fn assert_text<T>(pairs: &[(T, &str)])
where
    T: std::fmt::Display + std::str::FromStr + serde::Serialize + PartialEq + std::fmt::Debug,
    T::Err: std::fmt::Debug,
{
    for (value, text) in pairs {
        assert_eq!(value.to_string(), *text);
        assert_eq!(&text.parse::<T>().unwrap(), value);
        assert_eq!(serde_json::to_string(value).unwrap(), format!("\"{text}\""));
    }
}

/// Statuses and the journal keep the text they had as plain strings: in
/// `Display`, `FromStr` and JSON (the `--json` output and the S3 objects).
#[test]
fn typed_fields_keep_their_stored_text() {
    assert_text(&[
        (BuildStatus::Running, "running"),
        (BuildStatus::Succeeded, "succeeded"),
        (BuildStatus::Failed, "failed"),
        (BuildStatus::Cancelled, "cancelled"),
    ]);
    assert_text(&[
        (ReleaseStatus::Pending, "pending"),
        (ReleaseStatus::Succeeded, "succeeded"),
        (ReleaseStatus::Failed, "failed"),
    ]);
    let journal = RefUpdateJournal {
        refname: "refs/heads/main".into(),
        old: "00aa".into(),
        new: "11bb".into(),
    };
    assert_text(&[(journal, "refs/heads/main 00aa 11bb")]);
    let back: BuildStatus = serde_json::from_str("\"cancelled\"").unwrap();
    assert_eq!(back, BuildStatus::Cancelled);
    assert!("done".parse::<BuildStatus>().is_err());
    assert!(serde_json::from_str::<ReleaseStatus>("\"running\"").is_err());
    assert!("refs/heads/main 00aa".parse::<RefUpdateJournal>().is_err());
}

/// In SQLite the columns hold the same text as before the types, both
/// ways: what the store writes, and rows an older rack wrote.
#[tokio::test]
async fn sqlite_columns_keep_their_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let s = SqliteStore::open(&path).unwrap();
    s.create_app("app").await.unwrap();
    let b = BuildRecord::running("b-1", "app", "abc", vec![], "alice");
    s.insert_build(&b).await.unwrap();
    let r = s
        .create_release(super::conformance::release("app", "b-1"))
        .await
        .unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    let text = |sql: &str| -> String { raw.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(text("SELECT status FROM builds"), "running");
    assert_eq!(text("SELECT status FROM releases"), "pending");
    assert_eq!(
        text("SELECT ref_update FROM releases"),
        "refs/heads/main a b"
    );
    s.commit_release("app", r.version, "d1", &Formation::new())
        .await
        .unwrap();
    assert_eq!(text("SELECT status FROM releases"), "succeeded");
    assert_eq!(s.fail_running_builds("stopped").await.unwrap(), 1);
    assert_eq!(text("SELECT status FROM builds"), "failed");

    raw.execute_batch(
        "UPDATE builds SET status = 'cancelled';
         UPDATE releases SET status = 'failed', ref_update = 'refs/heads/x 01 02';",
    )
    .unwrap();
    assert_eq!(
        s.build("app", "b-1").await.unwrap().status,
        BuildStatus::Cancelled
    );
    let r = s.release("app", r.version).await.unwrap();
    assert_eq!(r.status, ReleaseStatus::Failed);
    assert_eq!(r.ref_update.unwrap().to_string(), "refs/heads/x 01 02");
}
