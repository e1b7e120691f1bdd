//! `logs` and `run`: streams between the client and the runtime, and the
//! one place that knows how a `run` exec line is read (`split_line`,
//! `parse_argv`): the command after ` -- ` is one command line for
//! `/bin/sh -c`, as Procfile commands are, never split and re-joined.

use std::collections::BTreeMap;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::group::read;
use super::{output::Output, CmdError, Ctx};
use super::{parse_count, unexpected, usage, Access, Args};
use crate::deploy::rollout::new_deploy_id;
use crate::runtime::{LogOptions, OneOff, OneOffIo};

pub async fn logs<R>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    follow: bool,
    lines: Option<usize>,
    kind: Option<String>,
) -> Result<Output, CmdError> {
    ctx.store().app(app).await?;
    let runtime = ctx.runtime().await?;
    let (tx, mut rx) = mpsc::channel(1024);
    let opts = LogOptions {
        follow,
        tail: Some(lines.unwrap_or(100)),
        kind,
    };
    let app_s = app.to_string();
    let producer = tokio::spawn(async move { runtime.logs(&app_s, opts, tx).await });
    // A follow ends when the server stops accepting (SIGTERM, an update):
    // it says so and exits 0 rather than being cut at the grace period.
    let mut stopping = ctx.rack.stopping.subscribe();
    loop {
        let line = tokio::select! {
            line = rx.recv() => line,
            _ = crate::router::stopped(&mut stopping), if follow => {
                let _ = ctx.stderr.write_all(b"rack: the server is restarting (an update or a stop); run logs -f again to follow on\n").await;
                let _ = ctx.stderr.flush().await;
                producer.abort();
                return Ok(Output::streamed(0));
            }
        };
        let Some(line) = line else { break };
        let text = format!("{} | {}\n", line.source, line.text);
        if ctx.stdout.write_all(text.as_bytes()).await.is_err() || ctx.stdout.flush().await.is_err()
        {
            break; // the client went away: dropping rx stops the producer
        }
    }
    drop(rx);
    match producer.await {
        Ok(Ok(())) | Err(_) => Ok(Output::streamed(0)),
        Ok(Err(e)) => Err(CmdError::Failed(e.to_string())),
    }
}

pub async fn run<R: AsyncRead + Unpin>(
    ctx: &mut Ctx<'_, R>,
    app: &str,
    argv: Vec<String>,
) -> Result<Output, CmdError> {
    let state = ctx.store().app_state(app).await?;
    let v = state
        .current_release
        .ok_or_else(|| CmdError::Failed(format!("{app} has no release yet: git push first")))?;
    let release = ctx.store().release(app, v).await?;
    let runtime = ctx.runtime().await?;
    let spec = ctx
        .rack
        .deployer
        .spec_for(&*runtime, &release, &BTreeMap::new(), new_deploy_id())
        .await?;
    let tty = ctx.tty.take();
    let (tty_size, resize) = match tty {
        Some(t) => (Some((t.cols, t.rows)), Some(t.resize)),
        None => (None, None),
    };
    let cmd = OneOff {
        argv,
        tty: tty_size,
        resize,
        timeout: None,
        labels: BTreeMap::new(),
    };
    stream(ctx, true, |io| runtime.run(&spec, cmd, io)).await
}

