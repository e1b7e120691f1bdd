//! The SSH command interface: one closed `Command` enum parsed from shell
//! words, each command's required `Access`, and the one dispatcher that
//! checks access (failing closed) before anything runs.
//!
//! This module knows nothing about SSH: it reads and writes plain async
//! streams, so the same code serves any transport. Command groups live in
//! submodules (`apps`, `config`, `keys`, `events`).

pub mod apps;
pub mod builds;
pub mod config;
pub mod domains;
pub mod events;
pub mod keys;
pub mod output;
pub mod ps;
pub mod releases;
pub mod run;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::names::{printable, validate_app};
use crate::state::Rack;
use output::Output;

/// Who is on the other end, bound once after the SSH signature check.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key_name: String,
    pub admin: bool,
    /// Apps a deploy key may push to and read. Empty for admins (they may
    /// do everything).
    pub apps: Vec<String>,
}

/// What a command needs. Ordered from least to most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Any authenticated key (`help`, `version`, filtered lists).
    Anyone,
    /// Read-only commands on this app: admins and the app's deploy keys.
    Read(String),
    /// git push and fetch of this app: admins and the app's deploy keys.
    Deploy(String),
    /// Everything else.
    Admin,
}

impl Identity {
    /// The one access check. Anything not explicitly allowed is refused.
    pub fn may(&self, access: &Access) -> bool {
        if self.admin {
            return true;
        }
        match access {
            Access::Anyone => true,
            Access::Read(app) | Access::Deploy(app) => self.apps.iter().any(|a| a == app),
            Access::Admin => false,
        }
    }

    /// Apps this identity may see, or `None` for all (admins).
    pub fn visible_apps(&self) -> Option<&[String]> {
        (!self.admin).then_some(self.apps.as_slice())
    }
}

/// A user-facing failure: printed as one `error: ...` line.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("{0}")]
    Usage(String),
    #[error("permission denied")]
    PermissionDenied,
    #[error("{0}")]
    Failed(String),
}

impl From<crate::store::StoreError> for CmdError {
    fn from(e: crate::store::StoreError) -> Self {
        if let crate::store::StoreError::Db(inner) = &e {
            tracing::error!(error = %inner, "state database error");
        }
        CmdError::Failed(e.to_string())
    }
}

impl From<crate::release::config::ConfigError> for CmdError {
    fn from(e: crate::release::config::ConfigError) -> Self {
        CmdError::Failed(e.to_string())
    }
}

