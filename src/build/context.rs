//! The build context, straight from git objects.
//!
//! A commit's tree is walked with git2 and written as a tar stream: no
//! checkout on disk, and never the whole context in memory (one blob at a
//! time, in bounded 64 KiB chunks through a channel). The tar is
//! deterministic: fixed mtime, uid/gid 0, mode 0755 for executable blobs and
//! 0644 otherwise, directories 0755, symlinks as symlinks. The same tree
//! therefore always gives the same bytes, which is what lets Docker's layer
//! cache hit on an unchanged `COPY`.
//!
//! `.dockerignore` is applied here (the daemon never applies it), `.git` is
//! never included, and submodules (gitlinks) are skipped with a warning.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::Stream;
use git2::{ObjectType, Oid, Repository, Tree};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::dockerignore::{Ancestors, DockerIgnore, PatternError};

/// Size of the chunks handed to the HTTP body.
const CHUNK: usize = 64 * 1024;
/// Chunks buffered between the tar producer and the upload: bounds the
/// context's memory to about 512 KiB whatever its size.
const CHANNEL_CHUNKS: usize = 8;
/// The mtime of every entry: 2000-01-01T00:00:00Z. Fixed so that the same
/// tree gives the same tar; not 0 because some tools (Python's zipfile, used
/// when building wheels) refuse timestamps before 1980.
pub const CONTEXT_MTIME: u64 = 946_684_800;
/// Root files read into memory for inspection (Dockerfile, .dockerignore,
/// detection files) are capped at this size.
const MAX_INSPECT_BYTES: usize = 1024 * 1024;

/// Directories nest at most this deep in a context: git's own
/// `core.maxTreeDepth` default, which receive-pack enforces already.
const MAX_DEPTH: usize = 2048;

const MODE_TREE: i32 = 0o040000;
const MODE_BLOB: i32 = 0o100644;
const MODE_BLOB_GROUP_WRITABLE: i32 = 0o100664;
const MODE_BLOB_EXEC: i32 = 0o100755;
const MODE_LINK: i32 = 0o120000;
const MODE_COMMIT: i32 = 0o160000;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("{0}")]
    Ignore(#[from] PatternError),
    #[error("writing the build context: {0}")]
    Io(#[from] io::Error),
    #[error("{0} is too large to inspect (over {MAX_INSPECT_BYTES} bytes)")]
    TooLarge(String),
    #[error("{0}: the tree nests deeper than {MAX_DEPTH} levels")]
    TooDeep(String),
    #[error("the build context upload was aborted")]
    Aborted,
    /// The tar would exceed `[build] max_context_bytes` (a blob referenced
    /// many times is stored once in git but expanded every time here).
    #[error("the build context exceeds {0} bytes ([build] max_context_bytes)")]
    OverLimit(u64),
}

/// The marker inside the io error a capped writer returns.
#[derive(Debug)]
struct OverLimit;

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("build context over its limit")
    }
}

impl std::error::Error for OverLimit {}

/// What the root of a commit's tree holds: enough to decide how to build it
/// before streaming anything.
#[derive(Debug, Clone, Default)]
pub struct TreeInfo {
    /// The full commit id the tree belongs to.
    pub commit: String,
    /// Names at the root; directories end with `/`.
    pub root: HashSet<String>,
    /// Contents of the root `Dockerfile`, if any.
    pub dockerfile: Option<String>,
    /// Contents of the root `.dockerignore`, if any.
    pub dockerignore: Option<String>,
}

impl TreeInfo {
    pub fn has_file(&self, name: &str) -> bool {
        self.root.contains(name)
    }
    pub fn has_dir(&self, name: &str) -> bool {
        self.root.contains(&format!("{name}/"))
    }
}

