//! The one progress sink every stage of a push or command writes to.
//!
//! A `Progress` is a cheap clonable sender of text lines. Whoever owns the
//! receiving end decides where lines go: side-band 2 of a git push (shown as
//! `remote:` lines), the stderr of an SSH command, the build log. This module
//! knows nothing about git, SSH or Docker.

use std::future::Future;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Sender half: stages write lines here. Sending never blocks and never fails
/// the caller; if nobody listens any more the line is dropped.
#[derive(Clone, Debug)]
pub struct Progress {
    tx: mpsc::UnboundedSender<String>,
}

/// Receiver half, owned by whoever shows the lines.
pub type ProgressRx = mpsc::UnboundedReceiver<String>;

impl Progress {
    pub fn channel() -> (Progress, ProgressRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Progress { tx }, rx)
    }

    /// A sink that drops everything (for callers without an audience).
    pub fn discard() -> Progress {
        let (tx, _rx) = mpsc::unbounded_channel();
        Progress { tx }
    }

    /// A raw line, shown as is.
    pub fn line(&self, line: impl Into<String>) {
        let _ = self.tx.send(line.into());
    }

    /// A stage heading: `-----> Building myapp ...`.
    pub fn stage(&self, text: impl AsRef<str>) {
        self.line(format!("-----> {}", text.as_ref()));
    }

    /// Detail under a stage, indented to line up with the stage text.
    pub fn detail(&self, text: impl AsRef<str>) {
        self.line(format!("       {}", text.as_ref()));
    }
}

impl Progress {
    /// Runs `work` with a fresh sink and writes each line it sends to `out`
    /// as it comes (then every line left once `work` is done): the stderr
    /// of an SSH command or of `rack install`, the server log.
    pub async fn forward_to<W, T, F>(out: &mut W, work: impl FnOnce(Progress) -> F) -> T
    where
        W: AsyncWrite + Unpin + ?Sized,
        F: Future<Output = T>,
    {
        let (progress, mut rx) = Progress::channel();
        let fut = work(progress);
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                Some(line) = rx.recv() => {
                    let _ = out.write_all(format!("{line}\n").as_bytes()).await;
                }
                r = &mut fut => {
                    while let Ok(line) = rx.try_recv() {
                        let _ = out.write_all(format!("{line}\n").as_bytes()).await;
                    }
                    let _ = out.flush().await;
                    return r;
                }
            }
        }
    }
}

/// Progress lines as `info` events of the server log (target
/// `rack::recovery`), stage markers trimmed: where start-up work reports.
pub struct LogLines;

impl AsyncWrite for LogLines {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        for line in String::from_utf8_lossy(buf).lines() {
            tracing::info!(target: "rack::recovery", "{}", line.trim_start_matches("-----> ").trim());
        }
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
