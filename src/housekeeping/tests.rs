use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;

// One test: the housekeeper is process-wide, and tests run in parallel.
#[tokio::test]
async fn jobs_run_on_the_owned_worker_and_stop_with_it() {
    assert!(!submit("before start", Box::pin(async {})));
    let housekeeper = Housekeeper::start();
    let ran = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let counter = ran.clone();
    assert!(submit(
        "count",
        Box::pin(async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = done_tx.send(());
        })
    ));
    tokio::time::timeout(Duration::from_secs(5), done_rx)
        .await
        .expect("the job ran")
        .expect("the job finished");
    assert_eq!(ran.load(Ordering::SeqCst), 1);

    // A spawned job that waits does not hold up the queue: it waits for
    // the job queued after it.
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    assert!(spawn(
        "waits",
        Box::pin(async move {
            let _ = release_rx.await;
        })
    ));
    assert!(submit(
        "releases",
        Box::pin(async move {
            let _ = release_tx.send(());
            let _ = done_tx.send(());
        })
    ));
    tokio::time::timeout(Duration::from_secs(5), done_rx)
        .await
        .expect("the queued job ran while the spawned one waited")
        .expect("the job finished");

    // A job that would never end is stopped after the grace period.
    assert!(submit("forever", Box::pin(std::future::pending())));
    tokio::time::sleep(Duration::from_millis(50)).await;
    housekeeper.stop(Duration::from_millis(100)).await;
    assert!(!submit("after stop", Box::pin(async {})));
}
