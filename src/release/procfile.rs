//! Procfile parsing: `TYPE: command` lines, as on Heroku.

use std::collections::BTreeMap;

use crate::names::validate_process_type;

/// Parses a Procfile. Blank lines and `#` comments are skipped; anything
/// else that is not `TYPE: command` is an error naming the line.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((kind, command)) = line.split_once(':') else {
            return Err(format!("Procfile line {}: expected 'TYPE: command'", i + 1));
        };
        let kind = kind.trim();
        let command = command.trim();
        validate_process_type(kind).map_err(|e| format!("Procfile line {}: {e}", i + 1))?;
        if command.is_empty() {
            return Err(format!("Procfile line {}: '{kind}' has no command", i + 1));
        }
        if out.insert(kind.to_string(), command.to_string()).is_some() {
            return Err(format!("Procfile line {}: '{kind}' appears twice", i + 1));
        }
    }
    Ok(out)
}

/// The process types a release runs with their counts: the Procfile's
/// types (never `release`, which runs once per release), else one `web`
/// running the image's CMD. Known counts persist; new types start at web=1,
/// others 0.
pub fn formation(
    procfile: Option<&BTreeMap<String, String>>,
    counts: &BTreeMap<String, u32>,
) -> BTreeMap<String, u32> {
    let types: Vec<String> = match procfile {
        Some(p) if p.keys().any(|k| k != "release") => {
            p.keys().filter(|k| *k != "release").cloned().collect()
        }
        _ => vec!["web".to_string()],
    };
    types
        .into_iter()
        .map(|t| {
            let n = counts
                .get(&t)
                .copied()
                .unwrap_or(if t == "web" { 1 } else { 0 });
            (t, n)
        })
        .collect()
}

#[cfg(test)]
mod tests;
