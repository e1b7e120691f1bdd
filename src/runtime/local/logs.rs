//! `logs`: the app's instances' stdout/stderr merged in time order, each
//! line sourced `TYPE.N`; with `follow`, new instances (later deploys,
//! restarts) are picked up by polling the container list every second.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::LogsOptionsBuilder;
use futures::future::join_all;
use futures::StreamExt;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::docker::Instance;
use super::LocalRuntime;
use crate::runtime::{LogLine, LogOptions, RuntimeError};

const POLL: Duration = Duration::from_secs(1);

/// A line with its time as nanoseconds since the epoch, for ordering.
struct Stamped {
    nanos: i128,
    line: LogLine,
}

fn now_nanos() -> i128 {
    OffsetDateTime::now_utc().unix_timestamp_nanos()
}

/// Splits a chunk of `docker logs --timestamps` output into lines. A line
/// without a readable time (never expected) takes the previous one's.
fn parse_chunk(source: &str, bytes: &[u8], prev: &mut i128, out: &mut Vec<Stamped>) {
    let text = String::from_utf8_lossy(bytes);
    for raw in text.split_terminator('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let (time, body) = match raw.split_once(' ') {
            Some((t, b)) => match OffsetDateTime::parse(t, &Rfc3339) {
                Ok(ts) => {
                    *prev = ts.unix_timestamp_nanos();
                    (t.to_string(), b)
                }
                Err(_) => (String::new(), raw),
            },
            None => match OffsetDateTime::parse(raw, &Rfc3339) {
                // An empty line: only the time.
                Ok(ts) => {
                    *prev = ts.unix_timestamp_nanos();
                    (raw.to_string(), "")
                }
                Err(_) => (String::new(), raw),
            },
        };
        out.push(Stamped {
            nanos: *prev,
            line: LogLine {
                time,
                source: source.to_string(),
                text: body.to_string(),
            },
        });
    }
}

impl LocalRuntime {
    pub(super) async fn logs_impl(
        &self,
        app: &str,
        opts: LogOptions,
        tx: mpsc::Sender<LogLine>,
    ) -> Result<(), RuntimeError> {
        // Timer runs are one-offs kept after they exit, for their lines.
        let wanted = |i: &Instance| {
            (!i.oneoff || i.timer.is_some()) && opts.kind.as_deref().is_none_or(|k| k == i.kind)
        };
        let initial: Vec<Instance> = self
            .list(Some(app))
            .await?
            .into_iter()
            .filter(|i| wanted(i))
            .collect();

        // The tail: N per instance, merged by time, the last N overall.
        let fetched_at = now_nanos();
        let per = join_all(initial.iter().map(|i| self.fetch_lines(i, opts.tail))).await;
        let mut cutoffs: HashMap<String, i128> = HashMap::new();
        let mut lines: Vec<Stamped> = Vec::new();
        for (i, got) in initial.iter().zip(per) {
            // Follow from what the tail covered: its last line shown, and
            // at least the fetch time. Docker's tail counts lines in file
            // order, where stdout and stderr lines may be stamped out of
            // order, so a line older than the fetch but newer than the
            // last shown one was skipped by the tail, not missed.
            let last = got
                .iter()
                .map(|s| s.nanos)
                .max()
                .unwrap_or(fetched_at)
                .max(fetched_at);
            cutoffs.insert(i.id.clone(), last);
            lines.extend(got);
        }
        lines.sort_by_key(|s| s.nanos);
        if let Some(n) = opts.tail {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        for s in lines {
            if tx.send(s.line).await.is_err() {
                return Ok(());
            }
        }
        if !opts.follow {
            return Ok(());
        }

        // Follow: one streaming task per instance; a poll picks up new
        // instances and restarted ones.
        let (itx, mut irx) = mpsc::channel::<LogLine>(1024);
        let mut tasks: JoinSet<(String, i128)> = JoinSet::new();
        // id → None while followed, Some(cutoff) once its stream ended.
        let mut state: HashMap<String, Option<i128>> = HashMap::new();
        for i in initial {
            let cutoff = cutoffs.get(&i.id).copied().unwrap_or(fetched_at);
            state.insert(i.id.clone(), None);
            tasks.spawn(self.clone().follow_one(i, cutoff, itx.clone()));
        }
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tx.closed() => break,
                Some(line) = irx.recv() => {
                    if tx.send(line).await.is_err() {
                        break;
                    }
                }
                Some(Ok((id, cutoff))) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Some(s) = state.get_mut(&id) {
                        *s = Some(cutoff);
                    }
                }
                _ = tick.tick() => {
                    let Ok(list) = self.list(Some(app)).await else { continue };
                    let present: Vec<String> = list.iter().map(|i| i.id.clone()).collect();
                    state.retain(|id, _| present.contains(id));
                    for i in list.into_iter().filter(|i| wanted(i)) {
                        match state.get(&i.id) {
                            // New since we started: everything it wrote is new.
                            None => {
                                state.insert(i.id.clone(), None);
                                tasks.spawn(self.clone().follow_one(i, i128::MIN, itx.clone()));
                            }
                            // Its stream ended (stopped); running again: resume.
                            Some(Some(cutoff)) if i.state == "running" => {
                                let cutoff = *cutoff;
                                state.insert(i.id.clone(), None);
                                tasks.spawn(self.clone().follow_one(i, cutoff, itx.clone()));
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        tasks.abort_all();
        Ok(())
    }

    /// The last `tail` lines of one instance (all with `None`).
    async fn fetch_lines(&self, i: &Instance, tail: Option<usize>) -> Vec<Stamped> {
        if tail == Some(0) {
            return Vec::new();
        }
        let tail = tail.map(|n| n.to_string()).unwrap_or_else(|| "all".into());
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .tail(&tail)
            .build();
        let source = i.source();
        let mut stream = self.docker().logs(&i.id, Some(opts));
        let mut out = Vec::new();
        let mut prev = i128::MIN;
        while let Some(Ok(chunk)) = stream.next().await {
            parse_chunk(&source, chunk.as_ref(), &mut prev, &mut out);
        }
        out
    }

    /// Streams one instance's lines written after `cutoff` until it stops;
    /// returns its id and the time of the last line seen.
    async fn follow_one(
        self,
        i: Instance,
        cutoff: i128,
        out: mpsc::Sender<LogLine>,
    ) -> (String, i128) {
        let since = if cutoff <= 0 {
            0
        } else {
            (cutoff / 1_000_000_000).clamp(0, i32::MAX as i128) as i32
        };
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .follow(true)
            .since(since)
            .build();
        let source = i.source();
        let mut stream = self.docker().logs(&i.id, Some(opts));
        let mut last = cutoff;
        let mut prev = cutoff;
        let mut batch = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            parse_chunk(&source, chunk.as_ref(), &mut prev, &mut batch);
            for s in batch.drain(..) {
                // `since` has whole seconds: drop what the tail showed.
                if s.nanos <= cutoff {
                    continue;
                }
                last = last.max(s.nanos);
                if out.send(s.line).await.is_err() {
                    return (i.id, last);
                }
            }
        }
        (i.id, last)
    }
}
