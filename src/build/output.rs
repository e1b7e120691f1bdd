//! Turning Docker's build output into clean lines: chunks are not
//! line-aligned, carry ANSI colour and cursor codes, and progress bars
//! rewrite a line with `\r`; and following the engine's build stream,
//! printing those lines to the push and the build log ([`Out`]).

use futures::StreamExt;

use super::builder::LogSink;
use crate::progress::Progress;

/// Lines to the push and to the build log alike.
/// Every value in `secrets` is replaced by `[redacted]` on the way.
pub(super) struct Out<'a> {
    pub progress: &'a Progress,
    pub log: Option<&'a LogSink>,
    pub secrets: &'a [String],
}

/// `text` with every occurrence of a value of `secrets` replaced.
pub(super) fn redact<'t>(text: &'t str, secrets: &[String]) -> std::borrow::Cow<'t, str> {
    let mut out = std::borrow::Cow::Borrowed(text);
    for s in secrets {
        if out.contains(s.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(s.as_str(), "[redacted]"));
        }
    }
    out
}

impl Out<'_> {
    pub fn stage(&self, text: &str) {
        let text = redact(text, self.secrets);
        self.progress.stage(&text);
        if let Some(log) = self.log {
            log(&format!("-----> {text}"));
        }
    }
    pub fn detail(&self, text: &str) {
        let text = redact(text, self.secrets);
        self.progress.detail(&text);
        if let Some(log) = self.log {
            log(&format!("       {text}"));
        }
    }
}

/// How the engine's build stream ended, when it ended by itself.
pub(super) struct BuildEnded {
    /// The engine's error message for a failed step.
    pub failure: Option<String>,
    /// The last `Step N/M : ...` line.
    pub last_step: Option<String>,
}

/// Why the build stream was broken off.
pub(super) enum StreamBroke {
    Timeout,
    /// The connection to the engine failed.
    Engine(bollard::errors::Error),
}

/// Prints the engine's build stream (output lines; pull progress reduced
/// to its state changes) until it ends, fails or `deadline` passes. The
/// stream is dropped on return, which closes the request.
pub(super) async fn follow_build<S>(
    mut stream: S,
    deadline: tokio::time::Instant,
    out: &Out<'_>,
) -> Result<BuildEnded, StreamBroke>
where
    S: futures::Stream<Item = Result<bollard::models::BuildInfo, bollard::errors::Error>> + Unpin,
{
    let mut lines = LineSplitter::default();
    let mut ended = BuildEnded {
        failure: None,
        last_step: None,
    };
    let mut last_status: Option<String> = None;
    let result = loop {
        let item = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => break Err(StreamBroke::Timeout),
            Ok(None) => break Ok(()),
            Ok(Some(item)) => item,
        };
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                ended.failure = Some(error);
                break Ok(());
            }
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                ended.failure = Some(message);
                break Ok(());
            }
            Err(e) => return Err(StreamBroke::Engine(e)),
        };
        if let Some(s) = &info.stream {
            for l in lines.push(s) {
                if l.starts_with("Step ") {
                    ended.last_step = Some(l.clone());
                }
                if !l.trim().is_empty() {
                    out.detail(&l);
                }
            }
        }
        if let Some(status) = &info.status {
            // Pull progress: keep the state changes, drop the bars.
            let moving = info
                .progress_detail
                .as_ref()
                .is_some_and(|p| p.current.is_some() || p.total.is_some());
            let line = match &info.id {
                Some(id) => format!("{id}: {status}"),
                None => status.clone(),
            };
            if !moving && last_status.as_deref() != Some(line.as_str()) {
                out.detail(&clean_line(&line));
                last_status = Some(line);
            }
        }
        if let Some(detail) = info.error_detail {
            ended.failure = Some(detail.message.unwrap_or_else(|| "build failed".into()));
            break Ok(());
        }
    };
    drop(stream);
    if let Some(l) = lines.finish() {
        out.detail(&l);
    }
    result.map(|()| ended)
}

/// Joins chunks into complete lines, cleaned, each at most
/// [`crate::lines::MAX_LINE_BYTES`] long (a longer one is cut).
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: crate::lines::LineBuf,
}

impl LineSplitter {
    /// Feeds a chunk; returns the lines it completed, cleaned.
    pub fn push(&mut self, chunk: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.buf.push(chunk.as_bytes(), &mut |l| {
            out.push(clean_line(&String::from_utf8_lossy(l)))
        });
        out
    }

    /// What is left after the last newline (at the end of the stream).
    pub fn finish(&mut self) -> Option<String> {
        let mut rest = None;
        self.buf
            .finish(&mut |l| rest = Some(clean_line(&String::from_utf8_lossy(l))));
        rest.filter(|l| !l.is_empty())
    }
}

/// One raw line (no `\n`) as a terminal would leave it: ANSI escapes and
/// control characters removed, and only the text after the last carriage
/// return kept (a progress bar's final state).
pub fn clean_line(raw: &str) -> String {
    let raw = raw.strip_suffix('\r').unwrap_or(raw);
    let raw = raw.rsplit('\r').next().unwrap_or(raw);
    let stripped = strip_ansi(raw);
    stripped.trim_end().to_string()
}

/// Removes ANSI escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL`
/// or `ESC \`, and two-character escapes) and other control characters
/// except tab.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    // Parameters and intermediates, then one final byte @..~.
                    for n in chars.by_ref() {
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(n) = chars.next() {
                        if n == '\x07' {
                            break;
                        }
                        if n == '\x1b' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\u{9b}' => {
                for n in chars.by_ref() {
                    if ('@'..='~').contains(&n) {
                        break;
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
