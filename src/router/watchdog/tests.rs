use super::*;

#[tokio::test(flavor = "current_thread")]
async fn deadlines_fire_in_order_on_the_tick_and_fall_back_without_one() {
    // No ticker on this thread yet: a tokio timer.
    let t0 = Instant::now();
    after(Duration::from_millis(20)).await;
    assert!(t0.elapsed() >= Duration::from_millis(20));

    let ticker = tokio::spawn(tick());
    tokio::task::yield_now().await;
    assert!(TICKING.with(Cell::get), "the ticker marks its thread");
    let t0 = Instant::now();
    let short = after(Duration::from_millis(60));
    let long = after(Duration::from_millis(400));
    let dropped = after(Duration::from_millis(10));
    drop(dropped);
    tokio::pin!(long);
    tokio::select! {
        _ = short => {}
        _ = &mut long => panic!("the later deadline fired first"),
    }
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(60) && waited < Duration::from_millis(60) + 4 * TICK,
        "fired after {waited:?}"
    );
    long.await;
    assert!(t0.elapsed() >= Duration::from_millis(400));
    // Fired and dropped entries are gone from the list.
    tokio::time::sleep(2 * TICK).await;
    assert_eq!(PENDING.with(|p| p.borrow().len()), 0);
    ticker.abort();
    let _ = ticker.await;
    assert!(
        !TICKING.with(Cell::get),
        "an aborted ticker unmarks its thread"
    );
}
