//! A native receive-pack (gitprotocol-pack, protocol v0 with
//! side-band-64k): what `git push` talks to.
//!
//! The pack streams through [`PackScanner`] (object and pack size limits,
//! end of pack) into libgit2's indexer, writing into a quarantine dir under
//! `objects/`. Nothing reaches `objects/pack` unless at least one ref update
//! is accepted; every ref moves by compare-and-swap. The deploy branch is
//! handed to a [`PushHook`], whose progress streams back as `remote:` lines.

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use git2::{ErrorCode, ObjectType, Oid};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::pack::{PackScanner, ScanError};
use super::pktline::{self, Packet, PktReader};
use super::GitError;
use crate::progress::{Progress, ProgressRx};

/// Quarantine dirs are `objects/incoming-*`; start-up removes stale ones.
pub const QUARANTINE_PREFIX: &str = "incoming-";

/// Bounds on what one push may send.
const MAX_COMMANDS: usize = 10_000;
const MAX_SHALLOW: usize = 100_000;
const MAX_PUSH_OPTIONS: usize = 100;
/// Progress queued for a client that does not read is dropped beyond this.
const MAX_PENDING_OUTPUT: usize = 1 << 20;
/// Chunks of pack in flight between the socket and the indexer.
const PACK_CHANNEL_CHUNKS: usize = 8;
const PACK_READ_CHUNK: usize = 64 * 1024;

pub const STALE: &str = "stale info";
pub const MOVED_WHILE_WAITING: &str = "ref moved while waiting; fetch and push again";
pub const DELETE_DEPLOY: &str = "cannot delete the deploy branch";
pub const ATOMIC_FAILED: &str = "atomic push failure";
pub const UNPACKER_ERROR: &str = "unpacker error";
pub const NOT_A_COMMIT: &str = "a branch must point to a commit";

#[derive(Debug, Clone)]
pub struct ReceiveLimits {
    /// Largest pack one push may send.
    pub max_pack_bytes: u64,
    /// Largest single object (after delta resolution), as GitHub does.
    pub max_object_bytes: u64,
    /// An empty side-band packet goes out after this long without output.
    pub keepalive: Duration,
}

