//! Scheduled jobs ("timers"): the `cron` list of a pushed `app.json`
//! (Dokku's format), parsed at build time and kept with the build, so a
//! release carries its timers and a rollback brings the old ones back.
//!
//! This module owns the timer types, the parsing of `app.json`, the cron
//! arithmetic (UTC, via `croner`) and the scheduler task (`scheduler.rs`)
//! that fires them on providers whose runtime does not schedule by itself.
//! It knows nothing of Docker or AWS: a firing is the `Deployer`'s
//! `run_timer` (`deploy/timers.rs`), a `Runtime::run` one-off.

pub mod scheduler;

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use serde::{Deserialize, Serialize};

pub use scheduler::Scheduler;

/// What happens when a timer fires while its previous run still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Runs overlap.
    Allow,
    /// The firing is skipped (the default).
    #[default]
    Forbid,
    /// The running one is stopped, the new one starts.
    Replace,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Allow => "allow",
            Policy::Forbid => "forbid",
            Policy::Replace => "replace",
        }
    }
}

/// One timer as recorded with a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// The `name` field, else `cron-N` by its position (from 1).
    pub name: String,
    /// Run with `/bin/sh -c` in a one-off of the app's current release.
    pub command: String,
    /// Five or six fields (seconds first), or `@hourly`-style; UTC.
    pub schedule: String,
    #[serde(default)]
    pub policy: Policy,
    /// A run still going after this many seconds is stopped.
    #[serde(default)]
    pub max_runtime_secs: Option<u64>,
}

impl Timer {
    /// The parsed schedule (validated at build time, so this only fails
    /// for a record written by a different version).
    pub fn cron(&self) -> Result<Cron, String> {
        parse_schedule(&self.schedule)
    }
}

/// The scheduler's memory of one timer, kept in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerState {
    /// The newest tick (unix seconds) the scheduler has fired or skipped;
    /// written before the run starts, so no tick runs twice.
    #[serde(default)]
    pub last_tick: Option<i64>,
    #[serde(default)]
    pub suspended: bool,
    /// RFC 3339.
    #[serde(default)]
    pub last_run_at: Option<String>,
    /// `exit 0`, `exit 1`, `stopped after maxRuntime 3s`, `replaced`, ...
    #[serde(default)]
    pub last_status: Option<String>,
    #[serde(default)]
    pub last_duration_ms: Option<i64>,
}

/// `[timers]` bounds of `rack.toml`.
#[derive(Debug, Clone)]
pub struct TimerLimits {
    pub max_per_app: usize,
    pub max_app_json_bytes: usize,
}

impl Default for TimerLimits {
    fn default() -> Self {
        TimerLimits {
            max_per_app: 20,
            max_app_json_bytes: 64 * 1024,
        }
    }
}

impl TimerLimits {
    pub fn from_file(f: &crate::config::TimersFile) -> anyhow::Result<TimerLimits> {
        let d = TimerLimits::default();
        let l = TimerLimits {
            max_per_app: f.max_per_app.unwrap_or(d.max_per_app),
            max_app_json_bytes: f.max_app_json_bytes.unwrap_or(d.max_app_json_bytes),
        };
        if l.max_per_app > 1000 || l.max_app_json_bytes > 16 * 1024 * 1024 {
            anyhow::bail!("timers: max_per_app is at most 1000, max_app_json_bytes at most 16 MiB");
        }
        Ok(l)
    }
}

/// A cron expression: five fields, six with seconds first, or a
/// `@hourly`-style name; always UTC.
pub fn parse_schedule(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!("expected 5 fields (6 with seconds), got {fields}"));
    }
    Cron::from_str(expr).map_err(|e| e.to_string())
}

/// The newest tick of `cron` at or before `now` (unix seconds).
pub fn last_due(cron: &Cron, now: i64) -> Option<i64> {
    let t = Utc.timestamp_opt(now, 0).single()?;
    cron.find_previous_occurrence(&t, true)
        .ok()
        .map(|d: DateTime<Utc>| d.timestamp())
}

/// The first tick of `cron` after `t` (unix seconds).
pub fn next_after(cron: &Cron, t: i64) -> Option<i64> {
    let t = Utc.timestamp_opt(t, 0).single()?;
    cron.find_next_occurrence(&t, false)
        .ok()
        .map(|d: DateTime<Utc>| d.timestamp())
}

