//! `serviceBusTrigger` and the `serviceBus` output binding, over the Service Bus REST protocol.
//!
//! The host is a Service Bus client with an identity-based connection: the namespace comes from the app setting
//! `<connection>__fullyQualifiedNamespace`, and a bearer token for `https://servicebus.azure.net` from the
//! managed-identity endpoint (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`, App Service form). Requests go to the real
//! hostname; `HTTPS_PROXY`/`SSL_CERT_FILE` from the environment route them to local-azure, as for any Azure client.
//!
//! [`ServiceBusClient`] is deliberately a plain struct over a base URL, so tests and other brokers can use it as is.
//! [`Receiver`] runs the competing peek-lock loops for one function: `maxConcurrentCalls` of them, or
//! `maxConcurrentSessions × maxConcurrentCallsPerSession` for a session-enabled function (extension 5.x
//! `ServiceBusOptions.ToProcessorOptions` / `ToSessionProcessorOptions`); complete on a 2xx answer (unless
//! `autoCompleteMessages` is off), abandon otherwise, renew the lock while the handler works. Dead-lettering after
//! `MaxDeliveryCount` is the broker's business.
//!
//! What the handler gets is the extension 5.x binding data (azure-sdk-for-net
//! `sdk/servicebus/Microsoft.Azure.WebJobs.Extensions.ServiceBus/src/Triggers/ServiceBusTriggerBindingStrategy.cs`,
//! `GetBindingData` / `AddBindingData`) encoded by [`crate::binding_data`], with the body's JSON fields merged in,
//! and `Data.<binding>` = the body as a string, JSON-encoded once more by the host.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::Instrument;

use crate::HostEvent;
use crate::app::ServiceBusOptions;
use crate::binding_data::{BindingData, BindingValue};
use crate::clock::{Zone, json_net};
use crate::invoke::{Invocation, Invoker};

/// The audience of Service Bus data-plane tokens.
pub const SERVICE_BUS_RESOURCE: &str = "https://servicebus.azure.net";
/// How long one peek-lock request waits on an empty queue (the REST API's `timeout` parameter).
pub const RECEIVE_TIMEOUT_SECS: u64 = 30;
const BATCH_CONTENT_TYPE: &str = "application/vnd.microsoft.servicebus.json";

#[derive(Debug, thiserror::Error)]
pub enum ServiceBusError {
    #[error("Service Bus is not configured: {0}")]
    NotConfigured(String),
    #[error("managed identity token request failed: {0}")]
    Token(String),
    #[error("Service Bus request failed: {}", crate::error_chain(.0))]
    Transport(#[from] reqwest::Error),
    #[error("Service Bus answered {status} to {operation}: {body}")]
    Status { operation: &'static str, status: u16, body: String },
    #[error("Service Bus answered with an unreadable BrokerProperties header: {0}")]
    BrokerProperties(String),
}

impl ServiceBusError {
    /// A lock that is gone (expired, or the message settled elsewhere): settling it again cannot succeed.
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, ServiceBusError::Status { status: 404 | 410, .. })
    }
}

/// Where bearer tokens come from.
pub enum TokenSource {
    /// The App Service managed-identity endpoint; tokens are cached until five minutes before they expire.
    ManagedIdentity {
        endpoint: String,
        header: String,
        client_id: Option<String>,
        cache: tokio::sync::Mutex<Option<(String, OffsetDateTime)>>,
    },
    /// No `Authorization` header (a test broker).
    Anonymous,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::ManagedIdentity { endpoint, client_id, .. } => f
                .debug_struct("ManagedIdentity")
                .field("endpoint", endpoint)
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            TokenSource::Anonymous => f.write_str("Anonymous"),
        }
    }
}

impl TokenSource {
    pub fn managed_identity(endpoint: String, header: String, client_id: Option<String>) -> TokenSource {
        TokenSource::ManagedIdentity { endpoint, header, client_id, cache: tokio::sync::Mutex::new(None) }
    }

