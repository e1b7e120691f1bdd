//! Git transport: everything between an SSH exec string like
//! `git-receive-pack '/myapp.git'` and the bare repository on disk.
//!
//! Owns: the pkt-line codec and side-band framing ([`pktline`]), parsing of
//! git exec strings ([`parse_exec`]), the bare repos under the data dir
//! ([`repo_path`], [`init_bare`], [`set_head`], [`remove_repo`],
//! [`recover_repo`], [`repack_if_needed`]), libgit2's process-wide options
//! ([`init_process`]), refs moved by compare-and-swap ([`refs`]), a native receive-pack
//! ([`receive::receive_pack`]: pack scanned as it streams, indexed into a
//! quarantine dir, refs moved by compare-and-swap) with the [`PushHook`] it
//! calls for the deploy branch, and upload-pack ([`upload::upload_pack`],
//! the real `git upload-pack` behind a cleared environment).
//!
//! Does not know: what a deploy is. It never imports `deploy/`, `build/`,
//! `runtime/` or `ssh/`; the SSH layer hands it byte streams and a
//! [`PushHook`], and gets back a [`ReceiveOutcome`].

use std::path::{Path, PathBuf};

pub mod pack;
pub mod pktline;
pub mod receive;
pub mod refs;
pub mod upload;

#[cfg(test)]
mod tests;

pub use receive::{
    err_response, receive_pack, DeployPush, PushHook, ReceiveLimits, ReceiveOutcome,
    ReceiveRequest, RefResult,
};
pub use upload::upload_pack;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The exec string names a git service but its repository path is not
    /// one we accept. The message is meant for the user.
    #[error("{0}")]
    BadRequest(String),
    /// The client broke the protocol (or went away mid-message).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The app has no repository.
    #[error("repository {0} does not exist")]
    NoRepo(PathBuf),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    /// A child `git` failed to start or ended badly.
    #[error("{0}")]
    Process(String),
}

/// The git services a client can ask for over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitService {
    /// `git push`.
    ReceivePack { app: String },
    /// `git clone`, `git fetch`, `git ls-remote`.
    UploadPack { app: String },
}

impl GitService {
    pub fn app(&self) -> &str {
        match self {
            GitService::ReceivePack { app } | GitService::UploadPack { app } => app,
        }
    }
}

/// Parses an SSH exec string.
///
/// - `Ok(None)`: not a git command at all; the SSH layer treats it as a rack
///   command.
/// - `Ok(Some(service))`: `git-receive-pack` / `git-upload-pack` (also
///   spelled `git receive-pack`) with one repository path argument, quoted
///   the way git's `sq_quote` does (`'/app.git'`) or bare (`app`).
/// - `Err(BadRequest)`: a git command we refuse (bad path, extra arguments,
///   `git-upload-archive`); the message is for the user.
pub fn parse_exec(command: &str) -> Result<Option<GitService>, GitError> {
    let command = command.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\n');
    let (service, rest) = if let Some(r) = strip_word(command, "git-receive-pack") {
        ("receive-pack", r)
    } else if let Some(r) = strip_word(command, "git-upload-pack") {
        ("upload-pack", r)
    } else if let Some(r) = strip_word(command, "git") {
        let r = r.trim_start_matches([' ', '\t']);
        if let Some(r) = strip_word(r, "receive-pack") {
            ("receive-pack", r)
        } else if let Some(r) = strip_word(r, "upload-pack") {
            ("upload-pack", r)
        } else if r.starts_with("upload-archive") {
            return Err(unsupported("git-upload-archive"));
        } else {
            return Ok(None);
        }
    } else if strip_word(command, "git-upload-archive").is_some() {
        return Err(unsupported("git-upload-archive"));
    } else {
        return Ok(None);
    };
    let arg = rest.trim_start_matches([' ', '\t']);
    if arg.is_empty() {
        return Err(GitError::BadRequest(format!(
            "git-{service} needs a repository path, e.g. git-{service} '/myapp.git'"
        )));
    }
    let path = parse_one_arg(arg).map_err(|why| {
        GitError::BadRequest(format!(
            "invalid repository path {}: {why}",
            crate::names::printable(arg)
        ))
    })?;
    let app = app_from_path(&path)?;
    Ok(Some(match service {
        "receive-pack" => GitService::ReceivePack { app },
        _ => GitService::UploadPack { app },
    }))
}

fn unsupported(what: &str) -> GitError {
    GitError::BadRequest(format!("{what} is not supported"))
}