fn usage(text: impl Into<String>) -> CmdError {
    CmdError::Usage(text.into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Apps,
    AppsCreate {
        app: String,
    },
    AppsInfo {
        app: String,
    },
    AppsDestroy {
        app: String,
        confirm: Option<String>,
    },
    AppsSet {
        app: String,
        pairs: Vec<(String, String)>,
    },
    AppsUnset {
        app: String,
        keys: Vec<String>,
    },
    Config {
        app: String,
    },
    ConfigGet {
        app: String,
        key: String,
    },
    ConfigSet {
        app: String,
        pairs: Vec<(String, String)>,
        stdin_key: Option<String>,
        no_restart: bool,
    },
    ConfigUnset {
        app: String,
        keys: Vec<String>,
        no_restart: bool,
    },
    Keys,
    KeysAdd {
        name: String,
        admin: bool,
        apps: Vec<String>,
    },
    KeysRemove {
        name: String,
    },
    Events {
        app: Option<String>,
        limit: usize,
    },
    AppsDeploy {
        app: String,
        reference: Option<String>,
        no_cache: bool,
    },
    Builds {
        app: String,
    },
    BuildsInfo {
        app: String,
        build: String,
    },
    BuildsLogs {
        app: String,
        build: String,
        follow: bool,
    },
    Releases {
        app: String,
    },
    ReleasesInfo {
        app: String,
        version: String,
    },
    ReleasesRollback {
        app: String,
        version: Option<String>,
    },
    Ps {
        app: String,
    },
    PsScale {
        app: String,
        pairs: Vec<String>,
    },
    PsRestart {
        app: String,
        kind: Option<String>,
    },
    Domains {
        app: String,
    },
    DomainsAdd {
        app: String,
        host: String,
    },
    DomainsRemove {
        app: String,
        host: String,
    },
    Logs {
        app: String,
        follow: bool,
        lines: Option<usize>,
        kind: Option<String>,
    },
    Run {
        app: String,
        argv: Vec<String>,
    },
}

/// `(name, usage, summary)` for `help`, in display order.
pub const HELP: &[(&str, &str, &str)] = &[
    ("help", "help", "this list"),
    ("version", "version", "the rack's version"),
    ("apps", "apps", "list apps"),
    ("apps:create", "apps:create APP", "create an app"),
    ("apps:info", "apps:info APP", "show an app"),
    (
        "apps:destroy",
        "apps:destroy APP --confirm APP",
        "delete an app and everything it has",
    ),
    (
        "apps:set",
        "apps:set APP KEY=VAL ...",
        "change app settings",
    ),
    ("apps:unset", "apps:unset APP KEY ...", "reset app settings"),
    (
        "apps:deploy",
        "apps:deploy APP [REF] [--no-cache]",
        "build and deploy a commit already pushed",
    ),
    ("config", "config APP", "show config vars"),
    ("config:get", "config:get APP KEY", "print one config value"),
    (
        "config:set",
        "config:set APP KEY=VAL ... [--no-restart] | KEY --stdin",
        "set config vars",
    ),
    (
        "config:unset",
        "config:unset APP KEY ... [--no-restart]",
        "remove config vars",
    ),
    ("builds", "builds APP", "list builds"),
    ("builds:info", "builds:info APP BUILD", "show a build"),
    (
        "builds:logs",
        "builds:logs APP BUILD [-f]",
        "print (and follow) a build's output",
    ),
    ("releases", "releases APP", "list releases"),
    ("releases:info", "releases:info APP vN", "show a release"),
    (
        "releases:rollback",
        "releases:rollback APP [vN]",
        "new release with vN's build and config",
    ),
    ("ps", "ps APP", "list processes"),
    (
        "ps:scale",
        "ps:scale APP TYPE=N ...",
        "change process counts",
    ),
    (
        "ps:restart",
        "ps:restart APP [TYPE]",
        "roll the processes without a new release",
    ),
    ("domains", "domains APP", "host names routed to the app"),
    (
        "domains:add",
        "domains:add APP HOST",
        "route another host name to the app",
    ),
    (
        "domains:remove",
        "domains:remove APP HOST",
        "stop routing a host name",
    ),
    (
        "logs",
        "logs APP [-f] [-n N] [--type TYPE]",
        "processes' output, TYPE.N | line",
    ),
    (
        "run",
        "run APP [--exec] -- COMMAND",
        "one-off process: COMMAND runs in /bin/sh -c (--exec: an argv, no shell); ssh -t for a terminal",
    ),
    ("keys", "keys", "list SSH keys (admin)"),
    (
        "keys:add",
        "keys:add NAME (--admin | --app APP ...)",
        "add a key read from stdin (admin)",
    ),
    ("keys:remove", "keys:remove NAME", "remove a key (admin)"),
    ("events", "events [APP] [-n N]", "audit trail"),
];

/// Arguments after the command name, with `--json` already taken out.
struct Args {
    words: std::vec::IntoIter<String>,
}

impl Args {
    fn app(&mut self, cmd: &str) -> Result<String, CmdError> {
        let app = self
            .words
            .next()
            .ok_or_else(|| usage(format!("missing APP; usage: {}", usage_of(cmd))))?;
        validate_app(&app).map_err(CmdError::Usage)?;
        Ok(app)
    }
    fn rest(&mut self) -> Vec<String> {
        self.words.by_ref().collect()
    }
    fn done(&mut self, cmd: &str) -> Result<(), CmdError> {
        match self.words.next() {
            None => Ok(()),
            Some(extra) => Err(usage(format!(
                "unexpected argument '{}'; usage: {}",
                printable(&extra),
                usage_of(cmd)
            ))),
        }
    }
}

fn usage_of(cmd: &str) -> &'static str {
    HELP.iter()
        .find(|h| h.0 == cmd)
        .map(|h| h.1)
        .unwrap_or("see 'help'")
}