    async fn token(&self, http: &reqwest::Client) -> Result<Option<String>, ServiceBusError> {
        let TokenSource::ManagedIdentity { endpoint, header, client_id, cache } = self else { return Ok(None) };
        // A tokio mutex: concurrent receivers wait for one fetch instead of stampeding the identity endpoint.
        let mut cached = cache.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && *expires - time::Duration::minutes(5) > OffsetDateTime::now_utc()
        {
            return Ok(Some(token.clone()));
        }
        // The serializer is not `Send`; finish it before the first await.
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("api-version", "2019-08-01").append_pair("resource", SERVICE_BUS_RESOURCE);
            if let Some(id) = client_id {
                query.append_pair("client_id", id);
            }
            query.finish()
        };
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        let response = http
            .get(format!("{endpoint}{separator}{query}"))
            .header("X-IDENTITY-HEADER", header)
            .send()
            .await
            .map_err(|e| ServiceBusError::Token(crate::error_chain(&e)))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| ServiceBusError::Token(e.to_string()))?;
        if !status.is_success() {
            return Err(ServiceBusError::Token(format!("identity endpoint answered {status}: {body}")));
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| ServiceBusError::Token("no access_token in the answer".into()))?
            .to_string();
        let expires_on = match &body["expires_on"] {
            Value::String(s) => s.parse::<i64>().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or_else(|| OffsetDateTime::now_utc() + time::Duration::minutes(10));
        *cached = Some((token.clone(), expires_on));
        Ok(Some(token))
    }

    async fn invalidate(&self) {
        if let TokenSource::ManagedIdentity { cache, .. } = self {
            *cache.lock().await = None;
        }
    }
}

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

    /// How long until the lock lapses, by the broker's clock when it said what time it was.
    fn lock_remaining(&self) -> Option<Duration> {
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

    fn batch_entry(&self) -> Value {
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

/// A Service Bus REST client for one namespace (any base URL).
#[derive(Debug)]
pub struct ServiceBusClient {
    base: String,
    http: reqwest::Client,
    token: TokenSource,
    /// `ServiceBusClient.Identifier`: the namespace and a GUID, one per client.
    identifier: String,
    /// `clientRetryOptions.tryTimeout`: how long one operation other than a receive may take.
    try_timeout: Duration,
}

impl ServiceBusClient {
    /// `base_url` is `https://<namespace>` for Azure; anything else for tests. The HTTP client comes from
    /// [`azure_http_client`].
    pub fn new(base_url: &str, token: TokenSource, http: reqwest::Client) -> ServiceBusClient {
        let base = base_url.trim_end_matches('/').to_string();
        let namespace = base.split_once("://").map_or(base.as_str(), |(_, rest)| rest).to_string();
        ServiceBusClient {
            identifier: format!("{namespace}-{}", uuid::Uuid::new_v4()),
            base,
            http,
            token,
            try_timeout: Duration::from_secs(60),
        }
    }

    /// Sets `clientRetryOptions.tryTimeout`.
    pub fn with_try_timeout(mut self, try_timeout: Duration) -> ServiceBusClient {
        self.try_timeout = try_timeout;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The namespace host name (`<ns>.servicebus.windows.net`), what `FullyQualifiedNamespace` says.
    pub fn namespace(&self) -> &str {
        self.base.split_once("://").map_or(self.base.as_str(), |(_, rest)| rest)
    }

    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    fn url(&self, segments: &[&str]) -> String {
        let mut url = self.base.clone();
        for s in segments {
            url.push('/');
            url.extend(percent_encoding::utf8_percent_encode(s, SEGMENT));
        }
        url
    }

    /// Sends `build()`'s request with a bearer token; a `401` refreshes the token once (the broker's clock may have
    /// expired it before ours did).
    async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        operation: &'static str,
    ) -> Result<reqwest::Response, ServiceBusError> {
        for attempt in 0..2 {
            let mut request = build();
            if operation != "peek-lock" {
                request = request.timeout(self.try_timeout);
            }
            if let Some(token) = self.token.token(&self.http).await? {
                request = request.bearer_auth(token);
            }
            let response = request.send().await?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                self.token.invalidate().await;
                continue;
            }
            if !response.status().is_success() {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                return Err(ServiceBusError::Status { operation, status, body });
            }
            return Ok(response);
        }
        unreachable!("the second attempt always returns")
    }

    /// Peek-lock receive: `POST /<queue>/messages/head?timeout=<s>`; `None` when the queue stayed empty.
    pub async fn peek_lock(&self, queue: &str, timeout_secs: u64) -> Result<Option<ReceivedMessage>, ServiceBusError> {
        let url = format!("{}?timeout={timeout_secs}", self.url(&[queue, "messages", "head"]));
        let response = self
            .send(
                || {
                    self.http
                        .post(&url)
                        .header(reqwest::header::CONTENT_LENGTH, "0")
                        .timeout(Duration::from_secs(timeout_secs + 30))
                },
                "peek-lock",
            )
            .await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        ReceivedMessage::from_parts(&headers, body).map(Some)
    }

    fn lock_url(&self, queue: &str, broker: &BrokerProperties) -> Result<String, ServiceBusError> {
        let id = broker
            .message_id
            .clone()
            .or_else(|| broker.sequence_number.map(|n| n.to_string()))
            .ok_or_else(|| ServiceBusError::BrokerProperties("no MessageId or SequenceNumber".into()))?;
        let lock = broker
            .lock_token
            .as_deref()
            .ok_or_else(|| ServiceBusError::BrokerProperties("no LockToken: not a peek-locked message".into()))?;
        Ok(self.url(&[queue, "messages", &id, lock]))
    }

    /// `DELETE /<queue>/messages/<id>/<lockToken>`.
    pub async fn complete(&self, queue: &str, broker: &BrokerProperties) -> Result<(), ServiceBusError> {
        let url = self.lock_url(queue, broker)?;
        self.send(|| self.http.delete(&url), "complete").await.map(drop)
    }

    /// `PUT /<queue>/messages/<id>/<lockToken>`.
    pub async fn abandon(&self, queue: &str, broker: &BrokerProperties) -> Result<(), ServiceBusError> {
        let url = self.lock_url(queue, broker)?;
        self.send(|| self.http.put(&url).header(reqwest::header::CONTENT_LENGTH, "0"), "abandon").await.map(drop)
    }

    /// `POST /<queue>/messages/<id>/<lockToken>`; returns how long the renewed lock lasts when the broker says so,
    /// measured on the broker's clock (`LockedUntilUtc` against its `Date`), which need not be ours.
    pub async fn renew_lock(
        &self,
        queue: &str,
        broker: &BrokerProperties,
    ) -> Result<Option<Duration>, ServiceBusError> {
        let url = self.lock_url(queue, broker)?;
        let response =
            self.send(|| self.http.post(&url).header(reqwest::header::CONTENT_LENGTH, "0"), "renew-lock").await?;
        let headers = response.headers();
        let until = headers
            .get("BrokerProperties")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| BrokerProperties::parse(v).ok())
            .and_then(|b| b.locked_until_utc)
            .and_then(|t| parse_date(&t));
        let broker_now = headers.get("Date").and_then(|v| v.to_str().ok()).and_then(parse_date);
        Ok(until
            .map(|until| until - broker_now.unwrap_or_else(OffsetDateTime::now_utc))
            .and_then(|left| (left > time::Duration::ZERO).then(|| left.unsigned_abs())))
    }

    /// `POST /<queue>/messages`: one message.
    pub async fn send_message(&self, queue: &str, message: &OutgoingMessage) -> Result<(), ServiceBusError> {
        let url = self.url(&[queue, "messages"]);
        let broker = message.broker.as_ref().map(Value::to_string);
        self.send(
            || {
                let mut request = self
                    .http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(message.body.clone());
                if let Some(broker) = &broker {
                    request = request.header("BrokerProperties", broker);
                }
                for (name, value) in &message.properties {
                    request = request.header(name, value.to_string());
                }
                request
            },
            "send",
        )
        .await
        .map(drop)
    }

    /// `POST /<queue>/messages` with `application/vnd.microsoft.servicebus.json`: a batch.
    pub async fn send_batch(&self, queue: &str, messages: &[OutgoingMessage]) -> Result<(), ServiceBusError> {
        let url = self.url(&[queue, "messages"]);
        let body = Value::Array(messages.iter().map(OutgoingMessage::batch_entry).collect()).to_string();
        self.send(
            || self.http.post(&url).header(reqwest::header::CONTENT_TYPE, BATCH_CONTENT_TYPE).body(body.clone()),
            "send-batch",
        )
        .await
        .map(drop)
    }

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

/// The HTTP client for Azure endpoints. reqwest already reads `HTTPS_PROXY` / `NO_PROXY` and trusts
/// `SSL_CERT_FILE` from the process environment; the same variables given as *app settings* win, so a process that
/// embeds the host (local-azure itself) can route the host's Service Bus traffic through its own proxy and CA
/// exactly as it does the handler's, without changing its own environment.
pub fn azure_http_client(
    settings: &std::collections::BTreeMap<String, String>,
) -> Result<reqwest::Client, ServiceBusError> {
    let setting =
        |name: &str| settings.get(name).or_else(|| settings.get(&name.to_ascii_lowercase())).filter(|v| !v.is_empty());
    let mut builder = reqwest::Client::builder();
    if let Some(proxy) = setting("HTTPS_PROXY") {
        let no_proxy = setting("NO_PROXY").and_then(|list| reqwest::NoProxy::from_string(list));
        let proxy = reqwest::Proxy::https(proxy.as_str())
            .map_err(|e| ServiceBusError::NotConfigured(format!("app setting HTTPS_PROXY: {e}")))?
            .no_proxy(no_proxy);
        builder = builder.proxy(proxy);
    }
    if let Some(path) = setting("SSL_CERT_FILE") {
        let pem = std::fs::read(path)
            .map_err(|e| ServiceBusError::NotConfigured(format!("app setting SSL_CERT_FILE ({path}): {e}")))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ServiceBusError::NotConfigured(format!("app setting SSL_CERT_FILE ({path}): {e}")))?;
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder.build()?)
}

