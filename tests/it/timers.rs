//! Scheduled jobs (issue 16): `app.json`'s `cron` list fired by the rack's
//! scheduler as one-offs of the current release, seen in `logs` and
//! `events`; the commands; exactly once across a crash.

use std::time::{Duration, Instant};

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::builds::{add_fixture, require_docker};
use crate::git::{work, Work};
use crate::harness::{Key, Rack};

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 100000)
}

/// An app running the `procfile-web` fixture, pushed once without timers.
fn app_with_web(rack: &Rack, prefix: &str) -> (String, Work) {
    let a = &rack.admin;
    let app = unique(prefix);
    rack.ssh(a, &format!("apps:create {app}")).ok();
    let w = work(rack, a, "w");
    add_fixture(&w, "procfile-web");
    w.git(&["push", &rack.git_url(&app), "main"]).ok();
    (app, w)
}

fn push_app_json(rack: &Rack, w: &Work, app: &str, json: &str) {
    w.commit("app.json", json);
    w.git(&["push", &rack.git_url(app), "main"]).ok();
}

fn events(rack: &Rack, key: &Key, app: &str) -> Vec<Value> {
    let v = rack
        .ssh(key, &format!("events {app} -n 10000 --json"))
        .ok()
        .json();
    v.as_array().unwrap().clone()
}

/// Events whose action is `action`.
fn with_action(events: &[Value], action: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

#[track_caller]
fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match check() {
            None => return,
            Some(s) => last = s,
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("never {what}; last seen:\n{last}");
}

fn logs(rack: &Rack, app: &str) -> String {
    rack.ssh(&rack.admin, &format!("logs {app} -n 1000"))
        .ok()
        .stdout
        .clone()
}

#[test]
fn timers_run_the_current_release_with_its_config_and_obey_commands() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let (app, w) = app_with_web(&rack, "tm");
    push_app_json(
        &rack,
        &w,
        &app,
        r#"{"cron": [
            {"name": "tick", "command": "echo \"tick $RACK_TIMER ${GREETING:-none}\"", "schedule": "*/2 * * * * *"},
            {"name": "limits", "command": "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes", "schedule": "0 0 1 1 *"}
        ]}"#,
    );

    // Runs show in logs as timer.NAME and in events with status and time.
    wait_until("a timer line in logs", Duration::from_secs(60), || {
        let l = logs(&rack, &app);
        (!l.contains("timer.tick | tick tick none")).then_some(l)
    });
    wait_until("a run event", Duration::from_secs(30), || {
        let n = with_action(&events(&rack, a, &app), "timer.tick run").len();
        (n == 0).then(|| "no run event".into())
    });
    let runs = with_action(&events(&rack, a, &app), "timer.tick run");
    let outcome = runs[0]["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("exit 0 after ") && outcome.ends_with('s'),
        "{outcome}"
    );
    assert_eq!(runs[0]["actor"], "scheduler");

    // The next run sees the new config.
    rack.ssh(a, &format!("config:set {app} GREETING=hello"))
        .ok();
    wait_until("a run with the new config", Duration::from_secs(60), || {
        let l = logs(&rack, &app);
        (!l.contains("timer.tick | tick tick hello")).then_some(l)
    });

    // The listing: name, schedule, next run, last run and its status.
    let list = rack.ssh(a, &format!("timers {app} --json")).ok().json();
    let t = &list[0];
    assert_eq!(t["name"], "tick", "{list}");
    assert_eq!(t["schedule"], "*/2 * * * * *");
    assert_eq!(t["last_status"], "exit 0");
    assert!(
        t["next_run"].is_string() && t["last_run"].is_string(),
        "{list}"
    );
    assert_eq!(t["suspended"], false);

    // timers:run: now, streamed like run.
    let out = rack.ssh(a, &format!("timers:run {app} tick"));
    out.ok();
    assert_eq!(out.stdout, "tick tick hello\n");

    // Runs are under the limits of resources.timer.*.
    rack.ssh(a, &format!("apps:set {app} resources.timer.memory=64m"))
        .ok();
    let out = rack.ssh(a, &format!("timers:run {app} limits"));
    out.ok();
    assert_eq!(out.stdout.trim(), "67108864");

    // Deploy keys may list, not run, suspend or resume.
    let ci = rack.add_key("ci", &format!("--app {app}"));
    rack.ssh(&ci, &format!("timers {app}")).ok();
    for cmd in [
        "timers:run {app} tick",
        "timers:suspend {app}",
        "timers:resume {app}",
    ] {
        rack.ssh(&ci, &cmd.replace("{app}", &app))
            .err("permission denied");
    }

    // Suspended: no runs, across a deploy; resumed: runs again.
    rack.ssh(a, &format!("timers:suspend {app} tick")).ok();
    std::thread::sleep(Duration::from_secs(2)); // a run under way ends
    let before = with_action(&events(&rack, a, &app), "timer.tick run").len();
    w.commit("note", "a deploy while suspended");
    w.git(&["push", &rack.git_url(&app), "main"]).ok();
    let list = rack.ssh(a, &format!("timers {app} --json")).ok().json();
    assert_eq!(list[0]["suspended"], true, "{list}");
    assert!(list[0]["next_run"].is_null(), "{list}");
    std::thread::sleep(Duration::from_secs(5));
    let after = with_action(&events(&rack, a, &app), "timer.tick run").len();
    assert_eq!(before, after, "a suspended timer ran");
    rack.ssh(a, &format!("timers:resume {app}")).ok();
    wait_until("a run after resume", Duration::from_secs(30), || {
        let n = with_action(&events(&rack, a, &app), "timer.tick run").len();
        (n <= after).then(|| format!("{n} runs"))
    });
    let all = events(&rack, a, &app);
    for action in [
        format!("timers:suspend {app} tick"),
        format!("timers:resume {app}"),
        format!("timers:run {app} tick"),
    ] {
        let by_admin: Vec<Value> = with_action(&all, &action)
            .into_iter()
            .filter(|e| e["outcome"] == "ok")
            .collect();
        assert_eq!(by_admin.len(), 1, "{action}: {all:#?}");
    }

    // A rollback to a release without the timer removes it.
    rack.ssh(a, &format!("releases:rollback {app} v1")).ok();
    let list = rack.ssh(a, &format!("timers {app} --json")).ok().json();
    assert_eq!(list, serde_json::json!([]));
    std::thread::sleep(Duration::from_secs(2)); // a run under way ends
    let before = with_action(&events(&rack, a, &app), "timer.tick run").len();
    std::thread::sleep(Duration::from_secs(5));
    let after = with_action(&events(&rack, a, &app), "timer.tick run").len();
    assert_eq!(before, after, "the rolled-back timer still ran");
}

