//! Typed trigger payloads, in the shapes the Functions host and Event Grid document, and the HTTP output object.
//!
//! Every type here round-trips through the fixtures in `tests/fixtures/triggers/` (see the tests at the bottom);
//! `real-host/` there holds what the real Functions host sends, read from its source (its README names the files).
//! Where the host is known to vary (a nested object sent JSON-encoded, a number sent as a string, `Label` versus
//! `Subject`), the type accepts every form and keeps one.
//!
//! The real host passes every non-object metadata value through `JsonConvert.SerializeObject`
//! (azure-functions-host `ScriptInvocationContextExtensions.GetHttpScriptInvocationContextValue`): a string arrives
//! JSON-encoded once more (`MessageId` as `"\"id\""`), a number as a string. String fields here take off that layer
//! ([`host_string`]), so an id, a session or an alert id never carries the host's quotes. It also merges the
//! top-level fields of a JSON message or event body into `Metadata` (`Utility.ApplyBindingData`), overwriting a
//! broker property of the same name, case-insensitively: handlers read what a message says from its body only,
//! and the message types keep clear of the broker's names (a test in `messages` checks it).

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::FunctionError;
use crate::protocol::decode;

/// `httpTrigger` input in the host's default (non-forwarding) mode. Its `Debug` leaves out the values of headers
/// that carry credentials (a caller's bearer token, the platform's token headers, a function key).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct HttpRequest {
    pub url: String,
    pub method: String,
    #[serde(default, deserialize_with = "json_or_encoded")]
    pub query: BTreeMap<String, String>,
    /// Header values are lists, as the host sends them; names keep the case the client used.
    #[serde(default, deserialize_with = "headers")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Route parameters. The real host lists an optional parameter the route did not use as `null`
    /// (`FunctionInvocationMiddleware.PopulateRouteData`); such a parameter is simply absent here.
    #[serde(default, deserialize_with = "route_params")]
    pub params: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "json_or_encoded")]
    pub identities: Vec<Value>,
    /// The request body as text. The host sends a string, or a JSON value when it parsed the body itself.
    #[serde(default, deserialize_with = "body_text")]
    pub body: Option<String>,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |name: &str| {
            let name = name.to_ascii_lowercase();
            name == "authorization" || name == "cookie" || name == "x-functions-key" || name.starts_with("x-ms-token-")
        };
        let headers: BTreeMap<&str, Vec<&str>> = self
            .headers
            .iter()
            .map(|(k, v)| {
                (k.as_str(), if secret(k) { vec!["<redacted>"] } else { v.iter().map(String::as_str).collect() })
            })
            .collect();
        let query: BTreeMap<&str, &str> =
            self.query.iter().map(|(k, v)| (k.as_str(), if k == "code" { "<redacted>" } else { v.as_str() })).collect();
        f.debug_struct("HttpRequest")
            .field("url", &"<omitted: may carry a key>")
            .field("method", &self.method)
            .field("query", &query)
            .field("headers", &headers)
            .field("params", &self.params)
            .field("identities", &self.identities.len())
            .field("body", &self.body.as_ref().map(String::len))
            .finish()
    }
}

impl HttpRequest {
    /// The first value of a header, matched case-insensitively as HTTP requires.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, values)| values.first())
            .map(String::as_str)
    }
}

/// The object an `http` output binding takes. The body is JSON (never a bare string, see `protocol`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HttpResponse {
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    #[serde(default)]
    pub body: Value,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl HttpResponse {
    pub fn json(status_code: u16, body: Value) -> Self {
        let headers = BTreeMap::from([("Content-Type".to_string(), "application/json".to_string())]);
        HttpResponse { status_code, body, headers }
    }

    /// An error in the ARM shape the portal already understands: `{"error": {"code", "message"}}`.
    pub fn error(status_code: u16, code: &str, message: impl Into<String>) -> Self {
        Self::json(status_code, serde_json::json!({"error": {"code": code, "message": message.into()}}))
    }
}

/// `timerTrigger` input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct TimerInfo {
    #[serde(default)]
    pub schedule: Option<Value>,
    /// Null on the first run or when the schedule monitor is off.
    #[serde(default)]
    pub schedule_status: Option<ScheduleStatus>,
    #[serde(default)]
    pub is_past_due: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleStatus {
    pub last: String,
    pub next: String,
    pub last_updated: String,
}

