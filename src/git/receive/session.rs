//! The session driver: one `git push` from the advertisement to the
//! report, calling the protocol parser, the quarantine, the verifier, the
//! ref updates and the push hook in order.
//!
//! Owns the order of the steps and which of them run off the async
//! threads; each step's rules live in its own module.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use git2::Oid;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::output::Out;
use super::protocol::{
    add_push_option, advertisement, deploy_ref, refuse_unpushable, report_lines, Advert,
    ClientCaps, Cmd, CommandList,
};
use super::quarantine::{receive_pack_data, PackFailure, Quarantine, PACK_READ_CHUNK};
use super::shallow::{read_shallow, record_shallow};
use super::verify::check_push;
use super::{err_response, DeployPush, PushHook, ReceiveOutcome, ReceiveRequest, RefResult, STALE};
use crate::git::pktline::{Packet, PktReader};
use crate::git::refs::{self, CasError, RefUpdate};
use crate::git::GitError;
use crate::housekeeping;
use crate::progress::Progress;

/// The reflog message of a ref moved by a push.
const REFLOG: &str = "push";

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
    if !advertise(&req, &mut output).await? {
        return Ok(ReceiveOutcome::default());
    }
    // 2. Shallow lines and commands.
    let mut reader = PktReader::new(BufReader::with_capacity(PACK_READ_CHUNK, input));
    let Some(list) = read_commands(&mut reader, &req.limits).await? else {
        return Ok(ReceiveOutcome::default());
    };
    // 3. Push options.
    let push_options = if list.caps.push_options {
        read_push_options(&mut reader).await?
    } else {
        Vec::new()
    };

    // From here on, output goes through a writer running beside the work,
    // so a client that stops reading never stalls a deploy.
    let (mut out, writer) = Out::new(&mut output, list.caps.sideband);
    let session = Session {
        req: &req,
        caps: &list.caps,
        hook,
        client_shallow: list.shallow,
        push_options,
    };
    let work = async {
        let r = session.run(reader.into_inner(), list.cmds, &mut out).await;
        drop(out);
        r
    };
    let (result, ()) = tokio::join!(work, writer);
    let _ = output.flush().await;
    result
}

/// Sends the ref advertisement (or, for an unusable repository, an `ERR`
/// line and the error). `Ok(false)`: the client already hung up.
async fn advertise<W: AsyncWrite + Unpin>(
    req: &ReceiveRequest,
    output: &mut W,
) -> Result<bool, GitError> {
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
        return Ok(false);
    }
    let _ = output.flush().await;
    Ok(true)
}

fn read_advert(path: &std::path::Path) -> Result<Advert, GitError> {
    let repo = crate::git::open(path)?;
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

/// The shallow lines and commands up to their flush; `None` when the
/// client has nothing to push.
async fn read_commands<R: AsyncRead + Unpin>(
    reader: &mut PktReader<R>,
    limits: &super::ReceiveLimits,
) -> Result<Option<CommandList>, GitError> {
    let mut list = CommandList::new(limits.max_ref_bytes, limits.max_commands_bytes);
    loop {
        let pkt = match reader.read_packet().await? {
            // A client that hangs up after the advertisement (ls-remote
            // against receive-pack, or nothing to do).
            None if list.is_empty() => return Ok(None),
            None => {
                return Err(GitError::Protocol(
                    "unexpected end of input in commands".into(),
                ))
            }
            Some(p) => p,
        };
        match pkt {
            Packet::Flush => break,
            Packet::Data(d) => list.add_line(&d)?,
            _ => return Err(GitError::Protocol("unexpected packet in commands".into())),
        }
    }
    Ok((!list.cmds.is_empty()).then_some(list))
}

async fn read_push_options<R: AsyncRead + Unpin>(
    reader: &mut PktReader<R>,
) -> Result<Vec<String>, GitError> {
    let mut push_options = Vec::new();
    loop {
        match reader.expect_packet().await? {
            Packet::Flush => return Ok(push_options),
            Packet::Data(d) => add_push_option(&mut push_options, &d)?,
            _ => {
                return Err(GitError::Protocol(
                    "unexpected packet in push options".into(),
                ))
            }
        }
    }
}

struct Session<'a> {
    req: &'a ReceiveRequest,
    caps: &'a ClientCaps,
    hook: &'a dyn PushHook,
    client_shallow: Vec<Oid>,
    push_options: Vec<String>,
}

/// What the pack step left: the quarantine holding it, the scanner's
/// entries, or why the pack was refused.
struct Received {
    quarantine: Option<Quarantine>,
    entries: Vec<(u64, u8)>,
    unpack_error: Option<String>,
}

