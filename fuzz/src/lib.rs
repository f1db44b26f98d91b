//! What the fuzz targets in `fuzz_targets/` share. There is one target per parser at edgevault's edge; each feeds
//! the fuzzer's bytes to the public function the handler itself calls and asserts what
//! `handlers/tests/parsers_proptest.rs` asserts: the parser answers without panicking, and what it accepts
//! round-trips. `tests/fuzz.sh` runs them all for a bounded time; the README's "Fuzzing" section says how to run one.

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
/// same value: a payload the handler accepted and wrote on (into a command, a log, a response) means the same thing
/// when read back.
pub fn decode_round_trip<T>(value: Value, path: &str) -> Option<T>
where
    T: DeserializeOwned + Serialize,
{
    let typed: T = decode(value, path).ok()?;
    let back = serde_json::to_value(&typed).expect("an accepted payload serializes");
    let again: T =
        decode(back.clone(), path).unwrap_or_else(|e| panic!("{path}: its own serialization is refused: {e}"));
    let again = serde_json::to_value(&again).expect("serializes");
    assert!(same_json(&again, &back), "{path}: changed by a serialization round trip:\n{again}\n{back}");
    Some(typed)
}

/// JSON equality, except that two floats may differ in their last bits. serde_json (without its `float_roundtrip`
/// feature, which edgevault does not enable) parses a long decimal to a neighbouring float, so a float in a
/// pass-through `Value` can move by an ulp when written and read again; the envelope target found that in its first
/// minute. No field edgevault interprets is a float, so that drift is no defect; everything else must match exactly.
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15,
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}
