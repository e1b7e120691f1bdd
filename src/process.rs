//! The one place child processes are spawned.
//!
//! Every child starts from a cleared environment plus an allow-list: `PATH`
//! and `HOME` (the rack's own, never a client's) and, only when a caller
//! passes one that matches `^version=[0-2]$`, `GIT_PROTOCOL`. A client's SSH
//! `env` requests therefore never reach a child: `GIT_CONFIG_*` or
//! `GIT_SSH_COMMAND` there would be code execution on the rack host.
//! Arguments are always passed as arguments; nothing here ever builds a
//! command line for a shell.
//!
//! This module knows nothing about git, SSH or Docker beyond the
//! `GIT_PROTOCOL` rule.

use std::ffi::OsString;

/// Used when the rack itself runs without `PATH` (e.g. from a bare init).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The allow-listed environment every child gets.
fn base_env() -> Vec<(&'static str, OsString)> {
    let mut env = vec![(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
    )];
    if let Some(home) = std::env::var_os("HOME") {
        env.push(("HOME", home));
    }
    env
}

/// An async command for `program` with a cleared environment (plus `PATH`
/// and `HOME`), stdin from `/dev/null`, and killed when dropped.
pub fn command(program: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::from(std_command(program));
    cmd.kill_on_drop(true);
    cmd
}

/// The same for blocking contexts (background threads).
pub fn std_command(program: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    cmd.env_clear();
    for (k, v) in base_env() {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null());
    cmd
}

/// `Some(value)` only when `value` is a protocol request git defines:
/// `^version=[0-2]$`. Anything else from a client is ignored.
pub fn git_protocol_env(value: Option<&str>) -> Option<&str> {
    let v = value?;
    let b = v.as_bytes();
    if b.len() == 9 && v.starts_with("version=") && (b'0'..=b'2').contains(&b[8]) {
        Some(v)
    } else {
        None
    }
}

/// Adds `GIT_PROTOCOL` to `cmd` when the client's value is valid.
pub fn set_git_protocol(cmd: &mut tokio::process::Command, value: Option<&str>) {
    if let Some(v) = git_protocol_env(value) {
        cmd.env("GIT_PROTOCOL", v);
    }
}

#[cfg(test)]
mod tests;