/// `serviceBusTrigger` metadata: the broker properties the host passes beside the message body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceBusMetadata {
    #[serde(deserialize_with = "host_string", serialize_with = "host_encode")]
    pub message_id: String,
    #[serde(default, deserialize_with = "number_or_string")]
    pub delivery_count: u32,
    #[serde(default, deserialize_with = "host_opt_string", serialize_with = "host_encode_opt")]
    pub enqueued_time_utc: Option<String>,
    #[serde(default, deserialize_with = "number_or_string")]
    pub sequence_number: i64,
    #[serde(default, deserialize_with = "host_opt_string", serialize_with = "host_encode_opt")]
    pub session_id: Option<String>,
    #[serde(default, deserialize_with = "host_opt_string", serialize_with = "host_encode_opt")]
    pub correlation_id: Option<String>,
    /// `Subject` in the current extension; older ones (and some hosts, alongside `Subject`) send `Label`.
    #[serde(
        default,
        deserialize_with = "host_opt_string",
        serialize_with = "host_encode_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub subject: Option<String>,
    #[serde(
        default,
        deserialize_with = "host_opt_string",
        serialize_with = "host_encode_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub label: Option<String>,
    #[serde(default, deserialize_with = "host_opt_string", serialize_with = "host_encode_opt")]
    pub content_type: Option<String>,
    /// `ApplicationProperties` in the current extension; older ones send `UserProperties` (some hosts both).
    #[serde(default, deserialize_with = "json_or_encoded")]
    pub application_properties: Map<String, Value>,
    #[serde(default, deserialize_with = "json_or_encoded", skip_serializing_if = "Map::is_empty")]
    pub user_properties: Map<String, Value>,
}

impl ServiceBusMetadata {
    /// The message's subject under either name.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref().or(self.label.as_deref())
    }

    /// A custom property under either name.
    pub fn property(&self, name: &str) -> Option<&Value> {
        self.application_properties.get(name).or_else(|| self.user_properties.get(name))
    }
}

/// The names the Service Bus extension (5.x) puts into an invocation's binding data beside the message
/// (azure-sdk-for-net `Microsoft.Azure.WebJobs.Extensions.ServiceBus`, `ServiceBusTriggerBindingStrategy.cs`,
/// `GetBindingData`/`AddBindingData`), plus the host's own `sys`. The host merges a JSON body's top-level fields into
/// the same case-insensitive dictionary, overwriting these; a message body must therefore use none of them.
pub const SERVICE_BUS_BINDING_DATA: &[&str] = &[
    "DeliveryCount",
    "DeadLetterSource",
    "LockToken",
    "ExpiresAtUtc",
    "ExpiresAt",
    "EnqueuedTimeUtc",
    "EnqueuedTime",
    "MessageId",
    "ContentType",
    "ReplyTo",
    "SequenceNumber",
    "To",
    "Subject",
    "Label",
    "CorrelationId",
    "ApplicationProperties",
    "UserProperties",
    "SessionId",
    "ReplyToSessionId",
    "PartitionKey",
    "TransactionPartitionKey",
    "MessageReceiver",
    "MessageSession",
    "MessageActions",
    "SessionActions",
    "ReceiveActions",
    "Client",
    "sys",
];

/// The Event Grid event types edgevault reacts to, and the handshake event.
pub mod event_types {
    pub const RESOURCE_WRITE_SUCCESS: &str = "Microsoft.Resources.ResourceWriteSuccess";
    pub const RESOURCE_DELETE_SUCCESS: &str = "Microsoft.Resources.ResourceDeleteSuccess";
    /// A POST action on a resource succeeded (learn.microsoft.com/azure/event-grid/event-schema-resource-groups:
    /// "Resource events are created for PUT, PATCH, POST, and DELETE operations").
    pub const RESOURCE_ACTION_SUCCESS: &str = "Microsoft.Resources.ResourceActionSuccess";
    pub const SUBSCRIPTION_VALIDATION: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
}

/// An event in the Event Grid schema.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventGridEvent {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    pub subject: String,
    pub event_type: String,
    pub event_time: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_version: Option<String>,
}

/// An event in the CloudEvents 1.0 schema (JSON format).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    #[serde(default)]
    pub data: Value,
}

/// One event from an `eventGridTrigger`, in either schema. The schema is chosen by `specversion`, which only
/// CloudEvents carry, so a malformed event is reported against the schema it claims rather than as "no variant".
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum GridEvent {
    CloudEvent(CloudEvent),
    EventGrid(EventGridEvent),
}