impl Session<'_> {
    async fn run<R: AsyncRead + Unpin + Send>(
        self,
        mut input: BufReader<R>,
        mut cmds: Vec<Cmd>,
        out: &mut Out,
    ) -> Result<ReceiveOutcome, GitError> {
        let started = std::time::Instant::now();
        let ms = |t: std::time::Instant| t.elapsed().as_millis() as u64;
        let deploy_ref = deploy_ref(self.req.deploy_branch.as_deref(), &cmds);

        // 4. The pack, if any command creates or updates a ref.
        let receiving = std::time::Instant::now();
        let Received {
            quarantine,
            entries,
            mut unpack_error,
        } = self.receive_objects(&mut input, &cmds, out).await;
        crate::metrics::stage_took(crate::metrics::Stage::receive, receiving.elapsed());
        tracing::debug!(app = %self.req.app, ms = ms(started), "pack received");

        // 5. Check the new objects and every command.
        if unpack_error.is_none() {
            let qdir = quarantine.as_ref().map(|q| q.dir.clone());
            unpack_error = self
                .check(&mut cmds, qdir, entries, deploy_ref.clone(), out)
                .await?;
        }
        refuse_unpushable(&mut cmds, unpack_error.is_some(), self.caps.atomic);
        tracing::debug!(app = %self.req.app, ms = ms(started), "push checked");

        // 6. Objects into the repo only when some update needs them.
        let moved = self.commit_objects(quarantine, &cmds).await?;

        // 7. Refs.
        let deploy_idx = deploy_ref.as_deref().and_then(|d| {
            cmds.iter()
                .position(|c| c.refname == d && c.error.is_none() && !c.is_delete())
        });
        let deploy_accepted = self.update_refs(&mut cmds, deploy_idx, out).await?;
        // Every command refused (a failed deploy): its pack goes again.
        let mut pack_added = moved
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "pack"));
        if pack_added && cmds.iter().all(|c| c.error.is_some()) {
            blocking(move || {
                super::quarantine::uncommit(&moved);
                Ok(())
            })
            .await?;
            pack_added = false;
        }

        // 8. The deploy branch follows its first push; HEAD follows it.
        let mut new_deploy_branch = None;
        if deploy_accepted {
            let dref = deploy_ref.expect("deploy_idx implies deploy_ref");
            new_deploy_branch = self.follow_deploy_branch(dref).await;
        }
        tracing::debug!(app = %self.req.app, ms = ms(started), "refs updated");

        // 9. Report.
        if self.caps.report_status {
            out.report(&report_lines(unpack_error.as_deref(), &cmds));
        }
        if pack_added {
            crate::git::repack_if_needed(&self.req.repo);
        }
        Ok(ReceiveOutcome {
            refs: cmds.into_iter().map(RefResult::from).collect(),
            push_options: self.push_options,
            new_deploy_branch,
        })
    }

    /// Step 4: reads the pack into a quarantine when some command needs
    /// objects.
    async fn receive_objects<R: AsyncRead + Unpin + Send>(
        &self,
        input: &mut BufReader<R>,
        cmds: &[Cmd],
        out: &mut Out,
    ) -> Received {
        let mut received = Received {
            quarantine: None,
            entries: Vec::new(),
            unpack_error: None,
        };
        if cmds.iter().all(|c| c.is_delete()) {
            return received;
        }
        let q = Quarantine::new(&self.req.repo);
        match receive_pack_data(input, &self.req.repo, &q.dir, &self.req.limits).await {
            Ok(e) => {
                received.quarantine = Some(q);
                received.entries = e;
            }
            Err(PackFailure { message, read_on }) => {
                out.progress(&format!("error: {message}"));
                received.unpack_error = Some(message);
                drop(q);
                if !read_on {
                    // The client may still be sending; answer anyway and
                    // let the caller close the channel.
                    tracing::info!(app = %self.req.app, "push refused before the end of its pack");
                }
            }
        }
        received
    }

    /// Step 5: verifies the quarantined objects and every command (their
    /// errors are set in `cmds`); records the shallow boundaries of an
    /// accepted shallow push. Returns why the whole pack is refused.
    async fn check(
        &self,
        cmds: &mut Vec<Cmd>,
        qdir: Option<PathBuf>,
        entries: Vec<(u64, u8)>,
        deploy_ref: Option<String>,
        out: &mut Out,
    ) -> Result<Option<String>, GitError> {
        let repo = self.req.repo.clone();
        let shallow = self.client_shallow.clone();
        let cmds_in = std::mem::take(cmds);
        let checked = out
            .drive(
                blocking(move || {
                    let checked = check_push(
                        &repo,
                        qdir.as_deref(),
                        &entries,
                        cmds_in,
                        &shallow,
                        deploy_ref.as_deref(),
                    );
                    drop(entries);
                    housekeeping::release_free_memory();
                    checked
                }),
                None,
                self.req.limits.keepalive,
            )
            .await?;
        *cmds = checked.cmds;
        if let Some(e) = checked.pack_error {
            out.progress(&format!("error: {e}"));
            return Ok(Some(e));
        }
        if !checked.shallow.is_empty() {
            let repo = self.req.repo.clone();
            let shallow = checked.shallow;
            blocking(move || record_shallow(&repo, &shallow)).await?;
        }
        Ok(None)
    }

    /// Step 6: moves the quarantined pack in when an accepted command needs
    /// it (otherwise the quarantine is dropped, and removed). Returns the
    /// files moved in.
    async fn commit_objects(
        &self,
        quarantine: Option<Quarantine>,
        cmds: &[Cmd],
    ) -> Result<Vec<std::path::PathBuf>, GitError> {
        match quarantine {
            Some(q) if cmds.iter().any(|c| c.error.is_none() && !c.is_delete()) => {
                let repo = self.req.repo.clone();
                blocking(move || q.commit(&repo)).await
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Step 7: moves the refs of the accepted commands; the deploy branch
    /// through the hook (unless `skip-deploy`), which may apply it at its
    /// commit point. Atomic: the hook first, then every other ref in one
    /// transaction. Otherwise: the other refs (only stored) first, quickly,
    /// each by compare-and-swap, then the deploy branch. Returns whether
    /// the deploy branch was accepted.
    async fn update_refs(
        &self,
        cmds: &mut [Cmd],
        deploy_idx: Option<usize>,
        out: &mut Out,
    ) -> Result<bool, GitError> {
        let skip_deploy = self.push_options.iter().any(|o| o == "skip-deploy");
        if !self.caps.atomic {
            let others: Vec<(usize, RefUpdate)> = cmds
                .iter()
                .enumerate()
                .filter(|(j, c)| c.error.is_none() && Some(*j) != deploy_idx)
                .map(|(j, c)| (j, c.update()))
                .collect();
            for (j, r) in self.cas_each(others).await? {
                cmds[j].error = r.err();
            }
            let Some(i) = deploy_idx else {
                return Ok(false);
            };
            let r = if skip_deploy {
                let mut r = self.cas_each(vec![(i, cmds[i].update())]).await?;
                r.pop().expect("one result per update").1
            } else {
                self.run_hook(&cmds[i], out).await.map(|_| ())
            };
            return Ok(match r {
                Ok(()) => true,
                Err(reason) => {
                    cmds[i].error = Some(reason);
                    false
                }
            });
        }
        if cmds.iter().any(|c| c.error.is_some()) {
            return Ok(false);
        }
        let mut hook_applied = false;
        if let (Some(i), false) = (deploy_idx, skip_deploy) {
            match self.run_hook(&cmds[i], out).await {
                Ok(applied) => hook_applied = applied,
                Err(reason) => {
                    for (j, c) in cmds.iter_mut().enumerate() {
                        c.error = Some(if j == i {
                            reason.clone()
                        } else {
                            super::ATOMIC_FAILED.into()
                        });
                    }
                    return Ok(false);
                }
            }
        }
        let rest: Vec<RefUpdate> = cmds
            .iter()
            .enumerate()
            .filter(|(j, _)| !(hook_applied && Some(*j) == deploy_idx))
            .map(|(_, c)| c.update())
            .collect();
        let repo = self.req.repo.clone();
        if let Err(e) = blocking(move || Ok(refs::apply_atomic(&repo, &rest, REFLOG))).await? {
            let reason = refused_because(e);
            for c in cmds.iter_mut() {
                c.error = Some(reason.clone());
            }
            if hook_applied {
                tracing::error!(app = %self.req.app, "atomic push: deploy branch moved but other refs failed: {reason}");
            }
        }
        Ok(deploy_idx.is_some() && cmds.iter().all(|c| c.error.is_none()))
    }

    /// Each update by compare-and-swap, off the async threads; a refusal
    /// is the reason to report.
    async fn cas_each(
        &self,
        updates: Vec<(usize, RefUpdate)>,
    ) -> Result<Vec<(usize, Result<(), String>)>, GitError> {
        let repo = self.req.repo.clone();
        blocking(move || {
            let repo = git2::Repository::open_bare(&repo)?;
            Ok(updates
                .into_iter()
                .map(|(j, u)| {
                    let r = refs::cas(&repo, &u.name, u.old, u.new, REFLOG);
                    (j, r.map_err(refused_because))
                })
                .collect())
        })
        .await
    }

    /// Step 8: returns the deploy branch this push fixed (the app had none),
    /// and points HEAD at `dref`.
    async fn follow_deploy_branch(&self, dref: String) -> Option<String> {
        let mut new_deploy_branch = None;
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
        new_deploy_branch
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

/// What `ng <ref>` says when a compare-and-swap did not move the ref.
fn refused_because(e: CasError) -> String {
    match e {
        CasError::Stale => STALE.to_string(),
        CasError::Other(m) => m,
    }
}

impl Cmd {
    fn update(&self) -> RefUpdate {
        RefUpdate {
            name: self.refname.clone(),
            old: self.old,
            new: self.new,
        }
    }
}

impl From<Cmd> for RefResult {
    fn from(c: Cmd) -> RefResult {
        RefResult {
            refname: c.refname,
            old: c.old,
            new: c.new,
            result: match c.error {
                None => Ok(()),
                Some(e) => Err(e),
            },
        }
    }
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
