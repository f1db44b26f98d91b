//! Event Grid: successful ARM writes and deletes published to validated webhooks in both schemas, filters, the
//! handshake, retries and dead-lettering.

mod support;

use azure_core::http::Method;
use serde_json::{Value, json};
use support::*;

async fn subscribe(la: &LocalAzure, body: Value) -> Value {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/admin/eventgrid/subscriptions", la.admin))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

fn vault_path(la: &LocalAzure, name: &str) -> String {
    format!("{}/providers/Microsoft.KeyVault/vaults/{name}", rg_path(la))
}

fn assert_data(data: &Value, la: &LocalAzure, subject: &str, operation: &str) {
    assert_eq!(data["resourceUri"], subject);
    assert_eq!(data["operationName"], operation);
    assert_eq!(data["status"], "Succeeded");
    assert_eq!(data["subscriptionId"], la.var("AZURE_SUBSCRIPTION_ID"));
    assert_eq!(data["tenantId"], la.var("AZURE_TENANT_ID"));
    assert_eq!(data["resourceProvider"], "Microsoft.KeyVault");
    assert_eq!(data["authorization"]["action"], operation);
    assert!(data["authorization"]["scope"].is_string());
    assert_eq!(
        data["claims"]["http://schemas.microsoft.com/identity/claims/objectidentifier"],
        la.var("EDGEVAULT_PRINCIPAL_ID")
    );
    assert!(data["claims"]["aud"].as_str().unwrap().starts_with("https://management."));
    assert!(data["correlationId"].is_string());
    assert!(
        data["httpRequest"]["url"].as_str().unwrap().starts_with(&format!("https://management.azure.com{subject}"))
    );
    assert!(data["httpRequest"]["method"].is_string());
}

#[tokio::test]
async fn writes_and_deletes_arrive_in_both_schemas() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let name = unique("egv");
    let subject = vault_path(la, &name);
    let eg = Webhook::start(true, 0).await;
    let ce = Webhook::start(true, 0).await;
    let filter = json!({ "subjectBeginsWith": subject });
    let s = subscribe(la, json!({"name": unique("eg"), "endpoint": eg.url, "filter": filter})).await;
    assert_eq!(s["provisioningState"], "Succeeded");
    let s = subscribe(
        la,
        json!({"name": unique("ce"), "endpoint": ce.url, "schema": "CloudEventSchemaV1_0", "filter": filter}),
    )
    .await;
    assert_eq!(s["provisioningState"], "Succeeded");

    let arm = Arm::new(managed_identity(None));
    assert_eq!(
        arm.call(Method::Put, &subject, Some(&vault_body(la, &[(&app, ALL_SECRET_PERMS)], false))).await.status,
        201
    );
    // A failed write (retention may not change once set) publishes nothing.
    let mut bad = vault_body(la, &[(&app, ALL_SECRET_PERMS)], false);
    bad["properties"]["softDeleteRetentionInDays"] = json!(30);
    assert_eq!(arm.call(Method::Put, &subject, Some(&bad)).await.status, 400);
    assert_eq!(arm.call(Method::Delete, &subject, None).await.status, 200);

    // Event Grid gives no order: take both deliveries, then look at each. The failed write published nothing.
    let (first, second) = (eg.next().await, eg.next().await);
    let is_write = |d: &Delivery| d.body[0]["eventType"] == "Microsoft.Resources.ResourceWriteSuccess";
    let (write, delete) = if is_write(&first) { (first, second) } else { (second, first) };
    assert_eq!(write.headers["aeg-event-type"], "Notification");
    let events = write.body.as_array().expect("an array of events");
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["eventType"], "Microsoft.Resources.ResourceWriteSuccess");
    assert_eq!(e["topic"], format!("/subscriptions/{}", la.var("AZURE_SUBSCRIPTION_ID")));
    assert_eq!(e["subject"], subject);
    assert_eq!((e["dataVersion"].as_str(), e["metadataVersion"].as_str()), (Some("2"), Some("1")));
    assert!(e["id"].is_string() && e["eventTime"].is_string());
    assert_data(&e["data"], la, &subject, "Microsoft.KeyVault/vaults/write");
    let d = &delete.body[0];
    assert_eq!(d["eventType"], "Microsoft.Resources.ResourceDeleteSuccess");
    assert_data(&d["data"], la, &subject, "Microsoft.KeyVault/vaults/delete");
    assert!(eg.try_next().await.is_none(), "two successful operations, two events");

    let (first, second) = (ce.next().await, ce.next().await);
    let (cw, cd) = if first.body["type"] == "Microsoft.Resources.ResourceWriteSuccess" {
        (first, second)
    } else {
        (second, first)
    };
    assert!(cw.headers["content-type"].to_str().unwrap().starts_with("application/cloudevents+json"));
    let c = &cw.body;
    assert_eq!(c["specversion"], "1.0");
    assert_eq!(c["type"], "Microsoft.Resources.ResourceWriteSuccess");
    assert_eq!(c["source"], e["topic"]);
    assert_eq!(
        (c["subject"].as_str(), c["id"].as_str(), c["time"].as_str()),
        (e["subject"].as_str(), e["id"].as_str(), e["eventTime"].as_str())
    );
    assert_eq!(c["datacontenttype"], "application/json");
    assert_data(&c["data"], la, &subject, "Microsoft.KeyVault/vaults/write");
    assert_eq!(cd.body["type"], "Microsoft.Resources.ResourceDeleteSuccess");
    assert_eq!(cd.body["id"], d["id"], "every subscriber sees the same event id");
}