impl Default for ReceiveLimits {
    fn default() -> Self {
        ReceiveLimits {
            max_pack_bytes: 2 << 30,
            max_object_bytes: 100 << 20,
            keepalive: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReceiveRequest {
    pub app: String,
    pub repo: PathBuf,
    /// The app's deploy branch (`main`, not `refs/heads/main`); `None` until
    /// the first push of `main` or `master` fixes it.
    pub deploy_branch: Option<String>,
    pub limits: ReceiveLimits,
}

#[derive(Debug, Clone)]
pub struct RefResult {
    pub refname: String,
    pub old: Oid,
    pub new: Oid,
    /// `Err(reason)` was reported to the client as `ng <ref> <reason>`.
    pub result: Result<(), String>,
}

#[derive(Debug, Clone, Default)]
pub struct ReceiveOutcome {
    /// One per command, in the client's order. Empty when the client had
    /// nothing to push.
    pub refs: Vec<RefResult>,
    pub push_options: Vec<String>,
    /// Set when this push fixed the deploy branch (first push of `main` or
    /// `master`): the caller records it. HEAD already points at it.
    pub new_deploy_branch: Option<String>,
}

/// What to do with an accepted update of the deploy branch.
pub trait PushHook: Send + Sync {
    /// Called for an accepted update of the deploy branch, after its objects
    /// are in the repo and before the ref moves. The hook must call
    /// `push.apply()` (ref compare-and-swap) at its commit point; if it
    /// returns Ok without having applied, receive-pack applies it.
    /// `Err(reason)` becomes `ng <ref> <reason>` and the ref stays where it
    /// was, so a hook must not return Err after a successful `apply()`.
    fn deploy<'a>(
        &'a self,
        push: &'a DeployPush,
        progress: Progress,
    ) -> futures::future::BoxFuture<'a, Result<(), String>>;
}

/// A hook that accepts every push without doing anything (stores the ref).
pub struct StoreOnly;

impl PushHook for StoreOnly {
    fn deploy<'a>(
        &'a self,
        _push: &'a DeployPush,
        _progress: Progress,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// An accepted update of the deploy branch, waiting for its deploy.
#[derive(Debug)]
pub struct DeployPush {
    pub app: String,
    /// `refs/heads/BRANCH`.
    pub refname: String,
    /// Zero on the first push.
    pub old: Oid,
    /// The pushed commit.
    pub new: Oid,
    pub push_options: Vec<String>,
    repo: PathBuf,
    /// What the ref is set to: the id the client sent (today always `new`).
    target: Oid,
    applied: AtomicBool,
}

impl DeployPush {
    /// Whether the ref still has the value the push expects (checked again
    /// under the per-app deploy lock).
    pub fn ref_unchanged(&self) -> Result<bool, String> {
        let repo = git2::Repository::open_bare(&self.repo).map_err(|e| e.message().to_string())?;
        let current = ref_value(&repo, &self.refname).map_err(|e| e.message().to_string())?;
        Ok(current == self.old)
    }

    /// Moves the ref from `old` to the pushed id, compare-and-swap. Calling
    /// it again after success is a no-op.
    pub fn apply(&self) -> Result<(), String> {
        if self.applied.load(Ordering::SeqCst) {
            return Ok(());
        }
        let repo = git2::Repository::open_bare(&self.repo).map_err(|e| e.message().to_string())?;
        match cas(&repo, &self.refname, self.old, self.target) {
            Ok(()) => {
                self.applied.store(true, Ordering::SeqCst);
                Ok(())
            }
            Err(CasError::Stale) => Err(MOVED_WHILE_WAITING.to_string()),
            Err(CasError::Other(m)) => Err(m),
        }
    }

    /// The bare repository the pushed objects are in (for the build context).
    pub fn repo(&self) -> &Path {
        &self.repo
    }

    pub fn is_applied(&self) -> bool {
        self.applied.load(Ordering::SeqCst)
    }
}

/// `ERR <msg>` as a pkt-line: what to send a git client (instead of the ref
/// advertisement) when the request cannot be served, e.g. an unknown app.
/// `git` shows it as `fatal: remote error: <msg>`.
pub fn err_response(msg: &str) -> Vec<u8> {
    let mut text = format!("ERR {}", msg.replace('\n', " "));
    text.truncate(pktline::MAX_PKT_DATA - 1);
    text.push('\n');
    pktline::encode(text.as_bytes())
}

fn capabilities() -> String {
    format!(
        "report-status report-status-v2 delete-refs side-band-64k quiet atomic ofs-delta push-options object-format=sha1 agent=rack/{}",
        env!("CARGO_PKG_VERSION")
    )
}

#[derive(Debug, Default)]
struct ClientCaps {
    report_status: bool,
    sideband: bool,
    quiet: bool,
    atomic: bool,
    push_options: bool,
}

#[derive(Debug, Clone)]
struct Cmd {
    old: Oid,
    new: Oid,
    refname: String,
    /// `None` while still accepted.
    error: Option<String>,
    /// For branches: the commit `new` names.
    commit: Option<Oid>,
}

impl Cmd {
    fn is_delete(&self) -> bool {
        self.new.is_zero()
    }
}

struct Advert {
    refs: Vec<(String, Oid)>,
    shallow: Vec<Oid>,
}

/// Serves one `git push`. `Ok` means the exchange completed (some refs may
/// have been refused: see the outcome); the SSH layer then exits 0. `Err`
/// means the client broke off or the repository is unusable; where the
/// protocol allows, the client has been told.
pub async fn receive_pack<R, W>(
    req: ReceiveRequest,
    input: R,
    mut output: W,
    hook: &dyn PushHook,
) -> Result<ReceiveOutcome, GitError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    // 1. Advertisement.
    let repo = req.repo.clone();
    let advert = match blocking(move || read_advert(&repo)).await {
        Ok(a) => a,
        Err(e) => {
            let msg = match &e {
                GitError::NoRepo(_) => format!("app '{}' has no repository", req.app),
                _ => format!("cannot read the repository of app '{}'", req.app),
            };
            let _ = output.write_all(&err_response(&msg)).await;
            let _ = output.flush().await;
            return Err(e);
        }
    };
    // A client with nothing to push reads the advertisement, sends a flush
    // and hangs up, possibly before our flush returns: a failed flush here
    // is not an error; reading the commands tells what the client did.
    if output.write_all(&advertisement(&advert)).await.is_err() {
        return Ok(ReceiveOutcome::default());
    }
    let _ = output.flush().await;

    // 2. Shallow lines and commands.
    let mut reader = PktReader::new(BufReader::with_capacity(PACK_READ_CHUNK, input));
    let mut caps = ClientCaps::default();
    let mut client_shallow: Vec<Oid> = Vec::new();
    let mut cmds: Vec<Cmd> = Vec::new();
    loop {
        let pkt = match reader.read_packet().await? {
            // A client that hangs up after the advertisement (ls-remote
            // against receive-pack, or nothing to do).
            None if cmds.is_empty() && client_shallow.is_empty() => {
                return Ok(ReceiveOutcome::default())
            }
            None => {
                return Err(GitError::Protocol(
                    "unexpected end of input in commands".into(),
                ))
            }
            Some(p) => p,
        };
        let line = match pkt {
            Packet::Flush => break,
            Packet::Data(d) => d,
            _ => return Err(GitError::Protocol("unexpected packet in commands".into())),
        };
        let line = strip_lf(&line);
        if let Some(hex) = line.strip_prefix(b"shallow ") {
            if client_shallow.len() >= MAX_SHALLOW {
                return Err(GitError::Protocol("too many shallow lines".into()));
            }
            client_shallow.push(parse_oid(hex)?);
            continue;
        }
        if line.starts_with(b"push-cert") {
            return Err(GitError::Protocol(
                "push certificates are not supported".into(),
            ));
        }
        if cmds.len() >= MAX_COMMANDS {
            return Err(GitError::Protocol(format!(
                "more than {MAX_COMMANDS} ref updates in one push"
            )));
        }
        let (cmd_part, cap_part) = match line.iter().position(|&b| b == 0) {
            Some(i) => (&line[..i], Some(&line[i + 1..])),
            None => (line, None),
        };
        if let Some(c) = cap_part {
            if cmds.is_empty() {
                caps = parse_caps(c)?;
            }
        }
        cmds.push(parse_command(cmd_part)?);
    }
    if cmds.is_empty() {
        return Ok(ReceiveOutcome::default());
    }

    // 3. Push options.
    let mut push_options = Vec::new();
    if caps.push_options {
        loop {
            match reader.expect_packet().await? {
                Packet::Flush => break,
                Packet::Data(d) => {
                    if push_options.len() >= MAX_PUSH_OPTIONS {
                        return Err(GitError::Protocol(format!(
                            "more than {MAX_PUSH_OPTIONS} push options"
                        )));
                    }
                    let opt = String::from_utf8(strip_lf(&d).to_vec())
                        .map_err(|_| GitError::Protocol("push option is not UTF-8".into()))?;
                    push_options.push(opt);
                }
                _ => {
                    return Err(GitError::Protocol(
                        "unexpected packet in push options".into(),
                    ))
                }
            }
        }
    }

    // From here on, output goes through a writer running beside the work,
    // so a client that stops reading never stalls a deploy.
    let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let pending = Arc::new(AtomicUsize::new(0));
    let mut out = Out {
        tx,
        pending: pending.clone(),
        sideband: caps.sideband,
        last: Instant::now(),
    };
    let writer = write_loop(&mut output, rx, pending);
    let session = Session {
        req: &req,
        caps: &caps,
        hook,
        client_shallow,
        push_options,
    };
    let work = async {
        let r = session.run(reader.into_inner(), cmds, &mut out).await;
        drop(out);
        r
    };
    let (result, ()) = tokio::join!(work, writer);
    let _ = output.flush().await;
    result
}

struct Session<'a> {
    req: &'a ReceiveRequest,
    caps: &'a ClientCaps,
    hook: &'a dyn PushHook,
    client_shallow: Vec<Oid>,
    push_options: Vec<String>,
}

impl Session<'_> {
    async fn run<R: AsyncRead + Unpin + Send>(
        self,
        mut input: BufReader<R>,
        mut cmds: Vec<Cmd>,
        out: &mut Out,
    ) -> Result<ReceiveOutcome, GitError> {
        let limits = &self.req.limits;
        let started = std::time::Instant::now();
        let ms = |t: std::time::Instant| t.elapsed().as_millis() as u64;
        let deploy_ref = deploy_ref(self.req.deploy_branch.as_deref(), &cmds);

        // 4. The pack, if any command creates or updates a ref.
        let mut quarantine: Option<Quarantine> = None;
        let mut entries = Vec::new();
        let mut unpack_error: Option<String> = None;
        if cmds.iter().any(|c| !c.is_delete()) {
            let q = Quarantine::new(&self.req.repo);
            match receive_pack_data(&mut input, &self.req.repo, &q.dir, limits).await {
                Ok(e) => {
                    quarantine = Some(q);
                    entries = e;
                }
                Err(PackFailure { message, read_on }) => {
                    out.progress(&format!("error: {message}"));
                    unpack_error = Some(message);
                    drop(q);
                    if !read_on {
                        // The client may still be sending; answer anyway and
                        // let the caller close the channel.
                        tracing::info!(app = %self.req.app, "push refused before the end of its pack");
                    }
                }
            }
        }

        tracing::debug!(app = %self.req.app, ms = ms(started), "pack received");
        // 5. Check the new objects and every command.
        if unpack_error.is_none() {
            let repo = self.req.repo.clone();
            let qdir = quarantine.as_ref().map(|q| q.dir.clone());
            let shallow = self.client_shallow.clone();
            let dref = deploy_ref.clone();
            let cmds_in = cmds.clone();
            let checked = out
                .drive(
                    blocking(move || {
                        let checked = check_push(
                            &repo,
                            qdir.as_deref(),
                            &entries,
                            cmds_in,
                            &shallow,
                            dref.as_deref(),
                        );
                        drop(entries);
                        super::release_free_memory();
                        checked
                    }),
                    None,
                    limits.keepalive,
                )
                .await?;
            cmds = checked.cmds;
            if let Some(e) = checked.pack_error {
                out.progress(&format!("error: {e}"));
                unpack_error = Some(e);
            } else if !checked.shallow.is_empty() {
                let repo = self.req.repo.clone();
                let shallow = checked.shallow;
                blocking(move || record_shallow(&repo, &shallow)).await?;
            }
        }
        if unpack_error.is_some() {
            for c in cmds.iter_mut() {
                c.error = Some(UNPACKER_ERROR.into());
            }
        }
        if self.caps.atomic && cmds.iter().any(|c| c.error.is_some()) {
            for c in cmds.iter_mut() {
                c.error.get_or_insert_with(|| ATOMIC_FAILED.into());
            }
        }

        tracing::debug!(app = %self.req.app, ms = ms(started), "push checked");
        // 6. Objects into the repo only when some update needs them.
        let pack_added = match quarantine.take() {
            Some(q) if cmds.iter().any(|c| c.error.is_none() && !c.is_delete()) => {
                let repo = self.req.repo.clone();
                blocking(move || q.commit(&repo)).await?
            }
            _ => false,
        };

        // 7. Refs.
        let skip_deploy = self.push_options.iter().any(|o| o == "skip-deploy");
        let deploy_idx = deploy_ref.as_deref().and_then(|d| {
            cmds.iter()
                .position(|c| c.refname == d && c.error.is_none() && !c.is_delete())
        });
        let mut deploy_accepted = false;
        if self.caps.atomic {
            if cmds.iter().all(|c| c.error.is_none()) {
                let mut hook_applied = false;
                if let (Some(i), false) = (deploy_idx, skip_deploy) {
                    match self.run_hook(&cmds[i], out).await {
                        Ok(applied) => hook_applied = applied,
                        Err(reason) => {
                            for (j, c) in cmds.iter_mut().enumerate() {
                                c.error = Some(if j == i {
                                    reason.clone()
                                } else {
                                    ATOMIC_FAILED.into()
                                });
                            }
                        }
                    }
                }
                if cmds.iter().all(|c| c.error.is_none()) {
                    let rest: Vec<Cmd> = cmds
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| !(hook_applied && Some(*j) == deploy_idx))
                        .map(|(_, c)| c.clone())
                        .collect();
                    let repo = self.req.repo.clone();
                    if let Err(reason) = blocking(move || Ok(apply_atomic(&repo, &rest))).await? {
                        for c in cmds.iter_mut() {
                            c.error = Some(reason.clone());
                        }
                        if hook_applied {
                            tracing::error!(app = %self.req.app, "atomic push: deploy branch moved but other refs failed: {reason}");
                        }
                    }
                    deploy_accepted =
                        deploy_idx.is_some() && cmds.iter().all(|c| c.error.is_none());
                }
            }
        } else {
            // Other refs are only stored: do them first, quickly.
            let others: Vec<(usize, Cmd)> = cmds
                .iter()
                .enumerate()
                .filter(|(j, c)| c.error.is_none() && Some(*j) != deploy_idx)
                .map(|(j, c)| (j, c.clone()))
                .collect();
            let repo = self.req.repo.clone();
            let results = blocking(move || {
                let repo = git2::Repository::open_bare(&repo)?;
                Ok(others
                    .into_iter()
                    .map(|(j, c)| {
                        let r = match cas(&repo, &c.refname, c.old, c.new) {
                            Ok(()) => None,
                            Err(CasError::Stale) => Some(STALE.to_string()),
                            Err(CasError::Other(m)) => Some(m),
                        };
                        (j, r)
                    })
                    .collect::<Vec<_>>())
            })
            .await?;
            for (j, r) in results {
                cmds[j].error = r;
            }
            if let Some(i) = deploy_idx {
                let r = if skip_deploy {
                    let repo = self.req.repo.clone();
                    let c = cmds[i].clone();
                    blocking(move || {
                        let repo = git2::Repository::open_bare(&repo)?;
                        Ok(match cas(&repo, &c.refname, c.old, c.new) {
                            Ok(()) => Ok(()),
                            Err(CasError::Stale) => Err(STALE.to_string()),
                            Err(CasError::Other(m)) => Err(m),
                        })
                    })
                    .await?
                } else {
                    self.run_hook(&cmds[i], out).await.map(|_| ())
                };
                match r {
                    Ok(()) => deploy_accepted = true,
                    Err(reason) => cmds[i].error = Some(reason),
                }
            }
        }

