//! The Event Grid webhook as the Event Grid extension answers it (`HttpRequestProcessor`,
//! `EventGridExtensionConfigProvider.ProcessEventsAsync`): system key, validation handshake (both schemas),
//! `aeg-event-type` required, one invocation per event, all of a batch in parallel, `202` / `500`.

mod common;

use common::TestApp;
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/triggers/");
    serde_json::from_str(&std::fs::read_to_string(format!("{path}{name}")).unwrap()).unwrap()
}

fn app() -> TestApp {
    TestApp::new().event_grid("EchoEvents").event_grid("FailEvents").event_grid("SlowEvents").http(
        "EchoHttp",
        "anonymous",
        "echo",
        &["get"],
    )
}

/// `Data.event` as the host sends it: the extension's indented event text, JSON-encoded once more.
fn event_text(data: &Value) -> Value {
    let outer = data["event"].as_str().expect("Data.event is a string");
    let inner: String = serde_json::from_str(outer).expect("holding a JSON string");
    assert!(inner.starts_with("{\n  \""), "the extension indents the event: {inner}");
    serde_json::from_str(&inner).expect("holding the event's JSON")
}

#[tokio::test]
async fn the_validation_handshake_is_answered_by_the_host() {
    let t = app().start().await;
    let validation = fixture("event-grid-validation.json")["Data"]["event"].clone();
    let url = t.host.eventgrid_url("EchoEvents");
    let response =
        t.http.post(&url).header("aeg-event-type", "SubscriptionValidation").json(&validation).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    );
    assert!(t.received("EchoEvents").is_empty(), "the function never sees the handshake");

    let options = t
        .http
        .request(reqwest::Method::OPTIONS, &url)
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), 200);
    assert_eq!(options.headers()["webhook-allowed-origin"], "eventgrid.azure.net");
}

#[tokio::test]
async fn the_webhook_requires_the_system_key() {
    let t = app().start().await;
    let base = t.url("/runtime/webhooks/eventgrid?functionName=EchoEvents");
    let event = fixture("event-grid-write.json")["Data"]["event"].clone();
    let post = |url: String| t.http.post(url).header("aeg-event-type", "Notification").json(&json!([event])).send();
    assert_eq!(post(base.clone()).await.unwrap().status(), 401);
    assert_eq!(post(format!("{base}&code=wrong")).await.unwrap().status(), 401);
    let function_key = t.host.function_key("EchoEvents").unwrap();
    assert_eq!(post(format!("{base}&code={function_key}")).await.unwrap().status(), 401);
    assert_eq!(post(format!("{base}&code={}", t.host.eventgrid_key())).await.unwrap().status(), 202);
    assert_eq!(post(format!("{base}&code={}", t.host.master_key())).await.unwrap().status(), 202);
    let unknown = t.url(&format!("/runtime/webhooks/eventgrid?functionName=EchoHttp&code={}", t.host.eventgrid_key()));
    assert_eq!(post(unknown).await.unwrap().status(), 404, "not an Event Grid function");
    assert_eq!(t.received("EchoEvents").len(), 2);
}

#[tokio::test]
async fn each_event_is_one_invocation_with_the_event_as_data() {
    let t = app().start().await;
    let write = fixture("event-grid-write.json")["Data"]["event"].clone();
    let mut second = write.clone();
    second["id"] = json!("second");
    let response = t
        .http
        .post(t.host.eventgrid_url("EchoEvents"))
        .header("aeg-event-type", "Notification")
        .json(&json!([write, second]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "the extension accepts a delivered batch with 202");
    let mut received = t.received("EchoEvents");
    assert_eq!(received.len(), 2);
    // The batch runs in parallel, so the two may be recorded in either order.
    received.sort_by_key(|r| event_text(&r["request"]["Data"])["id"] == "second");
    assert_eq!(event_text(&received[0]["request"]["Data"]), write);
    assert_eq!(event_text(&received[1]["request"]["Data"])["id"], "second");
    let metadata = &received[0]["request"]["Metadata"];
    assert_eq!(metadata["sys"]["MethodName"], "EchoEvents");
    assert_eq!(metadata["data"], write["data"], "the trigger's binding data: `data` as an object");
    assert_eq!(metadata["id"], format!("\"{}\"", write["id"].as_str().unwrap()), "the event's fields, JSON-encoded");
    assert_eq!(metadata["eventType"], "\"Microsoft.Resources.ResourceWriteSuccess\"");
    assert_ne!(received[0]["invocationId"], received[1]["invocationId"]);

    // CloudEvents batch: same one-invocation-per-event; Event Grid marks it a notification too.
    let cloud = fixture("cloud-events-delete.json")["Data"]["event"].clone();
    let response = t
        .http
        .post(t.host.eventgrid_url("EchoEvents"))
        .header("aeg-event-type", "Notification")
        .header("Content-Type", "application/cloudevents-batch+json; charset=utf-8")
        .body(cloud.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let received = t.received("EchoEvents");
    assert_eq!(received.len(), 4);
    let ids: Vec<Value> = received[2..].iter().map(|r| event_text(&r["request"]["Data"])["id"].clone()).collect();
    assert!(ids.contains(&cloud[0]["id"]) && ids.contains(&cloud[1]["id"]), "{ids:?}");

    // A failed invocation makes the delivery fail, so Event Grid retries it.
    let failed = t
        .http
        .post(t.host.eventgrid_url("FailEvents"))
        .header("aeg-event-type", "Notification")
        .json(&json!([write]))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 500);
    assert_eq!(t.received("FailEvents").len(), 1);
}

#[tokio::test]
async fn the_event_type_header_decides_what_a_post_is() {
    let t = app().start().await;
    let write = fixture("event-grid-write.json")["Data"]["event"].clone();
    let post = |event_type: Option<&str>| {
        let mut request = t.http.post(t.host.eventgrid_url("EchoEvents")).json(&json!([write]));
        if let Some(event_type) = event_type {
            request = request.header("aeg-event-type", event_type);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post(None).await, 400, "no aeg-event-type: not an Event Grid delivery");
    assert_eq!(post(Some("Something")).await, 400);
    assert_eq!(post(Some("Unsubscribe")).await, 202);
    assert!(t.received("EchoEvents").is_empty(), "none of these invoked the function");
    assert_eq!(post(Some("notification")).await, 202, "the header value is compared case-insensitively");
    assert_eq!(t.received("EchoEvents").len(), 1);
}

#[tokio::test]
async fn the_events_of_a_batch_run_in_parallel() {
    let mut t = app().start().await;
    let write = fixture("event-grid-write.json")["Data"]["event"].clone();
    let url = t.host.eventgrid_url("SlowEvents");
    let request = t.http.post(url).header("aeg-event-type", "Notification").json(&json!([write.clone(), write]));
    let delivery = tokio::spawn(request.send());
    // Both invocations reach the handler before either may finish: Task.WhenAll over one task per event.
    t.wait_started("SlowEvents", 2).await;
    t.wait_received("SlowEvents", 2).await;
    t.release_slow().await;
    t.release_slow().await;
    assert_eq!(delivery.await.unwrap().unwrap().status(), 202);
}