fn split_pair(word: &str) -> Result<(String, String), CmdError> {
    match word.split_once('=') {
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => Err(usage(format!(
            "expected KEY=VALUE, got '{}'",
            printable(word)
        ))),
    }
}

impl Command {
    /// Parses shell words (already split, never passed to a shell). Returns
    /// the command and whether `--json` was asked for.
    pub fn parse(words: Vec<String>) -> Result<(Command, bool), CmdError> {
        let json = words.iter().skip(1).any(|w| w == "--json");
        let mut iter = words.into_iter();
        let name = iter.next().unwrap_or_else(|| "help".to_string());
        let rest: Vec<String> = iter.filter(|w| w != "--json").collect();
        let mut a = Args {
            words: rest.into_iter(),
        };
        let cmd = match name.as_str() {
            "help" | "--help" | "-h" => Command::Help,
            "version" | "--version" => Command::Version,
            "apps" | "apps:list" => {
                a.done("apps")?;
                Command::Apps
            }
            "apps:create" => {
                let app = a.app("apps:create")?;
                a.done("apps:create")?;
                Command::AppsCreate { app }
            }
            "apps:info" => {
                let app = a.app("apps:info")?;
                a.done("apps:info")?;
                Command::AppsInfo { app }
            }
            "apps:destroy" => {
                let app = a.app("apps:destroy")?;
                let mut confirm = None;
                let rest = a.rest();
                let mut it = rest.into_iter();
                while let Some(w) = it.next() {
                    match w.as_str() {
                        "--confirm" => {
                            confirm = Some(
                                it.next()
                                    .ok_or_else(|| usage("--confirm needs the app name"))?,
                            )
                        }
                        other => {
                            if let Some(v) = other.strip_prefix("--confirm=") {
                                confirm = Some(v.to_string());
                            } else {
                                return Err(usage(format!(
                                    "unexpected argument '{}'",
                                    printable(other)
                                )));
                            }
                        }
                    }
                }
                Command::AppsDestroy { app, confirm }
            }
            "apps:set" => {
                let app = a.app("apps:set")?;
                let pairs = a
                    .rest()
                    .iter()
                    .map(|w| split_pair(w))
                    .collect::<Result<Vec<_>, _>>()?;
                if pairs.is_empty() {
                    return Err(usage("usage: apps:set APP KEY=VAL ..."));
                }
                Command::AppsSet { app, pairs }
            }
            "apps:unset" => {
                let app = a.app("apps:unset")?;
                let keys = a.rest();
                if keys.is_empty() {
                    return Err(usage("usage: apps:unset APP KEY ..."));
                }
                Command::AppsUnset { app, keys }
            }
            "apps:deploy" => {
                let app = a.app("apps:deploy")?;
                let mut reference = None;
                let mut no_cache = false;
                for w in a.rest() {
                    if w == "--no-cache" {
                        no_cache = true;
                    } else if reference.is_none() && !w.starts_with('-') {
                        reference = Some(w);
                    } else {
                        return Err(usage(format!(
                            "unexpected argument '{}'; usage: {}",
                            printable(&w),
                            usage_of("apps:deploy")
                        )));
                    }
                }
                Command::AppsDeploy {
                    app,
                    reference,
                    no_cache,
                }
            }
            "builds" => {
                let app = a.app("builds")?;
                a.done("builds")?;
                Command::Builds { app }
            }
            "builds:info" => {
                let app = a.app("builds:info")?;
                let build = a
                    .words
                    .next()
                    .ok_or_else(|| usage("usage: builds:info APP BUILD"))?;
                a.done("builds:info")?;
                Command::BuildsInfo { app, build }
            }
            "builds:logs" => {
                let app = a.app("builds:logs")?;
                let mut build = None;
                let mut follow = false;
                for w in a.rest() {
                    match w.as_str() {
                        "-f" | "--follow" => follow = true,
                        _ if build.is_none() && !w.starts_with('-') => build = Some(w),
                        _ => return Err(usage(format!("unexpected argument '{}'", printable(&w)))),
                    }
                }
                let build = build.ok_or_else(|| usage("usage: builds:logs APP BUILD [-f]"))?;
                Command::BuildsLogs { app, build, follow }
            }
            "releases" => {
                let app = a.app("releases")?;
                a.done("releases")?;
                Command::Releases { app }
            }
            "releases:info" => {
                let app = a.app("releases:info")?;
                let version = a
                    .words
                    .next()
                    .ok_or_else(|| usage("usage: releases:info APP vN"))?;
                a.done("releases:info")?;
                Command::ReleasesInfo { app, version }
            }
            "releases:rollback" => {
                let app = a.app("releases:rollback")?;
                let version = a.words.next();
                a.done("releases:rollback")?;
                Command::ReleasesRollback { app, version }
            }
            "ps" => {
                let app = a.app("ps")?;
                a.done("ps")?;
                Command::Ps { app }
            }
            "ps:scale" => {
                let app = a.app("ps:scale")?;
                let pairs = a.rest();
                if pairs.is_empty() {
                    return Err(usage("usage: ps:scale APP TYPE=N ..."));
                }
                Command::PsScale { app, pairs }
            }
            "ps:restart" => {
                let app = a.app("ps:restart")?;
                let kind = a.words.next();
                a.done("ps:restart")?;
                Command::PsRestart { app, kind }
            }
            "domains" => {
                let app = a.app("domains")?;
                a.done("domains")?;
                Command::Domains { app }
            }
            "domains:add" | "domains:remove" => {
                let app = a.app(&name)?;
                let host = a
                    .words
                    .next()
                    .ok_or_else(|| usage(format!("usage: {}", usage_of(&name))))?;
                a.done(&name)?;
                if name == "domains:add" {
                    Command::DomainsAdd { app, host }
                } else {
                    Command::DomainsRemove { app, host }
                }
            }
            "logs" => {
                let app = a.app("logs")?;
                let (mut follow, mut lines, mut kind) = (false, None, None);
                let rest = a.rest();
                let mut it = rest.into_iter();
                while let Some(w) = it.next() {
                    match w.as_str() {
                        "-f" | "--follow" => follow = true,
                        "-n" | "--num" => {
                            lines = Some(parse_count(
                                &it.next().ok_or_else(|| usage("-n needs a number"))?,
                            )?)
                        }
                        "--type" | "-t" => {
                            let t = it
                                .next()
                                .ok_or_else(|| usage("--type needs a process type"))?;
                            crate::names::validate_process_type(&t).map_err(CmdError::Usage)?;
                            kind = Some(t);
                        }
                        other => {
                            return Err(usage(format!(
                                "unexpected argument '{}'; usage: {}",
                                printable(other),
                                usage_of("logs")
                            )))
                        }
                    }
                }
                Command::Logs {
                    app,
                    follow,
                    lines,
                    kind,
                }
            }
            "run" => {
                let app = a.app("run")?;
                let argv = run::parse_argv(a.rest())?;
                Command::Run { app, argv }
            }
            "config" | "config:show" => {
                let app = a.app("config")?;
                a.done("config")?;
                Command::Config { app }
            }
            "config:get" => {
                let app = a.app("config:get")?;
                let key = a
                    .words
                    .next()
                    .ok_or_else(|| usage("usage: config:get APP KEY"))?;
                a.done("config:get")?;
                Command::ConfigGet { app, key }
            }
            "config:set" => {
                let app = a.app("config:set")?;
                let mut no_restart = false;
                let mut stdin = false;
                let mut pairs = Vec::new();
                let mut bare = Vec::new();
                for w in a.rest() {
                    match w.as_str() {
                        "--no-restart" => no_restart = true,
                        "--stdin" => stdin = true,
                        _ if w.contains('=') => pairs.push(split_pair(&w)?),
                        _ => bare.push(w),
                    }
                }
                let stdin_key = if stdin {
                    if bare.len() != 1 || !pairs.is_empty() {
                        return Err(usage(
                            "usage: config:set APP KEY --stdin (one key, value on stdin)",
                        ));
                    }
                    bare.pop()
                } else {
                    if let Some(w) = bare.first() {
                        return Err(usage(format!("expected KEY=VALUE, got '{}'", printable(w))));
                    }
                    if pairs.is_empty() {
                        return Err(usage("usage: config:set APP KEY=VAL ... [--no-restart]"));
                    }
                    None
                };
                Command::ConfigSet {
                    app,
                    pairs,
                    stdin_key,
                    no_restart,
                }
            }
            "config:unset" => {
                let app = a.app("config:unset")?;
                let mut no_restart = false;
                let mut keys = Vec::new();
                for w in a.rest() {
                    if w == "--no-restart" {
                        no_restart = true;
                    } else {
                        keys.push(w);
                    }
                }
                if keys.is_empty() {
                    return Err(usage("usage: config:unset APP KEY ... [--no-restart]"));
                }
                Command::ConfigUnset {
                    app,
                    keys,
                    no_restart,
                }
            }
            "keys" | "keys:list" => {
                a.done("keys")?;
                Command::Keys
            }
            "keys:add" => {
                let name = a
                    .words
                    .next()
                    .ok_or_else(|| usage(format!("usage: {}", usage_of("keys:add"))))?;
                let (admin, apps) = keys::parse_scope(a.rest())?;
                Command::KeysAdd { name, admin, apps }
            }
            "keys:remove" => {
                let name = a
                    .words
                    .next()
                    .ok_or_else(|| usage("usage: keys:remove NAME"))?;
                a.done("keys:remove")?;
                Command::KeysRemove { name }
            }
            "events" => {
                let mut app = None;
                let mut limit = 50;
                let rest = a.rest();
                let mut it = rest.into_iter();
                while let Some(w) = it.next() {
                    if w == "-n" {
                        let n = it.next().ok_or_else(|| usage("-n needs a number"))?;
                        limit = parse_count(&n)?;
                    } else if let Some(n) = w.strip_prefix("-n") {
                        limit = parse_count(n)?;
                    } else if app.is_none() {
                        validate_app(&w).map_err(CmdError::Usage)?;
                        app = Some(w);
                    } else {
                        return Err(usage(format!("unexpected argument '{}'", printable(&w))));
                    }
                }
                Command::Events { app, limit }
            }
            other => {
                return Err(usage(format!(
                    "unknown command '{}'; see 'help'",
                    printable(other)
                )))
            }
        };
        Ok((cmd, json))
    }

