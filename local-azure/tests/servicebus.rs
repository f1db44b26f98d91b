//! Service Bus over the raw REST protocol through the proxy: sessions, duplicates, batches, locks, dead-lettering,
//! authorisation, long-polling, faults and the admin API. Nothing here moves the clock (see `servicebus_clock.rs`).

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::*;

fn session_queue() -> Value {
    json!({ "requiresSession": true, "requiresDuplicateDetection": true, "lockDurationSeconds": 60 })
}

#[tokio::test]
async fn sessions_are_in_order_with_one_consumer_at_a_time() {
    let la = shared();
    let sb = Sb::new(la).await;
    let q = Sb::queue(la, "sess", session_queue()).await;
    for (id, session) in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("a3", "A")] {
        assert_eq!(
            sb.send(&q, &format!("{{\"id\":\"{id}\"}}"), json!({"MessageId": id, "SessionId": session}), &[]).await,
            201
        );
    }
    let first = sb.peek_lock(&q, 0).await.unwrap();
    assert_eq!((first.broker["MessageId"].as_str(), first.broker["SessionId"].as_str()), (Some("a1"), Some("A")));
    // Session A is locked while a1 is: the next consumer gets session B, then nothing.
    let second = sb.peek_lock(&q, 0).await.unwrap();
    assert_eq!(second.broker["MessageId"], "b1");
    assert!(sb.peek_lock(&q, 0).await.is_none(), "both sessions are locked");
    // Abandoning a1 frees the session; a1 comes back first (order within the session holds).
    assert_eq!(sb.abandon(&q, &first).await, 200);
    let again = sb.peek_lock(&q, 0).await.unwrap();
    assert_eq!((again.broker["MessageId"].as_str(), again.broker["DeliveryCount"].as_u64()), (Some("a1"), Some(2)));
    assert_eq!(sb.complete(&q, &again).await, 200);
    let next = sb.peek_lock(&q, 0).await.unwrap();
    assert_eq!(next.broker["MessageId"], "a2");
    assert_eq!(sb.complete(&q, &next).await, 200);
    assert_eq!(sb.complete(&q, &second).await, 200);
    let last = sb.peek_lock(&q, 0).await.unwrap();
    assert_eq!(last.broker["MessageId"], "a3");
    assert_eq!(sb.complete(&q, &last).await, 200);
    assert!(sb.peek_lock(&q, 0).await.is_none());

    // A session queue refuses messages without a SessionId.
    assert_eq!(sb.send(&q, "{}", json!({"MessageId": "nosession"}), &[]).await, 400);
}

#[tokio::test]
async fn duplicates_within_the_window_are_dropped() {
    let la = shared();
    let sb = Sb::new(la).await;
    // The default edgevault queues detect duplicates; use a fresh one with the same settings.
    let q = Sb::queue(la, "dup", json!({ "requiresDuplicateDetection": true })).await;
    assert_eq!(sb.send(&q, "{\"n\":1}", json!({"MessageId": "same"}), &[]).await, 201);
    assert_eq!(sb.send(&q, "{\"n\":2}", json!({"MessageId": "same"}), &[]).await, 201);
    let m = sb.receive_and_delete(&q, 0).await.unwrap();
    assert_eq!((m.status, m.body.as_str()), (200, "{\"n\":1}"));
    assert!(sb.receive_and_delete(&q, 0).await.is_none(), "the duplicate was dropped");
    // Without duplicate detection both are kept.
    let plain = Sb::queue(la, "nodup", json!({})).await;
    for _ in 0..2 {
        assert_eq!(sb.send(&plain, "x", json!({"MessageId": "same"}), &[]).await, 201);
    }
    assert!(sb.receive_and_delete(&plain, 0).await.is_some());
    assert!(sb.receive_and_delete(&plain, 0).await.is_some());
}

