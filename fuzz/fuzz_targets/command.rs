//! Service Bus message bodies: the versioned commands the functions send each other (`messages::Command`).
#![no_main]

use edgevault::messages::Command;
use edgevault_fuzz::json;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Some(Value::Object(body)) = json(data) else { return };
    let Ok(command) = Command::from_json(&body) else { return };

    // A command read from a queue and sent on again is the same command, with the same id and session, so the
    // queue's duplicate detection and per-device ordering hold across the hop.
    let sent: Map<String, Value> = serde_json::from_str(&command.to_json()).expect("a command's body is a JSON object");
    let again = Command::from_json(&sent).expect("a command reads its own body");
    assert_eq!(again, command, "the command changed in a round trip through its message body");
    assert_eq!(again.message_id(), command.message_id());
    assert_eq!(again.session_id(), command.session_id());
    assert!(command.message_id().len() <= 128, "Service Bus refuses message ids over 128 characters");
    assert!(command.session_id().len() <= 128, "Service Bus refuses session ids over 128 characters");
    let _ = (command.queue(), command.to_outgoing(None));
});
