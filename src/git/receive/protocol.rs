//! The receive-pack protocol without I/O: the ref advertisement we send,
//! the client's shallow lines, commands, capabilities and push options,
//! and the report-status lines we answer with (gitprotocol-pack).
//!
//! Does not know: sockets, the repository or libgit2 beyond `Oid`; the
//! session reads the pkt-lines and hands each one here.

use git2::Oid;

use super::{ATOMIC_FAILED, UNPACKER_ERROR};
use crate::git::pktline;
use crate::git::GitError;

/// The `ng` reason of a ref name git itself would refuse.
pub(super) const FUNNY_REFNAME: &str = "funny refname";

/// Bounds on what one push may send.
const MAX_COMMANDS: usize = 10_000;
const MAX_SHALLOW: usize = 100_000;
const MAX_PUSH_OPTIONS: usize = 100;

fn capabilities() -> String {
    format!(
        "report-status report-status-v2 delete-refs side-band-64k quiet atomic ofs-delta push-options object-format=sha1 agent=rack/{}",
        env!("CARGO_PKG_VERSION")
    )
}

#[derive(Debug, Default)]
pub(super) struct ClientCaps {
    pub report_status: bool,
    pub sideband: bool,
    pub quiet: bool,
    pub atomic: bool,
    pub push_options: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Cmd {
    pub old: Oid,
    pub new: Oid,
    pub refname: String,
    /// `None` while still accepted.
    pub error: Option<String>,
    /// For branches: the commit `new` names.
    pub commit: Option<Oid>,
}

impl Cmd {
    pub fn is_delete(&self) -> bool {
        self.new.is_zero()
    }
}

pub(super) struct Advert {
    pub refs: Vec<(String, Oid)>,
    pub shallow: Vec<Oid>,
}

/// Which ref is the deploy branch for this push.
pub(super) fn deploy_ref(configured: Option<&str>, cmds: &[Cmd]) -> Option<String> {
    if let Some(b) = configured {
        return Some(format!("refs/heads/{b}"));
    }
    ["refs/heads/main", "refs/heads/master"]
        .into_iter()
        .find(|r| cmds.iter().any(|c| c.refname == *r && !c.is_delete()))
        .map(str::to_string)
}

pub(super) fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

pub(super) fn strip_lf(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

pub(super) fn parse_oid(hex: &[u8]) -> Result<Oid, GitError> {
    let s = std::str::from_utf8(hex).map_err(|_| GitError::Protocol("bad object id".into()))?;
    if s.len() != 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GitError::Protocol(format!(
            "bad object id '{}'",
            crate::names::printable(s)
        )));
    }
    Oid::from_str(s).map_err(|_| GitError::Protocol("bad object id".into()))
}

pub(super) fn parse_command(line: &[u8]) -> Result<Cmd, GitError> {
    let bad = || {
        let shown = &line[..line.len().min(120)];
        GitError::Protocol(format!(
            "bad command '{}'",
            crate::names::printable(&String::from_utf8_lossy(shown))
        ))
    };
    if line.len() < 83 || line[40] != b' ' || line[81] != b' ' {
        return Err(bad());
    }
    let old = parse_oid(&line[..40])?;
    let new = parse_oid(&line[41..81])?;
    let refname = std::str::from_utf8(&line[82..])
        .map_err(|_| bad())?
        .to_string();
    Ok(Cmd {
        old,
        new,
        refname,
        error: None,
        commit: None,
    })
}

pub(super) fn parse_caps(caps: &[u8]) -> Result<ClientCaps, GitError> {
    let mut c = ClientCaps::default();
    for cap in caps.split(|&b| b == b' ') {
        match cap {
            b"report-status" | b"report-status-v2" => c.report_status = true,
            b"side-band-64k" => c.sideband = true,
            b"quiet" => c.quiet = true,
            b"atomic" => c.atomic = true,
            b"push-options" => c.push_options = true,
            _ if cap.starts_with(b"object-format=") && cap != b"object-format=sha1" => {
                return Err(GitError::Protocol(
                    "only sha1 repositories are supported".into(),
                ))
            }
            _ => {}
        }
    }
    Ok(c)
}

pub(super) fn advertisement(a: &Advert) -> Vec<u8> {
    let mut out = Vec::new();
    let caps = capabilities();
    if a.refs.is_empty() {
        pktline::encode_into(
            &mut out,
            format!("{} capabilities^{{}}\0{caps}\n", Oid::ZERO_SHA1).as_bytes(),
        );
    }
    for (i, (name, oid)) in a.refs.iter().enumerate() {
        let line = if i == 0 {
            format!("{oid} {name}\0{caps}\n")
        } else {
            format!("{oid} {name}\n")
        };
        if line.len() <= pktline::MAX_PKT_DATA {
            pktline::encode_into(&mut out, line.as_bytes());
        }
    }
    for oid in &a.shallow {
        pktline::encode_into(&mut out, format!("shallow {oid}\n").as_bytes());
    }
    out.extend_from_slice(pktline::FLUSH);
    out
}