/// `s` without the leading `word`, if `word` is followed by whitespace or
/// the end.
fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let rest = s.strip_prefix(word)?;
    if rest.is_empty() || rest.starts_with([' ', '\t']) {
        Some(rest)
    } else {
        None
    }
}

/// One shell-quoted argument in the forms git produces (`sq_quote`:
/// `'...'` with `'\''` and `'\!'` for embedded `'` and `!`), or a bare word.
/// Anything after it is an error.
fn parse_one_arg(arg: &str) -> Result<String, &'static str> {
    let arg = arg.trim_end_matches([' ', '\t']);
    if !arg.starts_with('\'') {
        if arg.contains(|c: char| c.is_whitespace() || "'\"\\`$;&|<>(){}*?[]#~".contains(c)) {
            return Err("more than one argument, or quoting git does not produce");
        }
        return Ok(arg.to_string());
    }
    let mut out = String::new();
    let mut chars = arg.chars().peekable();
    loop {
        // At the opening quote of a quoted run.
        if chars.next() != Some('\'') {
            return Err("bad quoting");
        }
        loop {
            match chars.next() {
                None => return Err("unterminated quote"),
                Some('\'') => break,
                Some(c) => out.push(c),
            }
        }
        match chars.next() {
            None => return Ok(out),
            Some('\\') => {
                match chars.next() {
                    Some(c @ ('\'' | '!')) => out.push(c),
                    _ => return Err("bad quoting"),
                }
                if chars.peek() != Some(&'\'') {
                    // `'\''` at the very end is how sq_quote ends a string
                    // with a quote; nothing else may follow.
                    if chars.peek().is_none() {
                        return Ok(out);
                    }
                    return Err("bad quoting");
                }
            }
            Some(_) => return Err("more than one argument"),
        }
    }
}

/// `myapp`, `/myapp`, `myapp.git`, `/myapp.git` → `myapp`.
fn app_from_path(path: &str) -> Result<String, GitError> {
    let p = path.strip_prefix('/').unwrap_or(path);
    let p = p.strip_suffix(".git").unwrap_or(p);
    crate::names::validate_app(p).map_err(|_| {
        GitError::BadRequest(format!(
            "invalid repository path '{}': use APP, /APP, APP.git or /APP.git where APP is an app name (a-z, 0-9, '-')",
            crate::names::printable(path)
        ))
    })?;
    Ok(p.to_string())
}

/// Where an app's bare repository lives: `repos_dir/APP.git`.
pub fn repo_path(repos_dir: &Path, app: &str) -> PathBuf {
    repos_dir.join(format!("{app}.git"))
}

/// Opens an app's bare repository (for readers such as the build context).
pub fn open(path: &Path) -> Result<git2::Repository, GitError> {
    if !path.is_dir() {
        return Err(GitError::NoRepo(path.to_path_buf()));
    }
    Ok(git2::Repository::open_bare(path)?)
}

/// The commit `rev` names in the repo at `path` (a branch, tag, or id;
/// annotated tags are peeled). For `apps:deploy APP [REF]`.
pub fn resolve_commit(path: &Path, rev: &str) -> Result<git2::Oid, GitError> {
    let repo = open(path)?;
    let not_found = || {
        GitError::BadRequest(format!(
            "no commit '{}' in the repository",
            crate::names::printable(rev)
        ))
    };
    // Plain names only: no `@{...}` reflog syntax or `:path` lookups.
    if rev.is_empty() || rev.starts_with('-') || rev.contains("@{") || rev.contains(':') {
        return Err(not_found());
    }
    let obj = repo.revparse_single(rev).map_err(|_| not_found())?;
    let commit = obj.peel_to_commit().map_err(|_| not_found())?;
    Ok(commit.id())
}

/// Creates a bare repository with HEAD at `refs/heads/main` (unborn). An
/// existing repository is left as it is.
pub fn init_bare(path: &Path) -> Result<(), GitError> {
    if path.join("HEAD").is_file() {
        git2::Repository::open_bare(path)?;
        return Ok(());
    }
    let mut opts = git2::RepositoryInitOptions::new();
    opts.bare(true)
        .mkdir(true)
        .mkpath(true)
        .initial_head("main")
        .no_reinit(true);
    let repo = git2::Repository::init_opts(path, &opts)?;
    let mut cfg = repo.config()?;
    // rack repacks itself (repack_if_needed); `git upload-pack` must never start
    // a gc of its own in a repo receive-pack is writing to.
    cfg.set_i32("gc.auto", 0)?;
    cfg.set_bool("receive.denyDeleteCurrent", true)?;
    // Shallow pushes are accepted and recorded (see receive/shallow.rs).
    cfg.set_bool("receive.shallowUpdate", true)?;
    Ok(())
}

