//! A native receive-pack (gitprotocol-pack, protocol v0 with
//! side-band-64k): what `git push` talks to.
//!
//! The pack streams through [`PackScanner`](crate::git::pack::PackScanner)
//! (object and pack size limits, end of pack) into libgit2's indexer,
//! writing into a quarantine dir under `objects/` ([`quarantine`]).
//! Nothing reaches `objects/pack` unless at least one ref update is accepted
//! ([`verify`] checks objects and commands first); every ref moves by
//! compare-and-swap ([`crate::git::refs`]). The deploy branch is handed to
//! a [`PushHook`], whose progress streams back as `remote:` lines
//! ([`output`]). [`protocol`] parses what the client sends without doing
//! I/O; [`session`] drives one push through these steps.
//!
//! This file holds the types callers see: the request, limits, outcome and
//! the hook with its [`DeployPush`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use git2::Oid;

use super::pktline;
use super::refs::{self, CasError};
use crate::progress::Progress;

mod output;
mod protocol;
mod quarantine;
mod session;
mod shallow;
mod verify;

pub use quarantine::QUARANTINE_PREFIX;
pub use session::receive_pack;

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
    /// Objects one pack may hold (its header says how many).
    pub max_pack_objects: u32,
    /// Longest ref name a command may name.
    pub max_ref_bytes: usize,
    /// All the commands (and shallow lines) of one push together.
    pub max_commands_bytes: usize,
    /// Most bytes the repository's `objects/` may hold after a push: a
    /// push whose pack would pass it is refused.
    pub max_repo_bytes: u64,
    /// An empty side-band packet goes out after this long without output.
    pub keepalive: Duration,
}

impl Default for ReceiveLimits {
    fn default() -> Self {
        ReceiveLimits {
            max_pack_bytes: 2 << 30,
            max_object_bytes: 100 << 20,
            max_pack_objects: 1_000_000,
            max_ref_bytes: 1024,
            max_commands_bytes: 1 << 20,
            max_repo_bytes: u64::MAX,
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
        let current = refs::ref_value(&repo, &self.refname).map_err(|e| e.message().to_string())?;
        Ok(current == self.old)
    }

    /// Moves the ref from `old` to the pushed id, compare-and-swap. Calling
    /// it again after success is a no-op.
    pub fn apply(&self) -> Result<(), String> {
        if self.applied.load(Ordering::SeqCst) {
            return Ok(());
        }
        let repo = git2::Repository::open_bare(&self.repo).map_err(|e| e.message().to_string())?;
        match refs::cas(&repo, &self.refname, self.old, self.target, "push") {
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

#[cfg(test)]
mod tests;
