//! Service Bus durability: acknowledged sends, locks and duplicate history survive SIGKILL; a lock held at the crash
//! lapses normally afterwards.

mod support;

use serde_json::json;
use support::*;

fn port(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn messages_and_locks_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalAzure::start(dir.path());
    first.export_env();
    let (gw, admin) = (port(&first.gateway), port(first.admin.trim_start_matches("http://")));
    let sb = Sb::new(&first).await;
    let q = "resource-created";
    for (id, session) in [("k1", "A"), ("k2", "A"), ("k3", "B")] {
        assert_eq!(sb.send(q, id, json!({"MessageId": id, "SessionId": session}), &[]).await, 201);
    }
    let held = sb.peek_lock(q, 0).await.unwrap();
    assert_eq!(held.broker["MessageId"], "k1");
    first.kill();

    let second = LocalAzure::start_on(dir.path(), gw, admin);
    let sb = Sb::new(&second).await;
    // k1's lock outlived the crash: session A stays locked, so B is next.
    let b = sb.peek_lock(q, 0).await.unwrap();
    assert_eq!(b.broker["MessageId"], "k3");
    assert!(sb.peek_lock(q, 0).await.is_none());
    // The duplicate history survived too.
    assert_eq!(sb.send(q, "again", json!({"MessageId": "k2", "SessionId": "A"}), &[]).await, 201);
    second.admin_post("/admin/clock/advance", json!({ "seconds": 61 })).await;
    // The held lock lapsed (60 s queue lock) and b's too: k1 is redelivered first, as delivery 2.
    let k1 = sb.peek_lock(q, 0).await.unwrap();
    assert_eq!((k1.broker["MessageId"].as_str(), k1.broker["DeliveryCount"].as_u64()), (Some("k1"), Some(2)));
    assert_eq!(sb.complete(q, &k1).await, 200);
    let mut rest = Vec::new();
    while let Some(m) = sb.receive_and_delete(q, 0).await {
        rest.push(m.body);
    }
    rest.sort();
    assert_eq!(rest, ["k2", "k3"]);
}