/// RFC 3339 of unix seconds, for listings.
pub fn rfc3339(t: i64) -> String {
    Utc.timestamp_opt(t, 0)
        .single()
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct AppJson {
    #[serde(default)]
    cron: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CronEntry {
    #[serde(default)]
    name: Option<String>,
    command: String,
    schedule: String,
    #[serde(default)]
    concurrency_policy: Option<String>,
    #[serde(default, rename = "maxRuntime")]
    max_runtime: Option<u64>,
}

/// The timers of an `app.json` (none without a `cron` list). The error
/// names the entry at fault: `app.json: cron[2] ("cleanup"): ...`.
pub fn parse_app_json(text: &str, limits: &TimerLimits) -> Result<Vec<Timer>, String> {
    if text.len() > limits.max_app_json_bytes {
        return Err(format!(
            "app.json: {} bytes, more than the limit of {} ([timers] max_app_json_bytes)",
            text.len(),
            limits.max_app_json_bytes
        ));
    }
    let doc: AppJson =
        serde_json::from_str(text).map_err(|e| format!("app.json is not valid JSON: {e}"))?;
    let entries = doc.cron.unwrap_or_default();
    if entries.len() > limits.max_per_app {
        return Err(format!(
            "app.json: {} cron entries, more than the limit of {} ([timers] max_per_app)",
            entries.len(),
            limits.max_per_app
        ));
    }
    let mut out: Vec<Timer> = Vec::new();
    for (i, value) in entries.into_iter().enumerate() {
        let at = |name: Option<&str>| match name {
            Some(n) => format!(
                "app.json: cron[{}] (\"{}\")",
                i + 1,
                crate::names::printable(n)
            ),
            None => format!("app.json: cron[{}]", i + 1),
        };
        let entry: CronEntry =
            serde_json::from_value(value).map_err(|e| format!("{}: {e}", at(None)))?;
        let name = entry
            .name
            .clone()
            .unwrap_or_else(|| format!("cron-{}", i + 1));
        let here = at(Some(&name));
        crate::names::validate_process_type(&name).map_err(|e| format!("{here}: name: {e}"))?;
        if out.iter().any(|t| t.name == name) {
            return Err(format!("{here}: a timer of that name is declared twice"));
        }
        let command = entry.command.trim().to_string();
        if command.is_empty() || command.len() > 4096 || command.contains('\0') {
            return Err(format!(
                "{here}: invalid command: expected 1 to 4096 bytes, no NUL"
            ));
        }
        parse_schedule(&entry.schedule).map_err(|e| {
            format!(
                "{here}: invalid schedule \"{}\": {e}",
                crate::names::printable(&entry.schedule)
            )
        })?;
        let policy = match entry.concurrency_policy.as_deref() {
            None | Some("forbid") => Policy::Forbid,
            Some("allow") => Policy::Allow,
            Some("replace") => Policy::Replace,
            Some(other) => {
                return Err(format!(
                    "{here}: invalid concurrency_policy \"{}\": use allow, forbid or replace",
                    crate::names::printable(other)
                ))
            }
        };
        if entry.max_runtime == Some(0) {
            return Err(format!("{here}: maxRuntime must be at least 1 second"));
        }
        out.push(Timer {
            name,
            command,
            schedule: entry.schedule.trim().to_string(),
            policy,
            max_runtime_secs: entry.max_runtime,
        });
    }
    Ok(out)
}

/// The label that marks a timer's one-off (the runtime names its lines
/// `timer.NAME` and keeps it for `logs`).
pub const TIMER_LABEL: &str = "rack.timer";

/// The timers of an app's current release, as the scheduler sees them.
pub struct CurrentTimers {
    pub timers: Vec<Timer>,
    /// When the release was created (unix seconds): ticks before it are
    /// not its timers' to fire.
    pub since: i64,
}

/// Output of a scheduled run: it goes to the runtime's logs only.
pub fn discard_io() -> crate::runtime::OneOffIo {
    crate::runtime::OneOffIo {
        stdin: None,
        stdout: Box::new(tokio::io::sink()),
        stderr: Box::new(tokio::io::sink()),
    }
}

/// One process-wide lock for read-modify-write of timer states (the
/// scheduler's ticks and results, the commands' suspend and resume).
pub(crate) static STATE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Changes one timer's state under [`STATE_LOCK`].
pub async fn update_state(
    store: &dyn crate::store::Store,
    app: &str,
    name: &str,
    change: impl FnOnce(&mut TimerState),
) -> Result<TimerState, crate::store::StoreError> {
    let _guard = STATE_LOCK.lock().await;
    let mut state = store
        .timer_states(app)
        .await?
        .remove(name)
        .unwrap_or_default();
    change(&mut state);
    store.put_timer_state(app, name, &state).await?;
    Ok(state)
}

#[cfg(test)]
mod tests;
