//! What the handler gets for a message: `Data.<binding>` = the body as a string, JSON-encoded once more by the host,
//! and the extension 5.x binding data (azure-sdk-for-net
//! `sdk/servicebus/Microsoft.Azure.WebJobs.Extensions.ServiceBus/src/Triggers/ServiceBusTriggerBindingStrategy.cs`,
//! `GetBindingData` / `AddBindingData`) encoded by [`crate::binding_data`], with the body's JSON fields merged in.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::{BrokerProperties, ReceivedMessage, ServiceBusClient, parse_date};
use crate::binding_data::{BindingData, BindingValue};
use crate::clock::{Zone, json_net};
use crate::invoke::Invocation;

impl ReceivedMessage {
    /// The body as the extension reads it for a `string` parameter (`MessageToStringConverter`: UTF-8).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Data.<binding>`: the body string through `JsonConvert.SerializeObject`, so JSON-encoded once more
    /// (`ScriptInvocationContextExtensions.GetHttpScriptInvocationContextValue`).
    pub fn data_value(&self) -> Value {
        Value::String(Value::String(self.body_text()).to_string())
    }

    /// `ExpiresAt`: enqueued time plus time to live, or `DateTimeOffset.MaxValue` when that does not fit (a message
    /// without a time to live lives `TimeSpan.MaxValue`).
    fn expires_at(&self, enqueued: OffsetDateTime) -> OffsetDateTime {
        let max = time::macros::datetime!(9999-12-31 23:59:59.9999999 UTC);
        match self.broker.time_to_live {
            Some(ttl) if ttl.is_finite() && ttl >= 0.0 && ttl < (max - enqueued).as_seconds_f64() => {
                enqueued + time::Duration::seconds_f64(ttl)
            }
            _ => max,
        }
    }

    /// The binding data of the extension 5.x (`ServiceBusTriggerBindingStrategy.GetBindingData` and
    /// `AddBindingData`), in its order. `client` is the `ServiceBusClient` the trigger uses; `session` says whether
    /// the function is session-enabled, whose message actions (`ServiceBusSessionMessageActions`) also show when
    /// the session lock ends.
    pub fn binding_data(&self, client: Option<&ServiceBusClient>, session: bool) -> BindingData {
        let b = &self.broker;
        let mut data = BindingData::new();
        if let Some(client) = client {
            let actions = match (session, b.locked_until_utc.as_deref().and_then(parse_date)) {
                (true, Some(until)) => json!({"SessionLockedUntil": json_net(until, Zone::Local)}),
                _ => json!({}),
            };
            // MessageReceiver and MessageSession are the message actions again, kept for older code.
            for key in ["MessageReceiver", "MessageSession", "MessageActions", "SessionActions"] {
                data.set(key, BindingValue::Object(actions.clone()));
            }
            data.set("ReceiveActions", BindingValue::Object(json!({})));
            data.set(
                "Client",
                BindingValue::Object(json!({
                    "FullyQualifiedNamespace": client.namespace(),
                    "IsClosed": false,
                    // ServiceBusTransportType.AmqpTcp: Json.NET writes enums as numbers.
                    "TransportType": 0,
                    "Identifier": client.identifier(),
                })),
            );
        }
        let enqueued =
            b.enqueued_time_utc.as_deref().and_then(parse_date).unwrap_or(time::macros::datetime!(0001-01-01 0:00 UTC));
        let expires = self.expires_at(enqueued);
        data.set("DeliveryCount", BindingValue::Integer(i64::from(b.delivery_count.unwrap_or(0))));
        data.set("DeadLetterSource", BindingValue::text(b.dead_letter_source.clone()));
        data.set("LockToken", BindingValue::text(b.lock_token.clone()));
        data.set("ExpiresAtUtc", BindingValue::DateTime(expires));
        data.set("ExpiresAt", BindingValue::DateTimeOffset(expires));
        data.set("EnqueuedTimeUtc", BindingValue::DateTime(enqueued));
        data.set("EnqueuedTime", BindingValue::DateTimeOffset(enqueued));
        data.set("MessageId", BindingValue::text(b.message_id.clone()));
        data.set("ContentType", BindingValue::text(self.content_type.clone()));
        data.set("ReplyTo", BindingValue::text(b.reply_to.clone()));
        data.set("SequenceNumber", BindingValue::Integer(b.sequence_number.unwrap_or(-1)));
        data.set("To", BindingValue::text(b.to.clone()));
        data.set("Subject", BindingValue::text(b.label.clone()));
        data.set("Label", BindingValue::text(b.label.clone()));
        data.set("CorrelationId", BindingValue::text(b.correlation_id.clone()));
        data.set("ApplicationProperties", BindingValue::Object(Value::Object(self.properties.clone())));
        data.set("UserProperties", BindingValue::Object(Value::Object(self.properties.clone())));
        data.set("SessionId", BindingValue::text(b.session_id.clone()));
        data.set("ReplyToSessionId", BindingValue::text(b.reply_to_session_id.clone()));
        data.set("PartitionKey", BindingValue::text(b.partition_key.clone()));
        data.set("TransactionPartitionKey", BindingValue::text(b.via_partition_key.clone()));
        data
    }

