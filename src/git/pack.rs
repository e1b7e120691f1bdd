//! A streaming scanner for the pack a client pushes (gitformat-pack).
//!
//! It sees every byte before libgit2's indexer does, so it can refuse an
//! object from its entry header (or, for a delta, from the result size at
//! the start of the delta data) before the indexer holds any of it in
//! memory, cap the pack's total size, and tell where the pack ends without
//! waiting for the client to close its side.

use flate2::{Decompress, FlushDecompress, Status};

/// Why a pack was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// One object is larger than the limit (`size`, `limit`, bytes).
    ObjectTooLarge { size: u64, limit: u64 },
    /// The pack is larger than the limit.
    PackTooLarge { limit: u64 },
    /// The pack announces more objects than the limit.
    TooManyObjects { count: u32, limit: u32 },
    /// Not a pack git would write.
    Corrupt(String),
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::ObjectTooLarge { size, limit } => write!(
                f,
                "an object of {} exceeds the limit of {} for a single object",
                human(*size),
                human(*limit)
            ),
            ScanError::TooManyObjects { count, limit } => write!(
                f,
                "the pack has {count} objects, over the limit of {limit} objects in one push"
            ),
            ScanError::PackTooLarge { limit } => {
                write!(
                    f,
                    "the pack exceeds the limit of {} per push",
                    human(*limit)
                )
            }
            ScanError::Corrupt(m) => write!(f, "corrupt pack: {m}"),
        }
    }
}

/// `104857600` → `100.0 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

const OBJ_OFS_DELTA: u8 = 6;
const OBJ_REF_DELTA: u8 = 7;
const HASH_LEN: usize = 20;

#[derive(Debug)]
enum State {
    /// `PACK`, version, object count: 12 bytes.
    Header,
    /// Type and size varint of the next entry.
    EntryHeader,
    /// The negative offset of an OFS_DELTA's base.
    OfsBase,
    /// The 20-byte id of a REF_DELTA's base; bytes still to skip.
    RefBase(usize),
    /// The zlib stream of the entry's data.
    Data,
    /// The pack's trailing checksum; bytes still to skip.
    Trailer(usize),
    Done,
}

pub struct PackScanner {
    state: State,
    max_object: u64,
    max_pack: u64,
    max_objects: u32,
    consumed: u64,
    objects: u32,
    seen: u32,
    buf: Vec<u8>,
    entry_type: u8,
    entry_size: u64,
    /// For deltas: the first inflated bytes, until the result size is known.
    delta_head: Vec<u8>,
    delta_checked: bool,
    inflate: Decompress,
    scratch: Vec<u8>,
    /// The first oversized object; scanning goes on so the client can be
    /// answered after its whole pack, but the pack will be refused.
    refused: Option<ScanError>,
    /// Offset of the entry being read.
    entry_offset: u64,
    /// Every entry so far: offset and object type (a delta's is its base's,
    /// or 0 when unknown: a base outside the pack).
    entries: Vec<(u64, u8)>,
}

impl PackScanner {
    pub fn new(max_object: u64, max_pack: u64) -> Self {
        PackScanner {
            state: State::Header,
            max_object,
            max_pack,
            max_objects: u32::MAX,
            consumed: 0,
            objects: 0,
            seen: 0,
            buf: Vec::with_capacity(16),
            entry_type: 0,
            entry_size: 0,
            delta_head: Vec::new(),
            delta_checked: false,
            inflate: Decompress::new(true),
            scratch: vec![0u8; 64 * 1024],
            refused: None,
            entry_offset: 0,
            entries: Vec::new(),
        }
    }

    /// Refuses a pack announcing more than `n` objects, from its header.
    pub fn max_objects(mut self, n: u32) -> Self {
        self.max_objects = n;
        self
    }

    /// Offset and type (1 commit, 2 tree, 3 blob, 4 tag; 0 unknown) of every
    /// entry, in pack order: whoever reads the indexed pack can skip blobs
    /// without asking libgit2, whose type lookup walks a delta's whole chain.
    pub fn into_entries(self) -> Vec<(u64, u8)> {
        self.entries
    }

    /// True once the trailer has been read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Number of objects the pack header announced.
    pub fn object_count(&self) -> u32 {
        self.objects
    }