    /// What the caller must be allowed. New commands must add a line here:
    /// the match is exhaustive, so nothing is ungated by default.
    pub fn access(&self) -> Access {
        use Command::*;
        match self {
            Help | Version | Apps | Events { app: None, .. } => Access::Anyone,
            AppsInfo { app } | Events { app: Some(app), .. } => Access::Read(app.clone()),
            Builds { app } | BuildsInfo { app, .. } | BuildsLogs { app, .. } => {
                Access::Read(app.clone())
            }
            AppsDeploy { .. } => Access::Admin,
            Releases { app } | ReleasesInfo { app, .. } | Ps { app } | Logs { app, .. } => {
                Access::Read(app.clone())
            }
            Run { .. } => Access::Admin,
            ReleasesRollback { .. } | PsScale { .. } | PsRestart { .. } => Access::Admin,
            Domains { .. } | DomainsAdd { .. } | DomainsRemove { .. } => Access::Admin,
            AppsCreate { .. } | AppsDestroy { .. } | AppsSet { .. } | AppsUnset { .. } => {
                Access::Admin
            }
            Config { .. } | ConfigGet { .. } | ConfigSet { .. } | ConfigUnset { .. } => {
                Access::Admin
            }
            Keys | KeysAdd { .. } | KeysRemove { .. } => Access::Admin,
        }
    }