#[tokio::test]
async fn filters_select_events() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let name = unique("egf");
    let subject = vault_path(la, &name);
    let hook = Webhook::start(true, 0).await;
    subscribe(
        la,
        json!({"name": unique("flt"), "endpoint": hook.url, "filter": {
            "subjectEndsWith": format!("/vaults/{}", name.to_uppercase()),
            "includedEventTypes": ["Microsoft.Resources.ResourceDeleteSuccess", "Microsoft.Resources.ResourceWriteSuccess"],
            "advancedFilters": [{"operatorType": "StringIn", "key": "data.operationName", "values": ["Microsoft.KeyVault/vaults/delete"]}],
        }}),
    )
    .await;
    let arm = Arm::new(managed_identity(None));
    assert_eq!(
        arm.call(Method::Put, &subject, Some(&vault_body(la, &[(&app, ALL_SECRET_PERMS)], false))).await.status,
        201
    );
    assert_eq!(arm.call(Method::Delete, &subject, None).await.status, 200);
    let got = hook.next().await;
    assert_eq!(
        got.body[0]["eventType"], "Microsoft.Resources.ResourceDeleteSuccess",
        "the write did not pass the filter"
    );
    assert_eq!(got.body[0]["subject"], subject);
}

#[tokio::test]
async fn an_endpoint_failing_the_handshake_gets_nothing() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let name = unique("egh");
    let subject = vault_path(la, &name);
    let refusing = Webhook::start(false, 0).await;
    let refusing_ce = Webhook::start(false, 0).await;
    let good = Webhook::start(true, 0).await;
    let filter = json!({ "subjectBeginsWith": subject });
    let bad_name = unique("bad");
    let s = subscribe(la, json!({"name": bad_name, "endpoint": refusing.url, "filter": filter})).await;
    assert_eq!(s["provisioningState"], "Failed");
    assert!(s["validationError"].is_string());
    let s = subscribe(la, json!({"name": unique("badce"), "endpoint": refusing_ce.url, "schema": "CloudEventSchemaV1_0", "filter": filter})).await;
    assert_eq!(s["provisioningState"], "Failed");
    subscribe(la, json!({"name": unique("good"), "endpoint": good.url, "filter": filter})).await;

    let arm = Arm::new(managed_identity(None));
    assert_eq!(
        arm.call(Method::Put, &subject, Some(&vault_body(la, &[(&app, ALL_SECRET_PERMS)], false))).await.status,
        201
    );
    // Once the validated subscription has it, every subscription has been considered.
    assert_eq!(good.next().await.body[0]["subject"], subject);
    assert!(refusing.try_next().await.is_none());
    assert!(refusing_ce.try_next().await.is_none());
    let s = la.admin_get(&format!("/admin/eventgrid/subscriptions/{bad_name}")).await;
    assert_eq!((s["pendingCount"].as_u64(), s["deliveredCount"].as_u64()), (Some(0), Some(0)));
    // A non-loopback endpoint is refused outright.
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/admin/eventgrid/subscriptions", la.admin))
        .json(&json!({"name": "remote", "endpoint": "https://example.com/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn failed_deliveries_are_retried_then_dead_lettered() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let name = unique("egr");
    let subject = vault_path(la, &name);
    let flaky = Webhook::start(true, 2).await;
    let dead = Webhook::start(true, u32::MAX).await;
    let filter = json!({ "subjectBeginsWith": subject });
    let flaky_name = unique("flaky");
    let dead_name = unique("dead");
    subscribe(la, json!({"name": flaky_name, "endpoint": flaky.url, "filter": filter, "retryDelayMs": 50})).await;
    subscribe(la, json!({"name": dead_name, "endpoint": dead.url, "filter": filter, "retryDelayMs": 50, "maxDeliveryAttempts": 3, "schema": "CloudEventSchemaV1_0"})).await;

    let arm = Arm::new(managed_identity(None));
    assert_eq!(
        arm.call(Method::Put, &subject, Some(&vault_body(la, &[(&app, ALL_SECRET_PERMS)], false))).await.status,
        201
    );

    // Two failures, then success; the same event each time.
    let attempts = [flaky.next().await, flaky.next().await, flaky.next().await];
    let counts: Vec<&str> = attempts.iter().map(|a| a.headers["aeg-delivery-count"].to_str().unwrap()).collect();
    assert_eq!(counts, ["0", "1", "2"]);
    assert!(attempts.iter().all(|a| a.body[0]["id"] == attempts[0].body[0]["id"]));
    let s = eventually(|| async {
        let s = la.admin_get(&format!("/admin/eventgrid/subscriptions/{flaky_name}")).await;
        (s["deliveredCount"] == 1).then_some(s)
    })
    .await;
    assert_eq!(s["pendingCount"], 0);

    // Always failing: three attempts, then the dead-letter list.
    for _ in 0..3 {
        assert_eq!(dead.next().await.body["subject"], subject);
    }
    let letters = eventually(|| async {
        let v = la.admin_get(&format!("/admin/eventgrid/deadletters?subscription={dead_name}")).await;
        (!v["value"].as_array().unwrap().is_empty()).then_some(v)
    })
    .await;
    let letter = &letters["value"][0];
    assert_eq!(letter["deadLetterReason"], "MaxDeliveryAttemptsExceeded");
    assert_eq!(letter["deliveryAttempts"], 3);
    assert_eq!(letter["lastHttpStatusCode"], 500);
    assert_eq!(letter["event"]["type"], "Microsoft.Resources.ResourceWriteSuccess");
    assert!(dead.try_next().await.is_none(), "no attempt after dead-lettering");
}

#[tokio::test]
async fn a_slow_subscriber_does_not_hold_back_the_next_event() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let name = unique("egslow");
    let subject = vault_path(la, &name);
    // The first notification is not answered until released: Event Grid must not wait for it to send the next.
    let slow = Webhook::start_holding(true, 0, 1).await;
    subscribe(la, json!({"name": unique("slow"), "endpoint": slow.url, "filter": {"subjectBeginsWith": subject}}))
        .await;
    let arm = Arm::new(managed_identity(None));
    assert_eq!(
        arm.call(Method::Put, &subject, Some(&vault_body(la, &[(&app, ALL_SECRET_PERMS)], false))).await.status,
        201
    );
    let held = slow.next().await;
    assert_eq!(held.body[0]["eventType"], "Microsoft.Resources.ResourceWriteSuccess");
    assert_eq!(arm.call(Method::Delete, &subject, None).await.status, 200);
    let next = slow.next().await;
    assert_eq!(
        next.body[0]["eventType"], "Microsoft.Resources.ResourceDeleteSuccess",
        "delivered while the write is unanswered"
    );
    slow.release();
}