impl GridEvent {
    pub fn from_value(value: Value, path: &str) -> Result<Self, FunctionError> {
        if value.get("specversion").is_some() {
            let event: CloudEvent = decode(value, path)?;
            if event.specversion != "1.0" {
                return Err(FunctionError::invalid(
                    format!("{path}.specversion"),
                    format!("CloudEvents version `{}` is not supported; send 1.0", event.specversion),
                ));
            }
            Ok(GridEvent::CloudEvent(event))
        } else {
            decode(value, path).map(GridEvent::EventGrid)
        }
    }

    /// Events from a trigger binding: one event, or an array of them, possibly JSON-encoded in a string.
    pub fn list_from_value(value: Value, path: &str) -> Result<Vec<Self>, FunctionError> {
        match decode::<Value>(value, path)? {
            Value::String(text) => Self::list_from_value(
                serde_json::from_str(&text)
                    .map_err(|e| FunctionError::invalid(path, format!("not an event or a JSON event array: {e}")))?,
                path,
            ),
            Value::Array(items) => {
                items.into_iter().enumerate().map(|(i, item)| Self::from_value(item, &format!("{path}[{i}]"))).collect()
            }
            single => Ok(vec![Self::from_value(single, path)?]),
        }
    }

    pub fn id(&self) -> &str {
        match self {
            GridEvent::CloudEvent(e) => &e.id,
            GridEvent::EventGrid(e) => &e.id,
        }
    }

    pub fn event_type(&self) -> &str {
        match self {
            GridEvent::CloudEvent(e) => &e.event_type,
            GridEvent::EventGrid(e) => &e.event_type,
        }
    }

    pub fn subject(&self) -> Option<&str> {
        match self {
            GridEvent::CloudEvent(e) => e.subject.as_deref(),
            GridEvent::EventGrid(e) => Some(&e.subject),
        }
    }

    pub fn data(&self) -> &Value {
        match self {
            GridEvent::CloudEvent(e) => &e.data,
            GridEvent::EventGrid(e) => &e.data,
        }
    }

    /// The `data` of a Resource Manager event (`ResourceWriteSuccess`, `ResourceDeleteSuccess`, …).
    pub fn resource_action(&self, path: &str) -> Result<ResourceActionData, FunctionError> {
        decode(self.data().clone(), &format!("{path}.data"))
    }
}

/// `data` of `Microsoft.Resources.Resource*` events, as Event Grid documents it for Azure subscriptions and
/// resource groups as sources.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceActionData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_request: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_provider: Option<String>,
    pub resource_uri: String,
    pub operation_name: String,
    pub status: String,
    pub subscription_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

impl ResourceActionData {
    /// The object id of the principal that made the call: the `objectidentifier` claim (or `oid`), else the
    /// authorization evidence's `principalId`.
    pub fn caller(&self) -> Option<&str> {
        let claims = self.claims.as_ref();
        claims
            .and_then(|c| {
                c.get("http://schemas.microsoft.com/identity/claims/objectidentifier").or_else(|| c.get("oid"))
            })
            .and_then(Value::as_str)
            .or_else(|| self.authorization.as_ref()?.pointer("/evidence/principalId")?.as_str())
    }
}

/// `data` of the Event Grid subscription-validation event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionValidationData {
    pub validation_code: String,
    #[serde(default)]
    pub validation_url: Option<String>,
}

fn json_or_encoded<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(d: D) -> Result<T, D::Error> {
    let value = Value::deserialize(d)?;
    if value.is_null() {
        return Ok(T::default());
    }
    decode(value, "").map_err(|e| serde::de::Error::custom(strip_field(&e)))
}

/// Header values arrive as lists; a single string (as some tools send) becomes a one-item list.
fn headers<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let raw: BTreeMap<String, OneOrMany> = json_or_encoded(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| match v {
            OneOrMany::One(s) => (k, vec![s]),
            OneOrMany::Many(v) => (k, v),
        })
        .collect())
}

/// A metadata string as the host sends it: JSON-encoded once more (`"\"id\""`), or plain (older hosts, tests).
/// Only a value that is itself a complete JSON string literal is unwrapped; anything else is taken as it is.
pub fn host_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(text) => Ok(unquote(text)),
        other => Err(serde::de::Error::custom(format!("expected a string, got {other}"))),
    }
}

