//! One SSH connection: authentication and its channels.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use russh::keys::HashAlg;
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId};
use tokio::io::AsyncWriteExt;

use crate::cmd::{self, Identity};
use crate::state::Rack;

/// Shared between the connection task and its handler.
#[derive(Default)]
pub struct ConnectionState {
    pub authenticated: AtomicBool,
}

pub struct Connection {
    rack: Arc<Rack>,
    peer: Option<SocketAddr>,
    state: Arc<ConnectionState>,
    identity: Option<Identity>,
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// `GIT_PROTOCOL` from env requests; every other variable is ignored.
    git_protocol: HashMap<ChannelId, String>,
    /// A pty request waiting for its answer until we know the command:
    /// only `run` gets a terminal. OpenSSH sends pty-req and exec back to
    /// back without waiting, and replies go out in request order.
    pending_pty: HashMap<ChannelId, (u16, u16)>,
    resizers: HashMap<ChannelId, tokio::sync::mpsc::UnboundedSender<(u16, u16)>>,
}

const NO_SHELL: &str = "rack offers no shell";

impl Connection {
    pub fn new(rack: Arc<Rack>, peer: Option<SocketAddr>, state: Arc<ConnectionState>) -> Self {
        Connection {
            rack,
            peer,
            state,
            identity: None,
            channels: HashMap::new(),
            git_protocol: HashMap::new(),
            pending_pty: HashMap::new(),
            resizers: HashMap::new(),
        }
    }

    async fn lookup(&self, key: &russh::keys::PublicKey) -> Option<crate::store::KeyRecord> {
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        match self.rack.provider.store.key_by_fingerprint(&fp).await {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "looking up a key");
                None
            }
        }
    }

    fn hint(&self) -> String {
        format!(
            "{NO_SHELL}; try: ssh -p {} git@HOST help\n",
            self.rack.settings.ssh_port()
        )
    }

    /// Refuses a request on a channel that will never run anything, telling
    /// the client why, and closes it.
    fn refuse_channel(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
        msg: String,
    ) -> Result<(), russh::Error> {
        crate::metrics::refusal(crate::metrics::Refusal::no_shell);
        // Success first, so the client shows our message and exit status
        // instead of a bare "request failed".
        session.channel_success(channel)?;
        session.extended_data(channel, 1, format!("error: {msg}").into_bytes())?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)?;
        self.channels.remove(&channel);
        Ok(())
    }
}

