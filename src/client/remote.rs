//! Where a command goes: the rack and the app, read from the checkout's git
//! remotes (a remote named `rack`, else the only remote whose URL points at
//! a rack), with `-a APP` / `-r REMOTE` / `RACK_HOST` overriding.

use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use super::Target;
use crate::names::validate_app;

/// An SSH URL that points at a rack: one path segment, the app
/// (`ssh://git@HOST:2222/APP`, `git@HOST:APP`, either with `.git`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RackUrl {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub app: Option<String>,
}

impl RackUrl {
    /// `None` when the URL is not an SSH URL of one app: a GitHub remote
    /// (`git@github.com:owner/repo.git`) is not a rack.
    pub fn parse(url: &str) -> Option<RackUrl> {
        let (authority, path) = if let Some(rest) = ["ssh://", "git+ssh://", "ssh+git://"]
            .iter()
            .find_map(|p| url.strip_prefix(p))
        {
            rest.split_once('/')?
        } else {
            if url.contains("://") {
                return None;
            }
            // scp-like `[user@]host:path`: a colon before any slash.
            let (host, path) = url.split_once(':')?;
            if host.contains('/') || host.contains('[') {
                return None;
            }
            let mut u = RackUrl::host_port(host, false)?;
            u.app = Some(app_of(path)?);
            return Some(u);
        };
        let mut u = RackUrl::host_port(authority, true)?;
        u.app = Some(app_of(path)?);
        Some(u)
    }

    /// `[USER@]HOST[:PORT]` (`[v6]:PORT` for IPv6), as `rack remote add`
    /// and `RACK_HOST` take it.
    pub fn host_port(text: &str, with_port: bool) -> Option<RackUrl> {
        let (user, hostport) = match text.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
            Some(_) => return None,
            None => (None, text),
        };
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (h, after) = rest.split_once(']')?;
            match after.strip_prefix(':') {
                Some(p) if with_port => (h, Some(p.parse().ok()?)),
                None if after.is_empty() => (h, None),
                _ => return None,
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) if with_port => (h, Some(p.parse().ok()?)),
                Some(_) => return None,
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.starts_with('-') || host.contains(['/', ' ', '@']) {
            return None;
        }
        Some(RackUrl {
            user,
            host: host.to_string(),
            port,
            app: None,
        })
    }

    /// `user@host` for ssh's destination argument (git's user by default).
    pub fn destination(&self) -> String {
        format!("{}@{}", self.user.as_deref().unwrap_or("git"), self.host)
    }

    /// The URL `rack remote add` writes.
    pub fn to_url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "ssh://{}@{host}{port}/{}",
            self.user.as_deref().unwrap_or("git"),
            self.app.as_deref().unwrap_or("")
        )
    }

    /// The host as known_hosts and ssh-keyscan name it.
    pub fn known_hosts_name(&self) -> String {
        match self.port {
            Some(p) if p != 22 => format!("[{}]:{p}", self.host),
            _ => self.host.clone(),
        }
    }
}

fn app_of(path: &str) -> Option<String> {
    let path = path.trim_start_matches('/').trim_end_matches('/');
    let app = path.strip_suffix(".git").unwrap_or(path);
    validate_app(app).ok()?;
    Some(app.to_string())
}

/// Runs `git ARGS` in the current directory; `Ok(None)` when git says no
/// (exit 1: no such key, not a checkout...), its stdout otherwise.
pub fn git(args: &[&str]) -> Result<Option<String>> {
    let out = Command::new("git")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running git (is it installed?)")?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Is the current directory inside a git checkout?
pub fn in_checkout() -> Result<bool> {
    Ok(git(&["rev-parse", "--git-dir"])?.is_some())
}

/// The checkout's remotes and their (first) URLs, in config order.
pub fn remotes() -> Result<Vec<(String, String)>> {
    let text = git(&["config", "--local", "--get-regexp", r"^remote\..*\.url$"])?;
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.unwrap_or_default().lines() {
        let Some((key, url)) = line.split_once(' ') else {
            continue;
        };
        let Some(name) = key
            .strip_prefix("remote.")
            .and_then(|k| k.strip_suffix(".url"))
        else {
            continue;
        };
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.to_string(), url.to_string()));
        }
    }
    Ok(out)
}

/// What the client needs to say when it cannot tell where to go.
const NEED: &str = "run this inside an app's checkout with a rack remote (rack remote add HOST[:PORT] APP), or pass -a APP with RACK_HOST=[USER@]HOST[:PORT] set";

/// The rack and app a command goes to.
pub fn locate(target: &Target, needs_app: bool) -> Result<RackUrl> {
    let from_git = if in_checkout()? {
        from_remotes(target.remote.as_deref(), &remotes()?)?
    } else if let Some(r) = &target.remote {
        bail!("-r {r}: not inside a git checkout; {NEED}");
    } else {
        None
    };
    let url = match from_git {
        Some(u) => u,
        None => match std::env::var("RACK_HOST").ok().filter(|h| !h.is_empty()) {
            Some(h) => RackUrl::host_port(&h, true)
                .ok_or_else(|| anyhow!("RACK_HOST={h}: expected [USER@]HOST[:PORT]"))?,
            None => bail!("no rack here: {NEED}"),
        },
    };
    let url = locate_with(target, url);
    if let Some(app) = &target.app {
        validate_app(app).map_err(|e| anyhow!("-a {app}: {e}"))?;
    }
    if needs_app && url.app.is_none() {
        bail!("no app given: {NEED}");
    }
    Ok(url)
}

/// `url` with `-a APP` applied.
pub fn locate_with(target: &Target, mut url: RackUrl) -> RackUrl {
    if let Some(app) = &target.app {
        url.app = Some(app.clone());
    }
    url
}

/// The rack remote among `remotes`: `-r NAME`, else `rack`, else the only
/// one whose URL points at a rack.
pub fn from_remotes(wanted: Option<&str>, remotes: &[(String, String)]) -> Result<Option<RackUrl>> {
    let named = |name: &str| remotes.iter().find(|(n, _)| n == name);
    if let Some(name) = wanted {
        let (_, url) = named(name).ok_or_else(|| anyhow!("no git remote named {name}"))?;
        return RackUrl::parse(url)
            .map(Some)
            .ok_or_else(|| anyhow!("git remote {name} ({url}) does not point at a rack"));
    }
    if let Some((_, url)) = named("rack") {
        return RackUrl::parse(url)
            .map(Some)
            .ok_or_else(|| anyhow!("git remote rack ({url}) does not point at a rack"));
    }
    let racks: Vec<(&String, RackUrl)> = remotes
        .iter()
        .filter_map(|(n, u)| RackUrl::parse(u).map(|r| (n, r)))
        .collect();
    match racks.as_slice() {
        [] => Ok(None),
        [(_, one)] => Ok(Some(one.clone())),
        many => bail!(
            "several git remotes point at a rack ({}): pass -r REMOTE",
            many.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