/// Writes a metadata string the way the host sends it (JSON-encoded once more), so that what this type writes it
/// reads back unchanged, whatever quotes the text itself holds.
fn host_encode<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&Value::String(text.to_string()).to_string())
}

fn host_encode_opt<S: serde::Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match text {
        Some(text) => host_encode(text, s),
        None => s.serialize_none(),
    }
}

fn host_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        other => host_string(other).map(Some).map_err(serde::de::Error::custom),
    }
}

fn unquote(text: String) -> String {
    let quoted = text.len() >= 2 && text.starts_with('"') && text.ends_with('"');
    match serde_json::from_str::<String>(&text) {
        Ok(inner) if quoted => inner,
        _ => text,
    }
}

/// Route parameters: `null` (an unused optional parameter) is left out; a number (a constrained `{id:int}`) becomes
/// its text.
fn route_params<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: BTreeMap<String, Value> = json_or_encoded(d)?;
    raw.into_iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| match value {
            Value::String(text) => Ok((name, text)),
            Value::Number(n) => Ok((name, n.to_string())),
            Value::Bool(b) => Ok((name, b.to_string())),
            other => Err(serde::de::Error::custom(format!("route parameter `{name}` is not a value: {other}"))),
        })
        .collect()
}

fn body_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => None,
        Value::String(text) => Some(text),
        other => Some(other.to_string()),
    })
}

fn number_or_string<'de, D: Deserializer<'de>, T>(d: D) -> Result<T, D::Error>
where
    T: std::str::FromStr + DeserializeOwned + Default,
    T::Err: std::fmt::Display,
{
    match Value::deserialize(d)? {
        Value::Null => Ok(T::default()),
        Value::String(text) => text.trim().parse().map_err(serde::de::Error::custom),
        other => T::deserialize(other).map_err(serde::de::Error::custom),
    }
}

