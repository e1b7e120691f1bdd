//! Processes' output on the aws provider, read back from CloudWatch Logs:
//! `logs APP` (all of the app's streams, merged) and the output of a
//! one-off `run` task (its one stream).
//!
//! The awslogs driver names a stream `PREFIX/CONTAINER/TASK_ID`; rack's task
//! definitions set both the prefix and the container name to the process
//! type (`run` for one-off tasks), so a stream name tells type and task.
//! This module knows nothing of services or releases: naming a task
//! `web.1` is the runtime's business.

use std::collections::HashSet;

use aws_sdk_cloudwatchlogs::types::FilteredLogEvent;

use super::{or_absent, AwsContext, AwsError, Result};

/// (stream, event id): event ids are only unique within a stream.
type EventId = (String, String);

/// A group or stream that does not exist yet (nothing logged so far).
fn missing(e: &AwsError) -> bool {
    e.code() == Some("ResourceNotFoundException")
}

/// The type and task id of an awslogs stream `TYPE/CONTAINER/TASK`.
pub fn stream_parts(name: &str) -> Option<(&str, &str)> {
    let mut parts = name.splitn(3, '/');
    let kind = parts.next()?;
    let _container = parts.next()?;
    let task = parts.next()?;
    (!kind.is_empty() && !task.is_empty()).then_some((kind, task))
}

/// One log event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: String,
    pub task: String,
    /// Unix time in ms.
    pub timestamp: i64,
    pub message: String,
}

/// RFC 3339 (with milliseconds) of a CloudWatch timestamp.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Reads an app's log group forward in time, batch after batch, never
/// returning an event twice: the position is the newest timestamp seen,
/// plus the events at exactly that time (CloudWatch's `startTime` is
/// inclusive).
pub struct GroupReader {
    ctx: AwsContext,
    group: String,
    kind: Option<String>,
    start_ms: i64,
    seen_at_start: HashSet<EventId>,
}

impl GroupReader {
    /// Events of `group` from `start_ms` on; only type `kind` when given.
    pub fn new(ctx: &AwsContext, group: &str, kind: Option<String>, start_ms: i64) -> GroupReader {
        GroupReader {
            ctx: ctx.clone(),
            group: group.to_string(),
            kind,
            start_ms,
            seen_at_start: HashSet::new(),
        }
    }

    /// Hands every new event to `each`, page by page (each page in time
    /// order), so a large group is never held in memory. A group that does
    /// not exist yet reads as empty.
    pub async fn next_batch(&mut self, mut each: impl FnMut(Event)) -> Result<usize> {
        let mut newest = self.start_ms;
        let mut at_newest: Vec<EventId> = Vec::new();
        let mut count = 0;
        let mut pages = self
            .ctx
            .logs
            .filter_log_events()
            .log_group_name(&self.group)
            .start_time(self.start_ms)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let Some(out) = or_absent("CloudWatchLogs.FilterLogEvents", page, missing)? else {
                break;
            };
            for (e, id) in self.fresh(out.events()) {
                if e.timestamp > newest {
                    newest = e.timestamp;
                    at_newest.clear();
                }
                if e.timestamp == newest {
                    at_newest.push(id);
                }
                count += 1;
                each(e);
            }
        }
        if newest > self.start_ms {
            self.start_ms = newest;
            self.seen_at_start.clear();
        }
        self.seen_at_start.extend(at_newest);
        Ok(count)
    }

    /// The page's events of the wanted type not handed out before, in
    /// time order, each with its id.
    fn fresh(&self, events: &[FilteredLogEvent]) -> Vec<(Event, EventId)> {
        let mut page = Vec::new();
        for e in events {
            let stream = e.log_stream_name().unwrap_or_default();
            let Some((kind, task)) = stream_parts(stream) else {
                continue;
            };
            if self.kind.as_deref().is_some_and(|k| k != kind) {
                continue;
            }
            let ts = e.timestamp().unwrap_or(0);
            // Event ids are only unique within a stream.
            let id = (
                stream.to_string(),
                e.event_id()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{ts}:{}", e.message().unwrap_or_default())),
            );
            if ts == self.start_ms && self.seen_at_start.contains(&id) {
                continue;
            }
            page.push((
                Event {
                    kind: kind.to_string(),
                    task: task.to_string(),
                    timestamp: ts,
                    message: e.message().unwrap_or_default().to_string(),
                },
                id,
            ));
        }
        page.sort_by_key(|(e, _)| e.timestamp);
        page
    }
}

/// Reads one stream forward (a one-off task's output).
pub struct StreamReader {
    ctx: AwsContext,
    group: String,
    stream: String,
    token: Option<String>,
}

impl StreamReader {
    pub fn new(ctx: &AwsContext, group: &str, stream: &str) -> StreamReader {
        StreamReader {
            ctx: ctx.clone(),
            group: group.to_string(),
            stream: stream.to_string(),
            token: None,
        }
    }

    /// The messages written since the last call; none while the stream
    /// does not exist yet (the task has not started logging).
    pub async fn next_batch(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        // The paginator stops when the same token comes back: the end of
        // what is there now.
        let mut pages = self
            .ctx
            .logs
            .get_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .start_from_head(true)
            .set_next_token(self.token.clone())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let Some(r) = or_absent("CloudWatchLogs.GetLogEvents", page, missing)? else {
                break;
            };
            out.extend(
                r.events()
                    .iter()
                    .map(|e| e.message().unwrap_or_default().to_string()),
            );
            if let Some(next) = r.next_forward_token() {
                self.token = Some(next.to_string());
            }
            if r.events().is_empty() {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