        // 8. The deploy branch follows its first push; HEAD follows it.
        let mut new_deploy_branch = None;
        if deploy_accepted {
            let dref = deploy_ref.clone().expect("deploy_idx implies deploy_ref");
            if self.req.deploy_branch.is_none() {
                new_deploy_branch = dref.strip_prefix("refs/heads/").map(str::to_string);
            }
            let repo = self.req.repo.clone();
            if let Err(e) = blocking(move || {
                let repo = git2::Repository::open_bare(&repo)?;
                if repo.find_reference("HEAD")?.symbolic_target()? != Some(dref.as_str()) {
                    repo.set_head(&dref)?;
                }
                Ok(())
            })
            .await
            {
                tracing::warn!(app = %self.req.app, error = %e, "could not point HEAD at the deploy branch");
            }
        }

        tracing::debug!(app = %self.req.app, ms = ms(started), "refs updated");
        // 9. Report.
        if self.caps.report_status {
            let mut lines = vec![match &unpack_error {
                None => "unpack ok\n".to_string(),
                Some(e) => format!("unpack {}\n", one_line(e)),
            }];
            for c in &cmds {
                lines.push(match &c.error {
                    None => format!("ok {}\n", c.refname),
                    Some(e) => format!("ng {} {}\n", c.refname, one_line(e)),
                });
            }
            out.report(&lines);
        }
        if pack_added {
            super::maybe_repack(&self.req.repo);
        }
        Ok(ReceiveOutcome {
            refs: cmds
                .into_iter()
                .map(|c| RefResult {
                    refname: c.refname,
                    old: c.old,
                    new: c.new,
                    result: match c.error {
                        None => Ok(()),
                        Some(e) => Err(e),
                    },
                })
                .collect(),
            push_options: self.push_options,
            new_deploy_branch,
        })
    }

    /// Runs the hook for the deploy branch; `Ok(applied_by_hook)`.
    async fn run_hook(&self, cmd: &Cmd, out: &mut Out) -> Result<bool, String> {
        let push = DeployPush {
            app: self.req.app.clone(),
            refname: cmd.refname.clone(),
            old: cmd.old,
            new: cmd.commit.unwrap_or(cmd.new),
            push_options: self.push_options.clone(),
            repo: self.req.repo.clone(),
            target: cmd.new,
            applied: AtomicBool::new(false),
        };
        let (progress, mut rx) = Progress::channel();
        let result = out
            .drive(
                self.hook.deploy(&push, progress),
                Some(&mut rx),
                self.req.limits.keepalive,
            )
            .await;
        match result {
            Ok(()) if push.is_applied() => Ok(true),
            Ok(()) => {
                // Quick file operations: fine on this thread.
                push.apply()?;
                Ok(false)
            }
            Err(reason) => {
                if push.is_applied() {
                    tracing::error!(app = %self.req.app, "push hook failed after moving {}: {reason}", cmd.refname);
                }
                Err(reason)
            }
        }
    }
}