    /// What the host hands the invoker for this message.
    pub fn invocation(&self, binding: &str, client: Option<&ServiceBusClient>, session: bool) -> Invocation {
        Invocation {
            data: Map::from_iter([(binding.to_string(), self.data_value())]),
            binding_data: self.binding_data(client, session),
            // The body string is the trigger value whose JSON fields `TransformInput` merges into the metadata.
            trigger_text: Some(self.body_text()),
        }
    }

    /// A message made from a string, as the admin API's `ConvertFromString` makes one
    /// (`ServiceBusModelFactory.ServiceBusReceivedMessage(body)`): no message actions, no client, default fields.
    pub fn from_text(text: &str) -> ReceivedMessage {
        ReceivedMessage {
            broker: BrokerProperties {
                lock_token: Some("00000000-0000-0000-0000-000000000000".into()),
                ..BrokerProperties::default()
            },
            content_type: None,
            properties: Map::new(),
            body: Bytes::from(text.to_string()),
            broker_now: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_bus::TokenSource;
    use crate::service_bus::message::tests::sample_headers;

    #[test]
    fn binding_data_is_the_extension_5_set_encoded_as_the_host_encodes_it() {
        let m = ReceivedMessage::from_parts(&sample_headers(), Bytes::from_static(b"{\"kind\":\"ResourceCreated\"}"))
            .unwrap();
        assert_eq!(m.data_value(), json!("\"{\\\"kind\\\":\\\"ResourceCreated\\\"}\""), "the body, JSON-encoded again");
        let client =
            ServiceBusClient::new("https://ns.servicebus.windows.net", TokenSource::Anonymous, reqwest::Client::new());
        let meta = Value::Object(m.binding_data(Some(&client), true).to_metadata());
        let actions = json!({"SessionLockedUntil": "2026-11-28T12:00:58+00:00"});
        assert_eq!(meta["MessageReceiver"], actions);
        assert_eq!(meta["MessageSession"], actions);
        assert_eq!(meta["MessageActions"], actions);
        assert_eq!(meta["SessionActions"], actions);
        assert_eq!(meta["ReceiveActions"], json!({}));
        assert_eq!(meta["Client"]["FullyQualifiedNamespace"], "ns.servicebus.windows.net");
        assert_eq!(meta["Client"]["TransportType"], 0);
        assert!(meta["Client"]["Identifier"].as_str().unwrap().starts_with("ns.servicebus.windows.net-"));
        assert_eq!(meta["MessageId"], "\"resource-created:testedgedevice:2c9a7f4e\"");
        assert_eq!(meta["DeliveryCount"], "2");
        assert_eq!(meta["SequenceNumber"], "41");
        assert_eq!(meta["EnqueuedTimeUtc"], "2026-11-28T11:59:58");
        assert_eq!(meta["EnqueuedTime"], "2026-11-28T11:59:58+00:00");
        assert_eq!(meta["ExpiresAtUtc"], "2026-12-12T11:59:58");
        assert_eq!(meta["ExpiresAt"], "2026-12-12T11:59:58+00:00");
        assert_eq!(meta["SessionId"], "\"ase-1\"");
        assert_eq!(meta["CorrelationId"], "\"8a7e9a3c\"");
        assert_eq!(meta["Subject"], "\"ResourceCreated\"");
        assert_eq!(meta["Label"], "\"ResourceCreated\"");
        assert_eq!(meta["ContentType"], "\"application/json\"");
        assert_eq!(meta["ApplicationProperties"], json!({"schemaversion": 1, "origin": "arm"}));
        assert_eq!(meta["UserProperties"], meta["ApplicationProperties"]);
        assert_eq!(meta["LockToken"], "\"6e3d8b4a-0f57-4a86-a0a6-2a4a1d6c1f10\"");
        for absent in
            ["DeadLetterSource", "ReplyTo", "To", "ReplyToSessionId", "PartitionKey", "TransactionPartitionKey"]
        {
            assert!(meta.get(absent).is_none(), "{absent}: nulls are left out");
        }
        // Without a session the actions have no session lock; a message without a time to live never expires.
        let mut plain = m.clone();
        plain.broker.time_to_live = None;
        let meta = Value::Object(plain.binding_data(Some(&client), false).to_metadata());
        assert_eq!(meta["MessageActions"], json!({}));
        assert_eq!(meta["ExpiresAtUtc"], "9999-12-31T23:59:59");
    }
}