fn strip_field(err: &FunctionError) -> String {
    match err {
        FunctionError::InvalidInput { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    //! Fixture round trips: each fixture decodes into its type, and the type serializes back to the same JSON
    //! (modulo the host's alternative spellings, which normalise to one).
    use super::*;
    use crate::protocol::InvocationRequest;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../tests/fixtures/triggers/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> T {
        let typed: T = decode(value.clone(), "fixture").expect("fixture decodes");
        let back = serde_json::to_value(&typed).unwrap();
        let again: T = decode(back.clone(), "fixture").unwrap();
        assert_eq!(serde_json::to_value(&again).unwrap(), back, "serialization is stable");
        typed
    }

    #[test]
    fn http_trigger_fixture_round_trips() {
        let inv: InvocationRequest = serde_json::from_value(fixture("http-post.json")).unwrap();
        let req: HttpRequest = round_trip(&inv.data["req"]);
        assert_eq!(req.method, "POST");
        assert_eq!(req.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_str(req.body.as_deref().unwrap()).unwrap();
        assert!(body["resourceId"].as_str().unwrap().contains("dataBoxEdgeDevices"));
        assert_eq!(serde_json::to_value(&req).unwrap(), inv.data["req"], "no field lost");
    }

    #[test]
    fn http_trigger_with_encoded_query_and_object_body_normalises() {
        let inv: InvocationRequest = serde_json::from_value(fixture("http-get-encoded.json")).unwrap();
        let req: HttpRequest = inv.binding("req").unwrap();
        assert_eq!(req.query.get("api-version").map(String::as_str), Some("2024-01-01"));
        assert_eq!(req.header("X-Single"), Some("one"));
        assert_eq!(req.body.as_deref(), Some(r#"{"a":1}"#));
    }

    #[test]
    fn http_output_round_trips_and_is_an_object() {
        let res = HttpResponse::error(404, "DeviceNotFound", "no such device");
        let value = serde_json::to_value(&res).unwrap();
        assert_eq!(value["statusCode"], 404);
        assert_eq!(value["body"]["error"]["code"], "DeviceNotFound");
        assert_eq!(round_trip::<HttpResponse>(&value), res);
    }

    #[test]
    fn timer_fixtures_round_trip_with_and_without_status() {
        let inv: InvocationRequest = serde_json::from_value(fixture("timer.json")).unwrap();
        let timer: TimerInfo = round_trip(&inv.data["timer"]);
        assert!(timer.is_past_due);
        assert_eq!(timer.schedule_status.unwrap().next, "2026-11-28T13:00:00+00:00");
        let first = fixture("timer-first-run.json");
        let timer: TimerInfo = InvocationRequest::binding(&serde_json::from_value(first).unwrap(), "timer").unwrap();
        assert!(timer.schedule_status.is_none());
    }

    #[test]
    fn service_bus_fixture_round_trips() {
        let inv: InvocationRequest = serde_json::from_value(fixture("service-bus.json")).unwrap();
        let meta: ServiceBusMetadata = round_trip(&Value::Object(inv.metadata.clone()));
        assert_eq!(meta.delivery_count, 2);
        assert_eq!(meta.sequence_number, 41);
        assert_eq!(meta.session_id.as_deref(), Some("ase-1"));
        assert_eq!(meta.property("schemaVersion"), Some(&Value::from(1)));
        let body: Map<String, Value> = inv.binding("message").unwrap();
        assert_eq!(body["kind"], "ResourceCreated");
    }

    #[test]
    fn service_bus_legacy_names_and_string_numbers_are_accepted() {
        let meta: ServiceBusMetadata = decode(
            json!({"MessageId": "m", "DeliveryCount": "3", "SequenceNumber": "9", "Label": "l",
                   "UserProperties": "{\"a\":1}"}),
            "Metadata",
        )
        .unwrap();
        assert_eq!((meta.delivery_count, meta.sequence_number), (3, 9));
        assert_eq!(meta.subject(), Some("l"));
        assert_eq!(meta.property("a"), Some(&Value::from(1)));
    }

    #[test]
    fn service_bus_metadata_with_both_old_and_new_names_is_accepted() {
        let meta: ServiceBusMetadata = decode(
            json!({"MessageId": "m", "Subject": "s", "Label": "s", "ApplicationProperties": {"a": 1},
                   "UserProperties": {"a": 1}}),
            "Metadata",
        )
        .unwrap();
        assert_eq!(meta.subject(), Some("s"));
        assert_eq!(meta.property("a"), Some(&Value::from(1)));
    }

    #[test]
    fn event_grid_schema_fixture_round_trips() {
        let inv: InvocationRequest = serde_json::from_value(fixture("event-grid-write.json")).unwrap();
        let events = GridEvent::list_from_value(inv.data["event"].clone(), "Data.event").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type(), event_types::RESOURCE_WRITE_SUCCESS);
        let data = events[0].resource_action("Data.event").unwrap();
        assert_eq!(data.operation_name, "Microsoft.DataBoxEdge/dataBoxEdgeDevices/write");
        assert_eq!(serde_json::to_value(&events[0]).unwrap(), inv.data["event"], "no field lost");
        assert_eq!(serde_json::to_value(&data).unwrap(), inv.data["event"]["data"], "no data field lost");
    }

    #[test]
    fn cloud_event_array_fixture_round_trips() {
        let inv: InvocationRequest = serde_json::from_value(fixture("cloud-events-delete.json")).unwrap();
        let events = GridEvent::list_from_value(inv.data["event"].clone(), "Data.event").unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(events[0], GridEvent::CloudEvent(_)));
        assert_eq!(events[0].resource_action("e").unwrap().operation_name, "Microsoft.KeyVault/vaults/delete");
        assert_eq!(serde_json::to_value(&events).unwrap(), inv.data["event"], "no field lost");
    }

    #[test]
    fn double_encoded_event_is_accepted() {
        let inv: InvocationRequest = serde_json::from_value(fixture("event-grid-write.json")).unwrap();
        let encoded = Value::String(Value::String(inv.data["event"].to_string()).to_string());
        let events = GridEvent::list_from_value(encoded, "Data.event").unwrap();
        assert_eq!(events[0].event_type(), event_types::RESOURCE_WRITE_SUCCESS);
    }

    #[test]
    fn subscription_validation_fixture_round_trips() {
        let inv: InvocationRequest = serde_json::from_value(fixture("event-grid-validation.json")).unwrap();
        let events = GridEvent::list_from_value(inv.data["event"].clone(), "Data.event").unwrap();
        assert_eq!(events[0].event_type(), event_types::SUBSCRIPTION_VALIDATION);
        let data: SubscriptionValidationData = round_trip(events[0].data());
        assert_eq!(data.validation_code, "512d38b6-c7b8-40c8-89fe-f46f9e9622b6");
    }

    #[test]
    fn real_host_http_post_with_a_null_optional_parameter_and_a_key_identity() {
        let inv: InvocationRequest = serde_json::from_value(fixture("real-host/http-post.json")).unwrap();
        let req: HttpRequest = inv.binding("req").unwrap();
        assert!(req.params.is_empty(), "the unused optional operationId is left out: {:?}", req.params);
        assert_eq!(req.identities[0]["AuthenticationType"], "WebJobsAuthLevel");
        let body: Value = serde_json::from_str(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["vaultName"], "testedgedevice-kv");
    }

    #[test]
    fn real_host_http_get_has_no_body_and_joined_query_values() {
        let inv: InvocationRequest = serde_json::from_value(fixture("real-host/http-get-status.json")).unwrap();
        let req: HttpRequest = inv.binding("req").unwrap();
        assert_eq!(req.body, None);
        assert_eq!(req.params["operationId"], "L3N1YnNjcmlwdGlvbnMvNDM4NWNmMDA");
        assert_eq!(req.query["api-version"], "2024-01-01,2024-06-01");
    }

    #[test]
    fn real_host_service_bus_metadata_loses_the_hosts_quotes() {
        let inv: InvocationRequest = serde_json::from_value(fixture("real-host/service-bus.json")).unwrap();
        let meta: ServiceBusMetadata = inv.metadata().unwrap();
        assert_eq!(meta.message_id, "activation-key-requested:testedgedevice:2c9a7f4e");
        assert_eq!(meta.session_id.as_deref(), Some("3f9a1c2b7e4d5a60"));
        assert_eq!(meta.subject(), Some("ActivationKeyRequested"));
        assert_eq!(meta.content_type.as_deref(), Some("application/json"));
        assert_eq!((meta.delivery_count, meta.sequence_number), (2, 41));
        assert_eq!(meta.enqueued_time_utc.as_deref(), Some("2026-11-28T11:59:58"));
        let body: Map<String, Value> = inv.binding("message").unwrap();
        assert_eq!(body["kind"], "ActivationKeyRequested");
        assert_eq!(body["schemaVersion"], 1, "the body keeps its types; only Metadata has the host's strings");
    }

    #[test]
    fn host_strings_unwrap_one_json_layer_only() {
        let meta: ServiceBusMetadata =
            decode(json!({"MessageId": "\"a\\\"b\"", "SessionId": "plain", "CorrelationId": "\"x"}), "M").unwrap();
        assert_eq!(meta.message_id, "a\"b");
        assert_eq!(meta.session_id.as_deref(), Some("plain"));
        assert_eq!(meta.correlation_id.as_deref(), Some("\"x"), "not a whole JSON string: taken as it is");
        let back = serde_json::to_value(&meta).unwrap();
        assert_eq!(back["MessageId"], "\"a\\\"b\"", "written as the host writes it");
        let again: ServiceBusMetadata = decode(back, "M").unwrap();
        assert_eq!(again, meta, "a value holding quotes survives a round trip");
    }

    #[test]
    fn real_host_first_timer_run_has_a_status_from_the_year_one() {
        let inv: InvocationRequest = serde_json::from_value(fixture("real-host/timer-first-run.json")).unwrap();
        let timer: TimerInfo = round_trip(&inv.data["timer"]);
        assert_eq!(timer.schedule_status.unwrap().last, "0001-01-01T00:00:00+00:00");
        assert!(!timer.is_past_due);
    }

    #[test]
    fn real_host_event_is_a_json_encoded_string_with_its_fields_in_metadata() {
        let inv: InvocationRequest = serde_json::from_value(fixture("real-host/event-grid-write.json")).unwrap();
        assert!(inv.data["event"].is_string());
        let events = GridEvent::list_from_value(inv.data["event"].clone(), "Data.event").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].resource_action("e").unwrap().operation_name,
            "Microsoft.DataBoxEdge/dataBoxEdgeDevices/write"
        );
        assert_eq!(inv.metadata["eventType"], "\"Microsoft.Resources.ResourceWriteSuccess\"");
    }

    #[test]
    fn malformed_events_name_the_field() {
        let err = GridEvent::list_from_value(json!([{"id": "1", "subject": "s", "eventTime": "t"}]), "Data.event")
            .unwrap_err();
        assert_eq!(err.field(), Some("Data.event[0]"), "{err}");
        assert!(err.to_string().contains("eventType"), "{err}");
        let err = GridEvent::list_from_value(json!({"specversion": "0.3", "id": "1", "source": "s", "type": "t"}), "e")
            .unwrap_err();
        assert_eq!(err.field(), Some("e.specversion"));
    }
}