/// A file added to the context that is not in the tree (e.g. the Dockerfile
/// rendered from a buildpack). It wins over a tree entry with the same path.
#[derive(Debug, Clone)]
pub struct ExtraFile {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// What the producer reports once the whole tar was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextSummary {
    /// Size of the tar stream in bytes.
    pub bytes: u64,
    /// Files, directories and symlinks written.
    pub entries: u64,
    /// Paths of submodules left out.
    pub skipped_submodules: Vec<String>,
}

fn open_commit(repo: &Repository, commit: Oid) -> Result<git2::Commit<'_>, git2::Error> {
    repo.find_object(commit, None)?.peel_to_commit()
}

fn read_small_blob(repo: &Repository, oid: Oid, name: &str) -> Result<String, ContextError> {
    let odb = repo.odb()?;
    let (size, _) = odb.read_header(oid)?;
    if size > MAX_INSPECT_BYTES {
        return Err(ContextError::TooLarge(name.to_string()));
    }
    let blob = repo.find_blob(oid)?;
    Ok(String::from_utf8_lossy(blob.content()).into_owned())
}

/// Reads the root of `commit`'s tree (blocking: call from `spawn_blocking`).
pub fn inspect_commit(repo_path: &Path, commit: Oid) -> Result<TreeInfo, ContextError> {
    let repo = Repository::open(repo_path)?;
    let c = open_commit(&repo, commit)?;
    let tree = c.tree()?;
    let mut info = TreeInfo {
        commit: c.id().to_string(),
        ..TreeInfo::default()
    };
    for entry in tree.iter() {
        let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
        let mode = entry.filemode();
        if mode == MODE_TREE {
            info.root.insert(format!("{name}/"));
            continue;
        }
        if mode == MODE_COMMIT {
            continue;
        }
        // A Dockerfile that is a symlink is not followed (as the classic
        // builder would not find it inside the context either).
        if mode != MODE_LINK && name == "Dockerfile" {
            info.dockerfile = Some(read_small_blob(&repo, entry.id(), &name)?);
        }
        if mode != MODE_LINK && name == ".dockerignore" {
            info.dockerignore = Some(read_small_blob(&repo, entry.id(), &name)?);
        }
        info.root.insert(name);
    }
    Ok(info)
}

/// Reads one root file of `commit` if it exists and is small (blocking).
pub fn read_root_file(
    repo_path: &Path,
    commit: Oid,
    name: &str,
) -> Result<Option<String>, ContextError> {
    let repo = Repository::open(repo_path)?;
    let tree = open_commit(&repo, commit)?.tree()?;
    let Some(entry) = tree.get_name(name) else {
        return Ok(None);
    };
    if entry.kind() != Some(ObjectType::Blob) {
        return Ok(None);
    }
    Ok(Some(read_small_blob(&repo, entry.id(), name)?))
}

/// Everything the producer needs; it owns its data so it can move into a
/// blocking task.
#[derive(Debug, Clone)]
pub struct ContextSpec {
    pub repo_path: PathBuf,
    pub commit: Oid,
    /// The `.dockerignore` to apply (already including the CLI's implicit
    /// exceptions for the Dockerfile and `.dockerignore` themselves).
    pub ignore: DockerIgnore,
    pub extra_files: Vec<ExtraFile>,
    /// Most bytes the tar may have (expanded: every path counts).
    pub max_bytes: u64,
}

/// A running context producer: `body` is the tar to upload, `done` resolves
/// once the producer finished (with the summary, or why it stopped).
pub struct ContextStream {
    pub body: std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
    pub done: JoinHandle<Result<ContextSummary, ContextError>>,
}

/// Starts writing the context for `spec` on a blocking thread. `warn` gets
/// one line per thing left out that the user should know about (submodules).
pub fn stream_context(spec: ContextSpec, warn: impl Fn(String) + Send + 'static) -> ContextStream {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let done = tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = write_context(&spec, writer, &warn);
        if let Err(e) = &result {
            // Make the upload fail rather than end cleanly with a short tar.
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
        result
    });
    let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    ContextStream {
        body: Box::pin(body),
        done,
    }
}

