//! Resource events as Event Grid publishes them: built from the ARM activity log, in the Event Grid schema or as
//! CloudEvents 1.0.

use serde_json::{Value, json};

pub const WRITE_SUCCESS: &str = "Microsoft.Resources.ResourceWriteSuccess";
pub const DELETE_SUCCESS: &str = "Microsoft.Resources.ResourceDeleteSuccess";
pub const ACTION_SUCCESS: &str = "Microsoft.Resources.ResourceActionSuccess";
pub const VALIDATION: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

/// Which schema a subscription receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Schema {
    #[default]
    EventGridSchema,
    #[serde(rename = "CloudEventSchemaV1_0")]
    CloudEventSchemaV10,
}

/// The event type of a successful operation (`…/write`, `…/delete`, `…/action`).
pub fn event_type(operation: &str) -> Option<&'static str> {
    let op = operation.to_ascii_lowercase();
    if op.ends_with("/write") {
        Some(WRITE_SUCCESS)
    } else if op.ends_with("/delete") {
        Some(DELETE_SUCCESS)
    } else if op.ends_with("/action") {
        Some(ACTION_SUCCESS)
    } else {
        None
    }
}

/// A stable event id per activity entry: every subscriber, and every redelivery, sees the same id.
fn event_id(entry: &Value) -> String {
    let seed = format!(
        "{}|{}|{}",
        entry["sequenceNumber"],
        entry["eventTimestamp"].as_str().unwrap_or_default(),
        entry["correlationId"]
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// The Event Grid schema event for an activity entry, or `None` when Event Grid would not publish it (failed
/// operations, reads).
pub fn arm_event(entry: &Value) -> Option<Value> {
    if entry["status"] != "Succeeded" {
        return None;
    }
    let operation = entry["operationName"].as_str()?;
    let event_type = event_type(operation)?;
    let subscription = entry["subscriptionId"].as_str()?;
    let resource = entry["resourceId"].as_str()?;
    let data = json!({
        "authorization": {
            "scope": entry["authorization"]["scope"],
            "action": entry["authorization"]["action"],
            "evidence": { "role": "local-azure grant", "principalId": entry["principal"]["oid"], "principalType": "ServicePrincipal" },
        },
        "claims": entry["claims"],
        "correlationId": entry["correlationId"],
        "httpRequest": entry["httpRequest"],
        "resourceProvider": entry["resourceProvider"],
        "resourceUri": resource,
        "operationName": operation,
        "status": "Succeeded",
        "subscriptionId": subscription,
        "tenantId": entry["tenantId"],
        "resourceGroup": entry["resourceGroup"],
    });
    Some(json!({
        "id": event_id(entry),
        "topic": format!("/subscriptions/{subscription}"),
        "subject": resource,
        "eventType": event_type,
        "eventTime": entry["eventTimestamp"],
        "data": data,
        "dataVersion": "2",
        "metadataVersion": "1",
    }))
}

/// The same event as a CloudEvent 1.0 (`source` is the topic).
pub fn to_cloud_event(event: &Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": event["id"],
        "source": event["topic"],
        "type": event["eventType"],
        "subject": event["subject"],
        "time": event["eventTime"],
        "datacontenttype": "application/json",
        "data": event["data"],
    })
}

/// The handshake event an Event Grid schema endpoint must echo the code of.
pub fn validation_event(topic: &str, code: &str, time: &str) -> Value {
    json!([{
        "id": uuid::Uuid::new_v4().to_string(),
        "topic": topic,
        "subject": "",
        "data": { "validationCode": code, "validationUrl": Value::Null },
        "eventType": VALIDATION,
        "eventTime": time,
        "metadataVersion": "1",
        "dataVersion": "2",
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(op: &str, status: &str) -> Value {
        json!({
            "sequenceNumber": 7, "eventTimestamp": "2026-01-01T00:00:00.0000000Z", "operationName": op,
            "resourceId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v",
            "resourceProvider": "Microsoft.KeyVault", "subscriptionId": "s", "resourceGroup": "rg", "tenantId": "t",
            "status": status, "correlationId": "c", "principal": {"oid": "o"}, "claims": {"aud": "a"},
            "authorization": {"action": op, "scope": "/subscriptions/s"}, "httpRequest": {"method": "PUT", "url": "u"},
        })
    }

    #[test]
    fn builds_documented_events() {
        let e = arm_event(&entry("Microsoft.KeyVault/vaults/write", "Succeeded")).unwrap();
        assert_eq!(e["eventType"], WRITE_SUCCESS);
        assert_eq!(e["topic"], "/subscriptions/s");
        assert_eq!(e["subject"], e["data"]["resourceUri"]);
        for k in [
            "authorization",
            "claims",
            "correlationId",
            "httpRequest",
            "resourceProvider",
            "resourceUri",
            "operationName",
            "status",
            "subscriptionId",
            "tenantId",
        ] {
            assert!(!e["data"][k].is_null(), "{k}");
        }
        assert_eq!(e["id"], arm_event(&entry("Microsoft.KeyVault/vaults/write", "Succeeded")).unwrap()["id"]);
        assert!(arm_event(&entry("Microsoft.KeyVault/vaults/write", "Failed")).is_none());
        assert_eq!(
            arm_event(&entry("Microsoft.KeyVault/vaults/delete", "Succeeded")).unwrap()["eventType"],
            DELETE_SUCCESS
        );
        let ce = to_cloud_event(&e);
        assert_eq!((ce["specversion"].as_str(), ce["type"].as_str()), (Some("1.0"), Some(WRITE_SUCCESS)));
        assert_eq!(serde_json::to_value(Schema::CloudEventSchemaV10).unwrap(), "CloudEventSchemaV1_0");
    }
}