    /// Bytes of pack scanned so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The first object-size violation seen, if any.
    pub fn refused(&self) -> Option<&ScanError> {
        self.refused.as_ref()
    }

    /// Scans `data`; returns how many bytes were scanned: less than
    /// `data.len()` only when the pack ended inside `data`, or when this call
    /// found the first object over the limit (then [`refused`](Self::refused)
    /// turns `Some`, and the caller should stop feeding the indexer and go on
    /// scanning the rest to find the end of the pack).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, ScanError> {
        let mut pos = 0;
        while pos < data.len() {
            let before = pos;
            let refused_before = self.refused.is_some();
            match self.state {
                State::Done => break,
                State::Header => {
                    let need = 12 - self.buf.len();
                    let take = need.min(data.len() - pos);
                    self.buf.extend_from_slice(&data[pos..pos + take]);
                    pos += take;
                    if self.buf.len() == 12 {
                        if &self.buf[..4] != b"PACK" {
                            return Err(ScanError::Corrupt("missing PACK signature".into()));
                        }
                        let version =
                            u32::from_be_bytes(self.buf[4..8].try_into().expect("4 bytes"));
                        if version != 2 && version != 3 {
                            return Err(ScanError::Corrupt(format!(
                                "unsupported pack version {version}"
                            )));
                        }
                        self.objects =
                            u32::from_be_bytes(self.buf[8..12].try_into().expect("4 bytes"));
                        if self.objects > self.max_objects {
                            return Err(ScanError::TooManyObjects {
                                count: self.objects,
                                limit: self.max_objects,
                            });
                        }
                        self.buf.clear();
                        self.state = if self.objects == 0 {
                            State::Trailer(HASH_LEN)
                        } else {
                            State::EntryHeader
                        };
                    }
                }
                State::EntryHeader => {
                    if self.buf.is_empty() {
                        self.entry_offset = self.consumed + (pos - before) as u64;
                    }
                    let b = data[pos];
                    pos += 1;
                    self.buf.push(b);
                    if b & 0x80 == 0 {
                        self.start_entry()?;
                    } else if self.buf.len() > 10 {
                        return Err(ScanError::Corrupt("object size header too long".into()));
                    }
                }
                State::OfsBase => {
                    let b = data[pos];
                    pos += 1;
                    self.buf.push(b);
                    if b & 0x80 == 0 {
                        self.ofs_base()?;
                        self.buf.clear();
                        self.begin_data();
                    } else if self.buf.len() > 10 {
                        return Err(ScanError::Corrupt("delta base offset too long".into()));
                    }
                }
                State::RefBase(left) => {
                    let take = left.min(data.len() - pos);
                    pos += take;
                    if take == left {
                        self.begin_data();
                    } else {
                        self.state = State::RefBase(left - take);
                    }
                }
                State::Data => {
                    pos += self.inflate_some(&data[pos..])?;
                }
                State::Trailer(left) => {
                    let take = left.min(data.len() - pos);
                    pos += take;
                    self.state = if take == left {
                        State::Done
                    } else {
                        State::Trailer(left - take)
                    };
                }
            }
            self.consumed += (pos - before) as u64;
            if self.consumed > self.max_pack {
                return Err(ScanError::PackTooLarge {
                    limit: self.max_pack,
                });
            }
            if !refused_before && self.refused.is_some() {
                // Stop right here so the caller can stop feeding the
                // indexer before any more of this object reaches it.
                return Ok(pos);
            }
        }
        Ok(pos)
    }

    fn start_entry(&mut self) -> Result<(), ScanError> {
        let first = self.buf[0];
        let ty = (first >> 4) & 7;
        let mut size = (first & 0x0f) as u64;
        let mut shift = 4;
        for &b in &self.buf[1..] {
            if shift > 57 {
                return Err(ScanError::Corrupt("object size overflows".into()));
            }
            size |= ((b & 0x7f) as u64) << shift;
            shift += 7;
        }
        self.buf.clear();
        self.entry_type = ty;
        self.entry_size = size;
        self.check_size(size);
        match ty {
            1..=4 => {
                self.entries.push((self.entry_offset, ty));
                self.begin_data()
            }
            OBJ_OFS_DELTA => self.state = State::OfsBase,
            OBJ_REF_DELTA => {
                self.entries.push((self.entry_offset, 0));
                self.state = State::RefBase(HASH_LEN)
            }
            _ => return Err(ScanError::Corrupt(format!("invalid object type {ty}"))),
        }
        Ok(())
    }

    /// Records an OFS_DELTA entry with its base's type; the base offset
    /// (git's varint, `buf`) counts back from this entry.
    fn ofs_base(&mut self) -> Result<(), ScanError> {
        let mut back = (self.buf[0] & 0x7f) as u64;
        for &b in &self.buf[1..] {
            back = (back + 1)
                .checked_mul(128)
                .ok_or_else(|| ScanError::Corrupt("delta base offset overflows".into()))?
                | (b & 0x7f) as u64;
        }
        let base = self
            .entry_offset
            .checked_sub(back)
            .filter(|_| back > 0)
            .ok_or_else(|| ScanError::Corrupt("delta base offset out of range".into()))?;
        let ty = match self.entries.binary_search_by_key(&base, |e| e.0) {
            Ok(i) => self.entries[i].1,
            Err(_) => return Err(ScanError::Corrupt("delta base is not an entry".into())),
        };
        self.entries.push((self.entry_offset, ty));
        Ok(())
    }

    fn check_size(&mut self, size: u64) {
        if size > self.max_object && self.refused.is_none() {
            self.refused = Some(ScanError::ObjectTooLarge {
                size,
                limit: self.max_object,
            });
        }
    }

    fn begin_data(&mut self) {
        self.inflate.reset(true);
        self.delta_head.clear();
        self.delta_checked = !matches!(self.entry_type, OBJ_OFS_DELTA | OBJ_REF_DELTA);
        self.state = State::Data;
    }

    /// Inflates from `input`; returns the bytes of it that belong to this
    /// entry's zlib stream.
    fn inflate_some(&mut self, input: &[u8]) -> Result<usize, ScanError> {
        let mut used = 0;
        loop {
            let in_before = self.inflate.total_in();
            let out_before = self.inflate.total_out();
            let status = self
                .inflate
                .decompress(&input[used..], &mut self.scratch, FlushDecompress::None)
                .map_err(|e| ScanError::Corrupt(format!("bad zlib data: {e}")))?;
            let took = (self.inflate.total_in() - in_before) as usize;
            let produced = (self.inflate.total_out() - out_before) as usize;
            used += took;
            if self.inflate.total_out() > self.entry_size {
                return Err(ScanError::Corrupt(
                    "object data longer than its header says".into(),
                ));
            }
            if !self.delta_checked {
                let want = 20usize.saturating_sub(self.delta_head.len()).min(produced);
                self.delta_head.extend_from_slice(&self.scratch[..want]);
                self.check_delta_head(status == Status::StreamEnd)?;
            }
            match status {
                Status::StreamEnd => {
                    if self.inflate.total_out() != self.entry_size {
                        return Err(ScanError::Corrupt(
                            "object data shorter than its header says".into(),
                        ));
                    }
                    self.seen += 1;
                    self.state = if self.seen == self.objects {
                        State::Trailer(HASH_LEN)
                    } else {
                        State::EntryHeader
                    };
                    return Ok(used);
                }
                Status::Ok | Status::BufError => {
                    if used == input.len() && produced < self.scratch.len() {
                        return Ok(used);
                    }
                    if took == 0 && produced == 0 {
                        return Ok(used);
                    }
                }
            }
        }
    }

    /// A delta starts with two size varints: the base's and the result's.
    /// The result size is the object the indexer will build in memory.
    fn check_delta_head(&mut self, complete: bool) -> Result<(), ScanError> {
        let mut p = 0;
        let mut sizes = [0u64; 2];
        for size in sizes.iter_mut() {
            let mut shift = 0;
            loop {
                let Some(&b) = self.delta_head.get(p) else {
                    if complete {
                        return Err(ScanError::Corrupt("truncated delta header".into()));
                    }
                    return Ok(());
                };
                p += 1;
                if shift > 63 {
                    return Err(ScanError::Corrupt("delta size overflows".into()));
                }
                *size |= ((b & 0x7f) as u64) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        self.delta_checked = true;
        self.check_size(sizes[1]);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
