//! Output after the commands: `remote:` progress lines and keepalives on
//! side-band 2, the report-status on band 1, queued so a client that stops
//! reading never stalls a deploy (progress beyond a bound is dropped; the
//! report never is).
//!
//! Does not know: what the lines say or where they come from.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::git::pktline;
use crate::progress::ProgressRx;

/// Progress queued for a client that does not read is dropped beyond this.
const MAX_PENDING_OUTPUT: usize = 1 << 20;

/// Output after the commands: queued, written by [`write_loop`].
pub(super) struct Out {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    pending: Arc<AtomicUsize>,
    sideband: bool,
    last: Instant,
}

impl Out {
    /// An output queue and the [`write_loop`] that drains it into `w`.
    pub fn new<W: AsyncWrite + Unpin>(
        w: &mut W,
        sideband: bool,
    ) -> (Out, impl Future<Output = ()> + '_) {
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pending = Arc::new(AtomicUsize::new(0));
        let out = Out {
            tx,
            pending: pending.clone(),
            sideband,
            last: Instant::now(),
        };
        (out, write_loop(w, rx, pending))
    }

    fn send(&mut self, bytes: Vec<u8>, essential: bool) {
        if !essential && self.pending.load(Ordering::Relaxed) > MAX_PENDING_OUTPUT {
            return;
        }
        self.pending.fetch_add(bytes.len(), Ordering::Relaxed);
        let _ = self.tx.send(bytes);
        self.last = Instant::now();
    }

    /// A `remote:` line (needs side-band; git has nowhere else to show it).
    pub fn progress(&mut self, line: &str) {
        if self.sideband {
            let mut text = line.to_string();
            text.push('\n');
            self.send(
                pktline::sideband(pktline::BAND_PROGRESS, text.as_bytes()),
                false,
            );
        }
    }

    fn keepalive(&mut self) {
        if self.sideband {
            self.send(pktline::KEEPALIVE.to_vec(), false);
        }
    }

    /// report-status: pkt-lines and a flush, wrapped in band 1 when
    /// multiplexing, then a bare flush.
    pub fn report(&mut self, lines: &[String]) {
        let mut inner = Vec::new();
        for l in lines {
            let b = l.as_bytes();
            pktline::encode_into(&mut inner, &b[..b.len().min(pktline::MAX_PKT_DATA)]);
        }
        inner.extend_from_slice(pktline::FLUSH);
        if self.sideband {
            let mut framed = pktline::sideband(pktline::BAND_DATA, &inner);
            framed.extend_from_slice(pktline::FLUSH);
            self.send(framed, true);
        } else {
            self.send(inner, true);
        }
    }

    /// Drives `fut` to completion while forwarding `progress` lines as they
    /// come and sending keepalives during silences.
    pub async fn drive<F: Future>(
        &mut self,
        fut: F,
        mut progress: Option<&mut ProgressRx>,
        keepalive: Duration,
    ) -> F::Output {
        tokio::pin!(fut);
        let keepalive = keepalive.max(Duration::from_millis(100));
        loop {
            let deadline = self.last + keepalive;
            tokio::select! {
                biased;
                r = &mut fut => {
                    if let Some(rx) = progress.as_mut() {
                        while let Ok(line) = rx.try_recv() {
                            self.progress(&line);
                        }
                    }
                    return r;
                }
                line = async {
                    match progress.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match line {
                    Some(line) => self.progress(&line),
                    None => progress = None,
                },
                _ = tokio::time::sleep_until(deadline) => self.keepalive(),
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Arc<AtomicUsize>,
) {
    let mut broken = false;
    while let Some(bytes) = rx.recv().await {
        if !broken {
            let r = async {
                w.write_all(&bytes).await?;
                w.flush().await
            }
            .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "git client went away; output dropped");
                broken = true;
            }
        }
        pending.fetch_sub(bytes.len(), Ordering::Relaxed);
    }
}
