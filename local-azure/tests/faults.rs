//! Fault injection through the admin API, observed by the official clients.

mod support;

use std::time::Instant;

use azure_core::http::Method;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use serde_json::{Value, json};
use support::*;

async fn fault(la: &LocalAzure, rule: Value) -> String {
    la.admin_post("/admin/faults", rule).await["id"].as_str().unwrap().to_string()
}

async fn fired(la: &LocalAzure, id: &str) -> u64 {
    let all = la.admin_get("/admin/faults").await;
    all["value"].as_array().unwrap().iter().find(|f| f["id"] == id).map(|f| f["fired"].as_u64().unwrap()).unwrap_or(0)
}

/// One test: fault rules are global to this local-azure.
#[tokio::test]
async fn faults_are_injected_per_service_and_operation() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let arm = Arm::new(managed_identity(None));
    let name = unique("flt");
    let path = format!("{}/providers/Microsoft.KeyVault/vaults/{name}", rg_path(la));
    assert_eq!(
        arm.call(Method::Put, &path, Some(&vault_body(la, &[(&app, ALL_SECRET_PERMS)], false))).await.status,
        201
    );
    let client = SecretClient::new(
        &format!("https://{name}.vault.azure.net/"),
        managed_identity(None),
        Some(SecretClientOptions { client_options: client_options(), ..Default::default() }),
    )
    .unwrap();
    set_value(&client, "s", "v").await.unwrap();

    // 429 with Retry-After once: the client waits and retries, the call succeeds.
    let id = fault(la, json!({ "service": "keyvault", "operation": "secrets/get", "action": { "type": "throttle", "retryAfterSeconds": 1 }, "count": 1 })).await;
    let started = Instant::now();
    let got = client.get_secret("s", None).await.unwrap().into_model().unwrap();
    assert_eq!(got.value.as_deref(), Some("v"));
    assert!(started.elapsed().as_millis() >= 900, "Retry-After honoured");
    assert_eq!(fired(la, &id).await, 1);

    // Persistent 503 on one ARM operation: the caller sees it after its retries.
    let id = fault(la, json!({ "service": "arm", "operation": "Microsoft.KeyVault/vaults/read", "action": { "type": "error", "status": 503 }, "count": 10 })).await;
    let r = arm.call(Method::Get, &path, None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.code(), "ServiceUnavailable");
    assert_eq!(fired(la, &id).await, 3, "first try + 2 retries");
    // Other operations are untouched.
    let r = arm
        .call(Method::Get, &format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices", rg_path(la)), None)
        .await;
    assert_eq!(r.status, 200);
    la.admin_delete(&format!("/admin/faults/{id}")).await;
    assert_eq!(arm.call(Method::Get, &path, None).await.status, 200);

    // A dropped connection is retried by the pipeline.
    let id = fault(la, json!({ "service": "arm", "method": "GET", "pathRegex": "(?i)/vaults/flt", "action": { "type": "drop" }, "count": 1 })).await;
    assert_eq!(arm.call(Method::Get, &path, None).await.status, 200);
    assert_eq!(fired(la, &id).await, 1);

    // Latency.
    fault(la, json!({ "service": "arm", "operation": "Microsoft.KeyVault/vaults/read", "action": { "type": "latency", "ms": 300 }, "count": 1 })).await;
    let started = Instant::now();
    assert_eq!(arm.call(Method::Get, &path, None).await.status, 200);
    assert!(started.elapsed().as_millis() >= 300);

    // Probability 0 never fires; identity faults hit the token endpoint.
    let never = fault(la, json!({ "service": "*", "action": { "type": "drop" }, "probability": 0.0 })).await;
    let idf =
        fault(la, json!({ "service": "identity", "action": { "type": "error", "status": 500 }, "count": 1 })).await;
    let cred = managed_identity(None);
    use azure_core::credentials::TokenCredential;
    cred.get_token(&["https://vault.azure.net/.default"], None).await.unwrap();
    assert_eq!(fired(la, &idf).await, 1);
    assert_eq!(fired(la, &never).await, 0);

    let cleared = la.admin_get("/admin/faults").await["value"].as_array().unwrap().len();
    assert!(cleared >= 1);
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .delete(format!("{}/admin/faults", la.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(la.admin_get("/admin/faults").await["value"].as_array().unwrap().len(), 0);
    let bad = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/admin/faults", la.admin))
        .json(&json!({ "service": "arm", "pathRegex": "(", "action": { "type": "drop" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}
