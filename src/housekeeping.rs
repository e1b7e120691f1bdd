//! Housekeeping: upkeep that runs beside the server, not inside a request
//! (repacking a repo with too many packs, giving freed memory back to the
//! system after a push; pruning old images is meant to move here too).
//!
//! One worker task runs the jobs from a bounded queue, one at a time
//! ([`submit`]), or on tasks of its own for a job that may wait
//! ([`spawn`]). The server owns it ([`Housekeeper::start`] when it starts
//! serving, [`Housekeeper::stop`] on shutdown), so no job outlives the
//! server and none runs on a detached thread. While no housekeeper runs
//! (a library user, a unit test) or its queue is full, a job is dropped:
//! every job here is upkeep whose next chance comes with the next push.
//!
//! Does not know: what the jobs of other modules do (it only runs the
//! memory trim itself). A [`submit`]ted job must not wait long on
//! anything else (a lock, a network peer): the jobs behind it wait too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Jobs waiting beyond this are dropped (see [`submit`]).
const QUEUE_LEN: usize = 64;

struct Job {
    name: &'static str,
    work: BoxFuture<'static, ()>,
    /// Runs beside the other jobs (see [`spawn`]) instead of in turn.
    beside: bool,
}

/// The queue of the running housekeeper, if any.
static QUEUE: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);
/// A memory trim is queued (see [`release_free_memory`]).
static TRIM_QUEUED: AtomicBool = AtomicBool::new(false);

/// The running worker; stopping it is the owner's job.
pub struct Housekeeper {
    queue: mpsc::Sender<Job>,
    stop: watch::Sender<bool>,
    worker: JoinHandle<()>,
}

impl Housekeeper {
    /// Starts the worker on the current tokio runtime and makes it the one
    /// [`submit`] queues to.
    pub fn start() -> Housekeeper {
        let (queue, rx) = mpsc::channel(QUEUE_LEN);
        let (stop, stopped) = watch::channel(false);
        let worker = tokio::spawn(work(rx, stopped));
        // A trim dropped with an earlier housekeeper's queue never ran.
        TRIM_QUEUED.store(false, Ordering::Release);
        *QUEUE.lock().unwrap_or_else(|e| e.into_inner()) = Some(queue.clone());
        Housekeeper {
            queue,
            stop,
            worker,
        }
    }

    /// Takes no more jobs, drops those still queued, lets the jobs at hand
    /// finish within `grace`, then aborts them (a child process one started
    /// with `kill_on_drop` is killed).
    pub async fn stop(self, grace: Duration) {
        {
            let mut current = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
            if current
                .as_ref()
                .is_some_and(|q| q.same_channel(&self.queue))
            {
                *current = None;
            }
        }
        let _ = self.stop.send(true);
        let mut worker = self.worker;
        if tokio::time::timeout(grace, &mut worker).await.is_err() {
            tracing::warn!("housekeeping job still running at shutdown; stopped");
            worker.abort();
            let _ = worker.await;
        }
    }
}

/// Queues `work` for the running housekeeper, to run after the jobs
/// before it. Returns whether it was queued (not when no housekeeper runs
/// or its queue is full).
pub fn submit(name: &'static str, work: BoxFuture<'static, ()>) -> bool {
    queue(Job {
        name,
        work,
        beside: false,
    })
}

/// Like [`submit`], for a job that may wait (e.g. for an app's deploy
/// lock): it runs on a task of its own beside the others, owned by the
/// housekeeper all the same (stopped with it).
pub fn spawn(name: &'static str, work: BoxFuture<'static, ()>) -> bool {
    queue(Job {
        name,
        work,
        beside: true,
    })
}

fn queue(job: Job) -> bool {
    let queue = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(queue) = queue.as_ref() else {
        return false;
    };
    let name = job.name;
    match queue.try_send(job) {
        Ok(()) => true,
        Err(_) => {
            tracing::debug!(job = name, "housekeeping queue full; job dropped");
            false
        }
    }
}

async fn work(mut jobs: mpsc::Receiver<Job>, mut stop: watch::Receiver<bool>) {
    let mut beside = JoinSet::new();
    loop {
        let job = tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(_) = beside.join_next(), if !beside.is_empty() => continue,
            job = jobs.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        tracing::debug!(job = job.name, "housekeeping");
        if job.beside {
            beside.spawn(job.work);
        } else {
            job.work.await;
        }
    }
    // Within the owner's grace period; aborted with the worker after it.
    while beside.join_next().await.is_some() {}
}

/// Gives memory freed after a push's libgit2 work back to the system, on
/// the housekeeper (a blocking thread of its runtime).
/// glibc keeps freed memory in per-thread arenas, and pushes run on
/// whichever blocking thread is free: without this, RSS ratchets up push
/// after push (measured: 56, 78, 90 MiB after three pushes of the same
/// 10,000-commit history). `malloc_trim` walks every arena, so it need not
/// run on the thread that freed the memory.
/// Trims requested while one is queued are served by that one.
pub fn release_free_memory() {
    if TRIM_QUEUED.swap(true, Ordering::AcqRel) {
        return;
    }
    let queued = submit(
        "release free memory",
        Box::pin(async {
            // Cleared first: memory freed from here on needs another trim.
            TRIM_QUEUED.store(false, Ordering::Release);
            let _ = tokio::task::spawn_blocking(trim).await;
        }),
    );
    if !queued {
        TRIM_QUEUED.store(false, Ordering::Release);
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests;