/// Writes the whole context into `w` (blocking). Public for tests and tools
/// that want the tar in a file.
pub fn write_context_to<W: Write>(
    spec: &ContextSpec,
    w: W,
    warn: &dyn Fn(String),
) -> Result<(ContextSummary, W), ContextError> {
    write_cancellable(spec, w, warn, &|| false)
}

/// [`write_context_to`], stopping with [`ContextError::Aborted`] at the
/// next entry once `cancelled` says so: the build it feeds was given up.
fn write_cancellable<W: Write>(
    spec: &ContextSpec,
    w: W,
    warn: &dyn Fn(String),
    cancelled: &dyn Fn() -> bool,
) -> Result<(ContextSummary, W), ContextError> {
    write_capped(spec, w, warn, cancelled).map_err(|e| match e {
        ContextError::Io(io) if io.get_ref().is_some_and(|i| i.is::<OverLimit>()) => {
            ContextError::OverLimit(spec.max_bytes)
        }
        e => e,
    })
}

fn write_capped<W: Write>(
    spec: &ContextSpec,
    w: W,
    warn: &dyn Fn(String),
    cancelled: &dyn Fn() -> bool,
) -> Result<(ContextSummary, W), ContextError> {
    let counting = CountingWriter {
        inner: w,
        bytes: 0,
        limit: spec.max_bytes,
    };
    let mut state = Walk {
        ignore: &spec.ignore,
        warn,
        cancelled,
        summary: ContextSummary::default(),
        extra: HashSet::new(),
    };
    let mut tar = tar::Builder::new(counting);
    let repo = Repository::open(&spec.repo_path)?;
    let tree = open_commit(&repo, spec.commit)?.tree()?;
    state.write_extras(&mut tar, &spec.extra_files)?;
    state.walk(&repo, tree, &mut tar)?;
    let mut counting = tar.into_inner()?;
    counting.flush()?;
    state.summary.bytes = counting.bytes;
    Ok((state.summary, counting.inner))
}

fn write_context(
    spec: &ContextSpec,
    writer: ChannelWriter,
    warn: &dyn Fn(String),
) -> Result<ContextSummary, ContextError> {
    // The upload went away (build timed out or failed): stop walking even
    // between writes.
    let tx = writer.tx.clone();
    match write_cancellable(spec, writer, warn, &|| tx.is_closed()) {
        Ok((summary, _)) => Ok(summary),
        Err(ContextError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            Err(ContextError::Aborted)
        }
        Err(e) => Err(e),
    }
}

