//! `run`: a one-off container of a release, attached to the caller's
//! streams, removed whatever happens.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ResizeContainerTTYOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use rand::Rng;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::docker::{L_DEPLOY, L_NUMBER, L_ONEOFF, L_PORT, L_RELEASE, L_TIMER, L_TYPE};
use super::{LocalRuntime, RemoveOnDrop};
use crate::runtime::{OneOff, OneOffIo, ReleaseSpec, RuntimeError};

/// Exited runs kept per timer for `logs`.
const KEPT_TIMER_RUNS: usize = 5;

/// After the process exited, how long its last output may take to arrive.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

impl LocalRuntime {
    pub(super) async fn run_impl(
        &self,
        spec: &ReleaseSpec,
        cmd: OneOff,
        io: OneOffIo,
    ) -> Result<i64, RuntimeError> {
        let net = self.ensure_network(&spec.app).await?;
        let port = self.port_for(spec).await?;
        let (number, suffix) = {
            let mut rng = rand::thread_rng();
            (rng.gen_range(1000..10000u32), rng.gen::<u32>())
        };
        let name = format!(
            "{}-{}-run-{number}-{suffix:08x}",
            self.inner.opts.namespace, spec.app
        );

        let timer = cmd.labels.get(L_TIMER).cloned();
        let kind = if timer.is_some() { "timer" } else { "run" };
        // Caller labels first: they cannot override rack's own.
        let mut labels: std::collections::HashMap<String, String> = cmd
            .labels
            .iter()
            .filter(|(k, _)| {
                !k.starts_with("rack.") || k.starts_with("rack.release-") || k.as_str() == L_TIMER
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.extend(self.base_labels(&spec.app));
        labels.extend([
            (L_ONEOFF.to_string(), "1".to_string()),
            (L_RELEASE.to_string(), spec.version.to_string()),
            (L_DEPLOY.to_string(), spec.deploy_id.clone()),
            (L_TYPE.to_string(), kind.to_string()),
            (L_NUMBER.to_string(), number.to_string()),
            (L_PORT.to_string(), port.to_string()),
        ]);

        let tty = cmd.tty;
        let has_stdin = io.stdin.is_some();
        // Under the limits of the spec's process type of this kind, if any
        // (`resources.timer.*` for timers).
        // The one-off's own limits when the pipeline gave them.
        let limits = spec.processes.iter().find(|p| p.kind == kind);
        let mut host = self.host_config(
            &net,
            cmd.memory_bytes.or(limits.and_then(|p| p.memory_bytes)),
            cmd.nano_cpus.or(limits.and_then(|p| p.nano_cpus)),
            false,
        );
        host.mounts = Some(self.mounts_for(spec, None).await?);
        if let Some((cols, rows)) = tty {
            host.console_size = Some(vec![rows as usize, cols as usize]);
        }
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(self.env_for(spec, port)),
            cmd: (!cmd.argv.is_empty()).then(|| cmd.argv.clone()),
            tty: Some(tty.is_some()),
            open_stdin: Some(has_stdin),
            stdin_once: Some(has_stdin),
            attach_stdin: Some(has_stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            labels: Some(labels),
            host_config: Some(host),
            networking_config: Some(self.networking(&net)),
            ..Default::default()
        };
        let created = self
            .docker()
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .map_err(|e| RuntimeError::Engine(format!("creating the one-off container: {e}")))?;
        let id = created.id;
        let mut guard = RemoveOnDrop::new(self.clone());
        guard.ids.push(id.clone());

        if let Some(t) = &timer {
            self.prune_timer_runs(&spec.app, t).await;
        }
        let result = self.attach_and_wait(&id, tty, cmd, io).await;
        let ids = std::mem::take(&mut guard.ids);
        // A timer's finished run stays (stopped) so `logs` shows its lines
        // as `timer.NAME`, until newer runs push it out.
        if timer.is_none() {
            self.remove_all(&ids).await;
        }
        result
    }

    async fn attach_and_wait(
        &self,
        id: &str,
        tty: Option<(u16, u16)>,
        cmd: OneOff,
        io: OneOffIo,
    ) -> Result<i64, RuntimeError> {
        let OneOffIo {
            stdin,
            mut stdout,
            mut stderr,
        } = io;
        let opts = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdin(stdin.is_some())
            .stdout(true)
            .stderr(true)
            .build();
        let attached = self
            .docker()
            .attach_container(id, Some(opts))
            .await
            .map_err(|e| {
                RuntimeError::Engine(format!("attaching to the one-off container: {e}"))
            })?;
        let mut output = attached.output;
        let mut input = attached.input;

        self.start_container(id)
            .await
            .map_err(|e| RuntimeError::Engine(format!("starting the one-off container: {e}")))?;
        if let Some((cols, rows)) = tty {
            self.resize(id, cols, rows).await;
        }

        let resizer = async {
            if let (Some(mut rx), true) = (cmd.resize, tty.is_some()) {
                while let Some((cols, rows)) = rx.recv().await {
                    self.resize(id, cols, rows).await;
                }
            }
            futures::future::pending::<()>().await
        };
        let feeder = async {
            if let Some(mut r) = stdin {
                let _ = tokio::io::copy(&mut r, &mut input).await;
                // Half-close: the process sees EOF on its stdin.
                let _ = input.shutdown().await;
            }
            futures::future::pending::<()>().await
        };
        let (exited_tx, exited_rx) = oneshot::channel::<()>();
        let waiter = async {
            let code = self.exit_code(id).await;
            let _ = exited_tx.send(());
            code
        };
        let pump = async {
            let copy = async {
                while let Some(item) = output.next().await {
                    let (to_err, bytes) = match item {
                        Ok(LogOutput::StdErr { message }) => (tty.is_none(), message),
                        Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                            (false, message)
                        }
                        Ok(LogOutput::StdIn { .. }) => continue,
                        Err(_) => break,
                    };
                    let w: &mut (dyn AsyncWrite + Send + Unpin) =
                        if to_err { &mut *stderr } else { &mut *stdout };
                    if w.write_all(&bytes).await.is_err() {
                        continue;
                    }
                    let _ = w.flush().await;
                }
            };
            tokio::select! {
                _ = copy => {}
                _ = async {
                    let _ = exited_rx.await;
                    tokio::time::sleep(OUTPUT_GRACE).await;
                } => {}
            }
            let _ = stdout.flush().await;
            let _ = stderr.flush().await;
        };
        let work = async {
            let (code, ()) = tokio::join!(waiter, pump);
            code
        };
        let work = async {
            tokio::select! {
                code = work => code,
                _ = resizer => unreachable!(),
                _ = feeder => unreachable!(),
            }
        };
        match cmd.timeout {
            None => work.await,
            Some(t) => match tokio::time::timeout(t, work).await {
                Ok(code) => code,
                Err(_) => {
                    let opts = KillContainerOptionsBuilder::new().signal("KILL").build();
                    let _ = self.docker().kill_container(id, Some(opts)).await;
                    Err(RuntimeError::Other(format!(
                        "the process was killed after the {}s time limit",
                        t.as_secs()
                    )))
                }
            },
        }
    }

    /// Removes the exited runs of a timer but the newest few (see
    /// `KEPT_TIMER_RUNS`).
    async fn prune_timer_runs(&self, app: &str, timer: &str) {
        let Ok(list) = self.list(Some(app)).await else {
            return;
        };
        let mut done: Vec<_> = list
            .into_iter()
            .filter(|i| i.timer.as_deref() == Some(timer) && i.state != "running")
            .collect();
        // Docker lists containers newest first.
        if done.len() >= KEPT_TIMER_RUNS {
            let ids: Vec<String> = done.drain(KEPT_TIMER_RUNS - 1..).map(|i| i.id).collect();
            self.remove_all(&ids).await;
        }
    }

    /// Waits for the one-off container to stop; its exit code.
    async fn exit_code(&self, id: &str) -> Result<i64, RuntimeError> {
        let opts = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut wait = self.docker().wait_container(id, Some(opts));
        match wait.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(RuntimeError::Engine(format!(
                "waiting for the one-off process: {e}"
            ))),
            None => Err(RuntimeError::Engine(
                "waiting for the one-off process: no answer".into(),
            )),
        }
    }

    async fn resize(&self, id: &str, cols: u16, rows: u16) {
        let opts = ResizeContainerTTYOptionsBuilder::new()
            .w(cols as i32)
            .h(rows as i32)
            .build();
        if let Err(e) = self.docker().resize_container_tty(id, opts).await {
            tracing::debug!(container = id, error = %e, "resizing tty");
        }
    }
}
