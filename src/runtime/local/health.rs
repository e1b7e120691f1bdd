//! Readiness of new instances, probed from the rack process at the
//! container's own address on the app network (the host reaches bridge
//! IPs; nothing is published).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bollard::models::ContainerStateStatusEnum;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::docker::{first_ip, is_not_found};
use super::LocalRuntime;
use crate::runtime::HealthKind;

/// How often a starting instance is looked at: every 10 ms in its first
/// second (most apps answer within it, and each poll is one inspect plus
/// one probe), then every 50 ms.
const FAST_POLL: Duration = Duration::from_millis(10);
const FAST_FOR: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(50);
/// One probe never waits longer than this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What "ready" means for one instance.
#[derive(Debug, Clone)]
pub(super) enum Check {
    /// HTTP GET `path` answering < 500.
    Http(String),
    /// A TCP connection is accepted.
    Tcp,
    /// Running this long without a restart.
    Settle(Duration),
}

impl Check {
    pub(super) fn for_web(kind: &HealthKind, settle: Duration) -> Check {
        match kind {
            HealthKind::Http { path } => Check::Http(path.clone()),
            HealthKind::Tcp => Check::Tcp,
            HealthKind::None => Check::Settle(settle),
        }
    }
}

pub(super) struct Probe<'a> {
    pub check: Check,
    pub port: u16,
    /// `Host:` header of HTTP probes (the app's first host name).
    pub host: Option<&'a str>,
    pub deadline: Instant,
    /// For the message only.
    pub timeout: Duration,
}

impl LocalRuntime {
    /// Waits until the container `id` (shown as `source`, e.g. `web.1`) is
    /// ready. `Err` is the reason, for the user: it exited, it restarted,
    /// or it was not ready before the deadline (with the last probe error).
    pub(super) async fn wait_ready(
        &self,
        id: &str,
        source: &str,
        probe: &Probe<'_>,
    ) -> Result<(), String> {
        let mut last: String;
        let began = Instant::now();
        loop {
            match self.docker().inspect_container(id, None).await {
                Err(e) if is_not_found(&e) => {
                    return Err(format!("{source} was removed while starting"))
                }
                Err(e) => last = format!("inspecting the container: {e}"),
                Ok(c) => {
                    let restarts = c.restart_count.unwrap_or(0);
                    let state = c.state.unwrap_or_default();
                    let code = state.exit_code.unwrap_or(0);
                    let oom = if state.oom_killed == Some(true) {
                        " (out of memory)"
                    } else {
                        ""
                    };
                    if restarts > 0 {
                        return Err(format!(
                            "{source} crashed and was restarted{} before it was ready{oom}",
                            if code != 0 {
                                format!(" (exit status {code})")
                            } else {
                                String::new()
                            }
                        ));
                    }
                    match state.status {
                        Some(ContainerStateStatusEnum::EXITED)
                        | Some(ContainerStateStatusEnum::DEAD) => {
                            return Err(format!(
                                "{source} exited with status {code} before it was ready{oom}"
                            ));
                        }
                        Some(ContainerStateStatusEnum::RUNNING) => {
                            let ip = first_ip(c.network_settings.and_then(|n| n.networks));
                            match &probe.check {
                                Check::Settle(d) => {
                                    let up = state
                                        .started_at
                                        .as_deref()
                                        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
                                        .map(|t| OffsetDateTime::now_utc() - t);
                                    match up {
                                        Some(up) if up >= *d => return Ok(()),
                                        _ => {
                                            last = format!(
                                                "it must run {}s without a restart",
                                                d.as_secs()
                                            )
                                        }
                                    }
                                }
                                Check::Tcp | Check::Http(_) => match ip {
                                    None => last = "no address on the app network yet".into(),
                                    Some(ip) => {
                                        let addr = SocketAddr::new(ip, probe.port);
                                        let left = probe
                                            .deadline
                                            .saturating_duration_since(Instant::now());
                                        let limit =
                                            PROBE_TIMEOUT.min(left).max(Duration::from_millis(100));
                                        let r = match &probe.check {
                                            Check::Tcp => tcp_probe(addr, limit).await,
                                            Check::Http(path) => {
                                                http_probe(addr, probe.host, path, limit).await
                                            }
                                            Check::Settle(_) => unreachable!(),
                                        };
                                        match r {
                                            Ok(()) => return Ok(()),
                                            Err(e) => last = e,
                                        }
                                    }
                                },
                            }
                        }
                        _ => last = "starting".into(),
                    }
                }
            }
            let now = Instant::now();
            if now >= probe.deadline {
                return Err(format!(
                    "{source} was not ready within {}s: {last}",
                    probe.timeout.as_secs_f64().round() as u64
                ));
            }
            let pause = if began.elapsed() < FAST_FOR {
                FAST_POLL
            } else {
                POLL
            };
            tokio::time::sleep(pause.min(probe.deadline - now)).await;
        }
    }
}

async fn tcp_probe(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("TCP connect to port {}: {e}", addr.port())),
        Err(_) => Err(format!("TCP connect to port {}: timed out", addr.port())),
    }
}

async fn http_probe(
    addr: SocketAddr,
    host: Option<&str>,
    path: &str,
    limit: Duration,
) -> Result<(), String> {
    let what = format!("HTTP GET {path} on port {}", addr.port());
    match http_get(addr, host, path, limit, false).await {
        Ok((status, _)) if status < 500 => Ok(()),
        Ok((status, _)) => Err(format!("{what}: answered {status}")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// A minimal HTTP/1.1 GET with `Connection: close`: the status and, when
/// `body` is set, the body (up to 1 MiB; no chunked decoding). Used by the
/// health check and by tests.
pub(crate) async fn http_get(
    addr: SocketAddr,
    host: Option<&str>,
    path: &str,
    limit: Duration,
    body: bool,
) -> Result<(u16, Vec<u8>), String> {
    let path: String = path
        .chars()
        .filter(|c| !c.is_control() && *c != ' ')
        .collect();
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let host: String = host
        .map(|h| h.chars().filter(|c| !c.is_control() && *c != ' ').collect())
        .unwrap_or_else(|| addr.to_string());
    let fut = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: rack-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if !body && buf.windows(2).any(|w| w == b"\r\n") {
                break;
            }
            if buf.len() > 1 << 20 {
                break;
            }
        }
        let line_end = buf
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(buf.len());
        let line = String::from_utf8_lossy(&buf[..line_end]);
        let mut parts = line.split(' ');
        let status = match (parts.next(), parts.next()) {
            (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse::<u16>().ok(),
            _ => None,
        };
        let Some(status) = status else {
            return Err(if buf.is_empty() {
                "connection closed without an answer".to_string()
            } else {
                "not an HTTP answer".to_string()
            });
        };
        let payload = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) if body => buf[i + 4..].to_vec(),
            _ => Vec::new(),
        };
        Ok((status, payload))
    };
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err("timed out".into()),
    }
}