/// What the client sends before the pack: shallow lines, then commands
/// (capabilities ride on the first one), up to a flush. Each line is
/// checked as it arrives, so a push over a bound is refused before the
/// rest of it is read, and nothing kept is larger than the bounds.
#[derive(Debug, Default)]
pub(super) struct CommandList {
    pub caps: ClientCaps,
    pub shallow: Vec<Oid>,
    pub cmds: Vec<Cmd>,
    /// Bytes of the lines so far.
    bytes: usize,
    max_ref_bytes: usize,
    max_bytes: usize,
}

impl CommandList {
    pub fn new(max_ref_bytes: usize, max_bytes: usize) -> Self {
        CommandList {
            max_ref_bytes,
            max_bytes,
            ..CommandList::default()
        }
    }

    /// One pkt-line of the list (the flush that ends it is the caller's).
    pub fn add_line(&mut self, line: &[u8]) -> Result<(), GitError> {
        let line = strip_lf(line);
        self.bytes += line.len();
        if self.bytes > self.max_bytes {
            return Err(GitError::Protocol(format!(
                "the push's ref updates exceed {} bytes; push fewer refs at once",
                self.max_bytes
            )));
        }
        if let Some(hex) = line.strip_prefix(b"shallow ") {
            if self.shallow.len() >= MAX_SHALLOW {
                return Err(GitError::Protocol("too many shallow lines".into()));
            }
            self.shallow.push(parse_oid(hex)?);
            return Ok(());
        }
        if line.starts_with(b"push-cert") {
            return Err(GitError::Protocol(
                "push certificates are not supported".into(),
            ));
        }
        if self.cmds.len() >= MAX_COMMANDS {
            return Err(GitError::Protocol(format!(
                "more than {MAX_COMMANDS} ref updates in one push"
            )));
        }
        let (cmd_part, cap_part) = match line.iter().position(|&b| b == 0) {
            Some(i) => (&line[..i], Some(&line[i + 1..])),
            None => (line, None),
        };
        if let Some(c) = cap_part {
            if self.cmds.is_empty() {
                self.caps = parse_caps(c)?;
            }
        }
        if cmd_part.len() > 82 + self.max_ref_bytes {
            return Err(GitError::Protocol(format!(
                "a ref name is longer than {} bytes",
                self.max_ref_bytes
            )));
        }
        let mut cmd = parse_command(cmd_part)?;
        if !cmd.refname.starts_with("refs/") || !git2::Reference::is_valid_name(&cmd.refname) {
            cmd.error = Some(FUNNY_REFNAME.into());
        }
        self.cmds.push(cmd);
        Ok(())
    }

    /// Nothing at all was sent (a client that hung up after the
    /// advertisement).
    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty() && self.shallow.is_empty()
    }
}

/// One push option (`git push -o`) added to `options`.
pub(super) fn add_push_option(options: &mut Vec<String>, data: &[u8]) -> Result<(), GitError> {
    if options.len() >= MAX_PUSH_OPTIONS {
        return Err(GitError::Protocol(format!(
            "more than {MAX_PUSH_OPTIONS} push options"
        )));
    }
    let opt = String::from_utf8(strip_lf(data).to_vec())
        .map_err(|_| GitError::Protocol("push option is not UTF-8".into()))?;
    options.push(opt);
    Ok(())
}

/// Marks the commands that cannot go ahead: all of them when the pack was
/// refused; with `atomic`, all of them when any one failed.
pub(super) fn refuse_unpushable(cmds: &mut [Cmd], unpack_failed: bool, atomic: bool) {
    if unpack_failed {
        for c in cmds.iter_mut() {
            c.error = Some(UNPACKER_ERROR.into());
        }
    }
    if atomic && cmds.iter().any(|c| c.error.is_some()) {
        for c in cmds.iter_mut() {
            c.error.get_or_insert_with(|| ATOMIC_FAILED.into());
        }
    }
}

/// The report-status lines: `unpack ok|<reason>`, then `ok|ng` per command.
pub(super) fn report_lines(unpack_error: Option<&str>, cmds: &[Cmd]) -> Vec<String> {
    let mut lines = vec![match unpack_error {
        None => "unpack ok\n".to_string(),
        Some(e) => format!("unpack {}\n", one_line(e)),
    }];
    for c in cmds {
        lines.push(match &c.error {
            None => format!("ok {}\n", c.refname),
            Some(e) => format!("ng {} {}\n", c.refname, one_line(e)),
        });
    }
    lines
}
