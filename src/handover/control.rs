//! The control socket, `DATA_DIR/control.sock` (owner-only, in the
//! owner-only data dir): how `rack update --binary PATH` on the rack's
//! machine asks the running server to hand over. One request per
//! connection, one line: `update PATH`; the answer is `ok PID VERSION` or
//! `error: REASON`.
//!
//! Its listening socket is handed over with the others, so an update
//! never finds nobody answering. Does not know how a handover is done
//! (`daemon.rs` answers the request).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::MAX_LINE;

/// Binds the control socket, removing a stale one; refuses when a server
/// already answers on it (one server per data dir).
pub fn bind(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "a rack server already runs on this data dir (it answers on {}); \
                 use `rack update` to replace it",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// One request read from a control connection.
pub enum Request {
    Update(PathBuf),
}

/// Reads the request line; `Err` is the answer to write back.
pub async fn read_request(conn: &mut tokio::net::UnixStream) -> Result<Request, String> {
    let mut line = String::new();
    let mut reader = BufReader::new(conn).take(MAX_LINE as u64);
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    match line.trim_end_matches('\n').split_once(' ') {
        Some(("update", path)) if !path.is_empty() => Ok(Request::Update(PathBuf::from(path))),
        _ => Err("unknown request: expected `update PATH`".into()),
    }
}

/// Writes the answer line.
pub async fn answer(conn: &mut tokio::net::UnixStream, result: Result<String, String>) {
    let line = match result {
        Ok(ok) => format!("ok {ok}\n"),
        Err(e) => format!("error: {}\n", e.replace('\n', " ")),
    };
    let _ = conn.write_all(line.as_bytes()).await;
}

/// `rack update --binary PATH` on the local provider: asks the server on
/// `socket` to hand over to `binary` and waits for the outcome.
pub async fn request_update(socket: &Path, binary: &Path) -> Result<String> {
    let binary =
        std::path::absolute(binary).with_context(|| format!("--binary {}", binary.display()))?;
    let mut conn = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| {
            format!(
                "no rack server answers on {} (is `rack server` running with this --data-dir?)",
                socket.display()
            )
        })?;
    let line = format!("update {}\n", binary.display());
    if line.contains('\n') && line.trim_end_matches('\n').contains('\n') {
        bail!("--binary: a path with a newline is not accepted");
    }
    conn.write_all(line.as_bytes()).await?;
    let mut answer = String::new();
    BufReader::new(&mut conn)
        .take(MAX_LINE as u64)
        .read_line(&mut answer)
        .await?;
    let answer = answer.trim_end();
    if let Some(ok) = answer.strip_prefix("ok ") {
        return Ok(ok.to_string());
    }
    match answer.strip_prefix("error: ") {
        Some(e) => bail!("{e}"),
        None => bail!("the server went away during the update"),
    }
}
