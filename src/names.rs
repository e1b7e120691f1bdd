//! Validation of every user-supplied name: app names, config keys, process
//! types. One place, so every entry point (SSH commands, git paths, offline
//! CLI) refuses the same things with the same words.

/// `^[a-z][a-z0-9-]{0,29}$`
pub fn validate_app(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 30
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid app name '{}': use 1-30 characters a-z, 0-9 and '-', starting with a letter",
            printable(name)
        ))
    }
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`
pub fn validate_config_key(key: &str) -> Result<(), String> {
    let ok = !key.is_empty()
        && key.len() <= 256
        && (key.as_bytes()[0].is_ascii_alphabetic() || key.as_bytes()[0] == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid config key '{}': use letters, digits and '_', not starting with a digit",
            printable(key)
        ))
    }
}

/// Process type names as they appear in a Procfile: `^[a-z][a-z0-9_-]{0,29}$`.
pub fn validate_process_type(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 30
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid process type '{}'", printable(name)))
    }
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

/// SSH key names: `^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`.
pub fn validate_key_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid key name '{}': use letters, digits, '.', '_', '@' and '-'",
            printable(name)
        ))
    }
}

#[cfg(test)]
mod tests;
