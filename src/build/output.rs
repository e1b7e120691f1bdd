//! Turning Docker's build output into clean lines: chunks are not
//! line-aligned, carry ANSI colour and cursor codes, and progress bars
//! rewrite a line with `\r`.

/// Joins chunks into complete lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: String,
}

impl LineSplitter {
    /// Feeds a chunk; returns the lines it completed, cleaned.
    pub fn push(&mut self, chunk: &str) -> Vec<String> {
        self.buf.push_str(chunk);
        let mut out = Vec::new();
        while let Some(i) = self.buf.find('\n') {
            let line: String = self.buf.drain(..=i).collect();
            out.push(clean_line(&line[..line.len() - 1]));
        }
        out
    }

    /// What is left after the last newline (at the end of the stream).
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        let line = clean_line(&rest);
        (!line.is_empty()).then_some(line)
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