#[tokio::test]
async fn batch_send_and_message_properties() {
    let la = shared();
    let sb = Sb::new(la).await;
    let q = Sb::queue(la, "batch", json!({})).await;
    let batch = json!([
        {"Body": "{\"n\":1}", "BrokerProperties": {"MessageId": "m1", "Label": "first", "CorrelationId": "c1"}, "UserProperties": {"Device": "d1", "Priority": 5}},
        {"Body": "{\"n\":2}", "BrokerProperties": {"MessageId": "m2"}},
        {"Body": "{\"n\":3}"}
    ]);
    assert_eq!(sb.send_batch(&q, batch).await, 201);
    assert_eq!(
        sb.send(&q, "single", json!({"MessageId": "m4", "SessionId": "s"}), &[("Device", "\"d4\""), ("Count", "7")])
            .await,
        201
    );

    let m1 = sb.peek_lock(&q, 0).await.unwrap();
    assert_eq!(m1.status, 201);
    assert_eq!(m1.body, "{\"n\":1}");
    let b = &m1.broker;
    assert_eq!(
        (b["MessageId"].as_str(), b["Label"].as_str(), b["CorrelationId"].as_str()),
        (Some("m1"), Some("first"), Some("c1"))
    );
    assert_eq!(b["DeliveryCount"], 1);
    for field in ["LockToken", "LockedUntilUtc", "EnqueuedTimeUtc", "SequenceNumber"] {
        assert!(!b[field].is_null(), "{field} missing: {b}");
    }
    assert!(b["LockedUntilUtc"].as_str().unwrap().ends_with(" GMT"));
    assert_eq!(m1.header("device").as_deref(), Some("\"d1\""));
    assert_eq!(m1.header("priority").as_deref(), Some("5"));
    assert!(m1.header("location").unwrap().contains(m1.lock()));

    let m2 = sb.peek_lock(&q, 0).await.unwrap();
    let m3 = sb.peek_lock(&q, 0).await.unwrap();
    assert!(m2.broker["SequenceNumber"].as_i64() > m1.broker["SequenceNumber"].as_i64());
    assert!(m3.broker["SequenceNumber"].as_i64() > m2.broker["SequenceNumber"].as_i64());
    assert!(!m3.broker["MessageId"].as_str().unwrap().is_empty(), "a MessageId is assigned");
    let m4 = sb.peek_lock(&q, 0).await.unwrap();
    assert_eq!((m4.body.as_str(), m4.broker["SessionId"].as_str()), ("single", Some("s")));
    assert_eq!(m4.header("device").as_deref(), Some("\"d4\""));
    assert_eq!(m4.header("count").as_deref(), Some("7"));
    assert_eq!(m4.header("content-type").as_deref(), Some("application/json"));
    for m in [&m1, &m2, &m3, &m4] {
        assert_eq!(sb.complete(&q, m).await, 200);
    }
    // Settling again: the message is gone.
    assert_eq!(sb.complete(&q, &m1).await, 404);
    // A malformed batch is refused as a whole.
    assert_eq!(sb.send_batch(&q, json!([{"Body": "ok"}, {"NoBody": 1}])).await, 400);
    assert!(sb.peek_lock(&q, 0).await.is_none());
}

#[tokio::test]
async fn renew_extends_the_lock_and_a_stale_lock_is_lost() {
    let la = shared();
    let sb = Sb::new(la).await;
    let q = Sb::queue(la, "renew", json!({ "lockDurationSeconds": 30 })).await;
    assert_eq!(sb.send(&q, "x", json!({"MessageId": "r1"}), &[]).await, 201);
    let m = sb.peek_lock(&q, 0).await.unwrap();
    let before = m.broker["LockedUntilUtc"].as_str().unwrap().to_string();
    let r = sb.settle(Method::POST, &q, &m).await;
    assert_eq!(r.status(), 200);
    let renewed: Value = serde_json::from_str(r.headers()["BrokerProperties"].to_str().unwrap()).unwrap();
    let parse = |s: &str| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc2822).unwrap();
    assert!(parse(renewed["LockedUntilUtc"].as_str().unwrap()) >= parse(&before));
    // A lock token that is not the message's current one: the lock is lost (410).
    let mut stale = m.clone();
    stale.broker["LockToken"] = json!(uuid_str());
    assert_eq!(sb.abandon(&q, &stale).await, 410);
    assert_eq!(sb.complete(&q, &m).await, 200);
}

