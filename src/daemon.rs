//! `rack server` from bound (or inherited) sockets to exit: the start-up
//! order, the signals (SIGTERM/SIGINT stop, SIGUSR2 hands over to the
//! binary the server was started from), the control socket's `update`
//! requests, and the handover to a new process (`handover/`).
//!
//! Start-up of a fresh server: open the state (`Rack::open`: migrations,
//! then `Deployer::prepare`), run recovery (the router starts accepting
//! once it is done, at most `ROUTES_HOLD`), then accept SSH and tell
//! systemd `READY=1`. A server that replaces another accepts SSH at once,
//! says `ready`, and runs recovery and starts its router only when the old
//! process's sessions are over (see `handover/`'s order).
//!
//! Does not know: how SSH sessions or HTTP requests are served.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::handover::{self, control, notify::notify, Kept, Origin, Sockets, Successor};
use crate::state::Rack;

/// How long the router may hold new connections at start-up while the
/// routes of running apps come back.
const ROUTES_HOLD: Duration = Duration::from_secs(2);

/// Why the SSH server stopped accepting.
enum Why {
    Terminate,
    HandOver(Box<Successor>),
}

/// What the signal and control tasks share with the main flow.
struct Ctl {
    rack: Arc<Rack>,
    origin: Origin,
    kept: Kept,
    ssh_stop: watch::Sender<bool>,
    why: Mutex<Option<Why>>,
    busy: tokio::sync::Mutex<()>,
}

impl Ctl {
    fn why(&self) -> std::sync::MutexGuard<'_, Option<Why>> {
        self.why.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `binary` and, once it is ready, stops accepting SSH here;
    /// the main flow then hands HTTP over. `Ok`: "PID VERSION".
    async fn hand_over(&self, binary: &Path) -> Result<String> {
        let Ok(_busy) = self.busy.try_lock() else {
            bail!("an update is already in progress");
        };
        if self.why().is_some() {
            bail!("the server is stopping");
        }
        tracing::info!(binary = %binary.display(), "update: starting the new binary");
        let timeout = self.rack.settings.limits.update_timeout;
        let s = handover::start_successor(binary, &self.origin.args, &self.kept, timeout).await?;
        let out = format!("{} {}", s.pid, s.version);
        tracing::info!(pid = s.pid, version = %s.version, "update: the new process is ready; this one stops accepting");
        notify(&format!("MAINPID={}", s.pid));
        *self.why() = Some(Why::HandOver(Box::new(s)));
        self.ssh_stop.send_replace(true);
        Ok(out)
    }
}