/// `[start, end]` of each run event, from its time and `after N.Ns`.
fn intervals(events: &[Value]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = events
        .iter()
        .map(|e| {
            let end = OffsetDateTime::parse(e["time"].as_str().unwrap(), &Rfc3339).unwrap();
            let end = end.unix_timestamp_nanos() as f64 / 1e9;
            let outcome = e["outcome"].as_str().unwrap();
            let took: f64 = outcome
                .rsplit_once(" after ")
                .and_then(|(_, s)| s.strip_suffix('s'))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{outcome}"));
            (end - took, end)
        })
        .collect();
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

fn overlaps(iv: &[(f64, f64)]) -> bool {
    // 0.3 s of slack: the event is written a moment after the run ends.
    iv.windows(2).any(|p| p[1].0 < p[0].1 - 0.3)
}

#[test]
fn concurrency_policies_and_max_runtime() {
    require_docker();
    let rack = Rack::start();
    let a = &rack.admin;
    let (app, w) = app_with_web(&rack, "tc");
    push_app_json(
        &rack,
        &w,
        &app,
        r#"{"cron": [
            {"name": "slow", "command": "sleep 5", "schedule": "*/2 * * * * *"},
            {"name": "repl", "command": "sleep 5", "schedule": "*/2 * * * * *", "concurrency_policy": "replace"},
            {"name": "lap", "command": "sleep 3", "schedule": "*/2 * * * * *", "concurrency_policy": "allow"},
            {"name": "hang", "command": "sleep 100", "schedule": "*/2 * * * * *", "maxRuntime": 2}
        ]}"#,
    );
    wait_until("runs of every policy", Duration::from_secs(90), || {
        let all = events(&rack, a, &app);
        let slow = with_action(&all, "timer.slow run");
        let lap = with_action(&all, "timer.lap run");
        let repl = with_action(&all, "timer.repl run");
        let hang = with_action(&all, "timer.hang run");
        let ok = slow.len() >= 2 && lap.len() >= 3 && repl.len() >= 2 && !hang.is_empty();
        (!ok).then(|| format!("{all:#?}"))
    });
    let all = events(&rack, a, &app);

    // forbid: never overlaps itself; the firings meanwhile are skipped.
    let slow = with_action(&all, "timer.slow run");
    assert!(!overlaps(&intervals(&slow)), "{slow:#?}");
    assert!(slow
        .iter()
        .all(|e| e["outcome"].as_str().unwrap().starts_with("exit 0")));
    assert!(!with_action(&all, "timer.slow skipped").is_empty());

    // replace: the old run is stopped when the next one fires.
    let repl = with_action(&all, "timer.repl run");
    assert!(
        repl.iter()
            .any(|e| e["outcome"].as_str().unwrap().starts_with("replaced after")),
        "{repl:#?}"
    );
    assert!(!overlaps(&intervals(&repl)), "{repl:#?}");

    // allow: runs overlap.
    let lap = with_action(&all, "timer.lap run");
    assert!(overlaps(&intervals(&lap)), "{lap:#?}");

    // maxRuntime: a hanging run is stopped, and the stop recorded.
    let hang = with_action(&all, "timer.hang run");
    let outcome = hang[0]["outcome"].as_str().unwrap();
    assert!(
        outcome.starts_with("stopped: ran past maxRuntime 2s after "),
        "{outcome}"
    );
}

