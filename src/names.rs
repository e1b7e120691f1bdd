//! Validation of every user-supplied name: app names, config keys, process
//! types. One place, so every entry point (SSH commands, git paths, offline
//! CLI) refuses the same things with the same words.

/// Whether `s` is 1 to `max` bytes, its first byte passes `first` and
/// every byte passes `rest`.
fn well_formed(s: &str, max: usize, first: fn(u8) -> bool, rest: fn(u8) -> bool) -> bool {
    !s.is_empty() && s.len() <= max && first(s.as_bytes()[0]) && s.bytes().all(rest)
}

/// `Ok` when `ok`, else "invalid WHAT 'NAME'" and the rule.
fn verdict(ok: bool, what: &str, name: &str, rule: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("invalid {what} '{}'{rule}", printable(name)))
    }
}

/// `^[a-z][a-z0-9-]{0,29}$`
pub fn validate_app(name: &str) -> Result<(), String> {
    let ok = well_formed(
        name,
        30,
        |b| b.is_ascii_lowercase(),
        |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
    );
    verdict(
        ok,
        "app name",
        name,
        ": use 1-30 characters a-z, 0-9 and '-', starting with a letter",
    )
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`
pub fn validate_config_key(key: &str) -> Result<(), String> {
    let ok = well_formed(
        key,
        256,
        |b| b.is_ascii_alphabetic() || b == b'_',
        |b| b.is_ascii_alphanumeric() || b == b'_',
    );
    verdict(
        ok,
        "config key",
        key,
        ": use letters, digits and '_', not starting with a digit",
    )
}

/// Process type names as they appear in a Procfile: `^[a-z][a-z0-9_-]{0,29}$`.
pub fn validate_process_type(name: &str) -> Result<(), String> {
    let ok = well_formed(
        name,
        30,
        |b| b.is_ascii_lowercase(),
        |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_',
    );
    verdict(ok, "process type", name, "")
}

/// Echo user input back in an error without letting it forge lines or
/// terminal escapes: control characters are escaped and the text is capped.
pub fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .flat_map(|c| c.escape_default())
        .collect();
    if s.chars().count() > 64 {
        out.push_str("...");
    }
    out
}

/// Text someone else controls (app and build output, push options, error
/// messages quoting a Dockerfile), made safe for a terminal: control
/// characters but tab become visible escapes (`\u{1b}`, `\r`, `\n`), so
/// nothing can move the cursor, retitle the window or forge a line.
/// Machine output (`--json`) keeps the exact text instead.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && c != '\t';
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`escape_controls`] for a stream of lines in bytes (a build log read in
/// chunks): ASCII control bytes but newline and tab become `\xNN`.
pub fn escape_control_bytes(b: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let bad = |c: u8| (c < 0x20 && c != b'\n' && c != b'\t') || c == 0x7f;
    if !b.iter().any(|&c| bad(c)) {
        return std::borrow::Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len() + 8);
    for &c in b {
        if bad(c) {
            out.extend_from_slice(format!("\\x{c:02x}").as_bytes());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// SSH key names: `^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`.
pub fn validate_key_name(name: &str) -> Result<(), String> {
    let ok = well_formed(
        name,
        64,
        |b| b.is_ascii_alphanumeric(),
        |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'),
    );
    verdict(
        ok,
        "key name",
        name,
        ": use letters, digits, '.', '_', '@' and '-'",
    )
}

#[cfg(test)]
mod tests;
