//! `rack remote add HOST[:PORT] [APP]`: the git remote, and the rack's
//! host key pinned in known_hosts after its fingerprint was shown (and
//! accepted: interactively, `--yes`, or `--fingerprint` matching it).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use super::remote::{git, in_checkout, RackUrl};
use super::ssh::Ssh;
use super::Target;
use crate::names::validate_app;

/// The rack's default SSH port.
const DEFAULT_PORT: u16 = 2222;

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The rack: [USER@]HOST[:PORT] (user git, port 2222 by default).
    pub host: String,
    /// The app (default: the checkout's directory name).
    pub app: Option<String>,
    /// Pin the key shown without asking.
    #[arg(long)]
    pub yes: bool,
    /// Pin the key only if its fingerprint is this one (SHA256:...; on the
    /// rack's machine: rack host-key | ssh-keygen -lf -).
    #[arg(long, value_name = "SHA256:...")]
    pub fingerprint: Option<String>,
}

pub fn add(target: &Target, args: AddArgs) -> Result<()> {
    if !in_checkout()? {
        bail!("rack remote add works inside the app's git checkout (git init first)");
    }
    let mut url = RackUrl::host_port(&args.host, true)
        .ok_or_else(|| anyhow!("{}: expected [USER@]HOST[:PORT]", args.host))?;
    url.port = Some(url.port.unwrap_or(DEFAULT_PORT));
    url.app = Some(match args.app.clone().or_else(|| target.app.clone()) {
        Some(a) => a,
        None => default_app()?,
    });
    validate_app(url.app.as_deref().unwrap_or("")).map_err(|e| anyhow!("{e}"))?;
    let name = target.remote.as_deref().unwrap_or("rack");
    let existing = git(&["remote", "get-url", name])?.map(|u| u.trim().to_string());
    if let Some(u) = existing.as_ref().filter(|u| **u != url.to_url()) {
        bail!("git remote {name} already exists ({u}): pass -r NAME for another remote");
    }

    let scanned = keyscan(&url)?;
    let fingerprints = fingerprints(&scanned)?;
    eprintln!(
        "The rack at {} offers this host key:\n{}",
        url.known_hosts_name(),
        indent(&fingerprints)
    );
    eprintln!("(on the rack's machine, `rack host-key | ssh-keygen -lf -` shows its fingerprint)");
    confirm(&args, &fingerprints)?;

    let file = known_hosts_file(&url);
    pin(&file, &url, &scanned)?;
    if existing.is_none() {
        git(&["remote", "add", name, &url.to_url()])?
            .ok_or_else(|| anyhow!("git remote add {name} failed"))?;
    }
    println!(
        "git remote {name} -> {}; host key pinned in {}",
        url.to_url(),
        file.display()
    );
    Ok(())
}

/// The checkout's directory name, when it is a valid app name.
fn default_app() -> Result<String> {
    let top = git(&["rev-parse", "--show-toplevel"])?.unwrap_or_default();
    let base = top.trim().rsplit('/').next().unwrap_or("").to_string();
    validate_app(&base)
        .map(|()| base.clone())
        .map_err(|_| anyhow!("give the app's name: rack remote add HOST[:PORT] APP"))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The host's keys as known_hosts lines (`ssh-keyscan`).
fn keyscan(url: &RackUrl) -> Result<String> {
    let port = url.port.unwrap_or(22).to_string();
    let out = Command::new("ssh-keyscan")
        .args(["-T", "10", "-p", &port, &url.host])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running ssh-keyscan (OpenSSH client)")?;
    let lines: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    if lines.is_empty() {
        bail!(
            "no SSH host key from {}:{port}: is the rack running there?",
            url.host
        );
    }
    Ok(lines)
}

/// `ssh-keygen -lf -` of known_hosts lines: one fingerprint line per key.
fn fingerprints(lines: &str) -> Result<String> {
    let mut child = Command::new("ssh-keygen")
        .args(["-l", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running ssh-keygen")?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(lines.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("ssh-keygen could not read the host key");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn confirm(args: &AddArgs, fingerprints: &str) -> Result<()> {
    if let Some(fp) = &args.fingerprint {
        let found = fingerprints
            .split_whitespace()
            .any(|w| w == fp || w.strip_prefix("SHA256:") == Some(fp));
        if !found {
            bail!("the rack's host key is not {fp}: not pinned");
        }
        return Ok(());
    }
    if args.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("pass --yes to pin the key shown above, or --fingerprint SHA256:... to check it");
    }
    eprint!("Pin this key? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("not pinned; nothing changed");
    }
    Ok(())
}

/// The known_hosts file ssh reads first for this host (`ssh -G`), so the
/// pin lands where the user's ssh (or `GIT_SSH_COMMAND`) looks.
fn known_hosts_file(url: &RackUrl) -> PathBuf {
    let mut args = vec!["-G".to_string()];
    if let Some(p) = url.port {
        args.extend(["-p".to_string(), p.to_string()]);
    }
    args.push(url.destination());
    let out = Ssh::discover()
        .command(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let configured = out.ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
            l.strip_prefix("userknownhostsfile ")
                .and_then(|v| v.split_whitespace().next())
                .map(str::to_string)
        })
    });
    let file = configured.unwrap_or_else(|| "~/.ssh/known_hosts".into());
    match file.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None => PathBuf::from(file),
    }
}

/// The home directory ssh expands `~` to: the password database's.
fn home() -> PathBuf {
    // SAFETY: getpwuid returns a pointer into static storage or null; it is
    // read at once, on this thread, before any other passwd call.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if !pw.is_null() && !(*pw).pw_dir.is_null() {
            let dir = std::ffi::CStr::from_ptr((*pw).pw_dir);
            return PathBuf::from(std::ffi::OsStr::from_encoded_bytes_unchecked(
                dir.to_bytes(),
            ));
        }
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into()))
}

/// Appends the scanned keys to `file` unless they are there already;
/// refuses when the file has another key for the host (ssh would refuse to
/// connect; the user decides whether the rack's key really changed).
fn pin(file: &PathBuf, url: &RackUrl, scanned: &str) -> Result<()> {
    let name = url.known_hosts_name();
    let known = Command::new("ssh-keygen")
        .arg("-F")
        .arg(&name)
        .arg("-f")
        .arg(file)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running ssh-keygen -F")?;
    let key_of = |l: &str| {
        l.split_whitespace()
            .skip(1)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let pinned: Vec<String> = String::from_utf8_lossy(&known.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(key_of)
        .collect();
    let new: Vec<&str> = scanned
        .lines()
        .filter(|l| !pinned.contains(&key_of(l)))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    if !pinned.is_empty() {
        bail!(
            "{} already has another key for {name}; if the rack's key really changed: ssh-keygen -R '{name}' -f {}",
            file.display(),
            file.display()
        );
    }
    if let Some(dir) = file.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    for l in new {
        writeln!(f, "{l}")?;
    }
    Ok(())
}
