//! pkt-line framing (gitprotocol-common) and side-band-64k multiplexing.
//!
//! A pkt-line is four hex digits giving the total length (header included)
//! followed by the payload; `0000` is a flush, `0001` a delimiter and `0002`
//! a response end (protocol v2). With side-band-64k each packet's first
//! payload byte names the band: 1 data, 2 progress, 3 fatal error.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::GitError;

/// Longest packet git accepts, header included.
pub const MAX_PKT_LEN: usize = 65520;
/// Longest payload of one packet.
pub const MAX_PKT_DATA: usize = MAX_PKT_LEN - 4;
/// Longest payload of one side-band packet (one byte goes to the band).
pub const MAX_SIDEBAND_DATA: usize = MAX_PKT_DATA - 1;

pub const FLUSH: &[u8] = b"0000";
pub const DELIM: &[u8] = b"0001";
/// An empty band-1 packet: git's keepalive while the client waits.
pub const KEEPALIVE: &[u8] = b"0005\x01";

/// Side-band channels.
pub const BAND_DATA: u8 = 1;
pub const BAND_PROGRESS: u8 = 2;
pub const BAND_ERROR: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Data(Vec<u8>),
    Flush,
    Delim,
    ResponseEnd,
}

/// Encodes one data packet. Panics if `data` is longer than
/// [`MAX_PKT_DATA`]: callers split first (see [`sideband`]).
pub fn encode(data: &[u8]) -> Vec<u8> {
    assert!(data.len() <= MAX_PKT_DATA, "pkt-line payload too long");
    let mut out = Vec::with_capacity(data.len() + 4);
    out.extend_from_slice(format!("{:04x}", data.len() + 4).as_bytes());
    out.extend_from_slice(data);
    out
}

/// Appends one data packet to `out`.
pub fn encode_into(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&encode(data));
}

/// Frames `data` on `band`, split into as many packets as needed.
pub fn sideband(band: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    if data.is_empty() {
        out.extend_from_slice(b"0005");
        out.push(band);
    }
    for chunk in data.chunks(MAX_SIDEBAND_DATA) {
        out.extend_from_slice(format!("{:04x}", chunk.len() + 5).as_bytes());
        out.push(band);
        out.extend_from_slice(chunk);
    }
    out
}

/// Reads pkt-lines without reading ahead: whatever follows the last packet
/// read (a pack) is still in the underlying reader. Wrap the reader in a
/// `BufReader` and take it back with [`PktReader::into_inner`].
pub struct PktReader<R> {
    inner: R,
}

impl<R: AsyncRead + Unpin> PktReader<R> {
    pub fn new(inner: R) -> Self {
        PktReader { inner }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next packet, or `None` at a clean end of input (EOF before any
    /// byte of a packet).
    pub async fn read_packet(&mut self) -> Result<Option<Packet>, GitError> {
        let mut hdr = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            let n = self.inner.read(&mut hdr[got..]).await?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(GitError::Protocol(
                    "unexpected end of input in pkt-line header".into(),
                ));
            }
            got += n;
        }
        let len = parse_len(&hdr)?;
        match len {
            0 => return Ok(Some(Packet::Flush)),
            1 => return Ok(Some(Packet::Delim)),
            2 => return Ok(Some(Packet::ResponseEnd)),
            3 => return Err(GitError::Protocol("invalid pkt-line length 3".into())),
            _ => {}
        }
        if len > MAX_PKT_LEN {
            return Err(GitError::Protocol(format!(
                "pkt-line too long ({len} bytes)"
            )));
        }
        let mut data = vec![0u8; len - 4];
        self.inner
            .read_exact(&mut data)
            .await
            .map_err(|_| GitError::Protocol("unexpected end of input in pkt-line".into()))?;
        Ok(Some(Packet::Data(data)))
    }

    /// Like [`read_packet`](Self::read_packet) but an end of input is an error.
    pub async fn expect_packet(&mut self) -> Result<Packet, GitError> {
        self.read_packet()
            .await?
            .ok_or_else(|| GitError::Protocol("unexpected end of input".into()))
    }
}

fn parse_len(hdr: &[u8; 4]) -> Result<usize, GitError> {
    let mut len = 0usize;
    for &b in hdr {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => {
                return Err(GitError::Protocol(format!(
                    "bad pkt-line header {:?}",
                    String::from_utf8_lossy(hdr)
                )))
            }
        };
        len = len * 16 + d as usize;
    }
    Ok(len)
}

/// Writes pkt-lines, optionally multiplexed on side-band-64k.
pub struct PktWriter<W> {
    inner: W,
}

impl<W: AsyncWrite + Unpin> PktWriter<W> {
    pub fn new(inner: W) -> Self {
        PktWriter { inner }
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }

    /// One data packet (split is the caller's job; see [`encode`]).
    pub async fn data(&mut self, data: &[u8]) -> Result<(), GitError> {
        self.inner.write_all(&encode(data)).await?;
        Ok(())
    }

    pub async fn flush_pkt(&mut self) -> Result<(), GitError> {
        self.inner.write_all(FLUSH).await?;
        Ok(())
    }

    pub async fn delim(&mut self) -> Result<(), GitError> {
        self.inner.write_all(DELIM).await?;
        Ok(())
    }

    /// `data` on `band`, split into packets of at most 65515 payload bytes.
    pub async fn band(&mut self, band: u8, data: &[u8]) -> Result<(), GitError> {
        self.inner.write_all(&sideband(band, data)).await?;
        Ok(())
    }

    pub async fn raw(&mut self, bytes: &[u8]) -> Result<(), GitError> {
        self.inner.write_all(bytes).await?;
        Ok(())
    }

    /// Flushes the underlying writer (not a flush packet).
    pub async fn flush(&mut self) -> Result<(), GitError> {
        self.inner.flush().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