/// Which ref is the deploy branch for this push.
fn deploy_ref(configured: Option<&str>, cmds: &[Cmd]) -> Option<String> {
    if let Some(b) = configured {
        return Some(format!("refs/heads/{b}"));
    }
    ["refs/heads/main", "refs/heads/master"]
        .into_iter()
        .find(|r| cmds.iter().any(|c| c.refname == *r && !c.is_delete()))
        .map(str::to_string)
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn strip_lf(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

fn parse_oid(hex: &[u8]) -> Result<Oid, GitError> {
    let s = std::str::from_utf8(hex).map_err(|_| GitError::Protocol("bad object id".into()))?;
    if s.len() != 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GitError::Protocol(format!(
            "bad object id '{}'",
            crate::names::printable(s)
        )));
    }
    Oid::from_str(s).map_err(|_| GitError::Protocol("bad object id".into()))
}

fn parse_command(line: &[u8]) -> Result<Cmd, GitError> {
    let bad = || {
        GitError::Protocol(format!(
            "bad command '{}'",
            crate::names::printable(&String::from_utf8_lossy(line))
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

fn parse_caps(caps: &[u8]) -> Result<ClientCaps, GitError> {
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

fn advertisement(a: &Advert) -> Vec<u8> {
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

fn read_advert(path: &Path) -> Result<Advert, GitError> {
    let repo = super::open(path)?;
    let mut refs = Vec::new();
    for r in repo.references()? {
        let r = r?;
        let (Ok(name), Some(oid)) = (r.name(), r.target()) else {
            continue;
        };
        refs.push((name.to_string(), oid));
    }
    refs.sort();
    Ok(Advert {
        refs,
        shallow: read_shallow(path)?,
    })
}

fn read_shallow(repo: &Path) -> Result<Vec<Oid>, GitError> {
    match std::fs::read_to_string(repo.join("shallow")) {
        Ok(s) => Ok(s
            .lines()
            .filter_map(|l| Oid::from_str(l.trim()).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Adds `oids` to the repo's `shallow` file (atomically, under its lock).
fn record_shallow(repo: &Path, oids: &[Oid]) -> Result<(), GitError> {
    let lock = repo.join("shallow.lock");
    let mut tries = 0;
    let mut f = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(f) => break f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let result = (|| {
        let mut all = read_shallow(repo)?;
        all.extend_from_slice(oids);
        all.sort();
        all.dedup();
        let text: String = all.iter().map(|o| format!("{o}\n")).collect();
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&lock, repo.join("shallow"))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&lock);
    }
    result
}

/// The current value of a ref; zero when it does not exist.
fn ref_value(repo: &git2::Repository, name: &str) -> Result<Oid, git2::Error> {
    match repo.find_reference(name) {
        Ok(r) => match r.target() {
            Some(oid) => Ok(oid),
            None => Err(git2::Error::from_str("symbolic ref")),
        },
        Err(e) if e.code() == ErrorCode::NotFound => Ok(Oid::ZERO_SHA1),
        Err(e) => Err(e),
    }
}

enum CasError {
    Stale,
    Other(String),
}

fn cas_error(e: git2::Error) -> CasError {
    match e.code() {
        ErrorCode::Modified | ErrorCode::NotFound | ErrorCode::Exists | ErrorCode::Locked => {
            CasError::Stale
        }
        _ => CasError::Other(e.message().to_string()),
    }
}

/// Moves `name` from `old` to `new` (zero `new` deletes, zero `old` creates),
/// failing with `Stale` if it is not at `old` any more.
fn cas(repo: &git2::Repository, name: &str, old: Oid, new: Oid) -> Result<(), CasError> {
    if new.is_zero() {
        let mut r = match repo.find_reference(name) {
            Ok(r) => r,
            Err(e) if e.code() == ErrorCode::NotFound && old.is_zero() => return Ok(()),
            Err(e) => return Err(cas_error(e)),
        };
        if r.target() != Some(old) {
            return Err(CasError::Stale);
        }
        // libgit2 deletes only if the ref still has the value just read.
        return r.delete().map_err(cas_error);
    }
    repo.reference_matching(name, new, true, old, "push")
        .map(|_| ())
        .map_err(cas_error)
}

/// All of `cmds` or none: lock every ref, check every old value, commit.
fn apply_atomic(path: &Path, cmds: &[Cmd]) -> Result<(), String> {
    let repo = git2::Repository::open_bare(path).map_err(|e| e.message().to_string())?;
    let sig =
        git2::Signature::now("rack", "rack@localhost").map_err(|e| e.message().to_string())?;
    let mut tx = repo.transaction().map_err(|e| e.message().to_string())?;
    for c in cmds {
        tx.lock_ref(&c.refname).map_err(|_| STALE.to_string())?;
    }
    for c in cmds {
        let current = ref_value(&repo, &c.refname).map_err(|e| e.message().to_string())?;
        if current != c.old {
            return Err(STALE.to_string());
        }
    }
    for c in cmds {
        let r = if c.is_delete() {
            if c.old.is_zero() {
                continue;
            }
            tx.remove(&c.refname)
        } else {
            tx.set_target(&c.refname, c.new, Some(&sig), "push")
        };
        r.map_err(|e| e.message().to_string())?;
    }
    tx.commit().map_err(|e| e.message().to_string())
}

/// A quarantine dir under `objects/`; removed on drop (after a commit it
/// is empty).
struct Quarantine {
    dir: PathBuf,
}

impl Quarantine {
    fn new(repo: &Path) -> Quarantine {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "{QUARANTINE_PREFIX}{}-{}-{nanos:08x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        Quarantine {
            dir: repo.join("objects").join(name),
        }
    }

    /// Moves the pack (if any) into `objects/pack`: the `.pack` before the
    /// `.idx`, so an index never names a missing pack. Returns whether a
    /// pack was added.
    fn commit(self, repo: &Path) -> Result<bool, GitError> {
        let src = self.dir.join("pack");
        let dst = repo.join("objects/pack");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&src) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        files.retain(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.starts_with("pack-") && !n.ends_with(".lock") && !n.contains("tmp")
        });
        let rank = |p: &PathBuf| match p.extension().and_then(|e| e.to_str()) {
            Some("pack") => 0,
            Some("idx") => 2,
            _ => 1,
        };
        files.sort_by_key(rank);
        let added = files.iter().any(|p| rank(p) == 0);
        std::fs::create_dir_all(&dst)?;
        for f in &files {
            let name = f.file_name().expect("read_dir entries have names");
            std::fs::rename(f, dst.join(name))?;
        }
        Ok(added)
    }
}

impl Drop for Quarantine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct PackFailure {
    message: String,
    /// Whether the whole pack was read (the client will read our answer).
    read_on: bool,
}

/// Reads the pack from `input` into the indexer in `qdir`.
async fn receive_pack_data<R: AsyncRead + Unpin + Send>(
    input: &mut BufReader<R>,
    repo: &Path,
    qdir: &Path,
    limits: &ReceiveLimits,
) -> Result<Vec<(u64, u8)>, PackFailure> {
    let (tx, rx) = mpsc::channel::<Bytes>(PACK_CHANNEL_CHUNKS);
    let repo = repo.to_path_buf();
    let qdir = qdir.to_path_buf();
    let (max_obj, max_pack) = (limits.max_object_bytes, limits.max_pack_bytes);
    let mut task = tokio::task::spawn_blocking(move || {
        let r = index_pack(&repo, &qdir, max_obj, max_pack, rx);
        super::release_free_memory();
        r
    });
    let mut tx = Some(tx);
    let mut buf = BytesMut::with_capacity(PACK_READ_CHUNK);
    let joined = loop {
        let Some(sender) = tx.as_ref() else {
            break (&mut task).await;
        };
        buf.reserve(PACK_READ_CHUNK);
        tokio::select! {
            biased;
            r = &mut task => break r,
            n = input.read_buf(&mut buf) => match n {
                Ok(0) | Err(_) => tx = None,
                Ok(_) => {
                    let chunk = buf.split().freeze();
                    tokio::select! {
                        biased;
                        r = &mut task => break r,
                        s = sender.send(chunk) => if s.is_err() { tx = None },
                    }
                }
            },
        }
    };
    match joined {
        Ok(r) => r,
        Err(e) => Err(PackFailure {
            message: format!("indexer failed: {e}"),
            read_on: false,
        }),
    }
}

/// The blocking half: scan, index, commit into `qdir/pack`.
///
/// The indexer gets the repo's ODB (to complete a thin pack from it) but
/// does not verify connectivity: its check asks the ODB about every id each
/// new tree and commit names, and each miss (every object new to the repo)
/// rescans `objects/pack`. `check_pack` checks the indexed pack instead.
fn index_pack(
    repo: &Path,
    qdir: &Path,
    max_obj: u64,
    max_pack: u64,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<Vec<(u64, u8)>, PackFailure> {
    let fail = |message: String, read_on: bool| PackFailure { message, read_on };
    let repo =
        git2::Repository::open_bare(repo).map_err(|e| fail(e.message().to_string(), false))?;
    let odb = repo
        .odb()
        .map_err(|e| fail(e.message().to_string(), false))?;
    let pack_dir = qdir.join("pack");
    std::fs::create_dir_all(&pack_dir)
        .map_err(|e| fail(format!("cannot create quarantine: {e}"), false))?;
    let mut indexer = Some(
        git2::Indexer::new(Some(&odb), &pack_dir, 0, false)
            .map_err(|e| fail(e.message().to_string(), false))?,
    );
    let mut scanner = PackScanner::new(max_obj, max_pack);
    while let Some(chunk) = rx.blocking_recv() {
        let mut off = 0;
        while off < chunk.len() && !scanner.is_done() {
            let n = scanner
                .feed(&chunk[off..])
                .map_err(|e| fail(e.to_string(), false))?;
            if scanner.refused().is_some() {
                // Not one more byte of this pack for the indexer.
                indexer = None;
            } else if let Some(ix) = indexer.as_mut() {
                ix.write_all(&chunk[off..off + n])
                    .map_err(|e| fail(format!("corrupt pack: {e}"), false))?;
            }
            off += n;
        }
        if scanner.is_done() {
            break;
        }
    }
    drop(rx);
    if !scanner.is_done() {
        return Err(fail(
            "pack truncated: the client stopped before the end of its pack".into(),
            false,
        ));
    }
    if let Some(e @ ScanError::ObjectTooLarge { .. }) = scanner.refused() {
        return Err(fail(format!("{e}; push refused"), true));
    }
    if scanner.object_count() == 0 {
        return Ok(Vec::new());
    }
    let ix = indexer.expect("indexer kept while nothing was refused");
    ix.commit()
        .map_err(|e| fail(format!("bad pack: {}", e.message()), true))?;
    Ok(scanner.into_entries())
}

/// What `check_push` found.
struct Checked {
    cmds: Vec<Cmd>,
    /// A reason to refuse the whole pack.
    pack_error: Option<String>,
    /// Shallow boundaries to record.
    shallow: Vec<Oid>,
}

/// Checks the quarantined objects (tree entry names; connectivity for
/// shallow pushes) and every command against the refs as they are now.
fn check_push(
    path: &Path,
    qdir: Option<&Path>,
    entries: &[(u64, u8)],
    mut cmds: Vec<Cmd>,
    client_shallow: &[Oid],
    deploy_ref: Option<&str>,
) -> Result<Checked, GitError> {
    // As git does: an object's id is checked when it enters the repo (the
    // indexer computes every id of a pushed pack from its content), not
    // again on every read; libgit2's default re-hashes each object read,
    // a quarter of check_pack's time.
    static NO_REHASH: std::sync::Once = std::sync::Once::new();
    NO_REHASH.call_once(|| git2::opts::strict_hash_verification(false));
    // `main` sees only what the repo had before this push; `all` also sees
    // the quarantine.
    let main = git2::Repository::open_bare(path)?;
    let all = git2::Repository::open_bare(path)?;
    let mut pack_error = None;
    let mut shallow = Vec::new();
    if let Some(qdir) = qdir {
        let qstr = qdir
            .to_str()
            .ok_or_else(|| GitError::Protocol("non-UTF-8 repo path".into()))?;
        all.odb()?.add_disk_alternate(qstr)?;
        let q = git2::Odb::new()?;
        q.add_disk_alternate(qstr)?;
        // The repo's own shallow commits lack their parents too.
        let mut boundary = read_shallow(path)?;
        boundary.extend_from_slice(client_shallow);
        let order = pack_order(&qdir.join("pack"))?;
        match check_pack(&q, &main.odb()?, order, entries, &boundary)? {
            Ok(s) => shallow = s,
            Err(e) => pack_error = Some(e),
        }
    }
    let mut seen = std::collections::HashSet::new();
    let all_odb = all.odb()?;
    for c in cmds.iter_mut() {
        c.error = check_command(&main, &all, &all_odb, c, deploy_ref, &mut seen);
    }
    Ok(Checked {
        cmds,
        pack_error,
        shallow,
    })
}

fn check_command(
    main: &git2::Repository,
    all: &git2::Repository,
    all_odb: &git2::Odb<'_>,
    c: &mut Cmd,
    deploy_ref: Option<&str>,
    seen: &mut std::collections::HashSet<String>,
) -> Option<String> {
    if !c.refname.starts_with("refs/") || !git2::Reference::is_valid_name(&c.refname) {
        return Some("funny refname".into());
    }
    if !seen.insert(c.refname.clone()) {
        return Some("duplicate ref in one push".into());
    }
    match ref_value(main, &c.refname) {
        Ok(current) if current != c.old => return Some(STALE.into()),
        Ok(_) => {}
        Err(e) => return Some(format!("cannot read ref: {}", e.message())),
    }
    if c.is_delete() {
        if deploy_ref == Some(c.refname.as_str()) {
            return Some(DELETE_DEPLOY.into());
        }
        return None;
    }
    if !all_odb.exists(c.new) {
        return Some("missing necessary objects".into());
    }
    // As in git (and `git fsck`): a branch points at a commit, never at a
    // tag object; push `TAG^{commit}:BRANCH` instead.
    if c.refname.starts_with("refs/heads/") {
        match all.find_object(c.new, None) {
            Ok(o) if o.kind() == Some(ObjectType::Commit) => c.commit = Some(c.new),
            _ => return Some(NOT_A_COMMIT.into()),
        }
    }
    None
}

/// The objects of the pack in `pack_dir` (the quarantine's one) and their
/// offsets, in pack order, from its index (version 2; gitformat-pack).
/// Reading in pack order lets libgit2's delta base cache serve each
/// delta's base; in id order, every read walks its delta chain again.
fn pack_order(pack_dir: &Path) -> Result<Vec<(u64, Oid)>, GitError> {
    use std::os::unix::fs::FileExt;
    let bad = |why: &str| GitError::Protocol(format!("unreadable pack index: {why}"));
    let idx = match std::fs::read_dir(pack_dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "idx")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let Some(idx) = idx else {
        return Ok(Vec::new());
    };
    let f = std::fs::File::open(&idx)?;
    let mut head = vec![0u8; 8 + 256 * 4];
    f.read_exact_at(&mut head, 0)?;
    if head[..8] != *b"\xfftOc\0\0\0\x02" {
        return Err(bad("not version 2"));
    }
    let n = u32::from_be_bytes(head[head.len() - 4..].try_into().expect("4 bytes")) as u64;
    let ids_at = head.len() as u64;
    let offsets_at = ids_at + n * 24;
    let mut ids = vec![0u8; (n * 20) as usize];
    f.read_exact_at(&mut ids, ids_at)?;
    let mut offsets = vec![0u8; (n * 4) as usize];
    f.read_exact_at(&mut offsets, offsets_at)?;
    let mut order = Vec::with_capacity(n as usize);
    for (id, off) in ids.chunks_exact(20).zip(offsets.chunks_exact(4)) {
        let off = u32::from_be_bytes(off.try_into().expect("4 bytes"));
        let off = if off & 0x8000_0000 == 0 {
            off as u64
        } else {
            let mut big = [0u8; 8];
            let at = offsets_at + n * 4 + (off & 0x7fff_ffff) as u64 * 8;
            f.read_exact_at(&mut big, at)
                .map_err(|_| bad("64-bit offset out of range"))?;
            u64::from_be_bytes(big)
        };
        order.push((off, Oid::from_bytes(id)?));
    }
    order.sort_unstable_by_key(|e| e.0);
    Ok(order)
}

/// Checks every object of the quarantined pack `q` (`order`: its ids in
/// pack order; `entries`: the types the scanner saw), reading each commit,
/// tree and tag once, in pack order:
/// - trees with entries git itself would never check out (`.`, `..`, `.git`
///   in any case, malformed names) refuse the pack;
/// - connectivity: every id a pack object names is in the pack or was in
///   the repo before (`main`, complete by induction), so whatever the new
///   refs reach is complete. Shallow commits (`shallow`: the client's and
///   the repo's) may lack their parents: those in the pack whose parents
///   the repo lacks too are returned, to be recorded in `shallow`.
///
/// `Ok(Err(reason))` refuses the pack. Same guarantee as libgit2's indexer
/// verification (and git's `check_connected`), but the repo's ODB is only
/// asked about the ids the pack does not have: the boundary.
fn check_pack(
    q: &git2::Odb<'_>,
    main: &git2::Odb<'_>,
    order: Vec<(u64, Oid)>,
    entries: &[(u64, u8)],
    shallow: &[Oid],
) -> Result<Result<Vec<Oid>, String>, GitError> {
    use std::collections::HashSet;
    // Raw ids: hashing and comparing an `Oid` goes through libgit2.
    type Id = [u8; 20];
    let id_of = |oid: &Oid| -> Id { oid.as_bytes().try_into().expect("sha1 ids") };
    let in_pack: HashSet<Id> = order.iter().map(|(_, oid)| id_of(oid)).collect();
    let boundary: HashSet<Id> = shallow.iter().map(id_of).collect();
    // Ids named by pack objects but not in the pack.
    let mut outside: HashSet<Id> = HashSet::new();
    let mut record = Vec::new();
    for (offset, oid) in order {
        // Objects the indexer appended to complete a thin pack came from
        // the repo: nothing to check.
        let Ok(i) = entries.binary_search_by_key(&offset, |e| e.0) else {
            continue;
        };
        let kind = match entries[i].1 {
            1 => ObjectType::Commit,
            2 => ObjectType::Tree,
            3 => continue,
            4 => ObjectType::Tag,
            _ => match q.read_header(oid)?.1 {
                ObjectType::Blob => continue,
                k => k,
            },
        };
        let obj = q.read(oid)?;
        let data = obj.data();
        let mut need = |id: &[u8]| {
            let id: Id = id.try_into().expect("20 bytes");
            if !in_pack.contains(&id) {
                outside.insert(id);
            }
        };
        match kind {
            ObjectType::Tree => {
                if let Some(name) = bad_tree_entry(data) {
                    return Ok(Err(format!(
                        "tree {} has an entry named '{}', which git refuses to check out",
                        &oid.to_string()[..12],
                        crate::names::printable(&name)
                    )));
                }
                let mut d = data;
                while !d.is_empty() {
                    // Well-formed: bad_tree_entry checked it.
                    let sp = d.iter().position(|&b| b == b' ').unwrap_or(0);
                    let rest = &d[sp + 1..];
                    let nul = rest.iter().position(|&b| b == 0).unwrap_or(0);
                    // Submodules (gitlinks) point into other repositories.
                    if &d[..sp] != b"160000" {
                        need(&rest[nul + 1..nul + 21]);
                    }
                    d = &rest[nul + 21..];
                }
            }
            ObjectType::Commit => {
                let Some((tree, parents)) = commit_links(data) else {
                    return Ok(Err(format!("malformed commit {oid}")));
                };
                need(tree.as_bytes());
                if boundary.contains(&id_of(&oid)) {
                    if parents
                        .iter()
                        .any(|p| !in_pack.contains(&id_of(p)) && !main.exists(*p))
                    {
                        record.push(oid);
                    }
                } else {
                    parents.iter().for_each(|p| need(p.as_bytes()));
                }
            }
            ObjectType::Tag => match tag_target(data) {
                Some(target) => need(target.as_bytes()),
                None => return Ok(Err(format!("malformed tag {oid}"))),
            },
            _ => {}
        }
    }
    let mut outside: Vec<Id> = outside.into_iter().collect();
    outside.sort_unstable();
    for id in outside {
        let oid = Oid::from_bytes(&id)?;
        if !main.exists(oid) {
            return Ok(Err(format!("missing necessary objects ({oid})")));
        }
    }
    Ok(Ok(record))
}

/// The first forbidden entry name in raw tree data.
fn bad_tree_entry(mut data: &[u8]) -> Option<String> {
    while !data.is_empty() {
        let Some(sp) = data.iter().position(|&b| b == b' ') else {
            return Some("<malformed tree>".into());
        };
        let rest = &data[sp + 1..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Some("<malformed tree>".into());
        };
        let name = &rest[..nul];
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.eq_ignore_ascii_case(b".git")
            || name.contains(&b'/')
        {
            return Some(String::from_utf8_lossy(name).into_owned());
        }
        if rest.len() < nul + 1 + 20 {
            return Some("<malformed tree>".into());
        }
        data = &rest[nul + 1 + 20..];
    }
    None
}

fn header_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n').take_while(|l| !l.is_empty())
}

fn hex_oid(s: &[u8]) -> Option<Oid> {
    Oid::from_str(std::str::from_utf8(s).ok()?).ok()
}

fn commit_links(data: &[u8]) -> Option<(Oid, Vec<Oid>)> {
    let mut tree = None;
    let mut parents = Vec::new();
    for l in header_lines(data) {
        if let Some(h) = l.strip_prefix(b"tree ") {
            tree = hex_oid(h);
        } else if let Some(h) = l.strip_prefix(b"parent ") {
            parents.push(hex_oid(h)?);
        }
    }
    Some((tree?, parents))
}

fn tag_target(data: &[u8]) -> Option<Oid> {
    header_lines(data).find_map(|l| l.strip_prefix(b"object ").and_then(hex_oid))
}

/// Runs git2 work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T, GitError>
where
    F: FnOnce() -> Result<T, GitError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| GitError::Process(format!("blocking task failed: {e}")))?
}

/// Output after the commands: queued, written by [`write_loop`].
struct Out {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Arc<AtomicUsize>,
    sideband: bool,
    last: Instant,
}

impl Out {
    fn send(&mut self, bytes: Vec<u8>, essential: bool) {
        if !essential && self.pending.load(Ordering::Relaxed) > MAX_PENDING_OUTPUT {
            return;
        }
        self.pending.fetch_add(bytes.len(), Ordering::Relaxed);
        let _ = self.tx.send(bytes);
        self.last = Instant::now();
    }

    /// A `remote:` line (needs side-band; git has nowhere else to show it).
    fn progress(&mut self, line: &str) {
        if self.sideband {
            let mut text = line.to_string();
            text.push('\n');
            self.send(
                pktline::sideband(pktline::BAND_PROGRESS, text.as_bytes()),
                false,
            );
        }
    }

    fn keepalive(&mut self) {
        if self.sideband {
            self.send(pktline::KEEPALIVE.to_vec(), false);
        }
    }

    /// report-status: pkt-lines and a flush, wrapped in band 1 when
    /// multiplexing, then a bare flush.
    fn report(&mut self, lines: &[String]) {
        let mut inner = Vec::new();
        for l in lines {
            let b = l.as_bytes();
            pktline::encode_into(&mut inner, &b[..b.len().min(pktline::MAX_PKT_DATA)]);
        }
        inner.extend_from_slice(pktline::FLUSH);
        if self.sideband {
            let mut framed = pktline::sideband(pktline::BAND_DATA, &inner);
            framed.extend_from_slice(pktline::FLUSH);
            self.send(framed, true);
        } else {
            self.send(inner, true);
        }
    }

    /// Drives `fut` to completion while forwarding `progress` lines as they
    /// come and sending keepalives during silences.
    async fn drive<F: Future>(
        &mut self,
        fut: F,
        mut progress: Option<&mut ProgressRx>,
        keepalive: Duration,
    ) -> F::Output {
        tokio::pin!(fut);
        let keepalive = keepalive.max(Duration::from_millis(100));
        loop {
            let deadline = self.last + keepalive;
            tokio::select! {
                biased;
                r = &mut fut => {
                    if let Some(rx) = progress.as_mut() {
                        while let Ok(line) = rx.try_recv() {
                            self.progress(&line);
                        }
                    }
                    return r;
                }
                line = async {
                    match progress.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match line {
                    Some(line) => self.progress(&line),
                    None => progress = None,
                },
                _ = tokio::time::sleep_until(deadline) => self.keepalive(),
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Arc<AtomicUsize>,
) {
    let mut broken = false;
    while let Some(bytes) = rx.recv().await {
        if !broken {
            let r = async {
                w.write_all(&bytes).await?;
                w.flush().await
            }
            .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "git client went away; output dropped");
                broken = true;
            }
        }
        pending.fetch_sub(bytes.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
