//! The Service Bus REST protocol at `https://<namespace>.servicebus.windows.net/<queue>/…`.
//!
//! | Request | Operation |
//! |---|---|
//! | `POST /<q>/messages` | send (`BrokerProperties` header + custom-property headers), or a batch with `application/vnd.microsoft.servicebus.json` → `201` |
//! | `POST /<q>/messages/head?timeout=<s>` | peek-lock → `201` + message, `204` when nothing arrived in time |
//! | `DELETE /<q>/messages/head?timeout=<s>` | receive-and-delete → `200` + message, or `204` |
//! | `DELETE /<q>/messages/<id>/<lockToken>` | complete |
//! | `PUT /<q>/messages/<id>/<lockToken>` | abandon (unlock) |
//! | `POST /<q>/messages/<id>/<lockToken>` | renew the lock |
//!
//! `<q>/$DeadLetterQueue` addresses the dead-letter sub-queue with the same verbs. Requests carry an Entra bearer
//! token for `https://servicebus.azure.net`; the principal needs a grant for
//! `Microsoft.ServiceBus/namespaces/queues/send` or `…/listen` at the queue or above. Errors are the XML
//! `<Error><Code>…</Code><Detail>…</Detail></Error>` Service Bus answers with.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::broker::{self, BrokerError, ReceiveMode, Settle};
use super::queue::{
    DEAD_LETTER_SEGMENT, Message, QueueConfig, SubQueue, from_ms, parse_date, queue_key, rfc1123, unix_ms,
};
use crate::App;
use crate::http::{Req, Resp};

pub const AUDIENCE: &str = "https://servicebus.azure.net";
pub const SEND_ACTION: &str = "Microsoft.ServiceBus/namespaces/queues/send";
pub const LISTEN_ACTION: &str = "Microsoft.ServiceBus/namespaces/queues/listen";
const BATCH_CONTENT_TYPE: &str = "application/vnd.microsoft.servicebus.json";
/// The Standard tier's message size limit.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;
const DEFAULT_RECEIVE_TIMEOUT: u64 = 60;
const MAX_RECEIVE_TIMEOUT: u64 = 600;

/// Request headers that are HTTP or protocol, not custom properties.
const NON_PROPERTY_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "brokerproperties",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "accept",
    "accept-encoding",
    "accept-language",
    "user-agent",
    "expect",
    "te",
    "traceparent",
    "tracestate",
    "proxy-connection",
    "cache-control",
    "pragma",
    "date",
];

/// What a request does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Send,
    Receive(ReceiveMode),
    Settle { id: String, lock_token: String, action: Settle },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub queue: String,
    pub sub: SubQueue,
    pub action: Action,
}

pub fn route(req: &Req) -> Option<Route> {
    let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let (queue, sub, rest) = match s.as_slice() {
        [q, dlq, rest @ ..] if dlq.eq_ignore_ascii_case(DEAD_LETTER_SEGMENT) => (*q, SubQueue::DeadLetter, rest),
        [q, rest @ ..] => (*q, SubQueue::Active, rest),
        [] => return None,
    };
    let action = match (rest, &req.method) {
        (["messages"], &Method::POST) if sub == SubQueue::Active => Action::Send,
        ([m, h], &Method::POST) if m.eq_ignore_ascii_case("messages") && h.eq_ignore_ascii_case("head") => {
            Action::Receive(ReceiveMode::PeekLock)
        }
        ([m, h], &Method::DELETE) if m.eq_ignore_ascii_case("messages") && h.eq_ignore_ascii_case("head") => {
            Action::Receive(ReceiveMode::ReceiveAndDelete)
        }
        ([m, id, lock], method) if m.eq_ignore_ascii_case("messages") => {
            let action = match *method {
                Method::DELETE => Settle::Complete,
                Method::PUT => Settle::Abandon,
                Method::POST => Settle::Renew,
                _ => return None,
            };
            Action::Settle { id: id.to_string(), lock_token: lock.to_string(), action }
        }
        _ => return None,
    };
    Some(Route { queue: queue.to_string(), sub, action })
}

