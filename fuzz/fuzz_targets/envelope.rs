//! The custom-handler envelope: the raw body the Functions host POSTs to `/<FunctionName>`, read as the server reads
//! it, then every binding handed to the decoder the function for it uses.
#![no_main]

use edgevault::messages::Command;
use edgevault::protocol::InvocationRequest;
use edgevault::triggers::{GridEvent, HttpRequest, ServiceBusMetadata, TimerInfo};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    // As `server::parse_envelope` does: straight from the bytes, through serde_path_to_error for the field name.
    let mut de = serde_json::Deserializer::from_slice(data);
    let Ok(request) = serde_path_to_error::deserialize::<_, InvocationRequest>(&mut de) else { return };

    let bytes = serde_json::to_vec(&request).expect("an accepted envelope serializes");
    let again: InvocationRequest = serde_json::from_slice(&bytes).expect("an envelope reads its own serialization");
    assert_eq!(again, request, "the envelope changed in a serialization round trip");

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
