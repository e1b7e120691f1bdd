//! Wires an exec of `git-receive-pack`/`git-upload-pack` to `git/`, after
//! the access check, and the push hook to the deploy pipeline.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::cmd::Identity;
use crate::state::Rack;

pub fn is_git(words: &[String]) -> bool {
    words
        .first()
        .is_some_and(|w| w.starts_with("git-") || w == "git")
}

pub async fn run<R, W, E>(
    _rack: &Arc<Rack>,
    _who: &Identity,
    _words: &[String],
    _git_protocol: Option<&str>,
    _stdin: R,
    _stdout: &mut W,
    stderr: &mut E,
) -> u32
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    E: AsyncWrite + Unpin + Send,
{
    let _ = stderr.write_all(b"error: git is not served yet\n").await;
    1
}