fn uuid_str() -> String {
    "00000000-0000-4000-8000-000000000000".into()
}

#[tokio::test]
async fn abandoned_past_max_delivery_count_is_dead_lettered() {
    let la = shared();
    let sb = Sb::new(la).await;
    let q = Sb::queue(la, "mdc", json!({ "maxDeliveryCount": 2 })).await;
    assert_eq!(sb.send(&q, "poison", json!({"MessageId": "p1"}), &[("Kind", "\"poison\"")]).await, 201);
    let m = sb.peek_lock(&q, 0).await.unwrap();
    assert_eq!(sb.abandon(&q, &m).await, 200);
    let m = sb.peek_lock(&q, 0).await.unwrap();
    assert_eq!(m.broker["DeliveryCount"], 2);
    assert_eq!(sb.abandon(&q, &m).await, 200);
    assert!(sb.peek_lock(&q, 0).await.is_none(), "dead-lettered after the second delivery");

    let counts = la.admin_get(&format!("/admin/servicebus/queues/edgevault/{q}")).await["counts"].clone();
    assert_eq!(counts["deadLetterMessageCount"], 1);
    let peeked = la.admin_get(&format!("/admin/servicebus/queues/edgevault/{q}/deadletter")).await;
    assert_eq!(peeked["value"][0]["deadLetterReason"], "MaxDeliveryCountExceeded");
    assert_eq!(peeked["value"][0]["body"], "poison");

    let dlq = format!("{q}/$DeadLetterQueue");
    let d = sb.peek_lock(&dlq, 0).await.unwrap();
    assert_eq!(d.body, "poison");
    assert_eq!(d.header("deadletterreason").as_deref(), Some("\"MaxDeliveryCountExceeded\""));
    assert!(d.header("deadlettererrordescription").is_some());
    assert_eq!(d.header("kind").as_deref(), Some("\"poison\""));
    assert_eq!(sb.complete(&dlq, &d).await, 200);
    assert!(sb.peek_lock(&dlq, 0).await.is_none());
}

