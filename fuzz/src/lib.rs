//! What the fuzz targets in `fuzz_targets/` share. There is one target per parser at edgevault's edge; each feeds
//! the fuzzer's bytes to the public function the handler itself calls and asserts what
//! `handlers/tests/parsers_proptest.rs` asserts: the parser answers without panicking, and what it accepts
//! round-trips. `tests/fuzz.sh` runs them all for a bounded time; the README's "Fuzzing" section says how to run one.

use std::fmt::Debug;

use edgevault::protocol::decode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The input as JSON. Every trigger value reaches its parser as JSON already (the envelope target covers the bytes
/// before that), so bytes that are not JSON have nothing more to find.
pub fn json(data: &[u8]) -> Option<Value> {
    serde_json::from_slice(data).ok()
}

/// The input as text: the id, name and key parsers take `&str`, and the handler only ever has UTF-8 to give them.
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Decodes `value` as the handler does and, when it is accepted, checks that what it serializes to decodes to the
/// same value and serializes the same again: a payload the handler accepted and wrote on (into a command, a log, a
/// response) means the same thing when read back.
pub fn decode_round_trip<T>(value: Value, path: &str) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let typed: T = decode(value, path).ok()?;
    let back = serde_json::to_value(&typed).expect("an accepted payload serializes");
    let again: T =
        decode(back.clone(), path).unwrap_or_else(|e| panic!("{path}: its own serialization is refused: {e}"));
    assert_eq!(again, typed, "{path}: changed by a serialization round trip");
    assert_eq!(serde_json::to_value(&again).expect("serializes"), back, "{path}: serialization is not stable");
    Some(typed)
}
