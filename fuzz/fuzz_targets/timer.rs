//! The `timerTrigger` payload (`Data.timer`) of the recovery sweep.
#![no_main]

use edgevault::triggers::TimerInfo;
use edgevault_fuzz::{decode_round_trip, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(value) = json(data) else { return };
    let _ = decode_round_trip::<TimerInfo>(value, "Data.timer");
});
