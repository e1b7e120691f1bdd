//! Per-app settings set with `apps:set`: the closed list of keys, each
//! value's type, and typed accessors for the stages that use them.

use std::collections::BTreeMap;

use crate::names::{printable, validate_config_key, validate_process_type};

/// The fixed keys; `resources.TYPE.memory|cpu` are matched separately.
const KEYS: &[&str] = &[
    "deploy_branch",
    "port",
    "healthcheck.type",
    "healthcheck.path",
    "healthcheck.timeout",
    "build_args",
    "https.redirect",
    "https.hsts",
];

/// The longest HSTS max-age accepted: two years, what the browsers'
/// preload list asks for.
const MAX_HSTS_SECS: u64 = 2 * 365 * 24 * 3600;

/// Checks one `KEY=VAL` of `apps:set`. The error is the user-facing line.
pub fn validate(key: &str, value: &str) -> Result<(), String> {
    let bad = |what: &str| {
        Err(format!(
            "invalid value '{}' for {key}: {what}",
            printable(value)
        ))
    };
    match key {
        "deploy_branch" => {
            if !value.is_empty()
                && git2::Reference::is_valid_name(&format!("refs/heads/{value}"))
                && !value.starts_with('-')
            {
                Ok(())
            } else {
                bad("expected a branch name such as main")
            }
        }
        "port" => match value.parse::<u16>() {
            Ok(p) if p > 0 => Ok(()),
            _ => bad("expected a port number 1-65535"),
        },
        "healthcheck.type" => match value {
            "http" | "tcp" | "none" => Ok(()),
            _ => bad("expected http, tcp or none"),
        },
        "healthcheck.path" => {
            if value.starts_with('/')
                && value.len() <= 1024
                && value.bytes().all(|b| b.is_ascii_graphic())
            {
                Ok(())
            } else {
                bad("expected a path starting with /")
            }
        }
        "healthcheck.timeout" => match value.parse::<u64>() {
            Ok(s) if (1..=3600).contains(&s) => Ok(()),
            _ => bad("expected whole seconds, 1-3600"),
        },
        "https.redirect" => match value {
            "true" | "false" => Ok(()),
            _ => bad("expected true or false"),
        },
        "https.hsts" => match value.parse::<u64>() {
            Ok(s) if s <= MAX_HSTS_SECS => Ok(()),
            _ => bad("expected a max-age in seconds, 0-63072000"),
        },
        "build_args" => {
            for k in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                validate_config_key(k).or_else(|_| bad("expected comma-separated config keys"))?;
            }
            Ok(())
        }
        _ => match resource_key(key) {
            Some((_, "memory")) => match parse_memory(value) {
                Some(b) if b >= 4 * 1024 * 1024 => Ok(()),
                _ => bad("expected a size such as 512m or 1g (at least 4m)"),
            },
            Some((_, "cpu")) => match value.parse::<f64>() {
                Ok(c) if c > 0.0 && c <= 256.0 => Ok(()),
                _ => bad("expected a number of CPUs such as 0.5 or 2"),
            },
            _ => Err(format!(
                "unknown setting '{}'; known: {}, resources.TYPE.memory, resources.TYPE.cpu",
                printable(key),
                KEYS.join(", ")
            )),
        },
    }
}

/// Whether `key` names a setting (for `apps:unset`).
pub fn is_known(key: &str) -> bool {
    KEYS.contains(&key) || resource_key(key).is_some()
}

fn resource_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("resources.")?;
    let (ty, what) = rest.rsplit_once('.')?;
    validate_process_type(ty).ok()?;
    matches!(what, "memory" | "cpu").then_some((ty, what))
}

/// `512m`, `1g`, `1024k`, or plain bytes.
pub fn parse_memory(value: &str) -> Option<u64> {
    let v = value.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (num, mul) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1024),
        'm' => (&v[..v.len() - 1], 1024 * 1024),
        'g' => (&v[..v.len() - 1], 1024 * 1024 * 1024),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

/// The deploy branch if one is set or was fixed by the first push.
pub fn deploy_branch(settings: &BTreeMap<String, String>) -> Option<&str> {
    settings.get("deploy_branch").map(String::as_str)
}

#[cfg(test)]
mod tests;
