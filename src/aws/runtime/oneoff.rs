//! `logs` and `run` on ECS: the app's CloudWatch Logs group read back
//! with `TYPE.N` names, and one-off tasks whose output is their one
//! stream.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::AwsRuntime;
use crate::aws::ecs::{task_definition, tasks};
use crate::aws::lifecycle;
use crate::aws::logs::{self, GroupReader, StreamReader};
use crate::aws::state::now_ms;
use crate::aws::Result;
use crate::progress::Progress;
use crate::runtime::{
    LogLine, LogOptions, OneOff, OneOffIo, ProcessSpec, ReleaseSpec, RuntimeError,
};

/// How often `logs -f` and `run` ask CloudWatch Logs for more.
const LOG_POLL: Duration = Duration::from_secs(1);
/// How far back `logs` looks for its tail.
const LOG_LOOKBACK: Duration = Duration::from_secs(24 * 3600);

/// A log event as the user sees it: the task named `TYPE.N` when `ps`
/// knows it, else `TYPE.TASK_ID`.
fn line(names: &HashMap<String, String>, e: logs::Event) -> LogLine {
    LogLine {
        time: logs::rfc3339(e.timestamp),
        source: names
            .get(&e.task)
            .cloned()
            .unwrap_or_else(|| format!("{}.{}", e.kind, e.task)),
        text: e.message,
    }
}

impl AwsRuntime {
    pub(super) async fn logs_inner(
        &self,
        app: &str,
        opts: LogOptions,
        tx: mpsc::Sender<LogLine>,
    ) -> Result<()> {
        let app_out = lifecycle::app_outputs(&self.ctx, app).await?;
        let mut names = self.task_names(app).await;
        let since = now_ms() - LOG_LOOKBACK.as_millis() as i64;
        let mut reader = GroupReader::new(&self.ctx, &app_out.log_group, opts.kind, since);
        // The tail: only the last N events are ever held.
        let keep = opts.tail.unwrap_or(usize::MAX);
        let mut tail: VecDeque<logs::Event> = VecDeque::new();
        reader
            .next_batch(|e| {
                if keep > 0 {
                    if tail.len() == keep {
                        tail.pop_front();
                    }
                    tail.push_back(e);
                }
            })
            .await?;
        for e in tail {
            if tx.send(line(&names, e)).await.is_err() {
                return Ok(());
            }
        }
        if !opts.follow {
            return Ok(());
        }
        loop {
            tokio::select! {
                _ = tx.closed() => return Ok(()),
                _ = tokio::time::sleep(LOG_POLL) => {}
            }
            let mut batch = Vec::new();
            reader.next_batch(|e| batch.push(e)).await?;
            if batch.iter().any(|e| !names.contains_key(&e.task)) {
                // A new task (a deploy or a restart): learn its number.
                names = self.task_names(app).await;
            }
            for e in batch {
                if tx.send(line(&names, e)).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    /// Starts the one-off task: a task definition of type `run` with the
    /// release's config and the first type's size; returns its ARN and
    /// the app's log group.
    async fn start_one_off(&self, spec: &ReleaseSpec, cmd: &OneOff) -> Result<(String, String)> {
        let argv = &cmd.argv;
        let app_out = lifecycle::app_outputs(&self.ctx, &spec.app).await?;
        let secrets = self.put_parameters(spec).await?;
        let p = ProcessSpec {
            kind: "run".into(),
            command: None,
            count: 0,
            memory_bytes: cmd
                .memory_bytes
                .or(spec.processes.first().and_then(|p| p.memory_bytes)),
            nano_cpus: cmd
                .nano_cpus
                .or(spec.processes.first().and_then(|p| p.nano_cpus)),
        };
        let volumes = self.efs_mounts(spec, None, &Progress::discard()).await?;
        let td_spec = self.task_spec(spec, &p, &app_out, &secrets, volumes)?;
        let td = task_definition::register_or_reuse(&self.ctx, &td_spec, None).await?;
        let task = tasks::OneOffTask {
            task_definition: &td,
            container: "run",
            argv,
            started_by: "rack-run",
        };
        let arn = tasks::run_task(&self.ctx, self.cluster(), self.network()?, &task).await?;
        Ok((arn, app_out.log_group))
    }

    pub(super) async fn run_inner(
        &self,
        spec: &ReleaseSpec,
        cmd: OneOff,
        mut io: OneOffIo,
    ) -> Result<i64, RuntimeError> {
        if cmd.argv.is_empty() {
            return Err(RuntimeError::Other("nothing to run".into()));
        }
        let (task, log_group) = self.start_one_off(spec, &cmd).await?;
        let task_id = tasks::task_id(&task).to_string();
        let note = format!("rack: one-off task {task_id} started\n");
        let _ = io.stderr.write_all(note.as_bytes()).await;
        // Its output, as the awslogs driver writes it: streamed while the
        // task runs, and drained once it has stopped.
        let mut output = StreamReader::new(&self.ctx, &log_group, &format!("run/run/{task_id}"));
        let deadline = cmd.timeout.map(|t| Instant::now() + t);
        loop {
            copy_lines(&mut output, &mut io.stdout).await?;
            if let Some(t) = tasks::describe_task(&self.ctx, self.cluster(), &task).await? {
                let container = t.containers().iter().find(|c| c.name() == Some("run"));
                let code = container.and_then(|c| c.exit_code());
                // Done when the task stopped, or when its container reports
                // an exit code (the only thing a double that never runs
                // tasks does report).
                if t.last_status() == Some("STOPPED") || code.is_some() {
                    // The driver may still be shipping the last lines.
                    for _ in 0..3 {
                        if copy_lines(&mut output, &mut io.stdout).await? == 0 {
                            break;
                        }
                    }
                    return match code {
                        Some(c) => Ok(c as i64),
                        None => Err(RuntimeError::Other(format!(
                            "one-off task {task_id} stopped without an exit code: {}",
                            t.stopped_reason().unwrap_or("")
                        ))),
                    };
                }
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                tasks::stop_task(&self.ctx, self.cluster(), &task, "rack: timed out").await;
                return Err(RuntimeError::Other(format!(
                    "one-off task {task_id} timed out"
                )));
            }
            tokio::time::sleep(LOG_POLL).await;
        }
    }
}

/// Writes a one-off task's new output lines to `out`; returns how many.
/// A client that went away does not stop the task's bookkeeping.
async fn copy_lines(
    output: &mut StreamReader,
    out: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
) -> Result<usize> {
    let lines = output.next_batch().await?;
    for line in &lines {
        let _ = out.write_all(line.as_bytes()).await;
        let _ = out.write_all(b"\n").await;
    }
    let _ = out.flush().await;
    Ok(lines.len())
}
