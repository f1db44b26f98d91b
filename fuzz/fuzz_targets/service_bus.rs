//! The `serviceBusTrigger` metadata (`Metadata`): broker properties under current and legacy names, numbers that may
//! arrive as strings, properties that may arrive JSON-encoded.
#![no_main]

use edgevault::triggers::ServiceBusMetadata;
use edgevault_fuzz::{decode_round_trip, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(value) = json(data) else { return };
    let Some(metadata) = decode_round_trip::<ServiceBusMetadata>(value, "Metadata") else { return };
    // Either name answers, the current one first.
    assert_eq!(metadata.subject(), metadata.subject.as_deref().or(metadata.label.as_deref()));
    let _ = metadata.property("schemaVersion");
});
