//! The check every tar that enters a volume (`volumes:import`) passes.
//!
//! The tar is read entry by entry as it streams and written again, header
//! by header, into a new tar that holds only what passed: regular files,
//! directories, symbolic links and hard links, each under a relative path
//! without `..`, never under a symbolic link of the archive, links never
//! resolving outside the volume's root. Anything else (absolute paths,
//! `..`, device nodes, FIFOs, links that escape, an entry written through a
//! link) fails the whole import. The caller keeps the rewritten tar in a
//! temporary file until the end of the input has passed, and only then
//! writes it into the volume: a refused tar changes nothing.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Component, Path};

use tar::{Archive, Builder, EntryType, Header};

/// Why a tar was refused; `Display` is the user's line.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("the tar is larger than the limit of {0} bytes ([volumes] max_import_bytes)")]
    TooLarge(u64),
    #[error("reading the tar: {0}")]
    Io(#[from] std::io::Error),
}

/// What passed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
}

/// The relative path of an entry as components: `./a//b` is `a/b`; `None`
/// for the root itself. Absolute paths and `..` are refused.
fn relative(raw: &Path, what: &str) -> Result<Option<Vec<String>>, ArchiveError> {
    let shown = crate::names::printable(&raw.to_string_lossy());
    let mut out = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => {
                let p = p.to_str().ok_or_else(|| {
                    ArchiveError::Refused(format!("{what} '{shown}' is not UTF-8"))
                })?;
                out.push(p.to_string());
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::Refused(format!(
                    "{what} '{shown}' is absolute"
                )))
            }
            Component::ParentDir => {
                return Err(ArchiveError::Refused(format!(
                    "{what} '{shown}' contains '..'"
                )))
            }
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// What the archive made so far, to check links and paths against.
#[derive(Default)]
struct Seen {
    /// Paths that are symbolic links.
    symlinks: HashSet<String>,
    /// Paths that are regular files (hard link targets).
    files: HashSet<String>,
    /// Paths a symbolic link's target walks through as a directory: none
    /// of them may become a link later (it would redirect that walk).
    walked: HashSet<String>,
}

impl Seen {
    /// Refuses a path one of whose parents is a symbolic link of the
    /// archive (writing through a link).
    fn check_parents(&self, parts: &[String], shown: &str) -> Result<(), ArchiveError> {
        for i in 1..parts.len() {
            if self.symlinks.contains(&parts[..i].join("/")) {
                return Err(ArchiveError::Refused(format!(
                    "'{shown}' is inside the symbolic link '{}'",
                    crate::names::printable(&parts[..i].join("/"))
                )));
            }
        }
        Ok(())
    }

    /// Resolves a symbolic link's target from the link's directory,
    /// lexically: it must stay inside the root and never pass through a
    /// link of the archive.
    fn check_symlink(&mut self, parts: &[String], target: &Path) -> Result<(), ArchiveError> {
        let shown = crate::names::printable(&parts.join("/"));
        let raw = target.to_string_lossy();
        if target.is_absolute() || raw.is_empty() {
            return Err(ArchiveError::Refused(format!(
                "the symbolic link '{shown}' points to '{}', outside the volume",
                crate::names::printable(&raw)
            )));
        }
        let mut at: Vec<String> = parts[..parts.len() - 1].to_vec();
        let mut walked = Vec::new();
        for c in target.components() {
            match c {
                Component::Normal(p) => {
                    at.push(p.to_string_lossy().into_owned());
                    let here = at.join("/");
                    if self.symlinks.contains(&here) {
                        return Err(ArchiveError::Refused(format!(
                            "the symbolic link '{shown}' points through another link"
                        )));
                    }
                    walked.push(here);
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    if at.pop().is_none() {
                        return Err(ArchiveError::Refused(format!(
                            "the symbolic link '{shown}' points to '{}', outside the volume",
                            crate::names::printable(&raw)
                        )));
                    }
                }
                Component::RootDir | Component::Prefix(_) => unreachable!("checked above"),
            }
        }
        // The last component is the target itself (it may be a link
        // later); the ones before it are walked as directories.
        walked.pop();
        self.walked.extend(walked);
        Ok(())
    }
}

