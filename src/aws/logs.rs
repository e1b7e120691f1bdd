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

use aws_sdk_cloudwatchlogs::operation::filter_log_events::FilterLogEventsError;
use aws_sdk_cloudwatchlogs::operation::get_log_events::GetLogEventsError;

use super::{AwsContext, AwsError, Result};

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
    seen_at_start: HashSet<(String, String)>,
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
        let mut token: Option<String> = None;
        let mut newest = self.start_ms;
        let mut at_newest: Vec<(String, String)> = Vec::new();
        let mut count = 0;
        loop {
            let out = match self
                .ctx
                .logs
                .filter_log_events()
                .log_group_name(&self.group)
                .start_time(self.start_ms)
                .set_next_token(token.clone())
                .send()
                .await
            {
                Ok(o) => o,
                Err(e) => {
                    if matches!(
                        e.as_service_error(),
                        Some(FilterLogEventsError::ResourceNotFoundException(_))
                    ) {
                        break;
                    }
                    return Err(AwsError::api("CloudWatchLogs.FilterLogEvents", e));
                }
            };
            let mut page: Vec<(Event, (String, String))> = Vec::new();
            for e in out.events() {
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
            for (e, id) in page {
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
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        if newest > self.start_ms {
            self.start_ms = newest;
            self.seen_at_start.clear();
        }
        self.seen_at_start.extend(at_newest);
        Ok(count)
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
        loop {
            let r = match self
                .ctx
                .logs
                .get_log_events()
                .log_group_name(&self.group)
                .log_stream_name(&self.stream)
                .start_from_head(true)
                .set_next_token(self.token.clone())
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    if matches!(
                        e.as_service_error(),
                        Some(GetLogEventsError::ResourceNotFoundException(_))
                    ) {
                        return Ok(out);
                    }
                    return Err(AwsError::api("CloudWatchLogs.GetLogEvents", e));
                }
            };
            let n = r.events().len();
            out.extend(
                r.events()
                    .iter()
                    .map(|e| e.message().unwrap_or_default().to_string()),
            );
            let next = r.next_forward_token().map(str::to_string);
            // The same token back means the end of what is there now.
            let done = n == 0 || next.is_none() || next == self.token;
            if next.is_some() {
                self.token = next;
            }
            if done {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests;