    /// The app a command concerns, for the audit trail.
    pub fn app(&self) -> Option<&str> {
        use Command::*;
        match self {
            AppsCreate { app }
            | AppsInfo { app }
            | AppsDestroy { app, .. }
            | AppsSet { app, .. }
            | AppsUnset { app, .. }
            | Config { app }
            | ConfigGet { app, .. }
            | ConfigSet { app, .. }
            | ConfigUnset { app, .. } => Some(app),
            AppsDeploy { app, .. }
            | Builds { app }
            | BuildsInfo { app, .. }
            | BuildsLogs { app, .. } => Some(app),
            Releases { app }
            | ReleasesInfo { app, .. }
            | ReleasesRollback { app, .. }
            | Ps { app }
            | PsScale { app, .. }
            | PsRestart { app, .. }
            | Domains { app }
            | DomainsAdd { app, .. }
            | DomainsRemove { app, .. }
            | Logs { app, .. }
            | Run { app, .. } => Some(app),
            Events { app, .. } => app.as_deref(),
            Help | Version | Apps | Keys | KeysAdd { .. } | KeysRemove { .. } => None,
        }
    }

    /// How the command appears in the audit trail: never a config value.
    /// `None` for read-only commands (they are not audited).
    pub fn audit_line(&self) -> Option<String> {
        use Command::*;
        Some(match self {
            AppsCreate { app } => format!("apps:create {app}"),
            AppsDestroy { app, .. } => format!("apps:destroy {app}"),
            AppsSet { app, pairs } => format!(
                "apps:set {app} {}",
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            AppsUnset { app, keys } => format!("apps:unset {app} {}", keys.join(" ")),
            ConfigSet {
                app,
                pairs,
                stdin_key,
                ..
            } => {
                let keys: Vec<&str> = pairs
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .chain(stdin_key.as_deref())
                    .collect();
                format!("config:set {app} {}", keys.join(" "))
            }
            ConfigUnset { app, keys, .. } => format!("config:unset {app} {}", keys.join(" ")),
            KeysAdd { name, admin, apps } => {
                if *admin {
                    format!("keys:add {name} --admin")
                } else {
                    format!("keys:add {name} --app {}", apps.join(","))
                }
            }
            KeysRemove { name } => format!("keys:remove {name}"),
            ReleasesRollback { app, version } => {
                format!(
                    "releases:rollback {app}{}",
                    version
                        .as_ref()
                        .map(|v| format!(" {v}"))
                        .unwrap_or_default()
                )
            }
            PsScale { app, pairs } => format!("ps:scale {app} {}", pairs.join(" ")),
            PsRestart { app, kind } => format!(
                "ps:restart {app}{}",
                kind.as_ref().map(|k| format!(" {k}")).unwrap_or_default()
            ),
            DomainsAdd { app, host } => format!("domains:add {app} {host}"),
            DomainsRemove { app, host } => format!("domains:remove {app} {host}"),
            // Only the program name: arguments may carry secrets.
            Run { app, argv } => format!("run {app} {}", run::audit_name(argv)),
            AppsDeploy {
                app,
                reference,
                no_cache,
            } => format!(
                "apps:deploy {app}{}{}",
                reference
                    .as_ref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default(),
                if *no_cache { " --no-cache" } else { "" }
            ),
            _ => return None,
        })
    }
}

fn parse_count(s: &str) -> Result<usize, CmdError> {
    match s.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(usage(format!(
            "-n expects a number from 1 to 10000, got '{}'",
            printable(s)
        ))),
    }
}

