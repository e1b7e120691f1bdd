//! Handing a running server over to a new binary without closing a
//! listening socket, the way nginx and HAProxy upgrade binaries: `rack
//! update --binary PATH` (through the control socket, `control.rs`) and
//! SIGUSR2 (the binary the server was started from, e.g. after a package
//! upgrade) start the new process with every listening socket inherited
//! (their descriptors kept open across `exec`, named in `RACK_HANDOVER`,
//! like systemd's `LISTEN_FDS`) and a link (a socket pair) to it.
//!
//! The order, which `daemon.rs` drives:
//! 1. The new process opens the state (migrations run there), accepts SSH
//!    and says `ready` on the link; until then its stderr comes through
//!    the old process, which keeps the last lines as the reason a failed
//!    start gives. A new process that exits, or is not ready within
//!    `[limits] update_timeout_secs`, is killed and the old one goes on.
//! 2. The old process stops accepting SSH (and control connections), its
//!    `logs -f` sessions end, and sessions in progress (a push, a `run`)
//!    finish there within `shutdown_grace_secs`. Deploys in the new
//!    process wait (the `Deployer`'s gate) so one app never rolls in two
//!    processes.
//! 3. Then the old one says `http`: the new process runs the start-up
//!    recovery (nothing is in flight any more), rebuilds its routing table
//!    from what runs, accepts HTTP, opens the deploy gate and says
//!    `serving`. The old router stops accepting, lets requests in flight
//!    finish and the old process exits. Until `serving`, the old process
//!    serves HTTP, so no request meets an empty routing table.
//!
//! Does not know: SSH, HTTP or what the rack serves; it moves sockets and
//! lines.

pub mod control;
pub mod notify;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::config::Settings;

/// The environment variable naming the inherited descriptors:
/// `ssh=3,http=4,control=5,link=6,stderr=7[,metrics=8]`.
pub const ENV: &str = "RACK_HANDOVER";

/// Longest line either side writes on the link or the control socket.
const MAX_LINE: usize = 4096;

/// Lines of a new process's stderr kept for the reason of a failed start.
const TAIL_LINES: usize = 8;

/// The sockets one server listens on: bound here, or inherited from the
/// process it replaces.
pub struct Sockets {
    pub ssh: TcpListener,
    pub http: TcpListener,
    pub metrics: Option<TcpListener>,
    pub control: UnixListener,
    /// Set when this process replaces another: the link to it.
    pub predecessor: Option<Predecessor>,
}

impl Sockets {
    /// Inherits the sockets named in [`ENV`] when it is set, else binds
    /// the addresses of `settings` and the control socket in the data dir
    /// (refusing to start when another server answers on it).
    pub fn bind_or_inherit(settings: &Settings) -> Result<Sockets> {
        if let Some(list) = std::env::var_os(ENV) {
            std::env::remove_var(ENV);
            return inherit(&list.to_string_lossy());
        }
        let bind = |addr: &str, what: &str| {
            let l = TcpListener::bind(addr).with_context(|| format!("binding {what} on {addr}"))?;
            l.set_nonblocking(true)?;
            anyhow::Ok(l)
        };
        let ssh = bind(&settings.listen, "SSH")?;
        let http = bind(&settings.http, "the app router")?;
        let metrics = match &settings.metrics {
            Some(addr) => Some(bind(addr, "the metrics endpoint")?),
            None => None,
        };
        let control = control::bind(&settings.control_socket_path())?;
        Ok(Sockets {
            ssh,
            http,
            metrics,
            control,
            predecessor: None,
        })
    }

    /// Duplicates of the listening sockets, kept so a successor can
    /// inherit them (and this process can listen again if it fails).
    pub fn keep(&self) -> Result<Kept> {
        let dup = |fd: RawFd| -> Result<OwnedFd> {
            // SAFETY: `fd` is a descriptor this value owns; F_DUPFD_CLOEXEC
            // returns a new one (or -1), which we then own.
            let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            if new < 0 {
                return Err(std::io::Error::last_os_error()).context("duplicating a listener");
            }
            Ok(unsafe { OwnedFd::from_raw_fd(new) })
        };
        Ok(Kept {
            ssh: dup(self.ssh.as_raw_fd())?,
            http: dup(self.http.as_raw_fd())?,
            metrics: self
                .metrics
                .as_ref()
                .map(|m| dup(m.as_raw_fd()))
                .transpose()?,
            control: dup(self.control.as_raw_fd())?,
        })
    }
}

/// The listening sockets a successor inherits.
pub struct Kept {
    pub ssh: OwnedFd,
    pub http: OwnedFd,
    pub metrics: Option<OwnedFd>,
    pub control: OwnedFd,
}