/// A listener several processes may bind at once (SO_REUSEPORT).
fn bind_shared(addr: &str) -> Result<tokio::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = addr
        .to_socket_addrs()
        .with_context(|| format!("the HTTPS address {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("the HTTPS address {addr} names no address"))?;
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.bind(addr)
        .with_context(|| format!("binding the app router's HTTPS on {addr}"))?;
    Ok(sock.listen(1024)?)
}

/// Runs the server until it is stopped or has handed over.
pub async fn serve(settings: Settings, origin: Origin) -> Result<()> {
    crate::git::init_process();
    settings.ensure_dirs()?;
    let mut sockets = Sockets::bind_or_inherit(&settings)?;
    let predecessor = sockets.predecessor.take();
    let _lock = lock_data_dir(&settings, predecessor.is_some())?;
    let control_path = settings.control_socket_path();
    // Bound with SO_REUSEPORT: a successor (`update`) binds it too while
    // this process still serves.
    let https = settings.https.as_deref().map(bind_shared).transpose()?;
    crate::router::install_default_provider();
    let rack = Rack::open(settings, predecessor.is_none()).await?;
    let kept = sockets.keep()?;
    let ssh = tokio::net::TcpListener::from_std(sockets.ssh)?;
    let http = tokio::net::TcpListener::from_std(sockets.http)?;
    // Replaces the rules of a predecessor (the same ones) or a crashed run.
    let firewall = rack.provider.guard_host(http.local_addr()?.port())?;
    if firewall.is_some() {
        tracing::info!("host firewall installed");
    }
    let (http_stop_tx, http_stop) = watch::channel(false);
    let ctl = Arc::new(Ctl {
        rack: rack.clone(),
        origin,
        kept,
        ssh_stop: watch::channel(false).0,
        why: Mutex::new(None),
        busy: tokio::sync::Mutex::new(()),
    });
    tracing::info!(addr = %http.local_addr()?, "http listening");
    if let Some(l) = &https {
        tracing::info!(addr = %l.local_addr()?, "https listening");
    }
    // Stored certificates and HTTPS policies are in the router before it
    // accepts; the ACME loop then orders what is missing.
    rack.certs.load().await?;
    tokio::spawn(rack.certs.clone().run(http_stop.clone()));
    let mut https = https;
    let metrics = sockets.metrics.map(|m| spawn_metrics(m, &rack, &http_stop));
    let mut start_router = |http| {
        tokio::spawn(crate::router::serve_listeners(
            crate::router::Listeners {
                http,
                https: https.take(),
            },
            // An aws rack routes nothing itself: its router answers 404.
            rack.provider.router.clone().unwrap_or_default(),
            rack.settings.trusted_proxy.clone(),
            http_stop.clone(),
            rack.settings.router_threads,
            rack.settings.router_limits,
        ))
    };
    let (router, ssh_task) = match predecessor {
        Some(p) => {
            let mut link = p.ready()?;
            let ssh_task = start_ssh(&ctl, ssh)?;
            handover::wait_turn(&mut link).await;
            tracing::info!("update: the old process's sessions are over; taking over");
            rack.deployer.take_over().await?;
            let router = start_router(http);
            handover::serving(&mut link).await;
            (router, ssh_task)
        }
        None => {
            // Routes for the apps that were serving come back before new
            // sessions, and before the router accepts (for at most
            // ROUTES_HOLD): meanwhile a request waits in the listen
            // backlog rather than getting a 404.
            let recovery = rack.deployer.recover();
            tokio::pin!(recovery);
            let early = tokio::time::timeout(ROUTES_HOLD, &mut recovery).await;
            let router = start_router(http);
            match early {
                Ok(r) => r?,
                Err(_) => {
                    tracing::info!("recovery goes on; the router serves what is routed so far");
                    recovery.await?
                }
            }
            (router, start_ssh(&ctl, ssh)?)
        }
    };
    tokio::spawn(signals(ctl.clone()));
    notify("READY=1");
    let handed_over = serve_ssh_until_stopped(&ctl, ssh_task).await?;
    notify("STOPPING=1");
    http_stop_tx.send_replace(true);
    if !handed_over {
        let _ = std::fs::remove_file(&control_path);
        // A successor keeps the rules (it installed the same ones).
        if let Some(fw) = &firewall {
            if let Err(e) = fw.remove() {
                tracing::warn!(error = %e, "removing the host firewall");
            }
        }
    }
    if let Some(m) = metrics {
        let _ = m.await;
    }
    match router.await {
        Ok(r) => r,
        Err(e) => Err(anyhow!("router task: {e}")),
    }
}

/// Waits on the SSH server until it stops; `true` when it stopped because
/// a successor took over (`rack update`). If the successor dies after it
/// was ready, this process serves SSH again and keeps waiting.
async fn serve_ssh_until_stopped(
    ctl: &Arc<Ctl>,
    mut ssh_task: JoinHandle<Result<()>>,
) -> Result<bool> {
    loop {
        match ssh_task.await {
            Ok(r) => r?,
            Err(e) => return Err(anyhow!("ssh server task: {e}")),
        }
        let why = ctl.why().take();
        let Some(Why::HandOver(mut successor)) = why else {
            return Ok(false);
        };
        let wait = ctl.rack.settings.limits.update_timeout;
        match successor.hand_http(wait).await {
            Ok(()) => return Ok(true),
            Err(e) => {
                // The new process is gone: go on serving SSH here.
                tracing::error!(error = %e, "update failed after the new process was ready; this process goes on serving");
                notify(&format!("MAINPID={}", std::process::id()));
                ctl.ssh_stop.send_replace(false);
                ssh_task = start_ssh(ctl, ctl.kept.ssh_listener()?)?;
            }
        }
    }
}

/// One server per data dir: the data dir's lock, held until the process
/// exits. A successor (`rack update`) runs beside the process that holds
/// the lock and takes it once that one has gone.
fn lock_data_dir(settings: &Settings, predecessor: bool) -> Result<Option<std::fs::File>> {
    Ok(match predecessor {
        false => Some(settings.lock_data_dir(false)?),
        true => {
            let s = settings.clone();
            tokio::task::spawn_blocking(move || match s.lock_data_dir(true) {
                // Held until this process exits.
                Ok(file) => std::mem::forget(file),
                Err(e) => tracing::error!(error = %e, "taking the data dir's lock"),
            });
            None
        }
    })
}

/// The SSH server and the control socket, until `ctl.ssh_stop`.
fn start_ssh(ctl: &Arc<Ctl>, ssh: tokio::net::TcpListener) -> Result<JoinHandle<Result<()>>> {
    tracing::info!(addr = %ssh.local_addr()?, "ssh listening");
    let control = tokio::net::UnixListener::from_std(ctl.kept.control_listener()?)?;
    tokio::spawn(control_loop(ctl.clone(), control));
    Ok(tokio::spawn(crate::server::run(
        ssh,
        ctl.rack.clone(),
        ctl.ssh_stop.subscribe(),
    )))
}

fn spawn_metrics(
    listener: std::net::TcpListener,
    rack: &Arc<Rack>,
    stop: &watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (rack, stop) = (rack.clone(), stop.clone());
    tokio::spawn(async move {
        if let Err(e) = crate::metrics::serve(listener, rack, stop).await {
            tracing::error!(error = %e, "metrics endpoint");
        }
    })
}

/// Answers `update PATH` requests until the SSH server stops accepting.
async fn control_loop(ctl: Arc<Ctl>, listener: tokio::net::UnixListener) {
    let mut stop = ctl.ssh_stop.subscribe();
    loop {
        let mut conn = tokio::select! {
            c = listener.accept() => match c {
                Ok((c, _)) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = crate::router::stopped(&mut stop) => return,
        };
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let result = match control::read_request(&mut conn).await {
                Ok(control::Request::Update(binary)) => {
                    ctl.hand_over(&binary).await.map_err(|e| format!("{e:#}"))
                }
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                tracing::warn!(error = %e, "update refused");
            }
            control::answer(&mut conn, result).await;
        });
    }
}

/// SIGTERM/SIGINT: stop (sessions get the grace period). SIGUSR2: hand
/// over to the binary this server was started from.
async fn signals(ctl: Arc<Ctl>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let mut usr2 = signal(SignalKind::user_defined2()).expect("installing a SIGUSR2 handler");
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = usr2.recv() => {
                let ctl = ctl.clone();
                tokio::spawn(async move {
                    let exe = ctl.origin.exe.clone();
                    if let Err(e) = ctl.hand_over(&exe).await {
                        tracing::error!(error = %format!("{e:#}"), "update (SIGUSR2) failed; this process goes on serving");
                    }
                });
                continue;
            }
        }
        tracing::info!("signal received; stopping");
        let mut why = ctl.why();
        if why.is_none() {
            *why = Some(Why::Terminate);
        }
        drop(why);
        ctl.ssh_stop.send_replace(true);
        return;
    }
}
