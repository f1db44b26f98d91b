//! The `httpTrigger` payload (`Data.req`) of the activation-key API.
#![no_main]

use edgevault::triggers::HttpRequest;
use edgevault_fuzz::{decode_round_trip, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(value) = json(data) else { return };
    let Some(request) = decode_round_trip::<HttpRequest>(value, "Data.req") else { return };
    // What `activation_key_api::run` reads first.
    let _ = request.header("content-type");
    let _ = request.params.get("operationId");
    let _ = request.method.to_ascii_uppercase();
});
