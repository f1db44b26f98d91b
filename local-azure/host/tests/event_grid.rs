//! The Event Grid webhook: system key, validation handshake (both schemas), one invocation per event.

mod common;

use common::TestApp;
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/triggers/");
    serde_json::from_str(&std::fs::read_to_string(format!("{path}{name}")).unwrap()).unwrap()
}

fn app() -> TestApp {
    TestApp::new().event_grid("EchoEvents").event_grid("FailEvents").http("EchoHttp", "anonymous", "echo", &["get"])
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
    assert_eq!(post(format!("{base}&code={}", t.host.eventgrid_key())).await.unwrap().status(), 200);
    assert_eq!(post(format!("{base}&code={}", t.host.master_key())).await.unwrap().status(), 200);
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
    assert_eq!(response.status(), 200);
    let received = t.received("EchoEvents");
    assert_eq!(received.len(), 2);
    assert_eq!(received[0]["request"]["Data"], json!({"event": write}));
    assert_eq!(received[1]["request"]["Data"]["event"]["id"], "second");
    assert_eq!(received[0]["request"]["Metadata"]["sys"]["MethodName"], "EchoEvents");
    assert_ne!(received[0]["invocationId"], received[1]["invocationId"]);

    // CloudEvents batch: same one-invocation-per-event.
    let cloud = fixture("cloud-events-delete.json")["Data"]["event"].clone();
    let response = t
        .http
        .post(t.host.eventgrid_url("EchoEvents"))
        .header("Content-Type", "application/cloudevents-batch+json; charset=utf-8")
        .body(cloud.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = t.received("EchoEvents");
    assert_eq!(received.len(), 4);
    assert_eq!(received[2]["request"]["Data"]["event"], cloud[0]);
    assert_eq!(received[3]["request"]["Data"]["event"], cloud[1]);

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
