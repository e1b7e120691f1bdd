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

/// Statuses and the journal keep the text they had as plain strings: in
/// `Display`, `FromStr` and JSON (the `--json` output and the S3 objects).
#[test]
fn typed_fields_keep_their_stored_text() {
    let builds = [
        (BuildStatus::Running, "running"),
        (BuildStatus::Succeeded, "succeeded"),
        (BuildStatus::Failed, "failed"),
        (BuildStatus::Cancelled, "cancelled"),
    ];
    for (status, text) in builds {
        assert_eq!(status.to_string(), text);
        assert_eq!(text.parse::<BuildStatus>().unwrap(), status);
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            format!("\"{text}\"")
        );
        let back: BuildStatus = serde_json::from_str(&format!("\"{text}\"")).unwrap();
        assert_eq!(back, status);
    }
    let releases = [
        (ReleaseStatus::Pending, "pending"),
        (ReleaseStatus::Succeeded, "succeeded"),
        (ReleaseStatus::Failed, "failed"),
    ];
    for (status, text) in releases {
        assert_eq!(status.to_string(), text);
        assert_eq!(text.parse::<ReleaseStatus>().unwrap(), status);
        assert_eq!(
            serde_json::to_string(&status).unwrap(),
            format!("\"{text}\"")
        );
    }
    assert!("done".parse::<BuildStatus>().is_err());
    assert!(serde_json::from_str::<ReleaseStatus>("\"running\"").is_err());

    let journal: RefUpdateJournal = "refs/heads/main 00aa 11bb".parse().unwrap();
    assert_eq!(
        (
            journal.refname.as_str(),
            journal.old.as_str(),
            journal.new.as_str()
        ),
        ("refs/heads/main", "00aa", "11bb")
    );
    assert_eq!(journal.to_string(), "refs/heads/main 00aa 11bb");
    assert_eq!(
        serde_json::to_string(&journal).unwrap(),
        "\"refs/heads/main 00aa 11bb\""
    );
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
        .create_release(ReleaseRecord {
            app: "app".into(),
            version: 0,
            build_id: "b-1".into(),
            config_version: 0,
            formation: Formation::new(),
            description: "deploy".into(),
            created_by: "alice".into(),
            created_at: now_rfc3339(),
            status: ReleaseStatus::Pending,
            ref_update: Some("refs/heads/main 00aa 11bb".parse().unwrap()),
        })
        .await
        .unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    let text = |sql: &str| -> String { raw.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(text("SELECT status FROM builds"), "running");
    assert_eq!(text("SELECT status FROM releases"), "pending");
    assert_eq!(
        text("SELECT ref_update FROM releases"),
        "refs/heads/main 00aa 11bb"
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