impl Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Only spares the client a signature for a key we would refuse; no
        // identity is bound here (the key's owner is not proven yet).
        Ok(if self.lookup(offer.public_key).await.is_some() {
            Auth::Accept
        } else {
            crate::metrics::get().ssh_auth_failures.inc();
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.lookup(key.public_key).await {
            Some(k) => {
                tracing::info!(key = %k.name, peer = ?self.peer, "authenticated");
                self.identity = Some(Identity {
                    key_name: k.name,
                    admin: k.admin,
                    apps: k.apps,
                });
                self.state.authenticated.store(true, Ordering::SeqCst);
                Ok(Auth::Accept)
            }
            None => {
                crate::metrics::get().ssh_auth_failures.inc();
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.identity.is_none() || self.channels.len() >= 8 {
            return Ok(()); // dropping `reply` refuses the channel
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        self.git_protocol.remove(&channel);
        self.pending_pty.remove(&channel);
        self.resizers.remove(&channel);
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Recorded, never passed on: only a valid GIT_PROTOCOL is kept, and
        // git/ validates it again before a child sees it.
        tracing::debug!(variable = name, "env request ignored");
        if name == "GIT_PROTOCOL" && value.len() <= 32 {
            self.git_protocol.insert(channel, value.to_string());
        }
        session.channel_success(channel)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        col: u32,
        row: u32,
        _pw: u32,
        _ph: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.pending_pty.contains_key(&channel) || !self.channels.contains_key(&channel) {
            session.channel_failure(channel)?;
            return Ok(());
        }
        // Answered in exec_request: granted to `run`, refused otherwise (the
        // command still runs; OpenSSH prints "PTY allocation request failed").
        self.pending_pty
            .insert(channel, (clamp_dim(col), clamp_dim(row)));
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col: u32,
        row: u32,
        _pw: u32,
        _ph: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.resizers.get(&channel) {
            let _ = tx.send((clamp_dim(col), clamp_dim(row)));
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.pending_pty.remove(&channel).is_some() {
            session.channel_failure(channel)?;
        }
        let msg = self.hint();
        self.refuse_channel(channel, session, msg)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let msg = format!(
            "rack offers no '{}' subsystem; try: ssh -p {} git@HOST help\n",
            crate::names::printable(name),
            self.rack.settings.ssh_port()
        );
        self.refuse_channel(channel, session, msg)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single: bool,
        _proto: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let mut tty = None;
        if let Some((cols, rows)) = self.pending_pty.remove(&channel) {
            let is_run = std::str::from_utf8(data)
                .ok()
                .and_then(|t| cmd::run::split_line(t).ok())
                .is_some_and(|w| w.first().is_some_and(|n| cmd::takes_terminal(n)));
            if is_run {
                session.channel_success(channel)?;
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                self.resizers.insert(channel, tx);
                tty = Some(cmd::Tty {
                    cols,
                    rows,
                    resize: rx,
                });
            } else {
                session.channel_failure(channel)?;
            }
        }
        let (Some(identity), Some(ch)) = (self.identity.clone(), self.channels.remove(&channel))
        else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;
        let rack = self.rack.clone();
        let git_protocol = self.git_protocol.remove(&channel);
        let line = data.to_vec();
        tokio::spawn(async move {
            run_exec(rack, identity, line, ch, git_protocol, tty).await;
        });
        Ok(())
    }
}

/// Runs one exec request to completion on its own task and reports the
/// exit status; the session loop is never blocked by a command.
async fn run_exec(
    rack: Arc<Rack>,
    who: Identity,
    line: Vec<u8>,
    channel: Channel<Msg>,
    git_protocol: Option<String>,
    tty: Option<cmd::Tty>,
) {
    let (mut read_half, write_half) = channel.split();
    let mut stdout = write_half.make_writer();
    let mut stderr = write_half.make_writer_ext(Some(1));
    let stdin = read_half.make_reader();
    let code = match parse_line(&rack, &line) {
        Err(msg) => {
            let _ = stderr.write_all(format!("error: {msg}\n").as_bytes()).await;
            2
        }
        Ok((text, words)) => match crate::git::parse_exec(&text) {
            Ok(Some(service)) => {
                tracing::info!(key = %who.key_name, ?service, "git");
                super::git_bridge::run(
                    &rack,
                    &who,
                    service,
                    git_protocol.as_deref(),
                    stdin,
                    &mut stdout,
                    &mut stderr,
                )
                .await
            }
            Err(e) => {
                // A git client reads this as `fatal: remote error: ...`.
                let _ = stdout
                    .write_all(&crate::git::err_response(&e.to_string()))
                    .await;
                let _ = stderr.write_all(format!("error: {e}\n").as_bytes()).await;
                1
            }
            Ok(None) => {
                tracing::info!(key = %who.key_name, command = %words[0], "exec");
                cmd::run(
                    &rack,
                    &who,
                    words,
                    cmd::Io {
                        stdin,
                        stdout: &mut stdout,
                        stderr: &mut stderr,
                        tty,
                    },
                )
                .await
            }
        },
    };
    let _ = stdout.flush().await;
    let _ = stderr.flush().await;
    let _ = write_half.exit_status(code).await;
    let _ = write_half.eof().await;
    let _ = write_half.close().await;
}

fn clamp_dim(v: u32) -> u16 {
    v.clamp(1, 1000) as u16
}

fn parse_line(rack: &Rack, line: &[u8]) -> Result<(String, Vec<String>), String> {
    let max = rack.settings.limits.max_command_bytes;
    if line.len() > max {
        crate::metrics::refusal(crate::metrics::Refusal::command_too_long);
        return Err(format!(
            "command line is {} bytes, over the limit of {max}; pass large values with config:set APP KEY --stdin",
            line.len()
        ));
    }
    let text = std::str::from_utf8(line).map_err(|_| "command line is not UTF-8".to_string())?;
    if text.contains('\0') {
        return Err("command line contains a NUL byte".into());
    }
    let words = cmd::run::split_line(text)
        .map_err(|_| "unbalanced quotes in the command line".to_string())?;
    if words.is_empty() {
        return Err(format!("no command given; {NO_SHELL}; try: help"));
    }
    Ok((text.to_string(), words))
}