/// The fault-injection operation name: `send`, `receive`, `complete`, `abandon`, `renew`.
pub fn operation_name(req: &Req) -> String {
    match route(req).map(|r| r.action) {
        Some(Action::Send) => "send",
        Some(Action::Receive(_)) => "receive",
        Some(Action::Settle { action: Settle::Complete, .. }) => "complete",
        Some(Action::Settle { action: Settle::Abandon, .. }) => "abandon",
        Some(Action::Settle { action: Settle::Renew, .. }) => "renew",
        None => "unknown",
    }
    .to_string()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Service Bus's error body.
pub fn error(status: StatusCode, detail: &str) -> Resp {
    let body = format!(
        "<Error><Code>{}</Code><Detail>{} TrackingId:{}, Timestamp:{}</Detail></Error>",
        status.as_u16(),
        xml_escape(detail),
        uuid::Uuid::new_v4(),
        rfc1123(time::OffsetDateTime::now_utc()),
    );
    let mut resp = Resp { status, headers: http::HeaderMap::new(), body: Bytes::from(body) };
    resp.headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/xml; charset=utf-8"));
    resp
}

fn broker_error(e: &BrokerError) -> Resp {
    let status = match e {
        BrokerError::EntityNotFound(_) | BrokerError::MessageNotFound(_) => StatusCode::NOT_FOUND,
        BrokerError::BadRequest(_) => StatusCode::BAD_REQUEST,
        BrokerError::LockLost(_) => StatusCode::GONE,
        BrokerError::Store(err) => {
            tracing::error!(error = %err, "Service Bus store failure");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error(status, &e.to_string())
}

/// Serves one request (async: receives long-poll).
pub async fn handle(app: Arc<App>, req: Req) -> Resp {
    let Some(ns_name) = req.host.strip_suffix(".servicebus.windows.net").map(str::to_string) else {
        return error(StatusCode::NOT_FOUND, "Not a Service Bus namespace host.");
    };
    let blocking = |app: &Arc<App>, f: Box<dyn FnOnce(&App) -> Resp + Send>| {
        let app = app.clone();
        async move {
            tokio::task::spawn_blocking(move || f(&app))
                .await
                .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
        }
    };
    // Authentication and authorisation (store reads) off the async workers.
    let checked = {
        let req = req.clone();
        let ns_name = ns_name.clone();
        let app = app.clone();
        tokio::task::spawn_blocking(move || authorize(&app, &ns_name, &req).map_err(Box::new)).await
    };
    let route = match checked {
        Ok(Ok(route)) => route,
        Ok(Err(resp)) => return *resp,
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    };
    let qkey = queue_key(&ns_name, &route.queue);
    match route.action.clone() {
        Action::Send => {
            let req = req.clone();
            let key = qkey.clone();
            let resp = blocking(&app, Box::new(move |app: &App| send(app, &key, &req))).await;
            if resp.status == StatusCode::CREATED {
                app.servicebus.wake(&qkey);
            }
            resp
        }
        Action::Receive(mode) => receive(app, &req, &qkey, route.sub, mode).await,
        Action::Settle { id, lock_token, action } => {
            let sub = route.sub;
            let key = qkey.clone();
            let host = req.host.clone();
            let queue = route.queue.clone();
            let resp = blocking(
                &app,
                Box::new(move |app: &App| {
                    let now = unix_ms(app.clock.now());
                    match app.servicebus.settle(&app.store, now, &key, sub, &id, &lock_token, action) {
                        Ok(Some(m)) => {
                            let mut resp = Resp::empty(StatusCode::OK);
                            let q = broker::queue(&app.store, &key).ok().flatten();
                            if let Some(q) = q {
                                resp = message_headers(resp, &m, &q, &host, &queue, sub, app);
                            }
                            resp
                        }
                        Ok(None) => Resp::empty(StatusCode::OK),
                        Err(e) => broker_error(&e),
                    }
                }),
            )
            .await;
            if resp.status == StatusCode::OK && action != Settle::Renew {
                // A settled message may free its session or put a message back.
                app.servicebus.wake(&qkey);
            }
            resp
        }
    }
}

// The error is the answer to send; boxing it would only move the allocation.
#[allow(clippy::result_large_err)]
fn authorize(app: &App, ns_name: &str, req: &Req) -> Result<Route, Resp> {
    let Some(token) = req.bearer() else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "MissingToken: The authorization header was not found or is not a bearer token.",
        ));
    };
    let ns_audience = format!("https://{}", req.host);
    let claims = app
        .tokens
        .verify(token, crate::token::wall_now(), &[AUDIENCE, &ns_audience])
        .map_err(|e| error(StatusCode::UNAUTHORIZED, &format!("InvalidToken: {e}")))?;
    let ns = match broker::namespace(&app.store, ns_name) {
        Ok(Some(ns)) => ns,
        Ok(None) => {
            return Err(error(StatusCode::NOT_FOUND, &format!("The namespace '{ns_name}' does not exist.")));
        }
        Err(e) => return Err(broker_error(&BrokerError::Store(e))),
    };
    let Some(route) = route(req) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            &format!("local-azure does not support {} {} on Service Bus.", req.method, req.path()),
        ));
    };
    let (action, claim) = match route.action {
        Action::Send => (SEND_ACTION, "Send"),
        _ => (LISTEN_ACTION, "Listen"),
    };
    let scope = format!("{}/queues/{}", ns.scope(), route.queue);
    match crate::arm::authz::authorize(app, &claims.oid, action, &scope, false) {
        Ok(()) => {}
        Err(crate::arm::ArmError::Api { status: StatusCode::FORBIDDEN, .. }) => {
            return Err(error(
                StatusCode::FORBIDDEN,
                &format!(
                    "Unauthorized access. '{claim}' claim(s) are required to perform this operation. Resource: 'sb://{}/{}'.",
                    req.host, route.queue
                ),
            ));
        }
        Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
    Ok(route)
}

