use super::*;
use crate::aws::state::Head;
use crate::aws::testing;

async fn bucket(prefix: &str) -> S3State {
    let ctx = testing::context(prefix).await.expect("moto");
    let bucket = format!("rack-{}-lease", ctx.rack);
    ctx.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let state = S3State::new(ctx, bucket);
    state
        .create_head(&Head {
            app: "app".into(),
            ..Head::default()
        })
        .await
        .unwrap();
    state
}

/// Two rack instances on one bucket: the second waits (and says so)
/// until the first gives the lease back; a holder that died without
/// giving it back loses it when it expires.
#[tokio::test]
async fn one_holder_across_instances_and_a_dead_holder_expires() {
    let state = bucket("lease").await;
    let fast = Duration::from_millis(50);
    let a = S3Lease::new(state.clone()).with_timing(Duration::from_secs(30), fast);
    let b = S3Lease::new(state.clone()).with_timing(Duration::from_secs(30), fast);
    let held = a.acquire("app", &Progress::discard(), false).await.unwrap();

    let (progress, mut lines) = Progress::channel();
    let waiter = tokio::spawn(async move {
        let h = b.acquire("app", &progress, false).await.unwrap();
        (h.counter(), b)
    });
    // The waiter says it waits: an event, not a sleep.
    let line = lines.recv().await.expect("a waiting line");
    assert!(line.contains(crate::provider::lock::WAITING), "{line}");
    assert!(!waiter.is_finished());
    let first = held.counter();
    drop(held);
    let (second, b) = waiter.await.unwrap();
    assert_eq!(second, first + 1, "the counter fences the new holder");

    // A holder that dies: its lease is never given back, so the next
    // one waits for the expiry, then takes it over.
    let short = S3Lease::new(state.clone()).with_timing(Duration::from_millis(300), fast);
    drop(b);
    // b's give-back runs in the background; wait for the head to show
    // it (polling the store, the event itself).
    loop {
        let (h, _) = state.head("app").await.unwrap().unwrap();
        if !h.lease.unwrap().is_live(crate::aws::state::now_ms()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = short
        .acquire("app", &Progress::discard(), false)
        .await
        .unwrap();
    let dead_counter = dead.counter();
    dead.heartbeat.abort();
    std::mem::forget(dead);
    let c = S3Lease::new(state.clone()).with_timing(Duration::from_secs(30), fast);
    let taken = c.acquire("app", &Progress::discard(), false).await.unwrap();
    assert_eq!(taken.counter(), dead_counter + 1);
    let (h, _) = state.head("app").await.unwrap().unwrap();
    assert_eq!(h.lease.unwrap().owner, c.owner);
}
