//! Refs of a bare repository moved by compare-and-swap: one ref
//! ([`cas`]) or several all-or-nothing ([`apply_atomic`]).
//!
//! Used by receive-pack for every pushed ref and by start-up recovery to
//! roll a journalled deploy-branch update forward, so a ref never moves
//! unless it still has the value its writer read.
//!
//! Does not know: pushes, deploys or why a ref moves; callers turn
//! [`CasError::Stale`] into their own words.

use std::path::Path;

use git2::{ErrorCode, Oid};

/// Why a compare-and-swap did not move a ref.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    /// The ref is not at the expected value any more (or is locked by
    /// another writer right now).
    #[error("the ref moved")]
    Stale,
    /// libgit2 failed for another reason (its message).
    #[error("{0}")]
    Other(String),
}

impl CasError {
    fn from_git(e: git2::Error) -> CasError {
        match e.code() {
            ErrorCode::Modified | ErrorCode::NotFound | ErrorCode::Exists | ErrorCode::Locked => {
                CasError::Stale
            }
            _ => CasError::Other(e.message().to_string()),
        }
    }
}

/// The current value of a ref; zero when it does not exist.
pub fn ref_value(repo: &git2::Repository, name: &str) -> Result<Oid, git2::Error> {
    match repo.find_reference(name) {
        Ok(r) => match r.target() {
            Some(oid) => Ok(oid),
            None => Err(git2::Error::from_str("symbolic ref")),
        },
        Err(e) if e.code() == ErrorCode::NotFound => Ok(Oid::ZERO_SHA1),
        Err(e) => Err(e),
    }
}

/// Moves `name` from `old` to `new` (zero `new` deletes, zero `old` creates),
/// failing with `Stale` if it is not at `old` any more. `log` is the
/// reflog message.
pub fn cas(
    repo: &git2::Repository,
    name: &str,
    old: Oid,
    new: Oid,
    log: &str,
) -> Result<(), CasError> {
    if new.is_zero() {
        let mut r = match repo.find_reference(name) {
            Ok(r) => r,
            Err(e) if e.code() == ErrorCode::NotFound && old.is_zero() => return Ok(()),
            Err(e) => return Err(CasError::from_git(e)),
        };
        if r.target() != Some(old) {
            return Err(CasError::Stale);
        }
        // libgit2 deletes only if the ref still has the value just read.
        return r.delete().map_err(CasError::from_git);
    }
    repo.reference_matching(name, new, true, old, log)
        .map(|_| ())
        .map_err(CasError::from_git)
}

/// [`cas`] on the bare repository at `path`.
pub fn cas_at(path: &Path, name: &str, old: Oid, new: Oid, log: &str) -> Result<(), CasError> {
    let repo =
        git2::Repository::open_bare(path).map_err(|e| CasError::Other(e.message().into()))?;
    cas(&repo, name, old, new, log)
}

/// One ref of an [`apply_atomic`]: `name` from `old` to `new` (zero `new`
/// deletes).
#[derive(Debug, Clone)]
pub struct RefUpdate {
    pub name: String,
    pub old: Oid,
    pub new: Oid,
}

/// All of `updates` or none: lock every ref, check every old value, commit.
pub fn apply_atomic(path: &Path, updates: &[RefUpdate], log: &str) -> Result<(), CasError> {
    let other = |e: git2::Error| CasError::Other(e.message().to_string());
    let repo = git2::Repository::open_bare(path).map_err(other)?;
    let sig = git2::Signature::now("rack", "rack@localhost").map_err(other)?;
    let mut tx = repo.transaction().map_err(other)?;
    for u in updates {
        tx.lock_ref(&u.name).map_err(|_| CasError::Stale)?;
    }
    for u in updates {
        if ref_value(&repo, &u.name).map_err(other)? != u.old {
            return Err(CasError::Stale);
        }
    }
    for u in updates {
        let r = if u.new.is_zero() {
            if u.old.is_zero() {
                continue;
            }
            tx.remove(&u.name)
        } else {
            tx.set_target(&u.name, u.new, Some(&sig), log)
        };
        r.map_err(other)?;
    }
    tx.commit().map_err(other)
}

#[cfg(test)]
mod tests;