/// Reads the send request into messages (without sequence numbers; the broker assigns them).
fn parse_send(req: &Req, now_ms: i64) -> Result<Vec<Message>, String> {
    let content_type = req.header("content-type").unwrap_or_default().to_ascii_lowercase();
    if content_type.starts_with(BATCH_CONTENT_TYPE) {
        if req.body.len() > MAX_MESSAGE_BYTES {
            return Err("The batch exceeds the maximum size of 262144 bytes.".into());
        }
        let items: Vec<Value> =
            serde_json::from_slice(&req.body).map_err(|e| format!("The batch is not a JSON array of messages: {e}"))?;
        if items.is_empty() {
            return Err("The batch is empty.".into());
        }
        return items
            .iter()
            .map(|item| {
                let body = match item.get("Body") {
                    Some(Value::String(s)) => s.clone().into_bytes(),
                    Some(other) => other.to_string().into_bytes(),
                    None => return Err("A batch entry has no Body.".into()),
                };
                let broker = item.get("BrokerProperties").cloned().unwrap_or(Value::Null);
                let props = item.get("UserProperties").and_then(Value::as_object).cloned().unwrap_or_default();
                build_message(&broker, props, body, None, now_ms)
            })
            .collect();
    }
    if req.body.len() > MAX_MESSAGE_BYTES {
        return Err("The message exceeds the maximum size of 262144 bytes.".into());
    }
    let broker = match req.header("brokerproperties") {
        Some(text) => serde_json::from_str::<Value>(text).map_err(|e| format!("BrokerProperties is not JSON: {e}"))?,
        None => Value::Null,
    };
    let mut props = Map::new();
    for (name, value) in &req.headers {
        let lower = name.as_str();
        if NON_PROPERTY_HEADERS.contains(&lower) || lower.starts_with("x-ms-") {
            continue;
        }
        let Ok(text) = value.to_str() else { continue };
        // Custom properties are JSON literals: "quoted" strings, bare numbers and booleans.
        props.insert(name.as_str().to_string(), serde_json::from_str(text).unwrap_or_else(|_| json!(text)));
    }
    let ct = req.header("content-type").map(str::to_string);
    Ok(vec![build_message(&broker, props, req.body.to_vec(), ct, now_ms)?])
}

