//! `eventGridTrigger`: the extension's webhook, `POST /runtime/webhooks/eventgrid?functionName=<Name>`.
//!
//! The webhook answers Event Grid's validation handshake itself (the function never sees it), as the real
//! extension does: `aeg-event-type: SubscriptionValidation` gets `{"validationResponse": <code>}`, and a CloudEvents
//! `OPTIONS` probe gets `WebHook-Allowed-Origin`. Notifications invoke the function once per event, in order;
//! the answer is `200` only if every invocation succeeded, so Event Grid retries the batch otherwise.

use serde_json::{Map, Value, json};

use crate::Shared;
use crate::app::Trigger;
use crate::http_trigger::presented_key;
use crate::keys::EVENTGRID_SYSTEM_KEY;
use crate::server::{Reply, Request};

pub(crate) async fn handle(shared: &Shared, request: &Request) -> Reply {
    let Some(name) = request.query_value("functionName") else {
        return Reply::json(400, &json!({"error": "the functionName query parameter is required"}));
    };
    let binding = match shared.app.function(&name).map(|f| (&f.name, &f.trigger)) {
        Some((_, Trigger::EventGrid { binding })) => binding.clone(),
        _ => return Reply::json(404, &json!({"error": format!("no eventGridTrigger function named `{name}`")})),
    };
    let function = shared.app.function(&name).map(|f| f.name.clone()).unwrap_or(name);
    if !presented_key(request).is_some_and(|k| shared.keys.admits_system(EVENTGRID_SYSTEM_KEY, &k)) {
        tracing::info!(function = %function, "Event Grid delivery refused: missing or wrong system key");
        return Reply::status(401);
    }
    match request.method.as_str() {
        "OPTIONS" => return abuse_protection(request),
        "POST" => {}
        _ => return Reply::status(405),
    }
    let body: Value = match serde_json::from_slice(&request.body) {
        Ok(v) => v,
        Err(err) => return Reply::json(400, &json!({"error": format!("the body is not JSON: {err}")})),
    };
    let events = match body {
        Value::Array(events) => events,
        single @ Value::Object(_) => vec![single],
        _ => return Reply::json(400, &json!({"error": "expected an event or an array of events"})),
    };
    match request.header("aeg-event-type").unwrap_or("Notification") {
        t if t.eq_ignore_ascii_case("SubscriptionValidation") => return validation(&events),
        t if t.eq_ignore_ascii_case("SubscriptionDeletion") => return Reply::status(200),
        _ => {}
    }
    let mut all_ok = true;
    for event in events {
        let data = Map::from_iter([(binding.clone(), event)]);
        match shared.invoker.invoke(&function, data, Map::new()).await {
            Ok(outcome) if outcome.succeeded() => {}
            Ok(outcome) => {
                tracing::warn!(function = %function, status = outcome.status, "Event Grid invocation failed");
                all_ok = false;
            }
            Err(err) => {
                tracing::warn!(function = %function, "Event Grid invocation failed: {err}");
                all_ok = false;
            }
        }
    }
    Reply::status(if all_ok { 200 } else { 500 })
}

/// Event Grid schema handshake: echo the validation code of the (single) validation event.
fn validation(events: &[Value]) -> Reply {
    let code = events.first().and_then(|e| e["data"]["validationCode"].as_str());
    match code {
        Some(code) => {
            tracing::info!("answered the Event Grid subscription validation handshake");
            Reply::json(200, &json!({"validationResponse": code}))
        }
        None => Reply::json(400, &json!({"error": "no data.validationCode in the validation event"})),
    }
}

/// CloudEvents webhook abuse protection: allow the origin that asks.
fn abuse_protection(request: &Request) -> Reply {
    match request.header("webhook-request-origin") {
        Some(origin) => Reply {
            status: 200,
            headers: vec![
                ("WebHook-Allowed-Origin".into(), origin.to_string()),
                ("WebHook-Allowed-Rate".into(), "*".into()),
            ],
            body: bytes::Bytes::new(),
        },
        None => Reply::json(400, &json!({"error": "OPTIONS needs a WebHook-Request-Origin header"})),
    }
}
