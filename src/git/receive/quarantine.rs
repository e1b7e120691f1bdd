//! The pack of a push, from the socket into a quarantine directory under
//! `objects/` (scanned for size limits as it streams, indexed by libgit2),
//! and from there into `objects/pack` once some update is accepted.
//!
//! Does not know: refs or commands; whether the pack is acceptable beyond
//! its sizes and format is `verify`'s question.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use super::ReceiveLimits;
use crate::git::pack::{PackScanner, ScanError};
use crate::git::GitError;
use crate::housekeeping;

/// Quarantine dirs are `objects/incoming-*`; start-up removes stale ones.
pub const QUARANTINE_PREFIX: &str = "incoming-";

/// Chunks of pack in flight between the socket and the indexer.
const PACK_CHANNEL_CHUNKS: usize = 8;
/// How much of the pack one read takes from the socket.
pub(super) const PACK_READ_CHUNK: usize = 64 * 1024;

/// A quarantine dir under `objects/`; removed on drop (after a commit it
/// is empty).
pub(super) struct Quarantine {
    pub dir: PathBuf,
}

impl Quarantine {
    pub fn new(repo: &Path) -> Quarantine {
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
    /// `.idx`, so an index never names a missing pack. Returns the files
    /// moved in, in that order (a file of the same name already there, an
    /// identical pack, is left alone and not listed).
    pub fn commit(self, repo: &Path) -> Result<Vec<PathBuf>, GitError> {
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
        std::fs::create_dir_all(&dst)?;
        let mut moved = Vec::new();
        for f in &files {
            let name = f.file_name().expect("read_dir entries have names");
            let to = dst.join(name);
            if to.exists() {
                continue;
            }
            std::fs::rename(f, &to)?;
            moved.push(to);
        }
        Ok(moved)
    }
}

/// Removes the pack files a [`Quarantine::commit`] moved in (the `.idx`
/// first, so an index never names a missing pack): the push they came with
/// was refused, and a refused push adds no objects.
pub(super) fn uncommit(moved: &[PathBuf]) {
    for f in moved.iter().rev() {
        if let Err(e) = std::fs::remove_file(f) {
            tracing::warn!(path = %f.display(), error = %e, "removing a refused push's pack");
        }
    }
}

impl Drop for Quarantine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) struct PackFailure {
    pub message: String,
    /// Whether the whole pack was read (the client will read our answer).
    pub read_on: bool,
}

/// Reads the pack from `input` into the indexer in `qdir`.
pub(super) async fn receive_pack_data<R: AsyncRead + Unpin + Send>(
    input: &mut BufReader<R>,
    repo: &Path,
    qdir: &Path,
    limits: &ReceiveLimits,
) -> Result<Vec<(u64, u8)>, PackFailure> {
    let (tx, rx) = mpsc::channel::<Bytes>(PACK_CHANNEL_CHUNKS);
    let repo = repo.to_path_buf();
    let qdir = qdir.to_path_buf();
    let max_objects = limits.max_pack_objects;
    let max_obj = limits.max_object_bytes;
    let quota = limits.max_repo_bytes;
    let used = if quota == u64::MAX {
        0
    } else {
        let objects = repo.join("objects");
        tokio::task::spawn_blocking(move || dir_bytes(&objects))
            .await
            .unwrap_or(0)
    };
    let over_quota = || {
        PackFailure {
        message: format!(
            "the repository would exceed its quota of {quota} bytes ([limits] max_repo_bytes; it holds {used})"
        ),
        read_on: false,
    }
    };
    if used >= quota {
        return Err(over_quota());
    }
    let by_quota = quota - used < limits.max_pack_bytes;
    let max_pack = limits.max_pack_bytes.min(quota - used);
    let mut task = tokio::task::spawn_blocking(move || {
        let scanner = PackScanner::new(max_obj, max_pack).max_objects(max_objects);
        let r = index_pack(&repo, &qdir, scanner, rx);
        housekeeping::release_free_memory();
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
        Ok(Err(f)) if by_quota && f.message.starts_with("the pack exceeds the limit") => {
            Err(PackFailure {
                read_on: f.read_on,
                ..over_quota()
            })
        }
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
    mut scanner: PackScanner,
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

/// Bytes of the files under `dir` (an iterative walk: no recursion depth
/// to exhaust); unreadable entries count 0.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}
