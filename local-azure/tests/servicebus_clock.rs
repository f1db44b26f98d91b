//! Service Bus time: lock expiry and redelivery, dead-lettering on MaxDeliveryCount and TTL, scheduled messages.
//! One test, because it moves this local-azure's clock.

mod support;

use serde_json::json;
use support::*;

async fn advance(la: &LocalAzure, seconds: i64) {
    la.admin_post("/admin/clock/advance", json!({ "seconds": seconds })).await;
}

fn rfc1123(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap();
    t.format(time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    ))
    .unwrap()
}

#[tokio::test]
async fn locks_schedules_and_expiry_follow_the_clock() {
    let la = shared();
    let sb = Sb::new(la).await;

    // Lock expiry → redelivery with DeliveryCount + 1; at MaxDeliveryCount → dead-letter.
    let q = Sb::queue(la, "lock", json!({ "maxDeliveryCount": 2, "lockDurationSeconds": 60, "requiresSession": true }))
        .await;
    assert_eq!(sb.send(&q, "x", json!({"MessageId": "l1", "SessionId": "s"}), &[]).await, 201);
    assert_eq!(sb.send(&q, "y", json!({"MessageId": "l2", "SessionId": "s"}), &[]).await, 201);
    let m = sb.peek_lock(&q, 0).await.unwrap();
    assert_eq!((m.broker["MessageId"].as_str(), m.broker["DeliveryCount"].as_u64()), (Some("l1"), Some(1)));
    assert!(sb.peek_lock(&q, 0).await.is_none(), "the session is locked");
    advance(la, 61).await;
    let again = sb.peek_lock(&q, 0).await.unwrap();
    assert_eq!((again.broker["MessageId"].as_str(), again.broker["DeliveryCount"].as_u64()), (Some("l1"), Some(2)));
    assert_eq!(sb.complete(&q, &m).await, 410, "the first lock was lost");
    advance(la, 61).await;
    // The second lock lapsed too: l1 is dead-lettered and l2 is next in the session.
    let next = sb.peek_lock(&q, 0).await.unwrap();
    assert_eq!(next.broker["MessageId"], "l2");
    let dead = sb.peek_lock(&format!("{q}/$DeadLetterQueue"), 0).await.unwrap();
    assert_eq!(dead.broker["MessageId"], "l1");
    assert_eq!(dead.header("deadletterreason").as_deref(), Some("\"MaxDeliveryCountExceeded\""));

    // A waiting receiver is woken by the clock moving past a lock's end.
    assert!(sb.peek_lock(&q, 0).await.is_none());
    let waiter = {
        let sb = Sb { http: sb.http.clone(), base: sb.base.clone(), token: sb.token.clone() };
        let q = q.clone();
        tokio::spawn(async move { sb.peek_lock(&q, 50).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    advance(la, 61).await;
    let woke = tokio::time::timeout(std::time::Duration::from_secs(20), waiter).await.unwrap().unwrap().unwrap();
    assert_eq!((woke.broker["MessageId"].as_str(), woke.broker["DeliveryCount"].as_u64()), (Some("l2"), Some(2)));
    assert_eq!(sb.complete(&q, &woke).await, 200);

    // Scheduled enqueue.
    let q = Sb::queue(la, "sched", json!({})).await;
    let now = la.admin_get("/admin/clock").await["unix"].as_i64().unwrap();
    let at = rfc1123(now + 3600);
    assert_eq!(sb.send(&q, "later", json!({"MessageId": "s1", "ScheduledEnqueueTimeUtc": at}), &[]).await, 201);
    assert_eq!(sb.send(&q, "now", json!({"MessageId": "s2"}), &[]).await, 201);
    let info = la.admin_get(&format!("/admin/servicebus/queues/edgevault/{q}")).await;
    assert_eq!(info["counts"]["scheduledMessageCount"], 1);
    let first = sb.receive_and_delete(&q, 0).await.unwrap();
    assert_eq!(first.body, "now");
    assert!(sb.receive_and_delete(&q, 0).await.is_none(), "scheduled for later");
    advance(la, 3600).await;
    let later = sb.receive_and_delete(&q, 0).await.unwrap();
    assert_eq!((later.body.as_str(), later.broker["EnqueuedTimeUtc"].as_str()), ("later", Some(at.as_str())));

    // TTL: dead-lettered where the queue says so, gone otherwise.
    let dl = Sb::queue(la, "ttl", json!({ "deadLetteringOnMessageExpiration": true })).await;
    let drop = Sb::queue(la, "ttldrop", json!({ "defaultMessageTtlSeconds": 120 })).await;
    assert_eq!(sb.send(&dl, "short", json!({"MessageId": "t1", "TimeToLive": 60}), &[]).await, 201);
    assert_eq!(sb.send(&dl, "long", json!({"MessageId": "t2", "TimeToLive": 600}), &[]).await, 201);
    assert_eq!(sb.send(&drop, "capped", json!({"MessageId": "t3", "TimeToLive": 6000}), &[]).await, 201);
    advance(la, 121).await;
    let alive = sb.receive_and_delete(&dl, 0).await.unwrap();
    assert_eq!(alive.body, "long");
    assert!(sb.receive_and_delete(&dl, 0).await.is_none());
    let expired = sb.receive_and_delete(&format!("{dl}/$DeadLetterQueue"), 0).await.unwrap();
    assert_eq!(expired.body, "short");
    assert_eq!(expired.header("deadletterreason").as_deref(), Some("\"TTLExpiredException\""));
    assert!(sb.receive_and_delete(&drop, 0).await.is_none(), "the queue's default TTL caps the message's");
    assert!(sb.receive_and_delete(&format!("{drop}/$DeadLetterQueue"), 0).await.is_none());
}