/// The streams of one command invocation.
pub struct Io<R, W, E> {
    pub stdin: R,
    pub stdout: W,
    pub stderr: E,
    /// The terminal the client asked for (granted to `run` only).
    pub tty: Option<Tty>,
}

/// A client terminal: its size and later size changes.
pub struct Tty {
    pub cols: u16,
    pub rows: u16,
    pub resize: tokio::sync::mpsc::UnboundedReceiver<(u16, u16)>,
}

/// Per-invocation context handed to command implementations.
pub struct Ctx<'a, R> {
    pub rack: &'a Arc<Rack>,
    pub who: &'a Identity,
    pub stdin: &'a mut R,
    /// For commands that stream (`builds:logs -f`, `apps:deploy`): what
    /// they write here goes out at once, before their final `Output`.
    pub stdout: &'a mut (dyn AsyncWrite + Unpin + Send + Sync),
    pub stderr: &'a mut (dyn AsyncWrite + Unpin + Send + Sync),
    pub tty: Option<Tty>,
}

impl<R> Ctx<'_, R> {
    /// Runs `work` with a progress sink whose lines go to stderr as they
    /// come (stage lines of a build, like a push's `remote:` lines).
    pub async fn with_progress<T, F>(
        &mut self,
        work: impl FnOnce(crate::progress::Progress) -> F,
    ) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let (progress, mut rx) = crate::progress::Progress::channel();
        let fut = work(progress);
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                Some(line) = rx.recv() => {
                    let _ = self.stderr.write_all(format!("{line}\n").as_bytes()).await;
                }
                r = &mut fut => {
                    while let Ok(line) = rx.try_recv() {
                        let _ = self.stderr.write_all(format!("{line}\n").as_bytes()).await;
                    }
                    let _ = self.stderr.flush().await;
                    return r;
                }
            }
        }
    }
}

