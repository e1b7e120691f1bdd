//! Operating the rack: schema versions, `rack update`, backup and restore,
//! metrics.

use std::process::Command;

use crate::harness::{rack_cli, Rack, RACK};

fn sqlite(db: &std::path::Path, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().expect(
        "sqlite3 (Debian package sqlite3) must be installed: bash scripts/test --setup-only",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Everything in the database, as text: what "nothing changed" compares.
fn dump(db: &std::path::Path) -> String {
    format!(
        "{}\n{}",
        sqlite(db, "PRAGMA user_version"),
        sqlite(db, ".dump")
    )
}

#[test]
fn a_database_migrated_by_a_newer_rack_refuses_this_binary() {
    let mut rack = Rack::start();
    rack.ssh(&rack.admin, "apps:create keepme").ok();
    assert_eq!(rack.stop(), Some(0));
    let db = rack.data_dir().join("state.db");
    let ours: i64 = sqlite(&db, "PRAGMA user_version").parse().unwrap();
    // What a newer rack would have done: one more migration.
    sqlite(
        &db,
        &format!(
            "CREATE TABLE from_the_future (x TEXT); PRAGMA user_version = {};",
            ours + 1
        ),
    );
    let before = dump(&db);
    let bytes = std::fs::read(&db).unwrap();
    let out = crate::harness::run_with_stdin(
        {
            // `timeout`: without the refusal the server would start and
            // serve; the test must then fail, not hang.
            let mut c = Command::new("timeout");
            c.args([
                "60",
                RACK,
                "server",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(rack.data_dir());
            c
        },
        b"",
    );
    assert_ne!(out.code, 0, "the server must refuse: {}", out.stderr);
    let expect = format!(
        "schema version {}, newer than this rack binary knows (version {ours})",
        ours + 1
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("error: ") && l.contains(&expect)),
        "{}",
        out.stderr
    );
    // The offline commands refuse it the same way.
    rack_cli(&rack.data_dir(), &["keys", "list"], b"").err(&expect);
    assert_eq!(dump(&db), before, "the database must not change");
    assert_eq!(std::fs::read(&db).unwrap(), bytes);
}
