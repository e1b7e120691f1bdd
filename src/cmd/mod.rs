//! The SSH command interface: one closed `Command` enum parsed from shell
//! words, each command's required `Access`, and the one dispatcher that
//! checks access (failing closed) before anything runs.
//!
//! This module knows nothing about SSH: it reads and writes plain async
//! streams, so the same code serves any transport. Command groups live in
//! submodules (`apps`, `config`, `keys`, `events`, `timers`, ...).

#[macro_use]
mod group;

pub mod apps;
pub mod builds;
pub mod config;
pub mod domains;
pub mod events;
pub mod keys;
pub mod output;
pub mod ps;
pub mod releases;
pub mod resources;
pub mod run;
pub mod timers;
pub mod volumes;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::names::{printable, validate_app};
use crate::state::Rack;
use output::Output;

/// Whether the command may get the client's terminal (`ssh -t`): the
/// interactive ones, `run` and `resources:console`; every other command
/// refuses a pty.
pub fn takes_terminal(name: &str) -> bool {
    matches!(name, "run" | "resources:console")
}

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

impl From<crate::deploy::DeployError> for CmdError {
    fn from(e: crate::deploy::DeployError) -> Self {
        if let crate::deploy::DeployError::Store(crate::store::StoreError::Db(inner)) = &e {
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

/// Declares `Command` from the groups and delegates to each group's own
/// `parse`, `access`, `app`, `audit_line` and `execute` (see `group.rs`).
macro_rules! groups {
    ($($variant:ident($module:ident::$group:ident)),* $(,)?) => {
        /// One SSH command line, parsed. Each group module declares its
        /// commands (`commands!`); this enum only names the groups.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Command {
            Help,
            Version,
            $($variant($module::$group),)*
        }

        impl Command {
            fn parse_group(name: &str, a: &mut Args) -> Result<Option<Command>, CmdError> {
                $(if let Some(c) = $module::$group::parse(name, a)? {
                    return Ok(Some(Command::$variant(c)));
                })*
                Ok(None)
            }

            /// What the caller must be allowed. Exhaustive here and in every
            /// group, so nothing is ungated by default.
            pub fn access(&self) -> Access {
                match self {
                    Command::Help | Command::Version => Access::Anyone,
                    $(Command::$variant(c) => c.access(),)*
                }
            }

            /// The app a command concerns, for the audit trail.
            pub fn app(&self) -> Option<&str> {
                match self {
                    Command::Help | Command::Version => None,
                    $(Command::$variant(c) => c.app(),)*
                }
            }

            /// How the command appears in the audit trail: never a config
            /// value. `None` for read-only commands (they are not audited).
            pub fn audit_line(&self) -> Option<String> {
                match self {
                    Command::Help | Command::Version => None,
                    $(Command::$variant(c) => c.audit_line(),)*
                }
            }
        }

        async fn execute<R: AsyncRead + Unpin>(
            ctx: &mut Ctx<'_, R>,
            cmd: Command,
        ) -> Result<Output, CmdError> {
            match cmd {
                Command::Help => Ok(help()),
                Command::Version => Ok(Output::raw("version", crate::version())),
                $(Command::$variant(c) => c.execute(ctx).await,)*
            }
        }
    };
}

groups! {
    Apps(apps::AppsCmd),
    Config(config::ConfigCmd),
    Builds(builds::BuildsCmd),
    Releases(releases::ReleasesCmd),
    Ps(ps::PsCmd),
    Domains(domains::DomainsCmd),
    Run(run::RunCmd),
    Timers(timers::TimersCmd),
    Volumes(volumes::VolumesCmd),
    Resources(resources::ResourcesCmd),
    Keys(keys::KeysCmd),
    Events(events::EventsCmd),
}

/// `(name, usage, summary)` of one command, for `help` and usage errors.
pub type HelpLine = (&'static str, &'static str, &'static str);

/// Every command's help line, in display order.
#[rustfmt::skip]
pub const HELP: &[HelpLine] = &[
    ("help", "help", "this list"),
    ("version", "version", "the rack's version"),
    ("apps", "apps", "list apps"),
    ("apps:create", "apps:create APP", "create an app"),
    ("apps:info", "apps:info APP", "show an app"),
    ("apps:destroy", "apps:destroy APP --confirm APP", "delete an app and everything it has"),
    ("apps:set", "apps:set APP KEY=VAL ...", "change app settings"),
    ("apps:unset", "apps:unset APP KEY ...", "reset app settings"),
    ("apps:deploy", "apps:deploy APP [REF] [--no-cache]", "build and deploy a commit already pushed"),
    ("config", "config APP", "show config vars"),
    ("config:get", "config:get APP KEY", "print one config value"),
    ("config:set", "config:set APP KEY=VAL ... [--no-restart] | KEY --stdin", "set config vars"),
    ("config:unset", "config:unset APP KEY ... [--no-restart]", "remove config vars"),
    ("builds", "builds APP", "list builds"),
    ("builds:info", "builds:info APP BUILD", "show a build"),
    ("builds:logs", "builds:logs APP BUILD [-f]", "print (and follow) a build's output"),
    ("releases", "releases APP", "list releases"),
    ("releases:info", "releases:info APP vN", "show a release"),
    ("releases:rollback", "releases:rollback APP [vN]", "new release with vN's build and config"),
    ("ps", "ps APP", "list processes"),
    ("ps:scale", "ps:scale APP TYPE=N ...", "change process counts"),
    ("ps:restart", "ps:restart APP [TYPE]", "roll the processes without a new release"),
    ("domains", "domains APP", "host names routed to the app"),
    ("domains:add", "domains:add APP HOST", "route another host name to the app"),
    ("domains:remove", "domains:remove APP HOST", "stop routing a host name"),
    ("logs", "logs APP [-f] [-n N] [--type TYPE]", "processes' output, TYPE.N | line"),
    ("run", "run APP [--exec] -- COMMAND", "one-off process: COMMAND runs in /bin/sh -c (--exec: an argv, no shell); ssh -t for a terminal"),
    ("timers", "timers APP", "scheduled jobs of app.json"),
    ("timers:run", "timers:run APP NAME", "run a timer now"),
    ("timers:suspend", "timers:suspend APP [NAME]", "stop firing (kept across deploys)"),
    ("timers:resume", "timers:resume APP [NAME]", "fire again"),
    ("volumes", "volumes APP", "persistent volumes: name, path, types, size"),
    ("volumes:create", "volumes:create APP NAME --path PATH [--type TYPE]... [--shared]", "a volume mounted at PATH into TYPE (default web); new release"),
    ("volumes:destroy", "volumes:destroy APP NAME --confirm NAME", "delete a volume and its files; new release"),
    ("volumes:export", "volumes:export APP NAME", "the volume's files as a tar on stdout"),
    ("volumes:import", "volumes:import APP NAME", "unpack a tar from stdin into the volume"),
    ("resources", "resources", "databases the rack runs (admin)"),
    ("resources:create", "resources:create NAME postgres|redis [--version V]", "create a database, ready when this returns"),
    ("resources:info", "resources:info NAME", "type, version, status, linked apps, host and port"),
    ("resources:url", "resources:url NAME", "print the URL with its password"),
    ("resources:link", "resources:link NAME APP [--as PREFIX]", "set PREFIX_URL (DATABASE_URL, REDIS_URL) on APP and release"),
    ("resources:unlink", "resources:unlink NAME APP", "remove PREFIX_URL from APP and release"),
    ("resources:console", "resources:console NAME", "psql or redis-cli in the resource; ssh -t for a terminal"),
    ("resources:export", "resources:export NAME", "a dump on stdout (pg_dump -Fc, Redis RDB)"),
    ("resources:import", "resources:import NAME", "replace the data with a dump read from stdin"),
    ("resources:backup", "resources:backup NAME", "take a backup now; prints its id"),
    ("resources:backups", "resources:backups NAME", "list backups"),
    ("resources:restore", "resources:restore NAME BACKUP", "replace the data with a backup"),
    ("resources:destroy", "resources:destroy NAME --confirm NAME", "remove a resource, its data and backups (not while linked)"),
    ("keys", "keys", "list SSH keys (admin)"),
    ("keys:add", "keys:add NAME (--admin | --app APP ...)", "add a key read from stdin (admin)"),
    ("keys:remove", "keys:remove NAME", "remove a key (admin)"),
    ("events", "events [APP] [-n N]", "audit trail"),
];

/// Arguments after the command name, with `--json` already taken out.
struct Args {
    words: std::vec::IntoIter<String>,
}

impl Args {
    /// The next word: a valid app name.
    fn app(&mut self, cmd: &str) -> Result<String, CmdError> {
        let app = self
            .words
            .next()
            .ok_or_else(|| usage(format!("missing APP; usage: {}", usage_of(cmd))))?;
        validate_app(&app).map_err(CmdError::Usage)?;
        Ok(app)
    }
    /// `CMD APP` and nothing else.
    fn only_app(&mut self, cmd: &str) -> Result<String, CmdError> {
        let app = self.app(cmd)?;
        self.done(cmd)?;
        Ok(app)
    }
    /// `CMD APP WORD` and nothing else.
    fn app_word(&mut self, cmd: &str) -> Result<(String, String), CmdError> {
        let app = self.app(cmd)?;
        let word = self.word(cmd)?;
        self.done(cmd)?;
        Ok((app, word))
    }
    /// `CMD APP [WORD]` and nothing else.
    fn app_maybe_word(&mut self, cmd: &str) -> Result<(String, Option<String>), CmdError> {
        let app = self.app(cmd)?;
        let word = self.words.next();
        self.done(cmd)?;
        Ok((app, word))
    }
    /// `CMD APP WORD...`: at least one word after the app.
    fn app_words(&mut self, cmd: &str) -> Result<(String, Vec<String>), CmdError> {
        let app = self.app(cmd)?;
        let words = self.rest();
        if words.is_empty() {
            return Err(usage(format!("usage: {}", usage_of(cmd))));
        }
        Ok((app, words))
    }
    /// The next word, or a usage error with the command's usage.
    fn word(&mut self, cmd: &str) -> Result<String, CmdError> {
        self.words
            .next()
            .ok_or_else(|| usage(format!("usage: {}", usage_of(cmd))))
    }
    /// The rest, which may only be `FLAG VALUE` or `FLAG=VALUE`.
    fn option_only(&mut self, flag: &str, missing: &str) -> Result<Option<String>, CmdError> {
        let mut value = None;
        let rest = self.rest();
        let mut it = rest.into_iter();
        while let Some(w) = it.next() {
            if w == flag {
                value = Some(it.next().ok_or_else(|| usage(missing))?);
            } else if let Some(v) = w.strip_prefix(flag).and_then(|v| v.strip_prefix('=')) {
                value = Some(v.to_string());
            } else {
                return Err(usage(format!("unexpected argument '{}'", printable(&w))));
            }
        }
        Ok(value)
    }
    fn rest(&mut self) -> Vec<String> {
        self.words.by_ref().collect()
    }
    fn done(&mut self, cmd: &str) -> Result<(), CmdError> {
        match self.words.next() {
            None => Ok(()),
            Some(extra) => Err(unexpected(&extra, cmd)),
        }
    }
}

fn unexpected(word: &str, cmd: &str) -> CmdError {
    usage(format!(
        "unexpected argument '{}'; usage: {}",
        printable(word),
        usage_of(cmd)
    ))
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

/// `" VALUE"`, or nothing: an optional last word of an audit line.
fn with_space(v: Option<&str>) -> String {
    v.map(|v| format!(" {v}")).unwrap_or_default()
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
            other => Command::parse_group(other, &mut a)?.ok_or_else(|| {
                usage(format!(
                    "unknown command '{}'; see 'help'",
                    printable(other)
                ))
            })?,
        };
        Ok((cmd, json))
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
        crate::progress::Progress::forward_to(&mut *self.stderr, work).await
    }

    /// The rack's store.
    pub fn store(&self) -> &'_ dyn crate::store::Store {
        &*self.rack.provider.store
    }

    /// The rack's config versions (sealed).
    pub fn configs(&self) -> &'_ crate::release::config::Configs {
        &self.rack.provider.configs
    }

    /// The runtime, or the command fails saying why it cannot be reached.
    pub async fn runtime(&self) -> Result<Arc<dyn crate::runtime::Runtime>, CmdError> {
        self.rack.provider.runtime().await.map_err(CmdError::Failed)
    }
}

impl<'a, R> Ctx<'a, R> {
    /// Runs one `Deployer` use case with its progress lines on stderr.
    pub async fn deploying<T, F>(
        &mut self,
        work: impl FnOnce(&'a crate::deploy::Deployer, crate::progress::Progress) -> F,
    ) -> Result<T, CmdError>
    where
        F: std::future::Future<Output = Result<T, crate::deploy::DeployError>>,
    {
        let deployer = &self.rack.deployer;
        Ok(self.with_progress(|p| work(deployer, p)).await?)
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
                    .provider
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
