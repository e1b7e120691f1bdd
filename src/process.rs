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
    let mut cmd = tokio::process::Command::new(program);
    cmd.env_clear();
    for (k, v) in base_env() {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null());
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
mod tests {
    use super::*;

    #[test]
    fn git_protocol_values() {
        for good in ["version=0", "version=1", "version=2"] {
            assert_eq!(git_protocol_env(Some(good)), Some(good));
        }
        for bad in [
            "",
            "version=3",
            "version=2:x",
            "version=2\n",
            " version=2",
            "version=22",
            "VERSION=2",
            "version=2;GIT_CONFIG_COUNT=1",
        ] {
            assert_eq!(git_protocol_env(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(git_protocol_env(None), None);
    }

    /// Regression: a `GIT_CONFIG_*` variable in the rack's own environment
    /// (the way a client's SSH env request would arrive if it were ever
    /// copied into the process env) never reaches a child.
    #[tokio::test]
    async fn child_env_is_allow_listed() {
        // The name is unique to this test and harmless to any other git run.
        std::env::set_var(
            "GIT_CONFIG_RACK_LEAK_TEST",
            "core.sshCommand=touch /tmp/pwned",
        );
        let mut cmd = command("env");
        set_git_protocol(&mut cmd, Some("version=2"));
        let out = cmd.output().await.expect("env runs");
        let text = String::from_utf8(out.stdout).expect("utf-8 env");
        let names: Vec<&str> = text.lines().filter_map(|l| l.split('=').next()).collect();
        assert!(!text.contains("GIT_CONFIG"), "{text}");
        for n in &names {
            assert!(
                ["PATH", "HOME", "GIT_PROTOCOL"].contains(n),
                "unexpected {n} in {text}"
            );
        }
        assert!(names.contains(&"GIT_PROTOCOL"));

        let mut cmd = command("env");
        set_git_protocol(&mut cmd, Some("version=2 GIT_CONFIG_COUNT=1"));
        let out = cmd.output().await.expect("env runs");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("GIT_PROTOCOL"));
    }
}
