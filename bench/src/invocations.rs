//! Invocation bodies, as the Functions host sends them, built from the fixtures in `tests/fixtures/triggers`.

use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    edgevault_tests::fixture(&format!("triggers/{name}.json")).expect("fixture")
}

/// An Event Grid subscription-validation event for `ArmEvents`: acknowledged, nothing sent to Azure.
pub fn validation() -> Value {
    fixture("event-grid-validation")
}

/// A real ARM event `ArmEvents` classifies and ignores (a vault write): fully parsed, nothing sent to Azure.
pub fn ignored_event() -> Value {
    let mut v = fixture("event-grid-write");
    let vault = "/subscriptions/4385cf00-2d3a-425a-832f-f4285b1c9dce/resourceGroups/GroupForEdgeAutomation/providers/Microsoft.KeyVault/vaults/kv1";
    v["Data"]["event"]["subject"] = vault.into();
    v["Data"]["event"]["data"]["resourceUri"] = vault.into();
    v["Data"]["event"]["data"]["operationName"] = "Microsoft.KeyVault/vaults/write".into();
    v["Data"]["event"]["data"]["authorization"]["action"] = "Microsoft.KeyVault/vaults/write".into();
    v
}

/// A device write event for `resource_group_id`'s device `name`: `ArmEvents` enqueues a `ResourceCreated` command.
pub fn device_write_event(resource_group_id: &str, name: &str, event_id: &str) -> Value {
    let mut v = fixture("event-grid-write");
    let id = format!("{resource_group_id}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}");
    v["Data"]["event"]["id"] = event_id.into();
    v["Data"]["event"]["subject"] = id.clone().into();
    v["Data"]["event"]["data"]["resourceUri"] = id.into();
    v
}

/// An event without the fields an Event Grid event has: `400`.
pub fn malformed_event() -> Value {
    json!({"Data": {"event": {"id": 1, "data": "nope"}}, "Metadata": {}})
}

/// `POST /api/activation-keys` whose vault name breaks a rule: answered `400` (inside the invocation's `200`)
/// after parsing the body and the resource id, before any Azure call.
pub fn api_post_bad_vault_name() -> Value {
    let mut v = signed_in_post();
    v["Data"]["req"]["Body"] = json!({
        "resourceId": "/subscriptions/4385cf00-2d3a-425a-832f-f4285b1c9dce/resourceGroups/GroupForEdgeAutomation/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/testedgedevice",
        "vaultName": "9-starts-with-a-digit"
    })
    .to_string()
    .into();
    v
}

/// `POST /api/activation-keys` with a body that is not JSON: `400 InvalidRequestBody`.
pub fn api_post_malformed_body() -> Value {
    let mut v = signed_in_post();
    v["Data"]["req"]["Body"] = "not json".into();
    v
}

/// The caller of the API invocations: what App Service Authentication passes on (a stand-in token; the answers
/// measured here come before any Azure call).
const CALLER: &str = "0f3c2b1a-0000-4000-8000-00000000be9c";

fn signed_in_post() -> Value {
    edgevault_tests::signed_in(&fixture("http-post"), CALLER)
}

/// `GET /api/activation-keys/{operationId}` for `operation_id`, signed in as the stand-in caller.
pub fn api_get(url_base: &str, operation_id: &str) -> Value {
    edgevault_tests::signed_in(&unsigned_get(url_base, operation_id), CALLER)
}

/// `GET /api/activation-keys/{operationId}` as the host sends it before authentication adds a caller.
pub fn unsigned_get(url_base: &str, operation_id: &str) -> Value {
    json!({"Data": {"req": {
        "Url": format!("{url_base}/api/activation-keys/{operation_id}"), "Method": "GET", "Query": {},
        "Headers": {"Accept": ["application/json"]}, "Params": {"operationId": operation_id}, "Identities": [],
        "Body": ""}}, "Metadata": {}})
}

/// A Service Bus message for `ResourceCreated` that carries another command kind: `400`, nothing sent.
pub fn worker_wrong_kind() -> Value {
    let mut v = fixture("service-bus");
    let message = v["Data"]["message"].as_str().unwrap_or_default().replace("\"ResourceCreated\"", "\"VaultDeleted\"");
    v["Data"]["message"] = message.into();
    v
}

/// A timer trigger whose `IsPastDue` is not a boolean: `400` naming the field, before any Azure call.
pub fn timer_malformed() -> Value {
    let mut v = fixture("timer");
    v["Data"]["timer"]["IsPastDue"] = "sometimes".into();
    v
}

pub fn timer() -> Value {
    fixture("timer")
}