/// Reads a tar from `input` and writes what passes to `output` as a new
/// tar (see the module doc). Stops at the first refusal.
pub fn sanitize<R: Read, W: Write>(input: R, output: W) -> Result<Summary, ArchiveError> {
    let mut archive = Archive::new(input);
    let mut out = Builder::new(output);
    out.mode(tar::HeaderMode::Complete);
    let mut seen = Seen::default();
    let mut sum = Summary::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            continue;
        }
        let raw = entry.path()?.into_owned();
        let Some(parts) = relative(&raw, "path")? else {
            // The root itself (`./`): the volume's own directory.
            continue;
        };
        let path = parts.join("/");
        let shown = crate::names::printable(&path);
        seen.check_parents(&parts, &shown)?;
        let src = entry.header();
        let mut h = Header::new_gnu();
        // Numeric fields some writers leave blank read as 0.
        h.set_mode(src.mode().unwrap_or(0o644) & 0o1777);
        h.set_uid(src.uid().unwrap_or(0));
        h.set_gid(src.gid().unwrap_or(0));
        h.set_mtime(src.mtime().unwrap_or(0));
        // A later entry may replace an earlier one at the same path.
        seen.files.remove(&path);
        seen.symlinks.remove(&path);
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                h.set_entry_type(EntryType::Regular);
                h.set_size(size);
                out.append_data(&mut h, &path, &mut entry)?;
                seen.files.insert(path);
                sum.files += 1;
                sum.bytes += size;
            }
            EntryType::Directory => {
                h.set_entry_type(EntryType::Directory);
                h.set_size(0);
                out.append_data(&mut h, &path, std::io::empty())?;
                sum.dirs += 1;
            }
            EntryType::Symlink => {
                if seen.walked.contains(&path) {
                    return Err(ArchiveError::Refused(format!(
                        "the symbolic link '{shown}' replaces a directory another link points through"
                    )));
                }
                let target = entry.link_name()?.ok_or_else(|| {
                    ArchiveError::Refused(format!("the symbolic link '{shown}' has no target"))
                })?;
                let target = target.into_owned();
                seen.check_symlink(&parts, &target)?;
                h.set_entry_type(EntryType::Symlink);
                h.set_size(0);
                out.append_link(&mut h, &path, &target)?;
                seen.symlinks.insert(path);
                sum.links += 1;
            }
            EntryType::Link => {
                let target = entry.link_name()?.ok_or_else(|| {
                    ArchiveError::Refused(format!("the hard link '{shown}' has no target"))
                })?;
                let tparts = relative(&target, "hard link target")?.ok_or_else(|| {
                    ArchiveError::Refused(format!("the hard link '{shown}' points to the root"))
                })?;
                let tpath = tparts.join("/");
                if !seen.files.contains(&tpath) {
                    return Err(ArchiveError::Refused(format!(
                        "the hard link '{shown}' points to '{}', not a file earlier in the tar",
                        crate::names::printable(&tpath)
                    )));
                }
                h.set_entry_type(EntryType::Link);
                h.set_size(0);
                out.append_link(&mut h, &path, &tpath)?;
                seen.files.insert(path);
                sum.links += 1;
            }
            other => {
                return Err(ArchiveError::Refused(format!(
                    "'{shown}' is a {}, not a file, directory or link",
                    kind_name(other)
                )))
            }
        }
    }
    out.into_inner()?.flush()?;
    Ok(sum)
}

fn kind_name(t: EntryType) -> &'static str {
    match t {
        EntryType::Char => "character device",
        EntryType::Block => "block device",
        EntryType::Fifo => "FIFO",
        EntryType::GNUSparse => "sparse file",
        _ => "special entry",
    }
}

/// A `Read` over chunks a async task sends, counting them against `limit`:
/// the input of `sanitize` on a blocking thread, fed from an async stream.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    buf: bytes::Bytes,
}

impl ChannelReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>) -> ChannelReader {
        ChannelReader {
            rx,
            buf: bytes::Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.buf = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        bytes::Buf::advance(&mut self.buf, n);
        Ok(n)
    }
}

/// Streams `input` (at most `limit` bytes) through [`sanitize`] into
/// `file`, in 64 KiB chunks with at most a few in flight: nothing holds
/// the whole tar in memory.
pub async fn sanitize_stream<R>(
    mut input: R,
    limit: u64,
    file: std::fs::File,
) -> Result<Summary, ArchiveError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let work = tokio::task::spawn_blocking(move || {
        let mut w = std::io::BufWriter::new(file);
        let r = sanitize(ChannelReader::new(rx), &mut w);
        // Whatever the outcome, read the input to its end below: stop
        // early only by dropping the receiver (the sender sees it).
        r.and_then(|s| w.flush().map(|()| s).map_err(ArchiveError::from))
    });
    let mut total: u64 = 0;
    let mut too_large = false;
    loop {
        let mut buf = vec![0u8; 64 * 1024];
        let n = match input.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                break;
            }
        };
        total += n as u64;
        if total > limit {
            too_large = true;
            break;
        }
        buf.truncate(n);
        if tx.send(Ok(bytes::Bytes::from(buf))).await.is_err() {
            // The check stopped (a refusal): its error says why.
            break;
        }
    }
    if too_large {
        let _ = tx.send(Err(std::io::Error::other("over the limit"))).await;
        drop(tx);
        let _ = work.await;
        return Err(ArchiveError::TooLarge(limit));
    }
    drop(tx);
    work.await
        .map_err(|e| ArchiveError::Io(std::io::Error::other(e.to_string())))?
}
