//! Running the system's `ssh` the way git does: `GIT_SSH_COMMAND`, else
//! `core.sshCommand`, else `GIT_SSH`, else `ssh`, so agents,
//! `~/.ssh/config`, jump hosts and hardware keys keep working and a CI
//! job's deploy-key setting serves `rack` as it serves `git push`.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result};

use super::remote::{git, RackUrl};

/// The ssh program to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ssh {
    /// A command line for `sh -c` (`GIT_SSH_COMMAND`, `core.sshCommand`).
    Shell(String),
    /// A program (`GIT_SSH`, or `ssh` from PATH).
    Program(OsString),
}

impl Ssh {
    /// git's order of precedence.
    pub fn discover() -> Ssh {
        if let Some(c) = std::env::var("GIT_SSH_COMMAND")
            .ok()
            .filter(|c| !c.is_empty())
        {
            return Ssh::Shell(c);
        }
        if let Ok(Some(c)) = git(&["config", "--get", "core.sshCommand"]) {
            let c = c.trim_end().to_string();
            if !c.is_empty() {
                return Ssh::Shell(c);
            }
        }
        match std::env::var_os("GIT_SSH").filter(|p| !p.is_empty()) {
            Some(p) => Ssh::Program(p),
            None => Ssh::Program("ssh".into()),
        }
    }

    /// A `Command` running ssh with `args` (after git's `sh -c 'CMD "$@"'`
    /// convention for command lines).
    pub fn command(&self, args: &[String]) -> Command {
        match self {
            Ssh::Shell(line) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("{line} \"$@\""))
                    .arg(line)
                    .args(args);
                c
            }
            Ssh::Program(p) => {
                let mut c = Command::new(p);
                c.args(args);
                c
            }
        }
    }

    /// ssh's arguments to reach `url` and run `line` there.
    pub fn args(url: &RackUrl, tty: bool, extra: &[&str], line: &str) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        if tty {
            args.push("-t".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        if let Some(p) = url.port {
            args.extend(["-p".into(), p.to_string()]);
        }
        args.push(url.destination());
        args.push(line.to_string());
        args
    }

    /// Runs `line` on the rack with the user's stdin, stdout and stderr;
    /// returns the exit status as the server (or ssh, 255) gave it.
    pub fn run(&self, url: &RackUrl, line: &str, tty: bool) -> Result<i32> {
        let status = self
            .command(&Ssh::args(url, tty, &[], line))
            .status()
            .context("running ssh (is the OpenSSH client installed?)")?;
        Ok(exit_code(status))
    }

    /// Runs `line` without a terminal or prompts; its stdout, or `None`
    /// when it failed (completion must never hang or print errors).
    pub fn quiet_output(&self, url: &RackUrl, line: &str) -> Option<String> {
        let out = self
            .command(&Ssh::args(url, false, &["-o", "BatchMode=yes"], line))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A shell's view of a status: the code, or 128 + the signal.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