#[tokio::test]
async fn a_waiting_receiver_wakes_on_send() {
    let la = shared();
    let sb = Sb::new(la).await;
    let q = Sb::queue(la, "poll", json!({})).await;
    let started = Instant::now();
    let waiting = {
        let sb = Sb { http: sb.http.clone(), base: sb.base.clone(), token: sb.token.clone() };
        let q = q.clone();
        tokio::spawn(async move { sb.peek_lock(&q, 50).await })
    };
    // Give the receive a moment to start waiting (it is correct either way).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sb.send(&q, "wake", json!({}), &[]).await, 201);
    let got = tokio::time::timeout(Duration::from_secs(20), waiting).await.expect("woken").unwrap().unwrap();
    assert_eq!(got.body, "wake");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn tokens_and_grants_are_enforced() {
    let la = shared();
    let sb = Sb::new(la).await;
    let q = Sb::queue(la, "auth", json!({})).await;
    let url = format!("{}/{q}/messages", sb.base);
    let r = sb.http.post(&url).body("x").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().starts_with("<Error><Code>401</Code>"));
    let vault_token = msi_token(la, "https://vault.azure.net").await;
    assert_eq!(sb.http.post(&url).bearer_auth(&vault_token).body("x").send().await.unwrap().status(), 401);
    assert_eq!(sb.http.post(&url).bearer_auth("not.a.token").body("x").send().await.unwrap().status(), 401);
    // A principal without a grant: 403.
    let other = la.admin_post("/admin/principals", json!({"displayName": "stranger"})).await;
    let oid = other["objectId"].as_str().unwrap();
    let token = la.token(oid, "https://servicebus.azure.net/").await;
    let r = sb.http.post(&url).bearer_auth(&token).body("x").send().await.unwrap();
    assert_eq!(r.status(), 403);
    // Send-only grant: may send, may not receive.
    la.admin_post(
        "/admin/grants",
        json!({"principalId": oid, "scope": format!("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ServiceBus/namespaces/edgevault/queues/{q}", la.var("AZURE_SUBSCRIPTION_ID"), la.var("AZURE_RESOURCE_GROUP")), "actions": ["Microsoft.ServiceBus/namespaces/queues/send"]}),
    )
    .await;
    assert_eq!(sb.http.post(&url).bearer_auth(&token).body("x").send().await.unwrap().status(), 201);
    let r = sb.http.post(format!("{url}/head?timeout=0")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // An unknown namespace does not resolve (the proxy refuses the tunnel); an unknown queue is 404.
    let r = sb
        .http
        .post(format!("{}/no-such-queue/messages", sb.base))
        .bearer_auth(&sb.token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        sb.http
            .post("https://nosuchns.servicebus.windows.net/q/messages")
            .bearer_auth(&sb.token)
            .body("x")
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn faults_apply_to_service_bus_operations() {
    let la = shared();
    let sb = Sb::new(la).await;
    let q = Sb::queue(la, "fault", json!({})).await;
    la.admin_post(
        "/admin/faults",
        json!({"service": "servicebus", "operation": "send", "pathRegex": q, "action": {"type": "throttle", "retryAfterSeconds": 3}, "count": 1}),
    )
    .await;
    let r = sb.http.post(format!("{}/{q}/messages", sb.base)).bearer_auth(&sb.token).body("x").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    assert!(r.text().await.unwrap().starts_with("<Error>"));
    assert_eq!(sb.send(&q, "x", json!({}), &[]).await, 201, "the fault fired once");
    la.admin_post(
        "/admin/faults",
        json!({"service": "servicebus", "operation": "receive", "pathRegex": q, "action": {"type": "error", "status": 503}, "count": 1}),
    )
    .await;
    let r =
        sb.http.post(format!("{}/{q}/messages/head?timeout=0", sb.base)).bearer_auth(&sb.token).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let m = sb.peek_lock(&q, 0).await.unwrap();
    assert_eq!(sb.complete(&q, &m).await, 200);
}

#[tokio::test]
async fn admin_lists_peeks_and_purges() {
    let la = shared();
    let sb = Sb::new(la).await;
    let queues = la.admin_get("/admin/servicebus/queues").await;
    let defaults: Vec<&Value> =
        queues["value"].as_array().unwrap().iter().filter(|q| q["namespace"] == "edgevault").collect();
    for name in ["resource-created", "activation-key-requested", "vault-deleted", "resource-deleted", "alerts"] {
        let q = defaults.iter().find(|q| q["name"] == name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(q["requiresSession"], name != "alerts");
        assert_eq!(q["requiresDuplicateDetection"], true);
        assert_eq!(q["maxDeliveryCount"], 10);
    }
    assert_eq!(defaults.iter().find(|q| q["name"] == "resource-created").unwrap()["lockDurationSeconds"], 60);

    let q = Sb::queue(la, "adm", json!({})).await;
    for i in 0..3 {
        assert_eq!(sb.send(&q, &format!("m{i}"), json!({}), &[]).await, 201);
    }
    let _locked = sb.peek_lock(&q, 0).await.unwrap();
    let info = la.admin_get(&format!("/admin/servicebus/queues/edgevault/{q}")).await;
    assert_eq!(info["counts"]["activeMessageCount"], 2);
    assert_eq!(info["counts"]["lockedMessageCount"], 1);
    let peeked = la.admin_get(&format!("/admin/servicebus/queues/edgevault/{q}/messages")).await;
    assert_eq!(peeked["value"].as_array().unwrap().len(), 3);
    assert_eq!(peeked["value"][0]["state"], "locked");
    // Peeking does not lock.
    assert!(sb.peek_lock(&q, 0).await.is_some());
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .delete(format!("{}/admin/servicebus/queues/edgevault/{q}/messages", la.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["removed"], 3);
    assert!(sb.peek_lock(&q, 0).await.is_none());
}