impl Kept {
    /// A new SSH listener on the kept socket (after a failed handover).
    pub fn ssh_listener(&self) -> Result<tokio::net::TcpListener> {
        let l = TcpListener::from(self.ssh.try_clone()?);
        l.set_nonblocking(true)?;
        Ok(tokio::net::TcpListener::from_std(l)?)
    }

    /// A new control listener on the kept socket.
    pub fn control_listener(&self) -> Result<UnixListener> {
        let l = UnixListener::from(self.control.try_clone()?);
        l.set_nonblocking(true)?;
        Ok(l)
    }
}

fn inherit(list: &str) -> Result<Sockets> {
    let mut fds = std::collections::HashMap::new();
    for part in list.split(',') {
        let (name, fd) = part
            .split_once('=')
            .with_context(|| format!("{ENV}: malformed entry {part:?}"))?;
        let fd: RawFd = fd
            .parse()
            .with_context(|| format!("{ENV}: malformed descriptor {fd:?}"))?;
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            bail!("{ENV}: descriptor {fd} ({name}) is not open");
        }
        // Ours now; and not for the children this process spawns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        fds.insert(name.to_string(), unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut take = |name: &str| {
        fds.remove(name)
            .with_context(|| format!("{ENV}: no {name} descriptor"))
    };
    let tcp = |fd: OwnedFd| {
        let l = TcpListener::from(fd);
        l.set_nonblocking(true)?;
        anyhow::Ok(l)
    };
    let ssh = tcp(take("ssh")?)?;
    let http = tcp(take("http")?)?;
    let control = UnixListener::from(take("control")?);
    control.set_nonblocking(true)?;
    let link = UnixStream::from(take("link")?);
    let stderr = take("stderr")?;
    let metrics = fds.remove("metrics").map(tcp).transpose()?;
    Ok(Sockets {
        ssh,
        http,
        metrics,
        control,
        predecessor: Some(Predecessor { link, stderr }),
    })
}

/// The new process's side of the link to the process it replaces.
pub struct Predecessor {
    link: UnixStream,
    /// The old process's stderr, this process's from `ready` on.
    stderr: OwnedFd,
}

impl Predecessor {
    /// Says `ready VERSION` and moves this process's stderr from the pipe
    /// the old process reads to the old process's own stderr. Returns the
    /// link, on which `http` (or the old process's end) comes next.
    pub fn ready(self) -> Result<tokio::net::UnixStream> {
        let mut link = self.link;
        writeln!(link, "ready {}", crate::version()).context("writing to the old process")?;
        // SAFETY: dup2 onto fd 2 replaces the pipe with the inherited
        // stderr; both descriptors are open.
        if unsafe { libc::dup2(self.stderr.as_raw_fd(), 2) } < 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "keeping stderr on the old process's pipe");
        }
        link.set_nonblocking(true)?;
        Ok(tokio::net::UnixStream::from_std(link)?)
    }
}

/// Waits until the old process says `http` (or is gone): its sessions are
/// over and the router is this process's to start.
pub async fn wait_turn(link: &mut tokio::net::UnixStream) {
    let mut lines = BufReader::new(link).take(MAX_LINE as u64).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(l)) if l == "http" => return,
            Ok(Some(_)) => continue,
            _ => return,
        }
    }
}

/// Tells the old process that this one serves HTTP now.
pub async fn serving(link: &mut tokio::net::UnixStream) {
    let _ = link.write_all(b"serving\n").await;
}

/// A new process that said it is ready: its pid and version, and the link.
pub struct Successor {
    pub pid: u32,
    pub version: String,
    link: tokio::net::UnixStream,
    /// Kept so the successor is not reaped behind our back (dropping it
    /// neither kills nor waits).
    _child: tokio::process::Child,
}

