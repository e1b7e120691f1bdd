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

use super::dockerignore::{DockerIgnore, PatternError};

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
    #[error("the build context upload was aborted")]
    Aborted,
}

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
    let counting = CountingWriter { inner: w, bytes: 0 };
    let mut state = Walk {
        ignore: &spec.ignore,
        warn,
        summary: ContextSummary::default(),
        extra: HashSet::new(),
    };
    let mut tar = tar::Builder::new(counting);
    let repo = Repository::open(&spec.repo_path)?;
    let tree = open_commit(&repo, spec.commit)?.tree()?;
    state.write_extras(&mut tar, &spec.extra_files)?;
    state.walk(&repo, &tree, "", &mut tar)?;
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
    match write_context_to(spec, writer, warn) {
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

    fn walk<W: Write>(
        &mut self,
        repo: &Repository,
        tree: &Tree<'_>,
        prefix: &str,
        tar: &mut tar::Builder<W>,
    ) -> Result<(), ContextError> {
        for entry in tree.iter() {
            let name_bytes = entry.name_bytes();
            if name_bytes.eq_ignore_ascii_case(b".git") {
                continue;
            }
            // Matching works on text; the tar keeps the exact bytes.
            let name = String::from_utf8_lossy(name_bytes);
            let path = format!("{prefix}{name}");
            let raw_path: Vec<u8> = [prefix.as_bytes(), name_bytes].concat();
            let tar_path = Path::new(OsStr::from_bytes(&raw_path));
            if self.extra.contains(&path) {
                continue;
            }
            let excluded = self.ignore.is_excluded(&path);
            match entry.filemode() {
                MODE_TREE => {
                    if excluded && !self.ignore.must_descend(&path) {
                        continue;
                    }
                    if !excluded {
                        let mut h = header(tar::EntryType::Directory, 0o755, 0);
                        tar.append_data(&mut h, tar_path, io::empty())?;
                        self.summary.entries += 1;
                    }
                    let sub = repo.find_tree(entry.id())?;
                    self.walk(repo, &sub, &format!("{path}/"), tar)?;
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
        }
        Ok(())
    }
}

struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
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
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;

    /// Builds a commit from `(path, content, kind)` entries without a work
    /// tree: kind is `f` (file), `x` (executable), `l` (symlink, content =
    /// target), `s` (submodule, content ignored).
    pub(crate) fn commit_entries(
        repo: &Repository,
        entries: &[(&str, &[u8], char)],
        parent: Option<Oid>,
    ) -> Oid {
        let files = entries
            .iter()
            .map(|(path, content, kind)| {
                let mode = match kind {
                    'f' => MODE_BLOB,
                    'x' => MODE_BLOB_EXEC,
                    'l' => MODE_LINK,
                    's' => MODE_COMMIT,
                    _ => panic!("unknown kind {kind}"),
                };
                (path.to_string(), content.to_vec(), mode)
            })
            .collect();
        commit_files(repo, files, parent)
    }

    /// Builds a commit from `(path, content, git file mode)` entries.
    pub(crate) fn commit_files(
        repo: &Repository,
        entries: Vec<(String, Vec<u8>, i32)>,
        parent: Option<Oid>,
    ) -> Oid {
        // Nested map of directories, written bottom-up.
        #[derive(Default)]
        struct Dir {
            files: BTreeMap<String, (Oid, i32)>,
            dirs: BTreeMap<String, Dir>,
        }
        fn write(repo: &Repository, d: &Dir) -> Oid {
            let mut tb = repo.treebuilder(None).expect("treebuilder");
            for (name, (oid, mode)) in &d.files {
                tb.insert(name, *oid, *mode).expect("insert");
            }
            for (name, sub) in &d.dirs {
                let oid = write(repo, sub);
                tb.insert(name, oid, MODE_TREE).expect("insert tree");
            }
            tb.write().expect("write tree")
        }
        let mut root = Dir::default();
        for (path, content, mode) in entries {
            let mut parts: Vec<&str> = path.split('/').collect();
            let file = parts.pop().expect("non-empty path");
            let mut d = &mut root;
            for p in parts {
                d = d.dirs.entry(p.to_string()).or_default();
            }
            let oid = if mode == MODE_COMMIT {
                Oid::from_str("1111111111111111111111111111111111111111").expect("oid")
            } else {
                repo.blob(&content).expect("blob")
            };
            d.files.insert(file.to_string(), (oid, mode));
        }
        let tree_id = write(repo, &root);
        let tree = repo.find_tree(tree_id).expect("tree");
        let sig = git2::Signature::new("t", "t@example.com", &git2::Time::new(1_700_000_000, 0))
            .expect("sig");
        let parents: Vec<git2::Commit<'_>> = parent
            .into_iter()
            .map(|p| repo.find_commit(p).expect("parent"))
            .collect();
        let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        repo.commit(None, &sig, &sig, "test", &tree, &parent_refs)
            .expect("commit")
    }

    /// The files of a directory on disk as `commit_files` entries (symlinks
    /// as links, the owner's x bit as 100755).
    pub(crate) fn dir_entries(dir: &Path) -> Vec<(String, Vec<u8>, i32)> {
        use std::os::unix::fs::PermissionsExt;
        fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>, i32)>) {
            let mut names: Vec<_> = std::fs::read_dir(dir)
                .expect("read_dir")
                .map(|e| e.expect("entry").path())
                .collect();
            names.sort();
            for p in names {
                let rel = p
                    .strip_prefix(base)
                    .expect("under base")
                    .to_string_lossy()
                    .into_owned();
                let meta = std::fs::symlink_metadata(&p).expect("metadata");
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&p).expect("read_link");
                    out.push((rel, target.as_os_str().as_bytes().to_vec(), MODE_LINK));
                } else if meta.is_dir() {
                    walk(base, &p, out);
                } else {
                    let mode = if meta.permissions().mode() & 0o100 != 0 {
                        MODE_BLOB_EXEC
                    } else {
                        MODE_BLOB
                    };
                    out.push((rel, std::fs::read(&p).expect("read"), mode));
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Entry {
        kind: tar::EntryType,
        mode: u32,
        mtime: u64,
        uid: u64,
        content: Vec<u8>,
        link: Option<String>,
    }

    fn read_tar(bytes: &[u8]) -> BTreeMap<String, Entry> {
        let mut out = BTreeMap::new();
        let mut ar = tar::Archive::new(bytes);
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").to_string_lossy().into_owned();
            let h = e.header().clone();
            let link = e
                .link_name()
                .expect("link")
                .map(|l| l.to_string_lossy().into_owned());
            let mut content = Vec::new();
            e.read_to_end(&mut content).expect("read");
            out.insert(
                path,
                Entry {
                    kind: h.entry_type(),
                    mode: h.mode().expect("mode"),
                    mtime: h.mtime().expect("mtime"),
                    uid: h.uid().expect("uid"),
                    content,
                    link,
                },
            );
        }
        out
    }

    fn fixture() -> (tempfile::TempDir, Oid) {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let long = format!("deep/{}/file.txt", "d".repeat(120));
        let long_leak: &'static str = Box::leak(long.into_boxed_str());
        let oid = commit_entries(
            &repo,
            &[
                ("Dockerfile", b"FROM scratch\n", 'f'),
                (
                    ".dockerignore",
                    b"*.log\nsecrets/\ncache\n!cache/keep.txt\n",
                    'f',
                ),
                ("bin/start", b"#!/bin/sh\necho hi\n", 'x'),
                ("public/index.html", b"<h1>hi</h1>\n", 'f'),
                ("public/latest.html", b"index.html", 'l'),
                ("debug.log", b"noise\n", 'f'),
                ("secrets/key.txt", b"k\n", 'f'),
                ("cache/blob", b"b\n", 'f'),
                ("cache/keep.txt", b"keep\n", 'f'),
                ("vendor/lib", b"", 's'),
                (long_leak, b"long\n", 'f'),
            ],
            None,
        );
        (dir, oid)
    }

    fn spec(dir: &Path, oid: Oid, extra: Vec<ExtraFile>) -> ContextSpec {
        let info = inspect_commit(dir, oid).expect("inspect");
        let mut ignore =
            DockerIgnore::parse(info.dockerignore.as_deref().unwrap_or("")).expect("ignore");
        ignore.keep("Dockerfile");
        ignore.keep(".dockerignore");
        ContextSpec {
            repo_path: dir.to_path_buf(),
            commit: oid,
            ignore,
            extra_files: extra,
        }
    }

    #[test]
    fn tar_from_tree() {
        let (dir, oid) = fixture();
        let warnings = std::sync::Mutex::new(Vec::new());
        let (summary, bytes) = write_context_to(&spec(dir.path(), oid, vec![]), Vec::new(), &|w| {
            warnings.lock().unwrap().push(w)
        })
        .expect("tar");
        assert_eq!(summary.bytes, bytes.len() as u64);
        assert_eq!(summary.skipped_submodules, vec!["vendor/lib".to_string()]);
        assert!(warnings.lock().unwrap()[0].contains("submodule vendor/lib"));
        let entries = read_tar(&bytes);
        let names: Vec<&str> = entries.keys().map(|s| s.as_str()).collect();
        let long = format!("deep/{}/file.txt", "d".repeat(120));
        let want_long_dir = format!("deep/{}", "d".repeat(120));
        let mut want = vec![
            ".dockerignore",
            "Dockerfile",
            "bin",
            "bin/start",
            "cache/keep.txt",
            "deep",
            want_long_dir.as_str(),
            long.as_str(),
            "public",
            "public/index.html",
            "public/latest.html",
            "vendor",
        ];
        want.sort();
        assert_eq!(names, want);
        let start = &entries["bin/start"];
        assert_eq!((start.kind, start.mode), (tar::EntryType::Regular, 0o755));
        assert_eq!(start.content, b"#!/bin/sh\necho hi\n");
        let index = &entries["public/index.html"];
        assert_eq!(
            (index.mode, index.mtime, index.uid),
            (0o644, CONTEXT_MTIME, 0)
        );
        let link = &entries["public/latest.html"];
        assert_eq!(link.kind, tar::EntryType::Symlink);
        assert_eq!(link.link.as_deref(), Some("index.html"));
        assert_eq!(entries["bin"].kind, tar::EntryType::Directory);
        assert_eq!(entries["bin"].mode, 0o755);
        assert_eq!(entries[long.as_str()].content, b"long\n");
    }

    #[test]
    fn deterministic_and_extra_files_win() {
        let (dir, oid) = fixture();
        let a = write_context_to(&spec(dir.path(), oid, vec![]), Vec::new(), &|_| {})
            .expect("tar")
            .1;
        let b = write_context_to(&spec(dir.path(), oid, vec![]), Vec::new(), &|_| {})
            .expect("tar")
            .1;
        assert_eq!(a, b, "same tree, same bytes");
        let extra = vec![ExtraFile {
            path: "Dockerfile".into(),
            data: b"FROM busybox\n".to_vec(),
            mode: 0o644,
        }];
        let c = write_context_to(&spec(dir.path(), oid, extra), Vec::new(), &|_| {})
            .expect("tar")
            .1;
        let entries = read_tar(&c);
        assert_eq!(entries["Dockerfile"].content, b"FROM busybox\n");
        let mut ar = tar::Archive::new(c.as_slice());
        let count = ar
            .entries()
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().unwrap() == Path::new("Dockerfile"))
            .count();
        assert_eq!(
            count, 1,
            "the tree's Dockerfile is replaced, not duplicated"
        );
    }

    #[test]
    fn inspect_root() {
        let (dir, oid) = fixture();
        let info = inspect_commit(dir.path(), oid).expect("inspect");
        assert_eq!(info.dockerfile.as_deref(), Some("FROM scratch\n"));
        assert!(info.has_dir("public"));
        assert!(info.has_file("debug.log"));
        assert!(!info.has_file("vendor"));
        assert_eq!(
            read_root_file(dir.path(), oid, "debug.log")
                .unwrap()
                .as_deref(),
            Some("noise\n")
        );
        assert_eq!(read_root_file(dir.path(), oid, "nope").unwrap(), None);
    }

    #[tokio::test]
    async fn streams_in_bounded_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        // ~3 MiB of incompressible-ish content in a few files.
        let big: Vec<u8> = (0..3 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let oid = commit_entries(&repo, &[("a.bin", &big, 'f'), ("b.txt", b"b", 'f')], None);
        let s = ContextSpec {
            repo_path: dir.path().into(),
            commit: oid,
            ignore: DockerIgnore::default(),
            extra_files: vec![],
        };
        let ctx = stream_context(s, |_| {});
        use futures::StreamExt;
        let chunks: Vec<Bytes> = ctx.body.map(|c| c.expect("chunk")).collect().await;
        let summary = ctx.done.await.expect("join").expect("summary");
        assert!(chunks.iter().all(|c| c.len() <= CHUNK));
        let all: Vec<u8> = chunks.concat();
        assert_eq!(summary.bytes, all.len() as u64);
        assert_eq!(read_tar(&all)["a.bin"].content, big);
    }

    #[tokio::test]
    async fn dropped_receiver_aborts_producer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init_bare(dir.path()).expect("init");
        let big = vec![7u8; 4 * 1024 * 1024];
        let oid = commit_entries(&repo, &[("a.bin", &big, 'f')], None);
        let s = ContextSpec {
            repo_path: dir.path().into(),
            commit: oid,
            ignore: DockerIgnore::default(),
            extra_files: vec![],
        };
        let ctx = stream_context(s, |_| {});
        drop(ctx.body);
        let r = ctx.done.await.expect("join");
        assert!(matches!(r, Err(ContextError::Aborted)), "{r:?}");
    }
}
