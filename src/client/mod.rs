//! Client mode of the `rack` binary: server commands typed from inside an
//! app's checkout (`rack config:set K=V`, `rack run -- CMD`), sent over the
//! system's own `ssh` to the rack that the git remote names.
//!
//! It owns finding the rack and the app (`remote`), turning the user's
//! words into one exec line the server reads back byte for byte (`line`),
//! running ssh the way git does (`ssh`), `rack remote add` with host key
//! pinning (`pin`) and shell completion (`completions`). It never holds a
//! key or a secret of its own, and knows nothing about the server's
//! internals beyond the command table (`cmd::HELP`) and the exec-line rules.

mod completions;
mod line;
mod pin;
mod remote;
mod ssh;

use clap::{Args, Subcommand};

pub use completions::completions;
pub use remote::RackUrl;

/// Which app and which rack, when the checkout's remote is not the answer.
#[derive(Args, Debug, Default, Clone)]
pub struct Target {
    /// The app (default: the app the checkout's rack remote names).
    #[arg(short = 'a', long = "app", value_name = "APP")]
    pub app: Option<String>,
    /// The git remote that points at the rack (default: `rack`, else the
    /// only remote whose URL points at a rack).
    #[arg(short = 'r', long = "remote", value_name = "REMOTE")]
    pub remote: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum RemoteCmd {
    /// Add the rack as a git remote of this checkout, pinning its host key
    /// in known_hosts after showing its fingerprint.
    Add(pin::AddArgs),
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash or zsh (`apps` prints the rack's app names, for the scripts).
    #[arg(value_parser = ["bash", "zsh", "apps"])]
    pub shell: String,
}

/// Runs one server command from the user's words (`config:set K=V ...`)
/// and returns the exit status to leave with: the server's own status,
/// ssh's 255 when the connection fails, 1 when the client cannot tell
/// where to send the command (one `error:` line on stderr).
pub fn server_command(target: &Target, words: Vec<String>) -> i32 {
    match line::build(target, words).and_then(|req| {
        let endpoint = remote::locate(&req.target, req.needs_app)?;
        ssh::Ssh::discover().run(&endpoint, &req.line(&endpoint), req.tty)
    }) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// `rack remote ...`.
pub fn remote(target: &Target, cmd: RemoteCmd) -> anyhow::Result<()> {
    match cmd {
        RemoteCmd::Add(args) => pin::add(target, args),
    }
}

/// The server commands as `rack` takes them from a checkout, for `rack
/// help`: the app comes from the remote (or `-a APP`).
pub fn server_help() -> String {
    let mut out = String::from(
        "\nServer commands (from an app's checkout; -a APP and -r REMOTE override the git remote;\n\
         outside a checkout, -a APP with RACK_HOST=[USER@]HOST[:PORT]):\n",
    );
    let rows: Vec<(String, &str)> = crate::cmd::HELP
        .iter()
        .map(|(name, usage, summary)| (line::client_usage(name, usage), *summary))
        .collect();
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (usage, summary) in rows {
        out.push_str(&format!("  rack {usage:width$}  {summary}\n"));
    }
    out.push_str(
        "\nThe same commands over plain ssh (CI): ssh -p PORT git@HOST COMMAND APP ARGS...\n",
    );
    out
}

#[cfg(test)]
mod tests;