fn build_message(
    broker: &Value,
    properties: Map<String, Value>,
    body: Vec<u8>,
    content_type: Option<String>,
    now_ms: i64,
) -> Result<Message, String> {
    if !(broker.is_object() || broker.is_null()) {
        return Err("BrokerProperties must be a JSON object.".into());
    }
    let text = |k: &str| broker.get(k).and_then(Value::as_str).map(str::to_string);
    let scheduled_ms = match broker.get("ScheduledEnqueueTimeUtc").and_then(Value::as_str) {
        Some(s) => Some(unix_ms(
            parse_date(s).ok_or_else(|| format!("ScheduledEnqueueTimeUtc '{s}' is not an RFC 1123 date."))?,
        )),
        None => None,
    };
    let ttl_ms = match broker.get("TimeToLive") {
        Some(Value::Number(n)) => {
            let secs = n.as_f64().unwrap_or(0.0);
            if secs <= 0.0 {
                return Err("TimeToLive must be positive.".into());
            }
            (secs < 1e11).then_some((secs * 1000.0) as i64)
        }
        Some(Value::Null) | None => None,
        Some(_) => return Err("TimeToLive must be a number of seconds.".into()),
    };
    Ok(Message {
        message_id: text("MessageId")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
        session_id: text("SessionId"),
        correlation_id: text("CorrelationId"),
        label: text("Label"),
        reply_to: text("ReplyTo"),
        reply_to_session_id: text("ReplyToSessionId"),
        to: text("To"),
        partition_key: text("PartitionKey"),
        content_type: content_type.or_else(|| text("ContentType")),
        body: base64::engine::general_purpose::STANDARD.encode(body),
        properties,
        enqueued_ms: scheduled_ms.unwrap_or(now_ms),
        scheduled: scheduled_ms.is_some_and(|t| t > now_ms),
        ttl_ms,
        ..Default::default()
    })
}