#[test]
fn a_firing_missed_during_a_crash_runs_once_on_start_up() {
    require_docker();
    let mut rack = Rack::start();
    let (app, w) = app_with_web(&rack, "tk");
    // Once a minute, at a second far enough ahead for the push and the crash.
    let fire_at = OffsetDateTime::now_utc().unix_timestamp() + 45;
    let json = format!(
        r#"{{"cron": [{{"name": "once", "command": "echo fired", "schedule": "{} * * * * *"}}]}}"#,
        fire_at % 60
    );
    push_app_json(&rack, &w, &app, &json);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    assert!(now < fire_at - 2, "the push took too long for this test");
    rack.kill9();
    std::thread::sleep(Duration::from_secs((fire_at - now + 3) as u64));
    rack.start_again();
    let a = &rack.admin;
    wait_until("the missed firing", Duration::from_secs(30), || {
        let n = with_action(&events(&rack, a, &app), "timer.once run").len();
        (n == 0).then(|| "no run".to_string())
    });
    // Exactly once: not again on the ticks after start-up, nor twice.
    std::thread::sleep(Duration::from_secs(5));
    let runs = with_action(&events(&rack, a, &app), "timer.once run");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    // And a restart right after does not fire it again.
    rack.restart();
    std::thread::sleep(Duration::from_secs(4));
    let runs = with_action(&events(&rack, &rack.admin, &app), "timer.once run");
    assert_eq!(runs.len(), 1, "{runs:#?}");
}

#[test]
fn a_bad_app_json_rejects_the_push_naming_the_entry() {
    require_docker();
    let rack = Rack::start();
    let (app, w) = app_with_web(&rack, "tb");
    for (json, reason) in [
        (
            r#"{"cron": [{"command": "echo", "schedule": "*/2 * * * * *"}, {"name": "bad", "command": "x", "schedule": "every day"}]}"#,
            r#"cron[2] ("bad"): invalid schedule "every day""#,
        ),
        (
            r#"{"cron": [{"command": "", "schedule": "0 3 * * *"}]}"#,
            r#"cron[1] ("cron-1"): invalid command"#,
        ),
    ] {
        w.commit("app.json", json);
        let out = w.git(&["push", &rack.git_url(&app), "main"]);
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains("(build failed)"), "{}", out.stderr);
        assert!(out.stderr.contains(reason), "{}", out.stderr);
    }
    let list = rack
        .ssh(&rack.admin, &format!("timers {app} --json"))
        .ok()
        .json();
    assert_eq!(list, serde_json::json!([]));
}