impl<R: AsyncRead + Unpin> Ctx<'_, R> {
    /// Reads stdin to its end, refusing more than the configured limit.
    pub async fn read_stdin(&mut self) -> Result<Vec<u8>, CmdError> {
        let limit = self.rack.settings.limits.max_stdin_bytes;
        let mut buf = Vec::new();
        let n = (&mut *self.stdin)
            .take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| CmdError::Failed(format!("reading stdin: {e}")))?;
        if n > limit {
            return Err(CmdError::Failed(format!(
                "stdin is larger than the limit of {limit} bytes"
            )));
        }
        Ok(buf)
    }
}

/// Runs one command line for `who` and returns the exit status.
pub async fn run<R, W, E>(
    rack: &Arc<Rack>,
    who: &Identity,
    words: Vec<String>,
    mut io: Io<R, W, E>,
) -> u32
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + Sync,
    E: AsyncWrite + Unpin + Send + Sync,
{
    let result = match Command::parse(words) {
        Err(e) => Err(e),
        Ok((cmd, json)) => {
            let audit = cmd.audit_line();
            let app = cmd.app().map(str::to_string);
            let result = if who.may(&cmd.access()) {
                let mut ctx = Ctx {
                    rack,
                    who,
                    stdin: &mut io.stdin,
                    stdout: &mut io.stdout,
                    stderr: &mut io.stderr,
                    tty: io.tty.take(),
                };
                execute(&mut ctx, cmd).await.map(|o| (o, json))
            } else {
                Err(CmdError::PermissionDenied)
            };
            if let Some(line) = audit {
                let outcome = match &result {
                    Ok(_) => "ok".to_string(),
                    Err(e) => format!("error: {e}"),
                };
                if let Err(e) = rack
                    .store
                    .add_event(&who.key_name, app.as_deref(), &line, &outcome)
                    .await
                {
                    tracing::error!(error = %e, "writing audit event");
                }
            }
            result
        }
    };
    match result {
        Ok((out, json)) => {
            let mut text = if json && !out.json.is_null() {
                serde_json::to_string_pretty(&out.json)
                    .expect("serde_json::Value always serializes")
            } else {
                out.text
            };
            if out.json.is_null() && !json {
                text.clear();
            }
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            let _ = io.stdout.write_all(text.as_bytes()).await;
            let _ = io.stdout.flush().await;
            out.exit
        }
        Err(e) => {
            let line = format!("error: {e}\n");
            let _ = io.stderr.write_all(line.as_bytes()).await;
            let _ = io.stderr.flush().await;
            match e {
                CmdError::Usage(_) => 2,
                _ => 1,
            }
        }
    }
}

