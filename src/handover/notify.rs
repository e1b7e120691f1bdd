//! systemd's readiness protocol (`sd_notify`), for `Type=notify` units:
//! `READY=1` once the rack serves, `MAINPID=PID` when a handover makes
//! another process the service's main one, `STOPPING=1` on the way out.
//! Does nothing when `NOTIFY_SOCKET` is not set.

use std::os::unix::net::UnixDatagram;

/// Sends `state` to the service manager, if there is one. Failures are
/// logged: a missed notification must not stop the rack.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| {
        let sock = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        std::io::Result::Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "notifying the service manager");
    }
}
