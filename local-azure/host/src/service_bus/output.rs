//! The `serviceBus` output binding: the handler's `Outputs.<name>` value read into messages and sent to the queue.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{OutgoingMessage, ServiceBusClient, ServiceBusError};

impl OutgoingMessage {
    /// Reads one output-binding value. An object with `Body` and optional `BrokerProperties` /
    /// `UserProperties` (the REST batch format) is taken apart; a string is the body as text — base64-decoded first
    /// when it happens to be valid base64, the real host's quirk (DESIGN §4), so a handler that sends bare strings
    /// finds out here rather than in Azure; any other value is the body, as JSON.
    pub fn from_output(value: &Value) -> OutgoingMessage {
        if let Value::String(text) = value {
            let body = match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) if !text.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
                _ => text.clone(),
            };
            return OutgoingMessage { body, broker: None, properties: Map::new() };
        }
        if let Value::Object(map) = value
            && let Some(body) = map.get("Body")
            && map.keys().all(|k| matches!(k.as_str(), "Body" | "BrokerProperties" | "UserProperties"))
        {
            return OutgoingMessage {
                body: match body {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
                broker: map.get("BrokerProperties").cloned(),
                properties: map.get("UserProperties").and_then(Value::as_object).cloned().unwrap_or_default(),
            };
        }
        OutgoingMessage { body: value.to_string(), broker: None, properties: Map::new() }
    }
}

impl ServiceBusClient {
    /// Delivers an output-binding value: an array is a batch, anything else one message.
    pub async fn send_output(&self, queue: &str, value: &Value) -> Result<(), ServiceBusError> {
        match value {
            Value::Array(items) if items.is_empty() => Ok(()),
            Value::Array(items) => {
                let messages: Vec<_> = items.iter().map(OutgoingMessage::from_output).collect();
                self.send_batch(queue, &messages).await
            }
            other => self.send_message(queue, &OutgoingMessage::from_output(other)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn output_values_become_messages() {
        assert_eq!(OutgoingMessage::from_output(&json!("plain text!")).body, "plain text!");
        // The host's quirk: a string that is valid base64 is decoded.
        assert_eq!(OutgoingMessage::from_output(&json!("aGVsbG8=")).body, "hello");
        let plain = OutgoingMessage::from_output(&json!({"kind": "VaultDeleted"}));
        assert_eq!(plain.body, "{\"kind\":\"VaultDeleted\"}");
        assert_eq!(plain.broker, None);
        let with_props = OutgoingMessage::from_output(&json!({
            "Body": {"kind": "VaultDeleted"},
            "BrokerProperties": {"MessageId": "m1", "SessionId": "ase-1"},
            "UserProperties": {"schemaVersion": 1}
        }));
        assert_eq!(with_props.body, "{\"kind\":\"VaultDeleted\"}");
        assert_eq!(with_props.broker, Some(json!({"MessageId": "m1", "SessionId": "ase-1"})));
        assert_eq!(
            with_props.batch_entry(),
            json!({"Body": "{\"kind\":\"VaultDeleted\"}", "BrokerProperties": {"MessageId": "m1", "SessionId": "ase-1"},
                   "UserProperties": {"schemaVersion": 1}})
        );
    }
}
