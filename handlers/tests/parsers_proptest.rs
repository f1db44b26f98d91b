//! Property tests for every parser at the edge: whatever the input, they answer (never panic), and what they
//! accept round-trips.

use edgevault::activation_key::{ActivationKey, Cik, CikLocation, Claims};
use edgevault::messages::Command;
use edgevault::protocol::{InvocationRequest, decode};
use edgevault::resource_id::ResourceId;
use edgevault::server::parse_envelope;
use edgevault::triggers::{GridEvent, HttpRequest, ServiceBusMetadata, TimerInfo};
use edgevault::vault_name::{MAX_LEN, MIN_LEN, VaultName};
use proptest::prelude::*;
use serde_json::Value;

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[A-Za-z]{1,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn resource_ids_never_panic_and_valid_ones_round_trip(text in ".{0,200}") {
        if let Ok(id) = text.parse::<ResourceId>() {
            let again: ResourceId = id.to_string().parse().unwrap();
            prop_assert_eq!(again, id);
        }
    }

    #[test]
    fn well_formed_ids_parse(sub in "[0-9a-f-]{1,36}", rg in "[A-Za-z0-9_()-]{1,40}", name in "[A-Za-z0-9-]{1,40}") {
        let text = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}");
        let id: ResourceId = text.parse().unwrap();
        prop_assert!(id.is_type(edgevault::resource_id::DEVICE_TYPE));
        prop_assert_eq!(id.name(), Some(name.as_str()));
    }

    #[test]
    fn vault_names_are_accepted_exactly_when_every_rule_holds(name in "[A-Za-z0-9_.-]{0,30}") {
        let valid = (MIN_LEN..=MAX_LEN).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric())
            && !name.contains("--");
        prop_assert_eq!(VaultName::parse(&name).is_ok(), valid, "{}", name);
    }

    #[test]
    fn default_vault_names_are_always_valid(device in "[A-Za-z0-9_()-][A-Za-z0-9_.()-]{0,79}", attempt in 0u32..100) {
        let id: ResourceId = format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{device}")
            .parse().unwrap();
        let name = VaultName::default_for(&id, attempt);
        prop_assert!(VaultName::parse(name.as_str()).is_ok());
    }

    #[test]
    fn activation_key_parsing_never_panics(text in ".{0,300}") {
        if let Ok(key) = ActivationKey::parse(&text) {
            let _ = key.cik_location();
            prop_assert!(key.open(&Cik::generate(), 0).is_err(), "a random token never opens");
        }
    }

    #[test]
    fn a_tampered_key_never_opens(flip in 0usize..400, now in 0i64..1_000) {
        let cik = Cik::generate();
        let claims = Claims {
            resource_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d".parse().unwrap(),
            cik: CikLocation { vault_uri: "https://v.vault.azure.net/".into(), secret_name: "ase-cik-1".into(), secret_version: "v1".into() },
            issued_at: 0,
            expires_at: 10_000,
        };
        let token = ActivationKey::seal(&claims, &cik).expose().to_string();
        let mut bytes = token.into_bytes();
        let i = flip % bytes.len();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        if let Ok(key) = ActivationKey::parse(&tampered) {
            prop_assert!(key.open(&cik, now).is_err());
        }
    }

    #[test]
    fn trigger_payloads_never_panic(value in json()) {
        let _ = decode::<HttpRequest>(value.clone(), "Data.req");
        let _ = decode::<TimerInfo>(value.clone(), "Data.timer");
        let _ = decode::<ServiceBusMetadata>(value.clone(), "Metadata");
        let _ = GridEvent::list_from_value(value.clone(), "Data.event");
        let _ = serde_json::from_value::<InvocationRequest>(value.clone());
        if let Value::Object(body) = value {
            let _ = Command::from_json(&body);
        }
    }

    #[test]
    fn an_envelope_is_one_json_document(value in json(), suffix in "[^ \t\r\n]{1,8}") {
        let body = serde_json::json!({"Data": {"x": value}}).to_string();
        prop_assert_eq!(parse_envelope(body.as_bytes()).unwrap().data["x"].clone(), value);
        prop_assert!(parse_envelope(format!("{body}{suffix}").as_bytes()).is_err(), "accepted `{}` after it", suffix);
    }

    #[test]
    fn double_encoding_is_transparent(value in json()) {
        // A `Value` target takes any JSON as it is, so the string layer is kept, never guessed away.
        let once = Value::String(value.to_string());
        prop_assert_eq!(decode::<Value>(value.clone(), "x").unwrap(), value.clone());
        prop_assert_eq!(decode::<Value>(once.clone(), "x").unwrap(), once);
    }
}

/// Found by the `envelope` fuzz target: the server read the first JSON document of a body and ignored the rest.
#[test]
fn bytes_after_the_envelope_are_refused() {
    let err = parse_envelope(b"{\n  \"Data\": { \n  \"t imgr\": 8}}}}geD\n").unwrap_err();
    assert_eq!(err.field(), Some("body"));
    assert!(parse_envelope(b"{\"Data\": {}}\n").is_ok(), "trailing whitespace is still one document");
}