/// Path-segment encoding: everything but unreserved characters (a MessageId may hold `/` or `?`).
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The receive loops of one `serviceBusTrigger` function.
pub struct Receiver {
    pub function: String,
    pub binding: String,
    pub queue: String,
    pub client: Arc<ServiceBusClient>,
    pub invoker: Arc<Invoker>,
    /// `isSessionsEnabled` on the trigger.
    pub sessions: bool,
    pub options: ServiceBusOptions,
    /// Set while receiving fails, so one outage is one warning rather than one per worker per retry.
    pub failing: std::sync::atomic::AtomicBool,
}

impl Receiver {
    /// Runs the competing receivers until `shutdown` flips to true: one per invocation the processor may run at once.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let concurrency = self.options.concurrency(self.sessions);
        tracing::info!(function = %self.function, concurrency, sessions = self.sessions, "Service Bus receivers start");
        let workers: Vec<_> = (0..concurrency)
            .map(|worker| {
                let this = self.clone();
                let shutdown = shutdown.clone();
                let span = tracing::info_span!("receiver", function = %self.function, queue = %self.queue, worker);
                tokio::spawn(this.receive_loop(shutdown).instrument(span))
            })
            .collect();
        for worker in workers {
            let _ = worker.await;
        }
    }

    async fn receive_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let received = tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                r = self.client.peek_lock(&self.queue, RECEIVE_TIMEOUT_SECS) => r,
            };
            if received.is_ok() && self.failing.swap(false, Ordering::SeqCst) {
                tracing::info!("receiving from the queue works again");
            }
            match received {
                Ok(None) => backoff = Duration::from_millis(500),
                Ok(Some(message)) => {
                    backoff = Duration::from_millis(500);
                    self.handle(message).await;
                }
                Err(err) => {
                    if self.failing.swap(true, Ordering::SeqCst) {
                        tracing::debug!(retry_in_ms = backoff.as_millis() as u64, "peek-lock failed: {err}");
                    } else {
                        tracing::warn!(
                            retry_in_ms = backoff.as_millis() as u64,
                            "peek-lock failed (retrying with backoff): {err}"
                        );
                    }
                    tokio::select! {
                        _ = crate::stopped(&mut shutdown) => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn handle(&self, message: ReceivedMessage) {
        let message_id = message.broker.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!("message", message_id = %message_id,
            delivery_count = message.broker.delivery_count.unwrap_or(1), session_id = message.broker.session_id.as_deref().unwrap_or(""));
        async {
            let renewal = tokio::spawn(renew_until_cancelled(
                self.client.clone(),
                self.queue.clone(),
                message.clone(),
                self.options.max_auto_lock_renewal,
            ));
            let input = message.invocation(&self.binding, Some(&self.client), self.sessions);
            let outcome = self.invoker.invoke(&self.function, input).await;
            renewal.abort();
            let succeeded = match &outcome {
                Ok(o) => o.succeeded(),
                Err(err) => {
                    tracing::warn!("invocation failed: {err}");
                    false
                }
            };
            let settle = if !succeeded {
                self.client.abandon(&self.queue, &message.broker).await
            } else if self.options.auto_complete_messages {
                self.client.complete(&self.queue, &message.broker).await
            } else {
                tracing::info!("autoCompleteMessages is off: the message stays locked until its lock expires");
                Ok(())
            };
            match settle {
                Ok(()) => {
                    tracing::info!(completed = succeeded && self.options.auto_complete_messages, "message settled")
                }
                Err(err) if err.is_lock_lost() => {
                    tracing::warn!("the lock was lost before settling; the broker redelivers: {err}")
                }
                Err(err) => tracing::warn!("settling the message failed: {err}"),
            }
            self.invoker.emit(HostEvent::MessageSettled {
                function: self.function.clone(),
                message_id: message_id.clone(),
                completed: succeeded && self.options.auto_complete_messages,
            });
        }
        .instrument(span)
        .await
    }
}

/// Renews the message lock at half its remaining time until cancelled or `max_total` has passed.
async fn renew_until_cancelled(
    client: Arc<ServiceBusClient>,
    queue: String,
    message: ReceivedMessage,
    max_total: Duration,
) {
    let started = tokio::time::Instant::now();
    let mut remaining = message.lock_remaining().unwrap_or(Duration::from_secs(60));
    loop {
        let wait = (remaining / 2).max(Duration::from_millis(500));
        if started.elapsed() + wait > max_total {
            return;
        }
        tokio::time::sleep(wait).await;
        match client.renew_lock(&queue, &message.broker).await {
            Ok(Some(left)) => {
                remaining = left;
                tracing::debug!("message lock renewed");
            }
            Ok(None) => tracing::debug!("message lock renewed"),
            Err(err) => {
                tracing::warn!("renewing the message lock failed: {err}");
                if err.is_lock_lost() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};
    use time::macros::datetime;

    fn sample_headers() -> HeaderMap {
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

    #[test]
    fn dates_in_every_form_the_protocol_uses() {
        let t = datetime!(2026-11-28 11:59:58 UTC);
        assert_eq!(parse_date("Sat, 28 Nov 2026 11:59:58 GMT"), Some(t));
        assert_eq!(parse_date("Sat, 28 Nov 2026 11:59:58 +0000"), Some(t));
        assert_eq!(parse_date("2026-11-28T11:59:58Z"), Some(t));
        assert_eq!(parse_date("yesterday"), None);
    }

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

    #[test]
    fn lock_urls_escape_message_ids() {
        let client =
            ServiceBusClient::new("https://ns.servicebus.windows.net/", TokenSource::Anonymous, reqwest::Client::new());
        let broker =
            BrokerProperties { message_id: Some("a/b c".into()), lock_token: Some("t-1".into()), ..Default::default() };
        assert_eq!(
            client.lock_url("q", &broker).unwrap(),
            "https://ns.servicebus.windows.net/q/messages/a%2Fb%20c/t-1"
        );
    }

    #[test]
    fn proxy_and_ca_come_from_app_settings_when_given() {
        let settings = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>()
        };
        assert!(azure_http_client(&settings(&[])).is_ok());
        assert!(
            azure_http_client(&settings(&[
                ("HTTPS_PROXY", "http://127.0.0.1:8443"),
                ("NO_PROXY", "127.0.0.1,localhost")
            ]))
            .is_ok()
        );
        let err = azure_http_client(&settings(&[("SSL_CERT_FILE", "/nonexistent/ca.pem")])).unwrap_err();
        assert!(err.to_string().contains("SSL_CERT_FILE (/nonexistent/ca.pem)"), "{err}");
    }
}