/// Points HEAD at `refs/heads/BRANCH` (which need not exist yet).
pub fn set_head(path: &Path, branch: &str) -> Result<(), GitError> {
    let refname = format!("refs/heads/{branch}");
    if !git2::Reference::is_valid_name(&refname) {
        return Err(GitError::BadRequest(format!(
            "invalid branch name '{}'",
            crate::names::printable(branch)
        )));
    }
    let repo = open(path)?;
    repo.set_head(&refname)?;
    Ok(())
}

/// Deletes a repository; a missing one is not an error.
pub fn remove_repo(path: &Path) -> Result<(), GitError> {
    // Only ever remove something that looks like one of our repos.
    if path.extension().and_then(|e| e.to_str()) != Some("git") {
        return Err(GitError::BadRequest(format!(
            "refusing to remove {}",
            path.display()
        )));
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Start-up recovery for a repository nobody is writing to (the rack is the
/// only writer of its repos): removes quarantine dirs left by a killed
/// receive-pack and stale `*.lock` files. Returns what it removed.
pub fn recover_repo(path: &Path) -> Result<Vec<PathBuf>, GitError> {
    let mut removed = Vec::new();
    let objects = path.join("objects");
    if let Ok(rd) = std::fs::read_dir(&objects) {
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(receive::QUARANTINE_PREFIX)
            {
                std::fs::remove_dir_all(e.path())?;
                removed.push(e.path());
            }
        }
    }
    for name in [
        "HEAD.lock",
        "config.lock",
        "packed-refs.lock",
        "shallow.lock",
        "index.lock",
    ] {
        let p = path.join(name);
        if p.exists() {
            std::fs::remove_file(&p)?;
            removed.push(p);
        }
    }
    remove_locks(&path.join("refs"), &mut removed)?;
    Ok(removed)
}

fn remove_locks(dir: &Path, removed: &mut Vec<PathBuf>) -> Result<(), GitError> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let p = e.path();
        let ft = e.file_type()?;
        if ft.is_dir() {
            remove_locks(&p, removed)?;
        } else if p.extension().and_then(|e| e.to_str()) == Some("lock") {
            std::fs::remove_file(&p)?;
            removed.push(p);
        }
    }
    Ok(())
}

/// More packs than this make every object lookup slower; repack then.
pub const MAX_PACKS: usize = 20;

/// Sets libgit2's process-wide options; call once at start-up, before any
/// push (`rack server` does; tests that time pushes may). Calling it again
/// is harmless.
///
/// As git does, an object's id is checked when it enters the repo (the
/// indexer computes every id of a pushed pack from its content), not again
/// on every read: libgit2's default re-hashes each object read, a quarter
/// of receive-pack's verification time.
pub fn init_process() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| git2::opts::strict_hash_verification(false));
}

fn pack_count(repo: &Path) -> Option<usize> {
    let rd = std::fs::read_dir(repo.join("objects/pack")).ok()?;
    Some(
        rd.flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
            .count(),
    )
}

/// When `objects/pack` holds more than [`MAX_PACKS`] packs, queues a
/// [`repack`] with the housekeeper. Returns whether one was queued.
pub fn repack_if_needed(repo: &Path) -> bool {
    if pack_count(repo).is_none_or(|n| n <= MAX_PACKS) {
        return false;
    }
    crate::housekeeping::submit("git repack", Box::pin(repack(repo.to_path_buf())))
}

/// Runs `git repack -a -d -k` if the repo still has more than
/// [`MAX_PACKS`] packs (a repack queued twice runs once). `-k` keeps
/// unreachable objects: a push whose objects are in the repo but whose ref
/// has not moved yet (its build is running) must not lose them.
pub async fn repack(repo: PathBuf) {
    if pack_count(&repo).is_none_or(|n| n <= MAX_PACKS) {
        return;
    }
    let out = crate::process::command("git")
        .arg("--git-dir")
        .arg(&repo)
        .args(["repack", "-a", "-d", "-k", "-q"])
        .kill_on_drop(true)
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => tracing::info!(repo = %repo.display(), "repacked"),
        Ok(o) => tracing::warn!(repo = %repo.display(), status = %o.status,
            stderr = %String::from_utf8_lossy(&o.stderr), "git repack failed"),
        Err(e) => {
            tracing::warn!(repo = %repo.display(), error = %e, "git repack did not start")
        }
    }
}

#[cfg(test)]
mod unit_tests;
