//! `docker exec` in a resource's container with streams: the one way the
//! local provider runs a client (pg_dump, pg_restore, psql, redis-cli) in
//! it. Output is copied chunk by chunk as it comes (nothing is held whole),
//! stdin is copied in and half-closed at its end.

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::ResizeExecOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::super::{Reader, ResourceError, Result, Terminal, Writer};

/// One command to exec.
pub struct Exec<'a> {
    pub argv: Vec<String>,
    /// `KEY=VALUE` (the password goes here, never into `argv`).
    pub env: Vec<String>,
    pub stdin: Option<Reader>,
    pub stdout: Writer,
    /// `None`: stderr is kept (the last 4 KiB) for the error message.
    pub stderr: Option<Writer>,
    pub tty: Option<Terminal>,
    /// What the command is, for error messages.
    pub what: &'a str,
}

/// What an exec ended with.
pub struct Exited {
    pub code: i64,
    /// The end of stderr when the caller did not take it.
    pub stderr_tail: String,
}

const TAIL: usize = 4096;

/// Runs `e` in `container` and waits for it; its exit status.
pub async fn exec(docker: &Docker, container: &str, e: Exec<'_>) -> Result<Exited> {
    let fail = |what: &str, err: bollard::errors::Error| {
        ResourceError::Failed(format!("{what}: Docker engine: {err}"))
    };
    let has_stdin = e.stdin.is_some();
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(e.argv.clone()),
                env: Some(e.env.clone()),
                attach_stdin: Some(has_stdin),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(e.tty.is_some()),
                ..Default::default()
            },
        )
        .await
        .map_err(|err| fail(e.what, err))?;
    let start = StartExecOptions {
        detach: false,
        tty: e.tty.is_some(),
        output_capacity: Some(256 * 1024),
    };
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = docker
        .start_exec(&created.id, Some(start))
        .await
        .map_err(|err| fail(e.what, err))?
    else {
        return Err(ResourceError::Failed(format!("{}: not attached", e.what)));
    };
    let tty = e.tty.is_some();
    let mut resize = None;
    if let Some(t) = e.tty {
        resize_exec(docker, &created.id, t.cols, t.rows).await;
        resize = Some(t.resize);
    }
    let (mut stdout, mut stderr) = (e.stdout, e.stderr);
    let mut tail: Vec<u8> = Vec::new();
    let mut stdin_err = None;
    let feeder = async {
        if let Some(mut r) = e.stdin {
            if let Err(err) = tokio::io::copy(&mut r, &mut input).await {
                stdin_err = Some(err.to_string());
            }
            // Half-close: the command sees the end of its input.
            let _ = input.shutdown().await;
        }
        futures::future::pending::<()>().await
    };
    let resizer = async {
        if let Some(rx) = resize.as_mut() {
            while let Some((cols, rows)) = rx.recv().await {
                resize_exec(docker, &created.id, cols, rows).await;
            }
        }
        futures::future::pending::<()>().await
    };
    let mut write_err = None;
    let pump = async {
        while let Some(item) = output.next().await {
            let (to_err, bytes) = match item {
                Ok(LogOutput::StdErr { message }) => (!tty, message),
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    (false, message)
                }
                Ok(LogOutput::StdIn { .. }) => continue,
                Err(err) => {
                    write_err = Some(format!("reading its output: {err}"));
                    break;
                }
            };
            if to_err {
                match stderr.as_mut() {
                    Some(w) => {
                        let _ = w.write_all(&bytes).await;
                        let _ = w.flush().await;
                    }
                    None => {
                        tail.extend_from_slice(&bytes);
                        if tail.len() > TAIL {
                            tail.drain(..tail.len() - TAIL);
                        }
                    }
                }
            } else if let Err(err) = write_all(&mut *stdout, &bytes).await {
                // The reader went away (the client hung up): stop here.
                write_err = Some(format!("writing its output: {err}"));
                break;
            }
        }
        let _ = stdout.flush().await;
        let _ = stdout.shutdown().await;
    };
    tokio::select! {
        () = pump => {}
        _ = feeder => unreachable!(),
        _ = resizer => unreachable!(),
    }
    if let Some(err) = write_err {
        return Err(ResourceError::Failed(format!("{}: {err}", e.what)));
    }
    let code_result = exit_code(docker, &created.id, e.what).await;
    if let Some(err) = stdin_err {
        return Err(ResourceError::Failed(format!(
            "{}: reading the input: {err}",
            e.what
        )));
    }
    let code = code_result?;
    Ok(Exited {
        code,
        stderr_tail: String::from_utf8_lossy(&tail).trim().to_string(),
    })
}

async fn write_all(w: &mut (dyn AsyncWrite + Send + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await
}

/// The exec's exit code, once Docker has it (the output may end a moment
/// before the process is reaped).
async fn exit_code(docker: &Docker, id: &str, what: &str) -> Result<i64> {
    for _ in 0..200 {
        let i = docker
            .inspect_exec(id)
            .await
            .map_err(|err| ResourceError::Failed(format!("{what}: Docker engine: {err}")))?;
        if i.running != Some(true) {
            return Ok(i.exit_code.unwrap_or(-1));
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    Err(ResourceError::Failed(format!(
        "{what}: still running after its output ended"
    )))
}

async fn resize_exec(docker: &Docker, id: &str, cols: u16, rows: u16) {
    let opts = ResizeExecOptionsBuilder::new()
        .w(cols as i32)
        .h(rows as i32)
        .build();
    if let Err(e) = docker.resize_exec(id, opts).await {
        tracing::debug!(error = %e, "resizing the console's terminal");
    }
}

/// Runs `argv` and fails with its stderr unless it exits 0; its stdout
/// (small outputs only: readiness checks, status lines).
pub async fn run_checked(
    docker: &Docker,
    container: &str,
    argv: &[&str],
    env: Vec<String>,
    what: &str,
) -> Result<String> {
    let (w, mut r) = tokio::io::duplex(64 * 1024);
    let e = Exec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env,
        stdin: None,
        stdout: Box::new(w),
        stderr: None,
        tty: None,
        what,
    };
    let read = async {
        // Keep the first 64 KiB, drain the rest (the exec must not block).
        let (mut out, mut buf) = (Vec::new(), [0u8; 8192]);
        while let Ok(n) = tokio::io::AsyncReadExt::read(&mut r, &mut buf).await {
            if n == 0 {
                break;
            }
            if out.len() < 64 * 1024 {
                out.extend_from_slice(&buf[..n]);
            }
        }
        out
    };
    let (done, out) = tokio::join!(exec(docker, container, e), read);
    let done = done?;
    if done.code != 0 {
        return Err(ResourceError::Failed(format!(
            "{what} failed (exit {}): {}",
            done.code, done.stderr_tail
        )));
    }
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}
