use super::*;

fn limits() -> TimerLimits {
    TimerLimits::default()
}

#[test]
fn app_json_without_cron_has_no_timers() {
    assert!(parse_app_json("{}", &limits()).unwrap().is_empty());
    assert!(parse_app_json(r#"{"name":"x","scripts":{}}"#, &limits())
        .unwrap()
        .is_empty());
}

#[test]
fn cron_entries_get_names_policies_and_runtimes() {
    let text = r#"{"cron": [
        {"command": "echo a", "schedule": "*/2 * * * * *"},
        {"name": "digest", "command": "bin/digest", "schedule": "@hourly",
         "concurrency_policy": "replace", "maxRuntime": 30},
        {"command": "bin/x", "schedule": "0 3 * * *", "concurrency_policy": "allow"}
    ]}"#;
    let t = parse_app_json(text, &limits()).unwrap();
    assert_eq!(t[0].name, "cron-1");
    assert_eq!(t[0].policy, Policy::Forbid);
    assert_eq!(t[1].name, "digest");
    assert_eq!(t[1].policy, Policy::Replace);
    assert_eq!(t[1].max_runtime_secs, Some(30));
    assert_eq!(t[2].name, "cron-3");
    assert_eq!(t[2].policy, Policy::Allow);
}

#[test]
fn bad_entries_are_refused_naming_the_entry() {
    let cases = [
        (
            r#"{"cron":[{"command":"a","schedule":"0 3 * * *"},{"command":"b","schedule":"61 * * * *"}]}"#,
            "cron[2] (\"cron-2\"): invalid schedule \"61 * * * *\"",
        ),
        (
            r#"{"cron":[{"command":"a","schedule":"* * *"}]}"#,
            "cron[1] (\"cron-1\"): invalid schedule",
        ),
        (
            r#"{"cron":[{"command":"  ","schedule":"* * * * *"}]}"#,
            "cron[1] (\"cron-1\"): invalid command",
        ),
        (
            r#"{"cron":[{"command":"a","schedule":"* * * * *","concurrency_policy":"never"}]}"#,
            "invalid concurrency_policy",
        ),
        (
            r#"{"cron":[{"schedule":"* * * * *"}]}"#,
            "cron[1]: missing field `command`",
        ),
        (
            r#"{"cron":[{"name":"a","command":"x","schedule":"* * * * *"},{"name":"a","command":"y","schedule":"* * * * *"}]}"#,
            "declared twice",
        ),
        (
            r#"{"cron":[{"name":"Bad Name","command":"x","schedule":"* * * * *"}]}"#,
            "name:",
        ),
        (r#"{"cron": ["#, "not valid JSON"),
    ];
    for (text, want) in cases {
        let err = parse_app_json(text, &limits()).unwrap_err();
        assert!(err.contains(want), "{text}: {err}");
    }
}

#[test]
fn limits_bound_the_file_and_the_count() {
    let small = TimerLimits {
        max_per_app: 1,
        max_app_json_bytes: 100,
    };
    let two = r#"{"cron":[{"command":"a","schedule":"* * * * *"},{"command":"b","schedule":"* * * * *"}]}"#;
    assert!(parse_app_json(two, &small)
        .unwrap_err()
        .contains("max_per_app"));
    let big = format!("{{\"x\": \"{}\"}}", "a".repeat(200));
    assert!(parse_app_json(&big, &small)
        .unwrap_err()
        .contains("max_app_json_bytes"));
}

#[test]
fn last_due_and_next_after_are_utc_ticks() {
    let every2 = parse_schedule("*/2 * * * * *").unwrap();
    // 2026-01-01T00:00:01Z
    let t = 1_767_225_601;
    assert_eq!(last_due(&every2, t), Some(t - 1));
    assert_eq!(last_due(&every2, t + 1), Some(t + 1));
    assert_eq!(next_after(&every2, t + 1), Some(t + 3));
    let daily = parse_schedule("0 3 * * *").unwrap();
    assert_eq!(
        rfc3339(next_after(&daily, t).unwrap()),
        "2026-01-01T03:00:00Z"
    );
    assert_eq!(
        rfc3339(last_due(&daily, t).unwrap()),
        "2025-12-31T03:00:00Z"
    );
    assert!(parse_schedule("@daily").is_ok());
}
