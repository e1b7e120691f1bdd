use super::*;
use crate::aws::testing;

async fn put(ctx: &AwsContext, group: &str, stream: &str, lines: &[(i64, &str)]) {
    let _ = ctx
        .logs
        .create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await;
    let mut req = ctx
        .logs
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream);
    for (ts, m) in lines {
        req = req.log_events(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(*ts)
                .message(*m)
                .build()
                .unwrap(),
        );
    }
    req.send().await.unwrap();
}

#[test]
fn stream_names() {
    assert_eq!(stream_parts("web/web/abc123"), Some(("web", "abc123")));
    assert_eq!(stream_parts("run/run/t/x"), Some(("run", "t/x")));
    assert_eq!(stream_parts("web"), None);
    assert_eq!(stream_parts("/web/"), None);
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
}

/// Against moto: a group read in batches returns each event once, in
/// time order, filtered by type; a stream reader follows one stream.
#[tokio::test]
async fn readers_return_each_event_once_in_order() {
    let ctx = testing::context("logs").await.expect("moto");
    let group = format!("/rack/{}/app", ctx.rack);
    // Missing group and stream: empty, not an error.
    let mut r = GroupReader::new(&ctx, &group, None, 0);
    assert_eq!(r.next_batch(|_| {}).await.unwrap(), 0);
    let mut s = StreamReader::new(&ctx, &group, "run/run/t9");
    assert!(s.next_batch().await.unwrap().is_empty());

    ctx.logs
        .create_log_group()
        .log_group_name(&group)
        .send()
        .await
        .unwrap();
    let now = crate::aws::state::now_ms();
    put(&ctx, &group, "web/web/t1", &[(now, "a"), (now + 2, "c")]).await;
    put(&ctx, &group, "worker/worker/t2", &[(now + 1, "b")]).await;
    let mut got = Vec::new();
    r.next_batch(|e| got.push(format!("{}.{} {}", e.kind, e.task, e.message)))
        .await
        .unwrap();
    assert_eq!(got, ["web.t1 a", "worker.t2 b", "web.t1 c"]);
    got.clear();
    // Nothing new: nothing again (the newest timestamp is inclusive).
    r.next_batch(|e| got.push(e.message)).await.unwrap();
    assert!(got.is_empty(), "{got:?}");
    put(
        &ctx,
        &group,
        "web/web/t1",
        &[(now + 2, "c2"), (now + 3, "d")],
    )
    .await;
    r.next_batch(|e| got.push(e.message)).await.unwrap();
    assert_eq!(got, ["c2", "d"]);

    let mut web = GroupReader::new(&ctx, &group, Some("worker".into()), 0);
    let mut only = Vec::new();
    web.next_batch(|e| only.push(e.message)).await.unwrap();
    assert_eq!(only, ["b"]);

    put(
        &ctx,
        &group,
        "run/run/t9",
        &[(now, "one"), (now + 1, "two")],
    )
    .await;
    assert_eq!(s.next_batch().await.unwrap(), ["one", "two"]);
    assert!(s.next_batch().await.unwrap().is_empty());
    put(&ctx, &group, "run/run/t9", &[(now + 5, "three")]).await;
    assert_eq!(s.next_batch().await.unwrap(), ["three"]);
}
