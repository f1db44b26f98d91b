//! The custom-handler envelope: the raw body the Functions host POSTs to `/<FunctionName>`, read by the server's own
//! `parse_envelope`, then every binding handed to the decoder the function for it uses.
#![no_main]

use edgevault::messages::Command;
use edgevault::protocol::InvocationRequest;
use edgevault::server::parse_envelope;
use edgevault::triggers::{GridEvent, HttpRequest, ServiceBusMetadata, TimerInfo};
use edgevault_fuzz::same_json;
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = parse_envelope(data) else { return };
    // One JSON document and nothing after it (trailing bytes were accepted until this target found them). Read as
    // serde_json skips a value, since fields edgevault ignores are skipped unvalidated: invalid UTF-8 inside one
    // passes, as this target also found; it is never read, so it stays accepted.
    assert!(serde_json::from_slice::<IgnoredAny>(data).is_ok(), "an accepted body is one JSON document");

    let bytes = serde_json::to_vec(&request).expect("an accepted envelope serializes");
    let again: InvocationRequest = serde_json::from_slice(&bytes).expect("an envelope reads its own serialization");
    let read = serde_json::to_value(&request).expect("serializes");
    assert!(same_json(&serde_json::to_value(&again).expect("serializes"), &read), "changed in a round trip");
    let sent: Value = serde_json::from_slice(data).unwrap_or_default();
    for key in ["Data", "Metadata"] {
        if let Some(value) = sent.get(key).filter(|v| !v.is_null()) {
            assert!(same_json(&read[key], value), "`{key}` is not what was sent");
        }
    }

    // Any binding decodes as plain JSON, and then exactly as it was sent: the string layer is never guessed away.
    for (name, value) in &request.data {
        assert_eq!(&request.binding::<Value>(name).expect("any JSON is a Value"), value);
    }
    // What each function does with its binding (functions/*.rs); none of these may panic, whatever they answer.
    let _ = request.binding::<HttpRequest>("req");
    let _ = request.binding::<TimerInfo>("timer");
    if let Some(event) = request.data.get("event") {
        let _ = GridEvent::list_from_value(event.clone(), "Data.event");
    }
    if let Ok(body) = request.binding::<Map<String, Value>>("message") {
        let _ = Command::from_json(&body);
    }
    let _ = request.metadata::<ServiceBusMetadata>();
});
