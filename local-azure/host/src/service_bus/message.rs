//! The REST protocol's message shapes: a peek-locked [`ReceivedMessage`] (its `BrokerProperties` header, custom
//! properties as headers, the body), an [`OutgoingMessage`], and the protocol's dates.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::ServiceBusError;

/// The `BrokerProperties` header: system properties of a message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BrokerProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<i64>,
    /// RFC 1123 (`Wed, 02 Dec 2026 10:00:00 GMT`), as the REST protocol writes dates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_time_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_live: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_enqueue_time_utc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_partition_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl BrokerProperties {
    pub fn parse(header: &str) -> Result<BrokerProperties, ServiceBusError> {
        serde_json::from_str(header).map_err(|e| ServiceBusError::BrokerProperties(e.to_string()))
    }
}

/// Parses the REST protocol's dates: RFC 1123 (`… GMT`), also RFC 2822 with an offset and RFC 3339.
pub fn parse_date(text: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::{Rfc2822, Rfc3339};
    let text = text.trim();
    OffsetDateTime::parse(text, &Rfc2822).or_else(|_| OffsetDateTime::parse(text, &Rfc3339)).ok().or_else(|| {
        let stripped = text.strip_suffix("GMT").or_else(|| text.strip_suffix("UTC"))?;
        OffsetDateTime::parse(&format!("{}+0000", stripped), &Rfc2822).ok()
    })
}

/// One peek-locked message.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    pub broker: BrokerProperties,
    pub content_type: Option<String>,
    /// Custom (application) properties, sent by the broker as extra response headers.
    pub properties: Map<String, Value>,
    pub body: Bytes,
    /// The broker's `Date` header: "now" by the broker's clock, for timing lock renewal.
    pub broker_now: Option<OffsetDateTime>,
}

/// Response headers that are part of HTTP or the protocol, not custom properties.
const NON_PROPERTY_HEADERS: &[&str] = &[
    "brokerproperties",
    "content-type",
    "content-length",
    "date",
    "server",
    "location",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "strict-transport-security",
    "cache-control",
    "expires",
    "pragma",
];

impl ReceivedMessage {
    pub fn from_parts(headers: &reqwest::header::HeaderMap, body: Bytes) -> Result<ReceivedMessage, ServiceBusError> {
        let broker = headers
            .get("BrokerProperties")
            .ok_or_else(|| ServiceBusError::BrokerProperties("the header is missing".into()))?
            .to_str()
            .map_err(|e| ServiceBusError::BrokerProperties(e.to_string()))?;
        let broker = BrokerProperties::parse(broker)?;
        let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut properties = Map::new();
        for (name, value) in headers {
            let lower = name.as_str().to_ascii_lowercase();
            if NON_PROPERTY_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-ms-") {
                continue;
            }
            let Ok(text) = value.to_str() else { continue };
            // Custom properties travel JSON-encoded: strings quoted, numbers and booleans bare.
            let value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()));
            properties.insert(name.as_str().to_string(), value);
        }
        Ok(ReceivedMessage {
            broker,
            content_type: header_text("content-type"),
            properties,
            body,
            broker_now: header_text("date").as_deref().and_then(parse_date),
        })
    }

    /// How long until the lock lapses, by the broker's clock when it said what time it was.
    pub(super) fn lock_remaining(&self) -> Option<Duration> {
        let until = parse_date(self.broker.locked_until_utc.as_deref()?)?;
        let now = self.broker_now.unwrap_or_else(OffsetDateTime::now_utc);
        let left = until - now;
        (left > time::Duration::ZERO).then(|| left.unsigned_abs())
    }
}

/// An outgoing message: the body and what goes in `BrokerProperties` and custom-property headers.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    pub body: String,
    pub broker: Option<Value>,
    pub properties: Map<String, Value>,
}

impl OutgoingMessage {
    pub(super) fn batch_entry(&self) -> Value {
        let mut entry = json!({"Body": self.body});
        if let Some(broker) = &self.broker {
            entry["BrokerProperties"] = broker.clone();
        }
        if !self.properties.is_empty() {
            entry["UserProperties"] = Value::Object(self.properties.clone());
        }
        entry
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};
    use time::macros::datetime;

    pub(in crate::service_bus) fn sample_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "BrokerProperties",
            HeaderValue::from_static(
                r#"{"DeliveryCount":2,"EnqueuedSequenceNumber":0,"EnqueuedTimeUtc":"Sat, 28 Nov 2026 11:59:58 GMT","Label":"ResourceCreated","LockToken":"6e3d8b4a-0f57-4a86-a0a6-2a4a1d6c1f10","LockedUntilUtc":"Sat, 28 Nov 2026 12:00:58 GMT","MessageId":"resource-created:testedgedevice:2c9a7f4e","SequenceNumber":41,"SessionId":"ase-1","CorrelationId":"8a7e9a3c","State":"Active","TimeToLive":1209600}"#,
            ),
        );
        h.insert("Content-Type", HeaderValue::from_static("application/json"));
        h.insert("Date", HeaderValue::from_static("Sat, 28 Nov 2026 11:59:58 GMT"));
        h.insert("schemaVersion", HeaderValue::from_static("1"));
        h.insert("origin", HeaderValue::from_static("\"arm\""));
        h.insert("x-ms-request-id", HeaderValue::from_static("abc"));
        h
    }

    #[test]
    fn parses_broker_properties_and_custom_properties() {
        let m = ReceivedMessage::from_parts(&sample_headers(), Bytes::from_static(b"{\"kind\":\"ResourceCreated\"}"))
            .unwrap();
        assert_eq!(m.broker.message_id.as_deref(), Some("resource-created:testedgedevice:2c9a7f4e"));
        assert_eq!(m.broker.delivery_count, Some(2));
        assert_eq!(m.broker.sequence_number, Some(41));
        // HTTP header names are case-insensitive and arrive lower-cased, so property names do too.
        assert_eq!(m.properties, json!({"schemaversion": 1, "origin": "arm"}).as_object().unwrap().clone());
        assert_eq!(m.lock_remaining(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn dates_in_every_form_the_protocol_uses() {
        let t = datetime!(2026-11-28 11:59:58 UTC);
        assert_eq!(parse_date("Sat, 28 Nov 2026 11:59:58 GMT"), Some(t));
        assert_eq!(parse_date("Sat, 28 Nov 2026 11:59:58 +0000"), Some(t));
        assert_eq!(parse_date("2026-11-28T11:59:58Z"), Some(t));
        assert_eq!(parse_date("yesterday"), None);
    }
}
