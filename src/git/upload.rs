//! upload-pack (clone, fetch, ls-remote): the real `git upload-pack`,
//! started through [`crate::process`] so nothing the client sent reaches it
//! except a validated `GIT_PROTOCOL` and the bytes of the protocol itself.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::GitError;

/// Most stderr kept from a failing `git upload-pack` for the log.
const MAX_STDERR: usize = 8 * 1024;

/// Serves one fetch: pumps `input` into `git upload-pack --strict REPO` and
/// its output to `output`; returns its exit code (for the SSH exit status).
/// `git_protocol` is the client's `GIT_PROTOCOL` env request, passed on only
/// when it is `version=0|1|2`.
pub async fn upload_pack<R, W>(
    repo: &Path,
    git_protocol: Option<&str>,
    mut input: R,
    mut output: W,
) -> Result<i32, GitError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    if !repo.is_dir() {
        return Err(GitError::NoRepo(repo.to_path_buf()));
    }
    let mut cmd = crate::process::command("git");
    crate::process::set_git_protocol(&mut cmd, git_protocol);
    // `--strict`: never look for REPO/.git; `--` is unnecessary since the
    // path is absolute and ours, but keeps option parsing out of it.
    cmd.arg("upload-pack")
        .arg("--strict")
        .arg("--")
        .arg(repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| GitError::Process(format!("cannot start git upload-pack: {e}")))?;
    let mut stdin = child.stdin.take().expect("stdin piped");
    let mut stdout = child.stdout.take().expect("stdout piped");
    let mut stderr = child.stderr.take().expect("stderr piped");

    let to_child = async {
        // Ends at the client's EOF, or when the child stops reading.
        let _ = tokio::io::copy(&mut input, &mut stdin).await;
        drop(stdin);
    };
    let from_child = async {
        let r = tokio::io::copy(&mut stdout, &mut output).await;
        let _ = output.flush().await;
        r
    };
    let errors = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stderr.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if buf.len() < MAX_STDERR {
                        buf.extend_from_slice(&chunk[..n.min(MAX_STDERR - buf.len())]);
                    }
                }
            }
        }
        buf
    };
    // The client's side may stay open after upload-pack is done (it waits
    // for our exit status), so stop pumping input once output has ended.
    let outputs = async { tokio::join!(from_child, errors) };
    tokio::pin!(to_child);
    tokio::pin!(outputs);
    let (copied, errbuf) = tokio::select! {
        r = &mut outputs => r,
        _ = &mut to_child => outputs.await,
    };
    let status = child.wait().await?;
    if let Err(e) = copied {
        tracing::debug!(error = %e, "git client went away during upload-pack");
    }
    let code = status.code().unwrap_or(128);
    if code != 0 && !errbuf.is_empty() {
        tracing::info!(repo = %repo.display(), code, stderr = %String::from_utf8_lossy(&errbuf).trim(), "git upload-pack failed");
    }
    Ok(code)
}