impl Successor {
    /// Says `http` and waits for `serving`. `Err` when the new process
    /// went away first (this one must then go on serving).
    pub async fn hand_http(&mut self, timeout: Duration) -> Result<()> {
        self.link.write_all(b"http\n").await?;
        let mut lines = BufReader::new(&mut self.link).take(MAX_LINE as u64).lines();
        let wait = async {
            loop {
                match lines.next_line().await? {
                    Some(l) if l == "serving" => return Ok(()),
                    Some(_) => continue,
                    None => bail!("the new process went away before it served HTTP"),
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => bail!("the new process did not serve HTTP within {timeout:?}"),
        }
    }
}

/// Starts `binary` with `args` and the sockets of `kept`, and waits until
/// it says it is ready. `Err` (with the reason: its last stderr line, its
/// exit status, or the timeout) leaves this process as it was.
pub async fn start_successor(
    binary: &Path,
    args: &[OsString],
    kept: &Kept,
    timeout: Duration,
) -> Result<Successor> {
    check_binary(binary)?;
    let (ours, theirs) = UnixStream::pair().context("creating the link to the new process")?;
    // SAFETY: dup of our own stderr; the copy is ours.
    let stderr = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    if stderr < 0 {
        return Err(std::io::Error::last_os_error()).context("duplicating stderr");
    }
    let stderr = unsafe { OwnedFd::from_raw_fd(stderr) };
    let mut named = vec![
        ("ssh", kept.ssh.as_raw_fd()),
        ("http", kept.http.as_raw_fd()),
        ("control", kept.control.as_raw_fd()),
        ("link", theirs.as_raw_fd()),
        ("stderr", stderr.as_raw_fd()),
    ];
    if let Some(m) = &kept.metrics {
        named.push(("metrics", m.as_raw_fd()));
    }
    let list = named
        .iter()
        .map(|(n, fd)| format!("{n}={fd}"))
        .collect::<Vec<_>>()
        .join(",");
    let fds: Vec<RawFd> = named.iter().map(|(_, fd)| *fd).collect();
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(args)
        .env(ENV, list)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: only fcntl, which is async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    drop((theirs, stderr));
    let pid = child.id().unwrap_or(0);
    let tail = forward_stderr(child.stderr.take().expect("stderr is piped"));
    ours.set_nonblocking(true)?;
    let mut link = tokio::net::UnixStream::from_std(ours)?;
    let outcome = tokio::time::timeout(timeout, async {
        let mut lines = BufReader::new(&mut link).take(MAX_LINE as u64).lines();
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(l)) if l.starts_with("ready") => Ok(l["ready".len()..].trim().to_string()),
                _ => Err(None),
            },
            status = child.wait() => Err(status.ok()),
        }
    })
    .await;
    match outcome {
        Ok(Ok(version)) => Ok(Successor {
            pid,
            version,
            link,
            _child: child,
        }),
        Ok(Err(status)) => {
            let status = match status {
                Some(s) => s,
                None => child.wait().await?,
            };
            // Its stderr ends with it: take every last line.
            let last = tail.finish().await;
            bail!(
                "the new binary exited ({status}) before it was ready{}; the running server goes on",
                reason(&last)
            )
        }
        Err(_) => {
            let _ = child.kill().await;
            let last = tail.finish().await;
            bail!(
                "the new binary was not ready within {}s (update_timeout_secs), so it was stopped{}; the running server goes on",
                timeout.as_secs(),
                reason(&last)
            )
        }
    }
}

fn reason(last: &[String]) -> String {
    match last.iter().rev().find(|l| !l.trim().is_empty()) {
        Some(l) => format!(": {}", crate::names::printable(l.trim())),
        None => String::new(),
    }
}

fn check_binary(binary: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !binary.is_absolute() {
        bail!("--binary: give an absolute path");
    }
    let meta =
        std::fs::metadata(binary).with_context(|| format!("--binary {}", binary.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        bail!("--binary {}: not an executable file", binary.display());
    }
    Ok(())
}

/// Copies a new process's stderr to ours line by line, keeping the last
/// [`TAIL_LINES`].
struct Tail {
    lines: Arc<Mutex<VecDeque<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tail {
    /// The last lines, once the stream ended (or at once if it is still
    /// open: a process killed for its timeout).
    async fn finish(self) -> Vec<String> {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
        let l = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        l.iter().cloned().collect()
    }
}

fn forward_stderr(stderr: tokio::process::ChildStderr) -> Tail {
    let lines = Arc::new(Mutex::new(VecDeque::new()));
    let kept = lines.clone();
    let task = tokio::spawn(async move {
        let mut reader = BufReader::new(stderr);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match (&mut reader)
                .take(64 * 1024)
                .read_until(b'\n', &mut buf)
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let _ = std::io::stderr().write_all(&buf);
            let mut l = kept.lock().unwrap_or_else(|p| p.into_inner());
            if l.len() == TAIL_LINES {
                l.pop_front();
            }
            l.push_back(String::from_utf8_lossy(&buf).trim_end().to_string());
        }
    });
    Tail { lines, task }
}

/// The path and arguments this process was started with, for a successor
/// started by SIGUSR2 (the file at that path, which a package upgrade may
/// have replaced) or by `rack update` (its own binary, same arguments).
#[derive(Clone)]
pub struct Origin {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl Origin {
    pub fn current() -> Origin {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("rack"));
        // A replaced file shows as "PATH (deleted)": the new file is at PATH.
        let exe = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            Some(s) => PathBuf::from(s),
            None => exe,
        };
        Origin {
            exe,
            args: std::env::args_os().skip(1).collect(),
        }
    }
}