async fn execute<R: AsyncRead + Unpin>(
    ctx: &mut Ctx<'_, R>,
    cmd: Command,
) -> Result<Output, CmdError> {
    use Command::*;
    match cmd {
        Help => Ok(help()),
        Version => Ok(Output::raw(
            "version",
            format!("rack {}", env!("CARGO_PKG_VERSION")),
        )),
        Apps => apps::list(ctx).await,
        AppsCreate { app } => apps::create(ctx, &app).await,
        AppsInfo { app } => apps::info(ctx, &app).await,
        AppsDestroy { app, confirm } => apps::destroy(ctx, &app, confirm.as_deref()).await,
        AppsSet { app, pairs } => apps::set(ctx, &app, &pairs).await,
        AppsUnset { app, keys } => apps::unset(ctx, &app, &keys).await,
        Config { app } => config::show(ctx, &app).await,
        ConfigGet { app, key } => config::get(ctx, &app, &key).await,
        ConfigSet {
            app,
            pairs,
            stdin_key,
            no_restart,
        } => config::set(ctx, &app, pairs, stdin_key, no_restart).await,
        ConfigUnset {
            app,
            keys,
            no_restart,
        } => config::unset(ctx, &app, &keys, no_restart).await,
        Keys => keys::list(ctx).await,
        KeysAdd { name, admin, apps } => keys::add(ctx, &name, admin, &apps).await,
        KeysRemove { name } => keys::remove(ctx, &name).await,
        Events { app, limit } => events::list(ctx, app.as_deref(), limit).await,
        AppsDeploy {
            app,
            reference,
            no_cache,
        } => builds::deploy(ctx, &app, reference.as_deref(), no_cache).await,
        Builds { app } => builds::list(ctx, &app).await,
        BuildsInfo { app, build } => builds::info(ctx, &app, &build).await,
        BuildsLogs { app, build, follow } => builds::logs(ctx, &app, &build, follow).await,
        Releases { app } => releases::list(ctx, &app).await,
        ReleasesInfo { app, version } => releases::info(ctx, &app, &version).await,
        ReleasesRollback { app, version } => {
            releases::rollback(ctx, &app, version.as_deref()).await
        }
        Ps { app } => ps::list(ctx, &app).await,
        PsScale { app, pairs } => ps::scale(ctx, &app, &pairs).await,
        PsRestart { app, kind } => ps::restart(ctx, &app, kind.as_deref()).await,
        Domains { app } => domains::list(ctx, &app).await,
        DomainsAdd { app, host } => domains::add(ctx, &app, &host).await,
        DomainsRemove { app, host } => domains::remove(ctx, &app, &host).await,
        Logs {
            app,
            follow,
            lines,
            kind,
        } => run::logs(ctx, &app, follow, lines, kind).await,
        Run { app, argv } => run::run(ctx, &app, argv).await,
    }
}

fn help() -> Output {
    let items = HELP
        .iter()
        .map(|(name, usage, summary)| serde_json::json!({ "command": name, "usage": usage, "summary": summary }))
        .collect();
    let mut out = Output::list(&[("USAGE", "usage"), ("", "summary")], items);
    out.text = format!(
        "rack {}: git push to deploy.\n  git remote add rack ssh://git@HOST:PORT/APP && git push rack main\n\n{}",
        env!("CARGO_PKG_VERSION"),
        out.text.lines().skip(1).collect::<Vec<_>>().join("\n")
    );
    out
}

#[cfg(test)]
mod tests;