struct Walk<'a> {
    ignore: &'a DockerIgnore,
    warn: &'a dyn Fn(String),
    cancelled: &'a dyn Fn() -> bool,
    summary: ContextSummary,
    extra: HashSet<String>,
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(CONTEXT_MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

impl Walk<'_> {
    fn write_extras<W: Write>(
        &mut self,
        tar: &mut tar::Builder<W>,
        extras: &[ExtraFile],
    ) -> Result<(), ContextError> {
        for f in extras {
            let mut h = header(tar::EntryType::Regular, f.mode, f.data.len() as u64);
            tar.append_data(&mut h, &f.path, f.data.as_slice())?;
            self.extra.insert(f.path.clone());
            self.summary.entries += 1;
        }
        Ok(())
    }

    /// Writes `root` depth first, in tree order. Iterative: a tree nested
    /// tens of thousands of levels deep must not overflow the thread's
    /// stack (receive-pack refuses such trees; this holds for any repo).
    fn walk<W: Write>(
        &mut self,
        repo: &Repository,
        root: Tree<'_>,
        tar: &mut tar::Builder<W>,
    ) -> Result<(), ContextError> {
        // One frame per open directory: its tree, its path with a trailing
        // `/`, the next entry to write
        // and which ignore patterns its parents matched.
        let mut stack: Vec<(Tree<'_>, String, usize, Ancestors)> =
            vec![(root, String::new(), 0, self.ignore.root())];
        while let Some((tree, prefix, next, anc)) = stack.last_mut() {
            if (self.cancelled)() {
                return Err(ContextError::Aborted);
            }
            let Some(entry) = tree.get(*next).map(|e| e.to_owned()) else {
                stack.pop();
                continue;
            };
            *next += 1;
            let prefix = prefix.clone();
            let anc = anc.clone();
            if let Some((sub, path)) = self.entry(repo, &entry, &prefix, &anc, tar)? {
                if stack.len() >= MAX_DEPTH {
                    return Err(ContextError::TooDeep(path));
                }
                let below = self.ignore.descend(&anc, &path);
                stack.push((sub, format!("{path}/"), 0, below));
            }
        }
        Ok(())
    }

    /// Writes one tree entry; returns the subtree to descend into.
    fn entry<'r, W: Write>(
        &mut self,
        repo: &'r Repository,
        entry: &git2::TreeEntry<'_>,
        prefix: &str,
        anc: &Ancestors,
        tar: &mut tar::Builder<W>,
    ) -> Result<Option<(Tree<'r>, String)>, ContextError> {
        let name_bytes = entry.name_bytes();
        if name_bytes.eq_ignore_ascii_case(b".git") {
            return Ok(None);
        }
        // Matching works on text; the tar keeps the exact bytes.
        let name = String::from_utf8_lossy(name_bytes);
        let path = format!("{prefix}{name}");
        let raw_path: Vec<u8> = [prefix.as_bytes(), name_bytes].concat();
        let tar_path = Path::new(OsStr::from_bytes(&raw_path));
        if self.extra.contains(&path) {
            return Ok(None);
        }
        let excluded = self.ignore.is_excluded_in(&path, anc);
        match entry.filemode() {
            MODE_TREE => {
                if excluded && !self.ignore.must_descend(&path) {
                    return Ok(None);
                }
                if !excluded {
                    let mut h = header(tar::EntryType::Directory, 0o755, 0);
                    tar.append_data(&mut h, tar_path, io::empty())?;
                    self.summary.entries += 1;
                }
                return Ok(Some((repo.find_tree(entry.id())?, path)));
            }
            MODE_COMMIT => {
                if !excluded {
                    (self.warn)(format!(
                        "warning: skipping submodule {path}: submodules are not part of the build context"
                    ));
                    self.summary.skipped_submodules.push(path);
                }
            }
            _ if excluded => {}
            MODE_LINK => {
                let blob = repo.find_blob(entry.id())?;
                let target = Path::new(OsStr::from_bytes(blob.content()));
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut h, tar_path, target)?;
                self.summary.entries += 1;
            }
            mode @ (MODE_BLOB | MODE_BLOB_GROUP_WRITABLE | MODE_BLOB_EXEC) => {
                let blob = repo.find_blob(entry.id())?;
                let perm = if mode == MODE_BLOB_EXEC { 0o755 } else { 0o644 };
                let data = blob.content();
                let mut h = header(tar::EntryType::Regular, perm, data.len() as u64);
                tar.append_data(&mut h, tar_path, data)?;
                self.summary.entries += 1;
            }
            other => {
                (self.warn)(format!(
                    "warning: skipping {path}: unknown git file mode {other:o}"
                ));
            }
        }
        Ok(None)
    }
}

struct CountingWriter<W> {
    inner: W,
    bytes: u64,
    limit: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes + buf.len() as u64 > self.limit {
            return Err(io::Error::other(OverLimit));
        }
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hands the tar to the async side in chunks; blocks when the upload is
/// behind (the channel is bounded), fails when the upload went away.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(Ok(Bytes::from(chunk))).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "build context receiver dropped")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

#[cfg(test)]
pub(crate) mod tests;
