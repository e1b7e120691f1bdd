//! The one progress sink every stage of a push or command writes to.
//!
//! A `Progress` is a cheap clonable sender of text lines. Whoever owns the
//! receiving end decides where lines go: side-band 2 of a git push (shown as
//! `remote:` lines), the stderr of an SSH command, the build log. This module
//! knows nothing about git, SSH or Docker.

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
