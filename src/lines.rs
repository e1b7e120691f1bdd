//! Splitting output that someone else controls (a container's, a build's)
//! into lines, with a bound: a line longer than [`MAX_LINE_BYTES`] is cut
//! into pieces of that size, so a process that writes gigabytes without a
//! newline costs the rack one line's worth of memory. Every byte is looked
//! at once, however the input is chunked.
//!
//! Knows nothing of where the lines go.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest line kept whole; longer ones are split at this size.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The read size of [`for_each_line`].
const READ_CHUNK: usize = 64 * 1024;

/// Joins chunks into lines (without their `\n`) of at most
/// [`MAX_LINE_BYTES`].
#[derive(Debug, Default)]
pub struct LineBuf {
    /// The start of the current line (never [`MAX_LINE_BYTES`] or longer).
    buf: Vec<u8>,
    /// The last line was cut at the bound: a `\n` right after it ends that
    /// line rather than making an empty one.
    cut: bool,
}

impl LineBuf {
    /// Feeds a chunk; `emit` gets each line it completes.
    pub fn push(&mut self, mut chunk: &[u8], emit: &mut dyn FnMut(&[u8])) {
        while !chunk.is_empty() {
            if std::mem::take(&mut self.cut) && chunk[0] == b'\n' {
                chunk = &chunk[1..];
                continue;
            }
            let room = MAX_LINE_BYTES - self.buf.len();
            let window = &chunk[..chunk.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.emit_with(&window[..i], emit);
                    chunk = &chunk[i + 1..];
                }
                None if window.len() == room => {
                    self.emit_with(window, emit);
                    self.cut = true;
                    chunk = &chunk[room..];
                }
                None => {
                    self.buf.extend_from_slice(window);
                    chunk = &[];
                }
            }
        }
    }

    /// What is left after the last newline, at the end of the stream.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8])) {
        self.cut = false;
        if !self.buf.is_empty() {
            emit(&self.buf);
            self.buf.clear();
        }
    }

    fn emit_with(&mut self, tail: &[u8], emit: &mut dyn FnMut(&[u8])) {
        if self.buf.is_empty() {
            emit(tail);
        } else {
            self.buf.extend_from_slice(tail);
            emit(&self.buf);
            self.buf.clear();
        }
    }
}

/// Reads `r` to its end in bounded chunks, handing each line (lossily
/// decoded, at most [`MAX_LINE_BYTES`]) to `f`. Read errors end it.
pub async fn for_each_line<R: AsyncRead + Unpin>(mut r: R, mut f: impl FnMut(String)) {
    let mut lines = LineBuf::default();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut emit = |l: &[u8]| f(String::from_utf8_lossy(l).into_owned());
    while let Ok(n) = r.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        lines.push(&chunk[..n], &mut emit);
    }
    lines.finish(&mut emit);
}

#[cfg(test)]
mod tests;
