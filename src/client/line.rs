//! The user's words → one exec line for the server. The server splits it
//! with shell-word rules, so every word is quoted once here and arrives
//! byte for byte (spaces, quotes, `$`, `;`, newlines); the command of
//! `run` is the exception: it is one command line for the container's
//! shell, joined with spaces as ssh and Heroku join theirs.

use anyhow::{bail, Result};

use super::remote::RackUrl;
use super::Target;

/// One server command, before the rack and app are known.
#[derive(Debug)]
pub struct Request {
    pub name: String,
    /// Where the app goes: right after the command name.
    pub app: AppArg,
    pub args: Vec<String>,
    /// `run`'s command: `(exec form, words)`.
    pub run: Option<(bool, Vec<String>)>,
    pub target: Target,
    pub needs_app: bool,
    /// Ask ssh for a terminal (`run` with stdin a terminal).
    pub tty: bool,
}

/// Whether a command takes the app as its first argument.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum AppArg {
    Required,
    Optional,
    No,
}

/// How `cmd::HELP`'s usage line names the app.
pub fn app_arg(name: &str) -> AppArg {
    let usage = crate::cmd::HELP
        .iter()
        .find(|h| h.0 == name)
        .map(|h| h.1)
        .unwrap_or("");
    match usage.split_whitespace().nth(1) {
        Some("APP") => AppArg::Required,
        Some("[APP]") => AppArg::Optional,
        _ => AppArg::No,
    }
}

/// A server usage line as typed through the client: the app is implied.
pub fn client_usage(name: &str, usage: &str) -> String {
    match app_arg(name) {
        AppArg::No => usage.to_string(),
        _ => {
            let mut words: Vec<&str> = usage.split_whitespace().collect();
            words.remove(1);
            words.join(" ")
        }
    }
}

/// Parses the client's words: `NAME [-a APP] [-r REMOTE] ARGS...`.
pub fn build(target: &Target, words: Vec<String>) -> Result<Request> {
    let mut words = words.into_iter();
    let Some(name) = words.next() else {
        bail!("no command given: try rack help");
    };
    let mut app = app_arg(&name);
    let mut target = target.clone();
    let mut args = Vec::new();
    let mut run = None;
    let is_run = name == "run";
    let mut exec = false;
    while let Some(w) = words.next() {
        let flag =
            |long: &str, short: &str| w == long || w == short || w.starts_with(&format!("{long}="));
        let takes_app = app != AppArg::No;
        if takes_app && flag("--app", "-a") {
            target.app = Some(flag_value(&w, &mut words)?);
        } else if flag("--remote", "-r") {
            target.remote = Some(flag_value(&w, &mut words)?);
        } else if is_run && w == "--exec" {
            exec = true;
        } else if w == "--" {
            // The end of the client's flags; the rest goes as it is.
            args.extend(words.by_ref());
            break;
        } else if is_run {
            args.push(w); // the command starts at its first word
            break;
        } else {
            args.push(w);
        }
    }
    if is_run {
        args.extend(words);
        if args.is_empty() {
            bail!("usage: rack run [--exec] -- COMMAND");
        }
        run = Some((exec, std::mem::take(&mut args)));
    }
    // `rack apps:create NAME`: a name given is the app, not an extra word.
    if name == "apps:create" && target.app.is_none() && !args.is_empty() {
        app = AppArg::No;
    }
    let tty =
        crate::cmd::takes_terminal(&name) && std::io::IsTerminal::is_terminal(&std::io::stdin());
    Ok(Request {
        needs_app: app == AppArg::Required,
        name,
        app,
        args,
        run,
        target,
        tty,
    })
}

fn flag_value(w: &str, words: &mut impl Iterator<Item = String>) -> Result<String> {
    if let Some((_, v)) = w.split_once('=') {
        return Ok(v.to_string());
    }
    match words.next() {
        Some(v) => Ok(v),
        None => bail!("{w} needs a value"),
    }
}

impl Request {
    /// The exec line for the rack at `url`.
    pub fn line(&self, url: &RackUrl) -> String {
        let mut words = vec![self.name.clone()];
        if self.app != AppArg::No {
            words.extend(url.app.clone());
        }
        words.extend(self.args.iter().cloned());
        let mut line = shell_words::join(&words);
        match &self.run {
            Some((true, argv)) => {
                line.push_str(" --exec -- ");
                line.push_str(&shell_words::join(argv));
            }
            Some((false, command)) => {
                line.push_str(" -- ");
                line.push_str(&command.join(" "));
            }
            None => {}
        }
        line
    }
}