/// Runs a process started by `start` with pipes to the client's streams
/// (stdin only when `with_stdin`) and passes its exit status through.
pub(super) async fn stream<R, F>(
    ctx: &mut Ctx<'_, R>,
    with_stdin: bool,
    start: impl FnOnce(OneOffIo) -> F,
) -> Result<Output, CmdError>
where
    R: AsyncRead + Unpin,
    F: std::future::Future<Output = Result<i64, crate::runtime::RuntimeError>>,
{
    // Pipes between the client's streams and the container's: the copies
    // run in this task alongside the process.
    let (stdin_w, stdin_r) = tokio::io::duplex(64 * 1024);
    let (stdout_w, mut stdout_r) = tokio::io::duplex(64 * 1024);
    let (stderr_w, mut stderr_r) = tokio::io::duplex(64 * 1024);
    let io = OneOffIo {
        stdin: with_stdin
            .then(|| Box::new(stdin_r) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        stdout: Box::new(stdout_w),
        stderr: Box::new(stderr_w),
    };
    // Boxed so that dropping it below closes its ends of the pipes.
    let mut process = Box::pin(start(io));
    let mut stdin_w = with_stdin.then_some(stdin_w);
    let (mut inbuf, mut outbuf, mut errbuf) =
        (vec![0u8; 16384], vec![0u8; 16384], vec![0u8; 16384]);
    let (mut out_open, mut err_open) = (true, true);
    let code = loop {
        tokio::select! {
            r = &mut process => break r,
            n = ctx.stdin.read(&mut inbuf), if stdin_w.is_some() => match n {
                Ok(0) | Err(_) => { stdin_w = None; }
                Ok(n) => {
                    if let Some(w) = stdin_w.as_mut() {
                        if w.write_all(&inbuf[..n]).await.is_err() { stdin_w = None; }
                    }
                }
            },
            n = stdout_r.read(&mut outbuf), if out_open => match n {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => { let _ = ctx.stdout.write_all(&outbuf[..n]).await; let _ = ctx.stdout.flush().await; }
            },
            n = stderr_r.read(&mut errbuf), if err_open => match n {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => { let _ = ctx.stderr.write_all(&errbuf[..n]).await; let _ = ctx.stderr.flush().await; }
            },
        }
    };
    drop(process);
    // What the process wrote last is still in the pipes.
    let mut rest = Vec::new();
    let _ = stdout_r.read_to_end(&mut rest).await;
    let _ = ctx.stdout.write_all(&rest).await;
    rest.clear();
    let _ = stderr_r.read_to_end(&mut rest).await;
    let _ = ctx.stderr.write_all(&rest).await;
    let code = code.map_err(|e| CmdError::Failed(e.to_string()))?;
    Ok(Output::streamed(code.clamp(0, 255) as u32))
}

// ---------------------------------------------------------------- commands

commands! {
    /// `logs` and `run`: the app's processes, streamed.
    RunCmd(ctx) {
        "logs" => Logs { app: String, follow: bool, lines: Option<usize>, kind: Option<String> }
            parse parse_logs; access read(app); app app;
            run logs(ctx, &app, follow, lines, kind);
        "run" => Run { app: String, argv: Vec<String> }
            parse |a: &mut Args, cmd: &str| Ok::<_, CmdError>((a.app(cmd)?, parse_argv(a.rest())?));
            access Access::Admin; app app;
            // Only the program name: arguments may carry secrets.
            audit format!("run {app} {}", audit_name(argv));
            run run(ctx, &app, argv);
    }
}

type LogsFields = (String, bool, Option<usize>, Option<String>);

/// `logs APP [-f] [-n N] [--type TYPE]`.
fn parse_logs(a: &mut Args, cmd: &str) -> Result<LogsFields, CmdError> {
    let app = a.app(cmd)?;
    let (mut follow, mut lines, mut kind) = (false, None, None);
    let rest = a.rest();
    let mut it = rest.into_iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-f" | "--follow" => follow = true,
            "-n" | "--num" => {
                lines = Some(parse_count(
                    &it.next().ok_or_else(|| usage("-n needs a number"))?,
                )?)
            }
            "--type" | "-t" => {
                let t = it
                    .next()
                    .ok_or_else(|| usage("--type needs a process type"))?;
                crate::names::validate_process_type(&t).map_err(CmdError::Usage)?;
                kind = Some(t);
            }
            other => return Err(unexpected(other, cmd)),
        }
    }
    Ok((app, follow, lines, kind))
}

// ------------------------------------------------------- the run exec line

/// The shell one-off commands run through, as Procfile commands do.
const SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// Splits an exec line into words with shell-word rules, except the
/// command of a `run` line: what follows `run APP [--exec] --` (or the
/// first word after APP that is not an option) stays one word, verbatim,
/// because it is a command line for the container's shell. `ssh HOST run
/// APP -- 'echo $X'` and `ssh HOST run APP -- echo '$X'` both reach the
/// server as `run APP -- echo $X`, and both print the value.
///
/// With `--exec` the whole line is split as before (an argv for images
/// without `sh`). Fails on unbalanced quotes outside the run command.
pub fn split_line(text: &str) -> Result<Vec<String>, shell_words::ParseError> {
    let mut rest = text.trim_start();
    let mut words = Vec::new();
    while let Some(word) = plain_word(rest) {
        if words.is_empty() && word != "run" {
            break;
        }
        if word == "--exec" {
            break; // the exec form's argv: shell-word rules throughout
        }
        let after = rest[word.len()..].trim_start();
        if word == "--" || (words.len() >= 2 && !word.starts_with('-')) {
            let command = if word == "--" { after } else { rest };
            words.push("--".to_string());
            words.push(command.to_string());
            return Ok(words);
        }
        words.push(word.to_string());
        rest = after;
    }
    shell_words::split(text)
}

/// The next word of `text` when it needs no unquoting, else `None`.
fn plain_word(text: &str) -> Option<&str> {
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    let word = &text[..end];
    let plain = !word.is_empty() && !word.contains(['\'', '"', '\\', '#', '$', '`']);
    plain.then_some(word)
}

/// The argv of a one-off from the words after `run APP`: `[--exec] [--]
/// COMMAND...`. Without `--exec` the command is one command line run by
/// `/bin/sh -c` (one word as it came from `split_line`; several words,
/// from any other caller, are quoted back into one line so each stays one
/// argument).
pub fn parse_argv(words: Vec<String>) -> Result<Vec<String>, CmdError> {
    let mut exec = false;
    let mut words = words.into_iter().peekable();
    while let Some(w) = words.peek() {
        match w.as_str() {
            "--exec" => exec = true,
            "--" => {
                words.next();
                break;
            }
            _ => break,
        }
        words.next();
    }
    let command: Vec<String> = words.collect();
    if exec {
        if command.is_empty() {
            return Err(usage("usage: run APP --exec -- PROGRAM ARGS..."));
        }
        return Ok(command);
    }
    let line = match command.as_slice() {
        [one] => one.clone(),
        many => shell_words::join(many),
    };
    if line.trim().is_empty() {
        return Err(usage(
            "usage: run APP -- COMMAND (one command line for /bin/sh -c)",
        ));
    }
    Ok(SHELL.iter().map(|s| s.to_string()).chain([line]).collect())
}

/// The one-off's program for the audit trail: never its arguments (they
/// may carry secrets), so of a shell command line only its first word.
pub fn audit_name(argv: &[String]) -> &str {
    match argv {
        [sh, c, line] if sh == SHELL[0] && c == SHELL[1] => {
            line.split_whitespace().next().unwrap_or("")
        }
        _ => argv.first().map(String::as_str).unwrap_or(""),
    }
}