fn send(app: &App, qkey: &str, req: &Req) -> Resp {
    let now = unix_ms(app.clock.now());
    let messages = match parse_send(req, now) {
        Ok(m) => m,
        Err(detail) => {
            let status =
                if detail.contains("maximum size") { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
            return error(status, &detail);
        }
    };
    let count = messages.len();
    match app.servicebus.send(&app.store, now, qkey, messages) {
        Ok(stored) => {
            tracing::debug!(queue = %qkey, count, stored, "sent");
            Resp::empty(StatusCode::CREATED)
        }
        Err(e) => broker_error(&e),
    }
}

async fn receive(app: Arc<App>, req: &Req, qkey: &str, sub: SubQueue, mode: ReceiveMode) -> Resp {
    let timeout = req
        .query("timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(DEFAULT_RECEIVE_TIMEOUT)
        .min(MAX_RECEIVE_TIMEOUT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let notify = app.servicebus.notifier(qkey);
    loop {
        // Registered before looking, so a send between the look and the wait is not missed.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let attempt = {
            let app = app.clone();
            let key = qkey.to_string();
            tokio::task::spawn_blocking(move || {
                let now = unix_ms(app.clock.now());
                app.servicebus.receive(&app.store, now, &key, sub, mode)
            })
            .await
        };
        match attempt {
            Ok(Ok(Some((m, q)))) => {
                tracing::debug!(queue = %qkey, sequence = m.sequence_number, delivery = m.delivery_count, "delivered");
                let status = if mode == ReceiveMode::PeekLock { StatusCode::CREATED } else { StatusCode::OK };
                let queue = req.segments.first().cloned().unwrap_or_default();
                let mut resp = Resp::empty(status);
                resp.body = Bytes::from(base64::engine::general_purpose::STANDARD.decode(&m.body).unwrap_or_default());
                return message_headers(resp, &m, &q, &req.host, &queue, sub, &app);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return broker_error(&e),
            Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Resp::empty(StatusCode::NO_CONTENT);
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// `BrokerProperties`, `Location`, `Date` (local-azure's clock, which `LockedUntilUtc` is on) and the custom
/// properties as headers.
fn message_headers(
    mut resp: Resp,
    m: &Message,
    q: &QueueConfig,
    host: &str,
    queue: &str,
    sub: SubQueue,
    app: &App,
) -> Resp {
    let mut bp = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            bp.insert(k.to_string(), v);
        }
    };
    put("DeliveryCount", json!(m.delivery_count));
    put("EnqueuedSequenceNumber", json!(0));
    put("EnqueuedTimeUtc", json!(rfc1123(from_ms(m.enqueued_ms))));
    put("LockToken", json!(m.lock_token));
    put("LockedUntilUtc", json!(m.locked_until_ms.map(|t| rfc1123(from_ms(t)))));
    put("MessageId", json!(m.message_id));
    put("SequenceNumber", json!(m.sequence_number));
    put("State", json!("Active"));
    put("TimeToLive", json!(m.ttl_ms.map(|t| t as f64 / 1000.0).unwrap_or(922_337_203_685.477_6)));
    put("SessionId", json!(m.session_id));
    put("CorrelationId", json!(m.correlation_id));
    put("Label", json!(m.label));
    put("ReplyTo", json!(m.reply_to));
    put("ReplyToSessionId", json!(m.reply_to_session_id));
    put("To", json!(m.to));
    put("PartitionKey", json!(m.partition_key));
    if sub == SubQueue::DeadLetter {
        put("DeadLetterSource", json!(q.name));
    }
    resp = resp.with_header("brokerproperties", Value::Object(bp).to_string());
    if let Some(lock) = &m.lock_token {
        let dlq = if sub == SubQueue::DeadLetter { format!("/{DEAD_LETTER_SEGMENT}") } else { String::new() };
        resp =
            resp.with_header("location", format!("https://{host}/{queue}{dlq}/messages/{}/{lock}", m.sequence_number));
    }
    if let Some(ct) = &m.content_type {
        resp = resp.with_header("content-type", ct);
    }
    resp = resp.with_header("date", rfc1123(app.clock.now()));
    for (name, value) in &m.properties {
        let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(&value.to_string()))
        else {
            continue;
        };
        resp.headers.insert(name, value);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str) -> Req {
        Req::new(method, "edgevault.servicebus.windows.net", path, http::HeaderMap::new(), Bytes::new())
    }

    #[test]
    fn routes() {
        assert_eq!(route(&req(Method::POST, "/q/messages")).unwrap().action, Action::Send);
        let r = route(&req(Method::POST, "/q/%24DeadLetterQueue/messages/head?timeout=5")).unwrap();
        assert_eq!((r.sub, r.action), (SubQueue::DeadLetter, Action::Receive(ReceiveMode::PeekLock)));
        let r = route(&req(Method::PUT, "/q/messages/m1/tok")).unwrap();
        assert_eq!(r.action, Action::Settle { id: "m1".into(), lock_token: "tok".into(), action: Settle::Abandon });
        assert!(route(&req(Method::GET, "/q")).is_none());
        assert_eq!(operation_name(&req(Method::POST, "/q/messages/7/tok")), "renew");
    }

    #[test]
    fn broker_properties_parse() {
        let m = build_message(
            &json!({"MessageId":"m","SessionId":"s","TimeToLive":10,"ScheduledEnqueueTimeUtc":"Sat, 28 Nov 2099 12:00:00 GMT"}),
            Map::new(),
            b"x".to_vec(),
            None,
            0,
        )
        .unwrap();
        assert_eq!((m.message_id.as_str(), m.ttl_ms, m.scheduled), ("m", Some(10_000), true));
        assert!(build_message(&json!({"ScheduledEnqueueTimeUtc":"soon"}), Map::new(), vec![], None, 0).is_err());
    }
}
