//! `eventGridTrigger`: the extension's webhook, `POST /runtime/webhooks/eventgrid?functionName=<Name>`.
//!
//! As the Event Grid extension 3.x answers it (azure-sdk-for-net
//! `sdk/eventgrid/Microsoft.Azure.WebJobs.Extensions.EventGrid/src/TriggerBinding/HttpRequestProcessor.cs` and
//! `src/Config/EventGridExtensionConfigProvider.cs`):
//!
//! - `aeg-event-type: SubscriptionValidation` is answered by the extension itself: `200` with
//!   `{"validationResponse": <data.validationCode>}`; the function never sees it. A CloudEvents `OPTIONS` probe gets
//!   `Webhook-Allowed-Origin` (the asking Event Grid cloud's origin, else `eventgrid.azure.net`).
//! - `aeg-event-type: Notification` invokes the function once per event, **all events of the batch in parallel**;
//!   the answer is `202 Accepted` when every invocation succeeded and `500` otherwise, so Event Grid retries the
//!   batch. `Unsubscribe` is `202`; no `aeg-event-type`, or any other, is `400`.
//! - The function gets the event as a string: the extension turns the event token into indented JSON text
//!   (`JToken` → `string` converter, `Formatting.Indented`), which the host JSON-encodes once more for `Data`
//!   (`GetHttpScriptInvocationContextValue`). `Metadata` has the trigger's binding data (`data`,
//!   `EventGridTriggerAttributeBindingProvider`) and the event's top-level fields (`Utility.ApplyBindingData`).

use futures::future::join_all;
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::app::Trigger;
use crate::binding_data::{BindingData, BindingValue};
use crate::http::{Reply, Request};
use crate::http_trigger::presented_key;
use crate::invoke::Invocation;
use crate::keys::EVENTGRID_SYSTEM_KEY;

/// The origins `GetAllowedOriginResponseHeader` echoes; any other gets the public cloud's.
const EVENT_GRID_ORIGINS: &[&str] = &[
    "eventgrid.azure.net",
    "eventgrid.azure.us",
    "eventgrid.azure.eaglex.ic.gov",
    "eventgrid.azure.microsoft.scloud",
    "eventgrid.azure.cn",
];

pub(crate) async fn handle(shared: &Shared, request: &Request) -> Reply {
    let name = request.query_value("functionName").unwrap_or_default();
    let (function, binding) = match shared.app.function(&name).map(|f| (&f.name, &f.trigger)) {
        Some((function, Trigger::EventGrid { binding })) => (function.clone(), binding.clone()),
        _ => return Reply::text(404, &format!("cannot find function: '{name}'")),
    };
    if !presented_key(request).is_some_and(|k| shared.keys.admits_system(EVENTGRID_SYSTEM_KEY, &k)) {
        tracing::info!(function = %function, "Event Grid delivery refused: missing or wrong system key");
        return Reply::status(401);
    }
    match request.method.as_str() {
        "OPTIONS" => return abuse_protection(request),
        "POST" => {}
        _ => return Reply::status(405),
    }
    let event_type = request.header("aeg-event-type").unwrap_or_default();
    if event_type.eq_ignore_ascii_case("SubscriptionValidation") {
        return validation(&request.body);
    }
    if event_type.eq_ignore_ascii_case("Unsubscribe") {
        return Reply::status(202);
    }
    if !event_type.eq_ignore_ascii_case("Notification") {
        return Reply::status(400);
    }
    // An unreadable batch is an exception in the extension, which the host answers with 500.
    let events = match serde_json::from_slice::<Value>(&request.body) {
        Ok(Value::Array(events)) => events,
        Ok(single @ Value::Object(_)) => vec![single],
        Ok(_) => return Reply::text(500, "The request content should be parseable into a JSON object or array."),
        Err(err) => return Reply::text(500, &format!("the body is not JSON: {err}")),
    };
    let invocations = events.iter().map(|event| shared.invoker.invoke(&function, event_invocation(&binding, event)));
    let mut failure = None;
    for result in join_all(invocations).await {
        let reason = match result {
            Ok(outcome) if outcome.succeeded() => continue,
            Ok(outcome) => format!("the handler answered {}", outcome.status),
            Err(err) => err.to_string(),
        };
        tracing::warn!(function = %function, "Event Grid invocation failed: {reason}");
        failure.get_or_insert(reason);
    }
    match failure {
        None => Reply::status(202),
        Some(reason) => Reply::text(500, &reason),
    }
}

/// What the function gets for one event (see the module comment).
pub fn event_invocation(binding: &str, event: &Value) -> Invocation {
    let indented = serde_json::to_string_pretty(event).unwrap_or_else(|_| event.to_string());
    let mut binding_data = BindingData::new();
    // `triggerValue["data"]`: a missing property is a C# null, a JSON null a token.
    binding_data.set("data", event.get("data").map_or(BindingValue::Null, BindingValue::token));
    Invocation {
        data: Map::from_iter([(binding.to_string(), Value::String(Value::String(indented.clone()).to_string()))]),
        binding_data,
        trigger_text: Some(indented),
    }
}

/// The validation handshake: the code of the first event (Event Grid schema, an array) or of the CloudEvent, whose
/// `data` may itself be JSON text.
fn validation(body: &[u8]) -> Reply {
    let code = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(events)) => {
            events.first().and_then(|e| e["data"]["validationCode"].as_str().map(str::to_string))
        }
        Ok(event @ Value::Object(_)) => match &event["data"] {
            Value::String(inner) => {
                serde_json::from_str::<Value>(inner).ok().and_then(|d| d["validationCode"].as_str().map(str::to_string))
            }
            data => data["validationCode"].as_str().map(str::to_string),
        },
        _ => None,
    };
    match code {
        Some(code) => {
            tracing::info!("answered the Event Grid subscription validation handshake");
            Reply::text(200, &json!({"validationResponse": code}).to_string())
        }
        None => Reply::text(500, "no data.validationCode in the validation event"),
    }
}

/// CloudEvents webhook abuse protection: allow the Event Grid origin that asks.
fn abuse_protection(request: &Request) -> Reply {
    let asked = request.header("webhook-request-origin").unwrap_or_default();
    let origin = EVENT_GRID_ORIGINS.iter().find(|o| o.eq_ignore_ascii_case(asked)).unwrap_or(&EVENT_GRID_ORIGINS[0]);
    Reply {
        status: 200,
        headers: vec![("Webhook-Allowed-Origin".into(), origin.to_string())],
        body: bytes::Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_indented_json_text_encoded_again_with_its_fields_in_the_metadata() {
        let event = json!({"id": "e1", "eventTime": "2026-11-28T11:58:31.1234567Z", "data": {"status": "Succeeded"},
                           "dataVersion": "2", "list": [1]});
        let input = event_invocation("event", &event);
        let outer = input.data["event"].as_str().unwrap();
        let inner: String = serde_json::from_str(outer).unwrap();
        assert!(inner.starts_with("{\n  \""), "indented: {inner}");
        assert_eq!(serde_json::from_str::<Value>(&inner).unwrap(), event);
        let mut data = input.binding_data.clone();
        data.apply_json_fields(input.trigger_text.as_deref().unwrap());
        let metadata = Value::Object(data.to_metadata());
        assert_eq!(metadata["data"], json!({"status": "Succeeded"}));
        assert_eq!(metadata["id"], "\"e1\"");
        assert_eq!(metadata["dataVersion"], "\"2\"");
        assert_eq!(metadata["eventTime"], "\"11/28/2026 11:58:31\"");
        assert!(metadata.get("list").is_none());
    }
}
