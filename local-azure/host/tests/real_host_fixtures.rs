//! The payloads the stand-in builds have the shape of the repository's real-host fixtures
//! (`tests/fixtures/triggers/real-host/*.json`): the same keys, and each value encoded the same way (an object, a
//! JSON-encoded string, a number as text, an ISO date with or without a zone, …).
//!
//! Each payload is built by the functions the running host uses ([`request_body`] and the trigger modules) from
//! the inputs the fixture describes. Where the host's source says something other than a fixture, the source wins
//! and the difference is listed in [`KNOWN`], with the source, so a fixture that gets corrected fails this test until
//! the list is updated too.

use std::collections::BTreeMap;

use bytes::Bytes;
use local_azure_host::event_grid::event_invocation;
use local_azure_host::http::Request;
use local_azure_host::http_trigger::{RouteTemplate, build_input};
use local_azure_host::invoke::request_body;
use local_azure_host::service_bus::{ReceivedMessage, ServiceBusClient, TokenSource};
use local_azure_host::timer::{ScheduleStatus, timer_info};
use serde_json::{Map, Value, json};
use time::macros::datetime;

/// Where the source and a fixture disagree: (fixture, path, what differs, why).
/// The fixtures were corrected where the source disagreed with them (the `invoke` claim, no claim `Subject`, the
/// first-run dates' offset, a session trigger's `SessionLockedUntil`); a new disagreement goes here with its source.
const KNOWN: &[(&str, &str, &str)] = &[];

fn fixture(name: &str) -> Value {
    let path = format!("{}/../../tests/fixtures/triggers/real-host/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// How a value is encoded, in the terms that matter to a handler reading it.
fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
        Value::String(text) => {
            if serde_json::from_str::<String>(text).is_ok() {
                "JSON-encoded string".into()
            } else if text.parse::<i64>().is_ok() {
                "number as text".into()
            } else if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
                if text.ends_with('Z') { "date in UTC".into() } else { format!("date+offset{}", t.offset()) }
            } else if time::PrimitiveDateTime::parse(text, &time::format_description::well_known::Iso8601::DEFAULT)
                .is_ok()
            {
                "date".into()
            } else {
                "text".into()
            }
        }
    }
}

/// Compares shapes; each difference is (path, description).
fn compare(path: &str, fixture: &Value, ours: &Value, diffs: &mut Vec<(String, String)>) {
    match (fixture, ours) {
        (Value::Object(f), Value::Object(o)) => {
            // Header names are case-insensitive, and hyper hands the stand-in lower-cased ones; Service Bus custom
            // properties travel as HTTP headers over REST, so they too arrive lower-cased (README).
            let case_insensitive =
                ["Headers", "ApplicationProperties", "UserProperties"].iter().any(|p| path.ends_with(p));
            let fold = |k: &String| if case_insensitive { k.to_ascii_lowercase() } else { k.clone() };
            let f_keys: BTreeMap<String, &Value> = f.iter().map(|(k, v)| (fold(k), v)).collect();
            let o_keys: BTreeMap<String, &Value> = o.iter().map(|(k, v)| (fold(k), v)).collect();
            let only_fixture: Vec<&str> =
                f_keys.keys().filter(|k| !o_keys.contains_key(*k)).map(String::as_str).collect();
            let only_ours: Vec<&str> = o_keys.keys().filter(|k| !f_keys.contains_key(*k)).map(String::as_str).collect();
            if !only_fixture.is_empty() {
                diffs.push((path.into(), format!("only in the fixture: {}", only_fixture.join(", "))));
            }
            if !only_ours.is_empty() {
                diffs.push((path.into(), format!("only ours: {}", only_ours.join(", "))));
            }
            for (key, value) in &f_keys {
                if let Some(other) = o_keys.get(key) {
                    compare(&format!("{path}.{key}"), value, other, diffs);
                }
            }
        }
        (Value::Array(f), Value::Array(o)) => {
            if f.len() != o.len() {
                diffs.push((path.into(), format!("length {} ≠ {}", f.len(), o.len())));
            }
            for (i, (a, b)) in f.iter().zip(o).enumerate() {
                compare(&format!("{path}.{i}"), a, b, diffs);
            }
        }
        _ => {
            let (a, b) = (kind(fixture), kind(ours));
            if a != b {
                let short = |k: String| if k.starts_with("date+offset") { "date+offset".to_string() } else { k };
                diffs.push((path.into(), format!("{} ≠ {}", short(a), short(b))));
            }
        }
    }
}

fn assert_same_shape(name: &str, ours: &Value) {
    let mut diffs = Vec::new();
    compare("", &fixture(name), ours, &mut diffs);
    let diffs: Vec<(String, String)> =
        diffs.into_iter().map(|(p, d)| (p.trim_start_matches('.').to_string(), d)).collect();
    let known: Vec<(String, String)> =
        KNOWN.iter().filter(|(f, ..)| *f == name).map(|(_, p, d)| (p.to_string(), d.to_string())).collect();
    let mut sorted = diffs.clone();
    sorted.sort();
    let mut expected = known.clone();
    expected.sort();
    assert_eq!(sorted, expected, "{name}: the shape differs from the fixture\nours: {ours:#}");
}

fn http_request(method: &str, path_and_query: &str, headers: &[(&str, &str)], body: &str) -> Request {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (path_and_query.to_string(), None),
    };
    Request {
        method: method.into(),
        raw_path: path,
        raw_query: query,
        headers: headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect(),
        body: Bytes::from(body.to_string()),
    }
}

fn route_params(request: &Request) -> BTreeMap<String, Option<String>> {
    let segments = request.segments();
    RouteTemplate::parse("activation-keys/{operationId?}").unwrap().matches(&segments[1..]).unwrap()
}

#[test]
fn http_get_with_a_route_value_and_a_repeated_query_key() {
    let request = http_request(
        "GET",
        "/api/activation-keys/L3N1YnNjcmlwdGlvbnMvNDM4NWNmMDA?api-version=2024-01-01&api-version=2024-06-01",
        &[("Accept", "application/json"), ("Host", "edgevault-func.azurewebsites.net"), ("x-functions-key", "k")],
        "",
    );
    let input = build_input("req", &request, &route_params(&request), Some(("Function", "default")));
    let body = request_body("ActivationKeyApi", input, datetime!(2026-11-28 12:00:05 UTC));
    assert_eq!(body["Data"]["req"]["Query"]["api-version"], "2024-01-01,2024-06-01");
    assert_same_shape("http-get-status.json", &body);
}

#[test]
fn http_post_with_a_json_body_and_an_unused_optional_route_value() {
    let payload = r#"{"resourceId":"/subscriptions/4385cf00-2d3a-425a-832f-f4285b1c9dce/resourceGroups/GroupForEdgeAutomation/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/testedgedevice","vaultName":"testedgedevice-kv"}"#;
    let request = http_request(
        "POST",
        "/api/activation-keys",
        &[
            ("Accept", "application/json"),
            ("Content-Length", &payload.len().to_string()),
            ("Content-Type", "application/json"),
            ("Host", "edgevault-func.azurewebsites.net"),
            ("User-Agent", "Mozilla/5.0"),
            ("x-functions-key", "k"),
        ],
        payload,
    );
    let input = build_input("req", &request, &route_params(&request), Some(("Function", "default")));
    let body = request_body("ActivationKeyApi", input, datetime!(2026-11-28 12:00:00.1234567 UTC));
    assert_eq!(body["Data"]["req"]["Params"], json!({"operationId": null}));
    assert_eq!(body["Metadata"]["vaultName"], "\"testedgedevice-kv\"");
    assert_same_shape("http-post.json", &body);
}

#[test]
fn service_bus_message_of_a_session_trigger() {
    let fixture = fixture("service-bus.json");
    let text: String = serde_json::from_str(fixture["Data"]["message"].as_str().unwrap()).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    let broker = json!({
        "DeliveryCount": 2,
        "EnqueuedTimeUtc": "Sat, 28 Nov 2026 11:59:58 GMT",
        "Label": "ActivationKeyRequested",
        "LockToken": "8c3e6b1a-2f4d-4e5a-9b6c-7d8e9f0a1b2c",
        "LockedUntilUtc": "Sat, 28 Nov 2026 12:00:58 GMT",
        "MessageId": "activation-key-requested:testedgedevice:2c9a7f4e",
        "SequenceNumber": 41,
        "SessionId": "3f9a1c2b7e4d5a60",
        "CorrelationId": "8a7e9a3c-50fd-4f86-93c5-5c1c6e0b2f0d",
        "TimeToLive": 1209600.0
    });
    headers.insert("BrokerProperties", broker.to_string().parse().unwrap());
    headers.insert("Content-Type", "application/json".parse().unwrap());
    headers.insert("schemaVersion", "1".parse().unwrap());
    let message = ReceivedMessage::from_parts(&headers, Bytes::from(text)).unwrap();
    let client = ServiceBusClient::new(
        "https://edgevault-sb.servicebus.windows.net",
        TokenSource::Anonymous,
        reqwest::Client::new(),
    );
    let body = request_body(
        "ActivationKeyRequested",
        message.invocation("message", Some(&client), true),
        datetime!(2026-11-28 12:00 UTC),
    );
    assert_eq!(body["Data"], fixture["Data"], "the body, JSON-encoded once more");
    assert_eq!(body["Metadata"]["ExpiresAtUtc"], fixture["Metadata"]["ExpiresAtUtc"]);
    assert_eq!(body["Metadata"]["EnqueuedTime"], fixture["Metadata"]["EnqueuedTime"]);
    assert_same_shape("service-bus.json", &body);
}

#[test]
fn event_grid_resource_write() {
    let fixture = fixture("event-grid-write.json");
    let text: String = serde_json::from_str(fixture["Data"]["event"].as_str().unwrap()).unwrap();
    let event: Value = serde_json::from_str(&text).unwrap();
    let body = request_body("ArmEvents", event_invocation("event", &event), datetime!(2026-11-28 11:58:32 UTC));
    assert_same_shape("event-grid-write.json", &body);
}

#[test]
fn timer_first_run() {
    let status = ScheduleStatus::initial(datetime!(2026-11-28 13:00 UTC));
    let input = local_azure_host::invoke::Invocation::of("timer", timer_info(Some(status), false));
    let body = request_body("RecoverySweep", input, datetime!(2026-11-28 12:00:02.6420412 UTC));
    assert_eq!(body["Data"]["timer"]["ScheduleStatus"]["Next"], "2026-11-28T13:00:00+00:00");
    assert_eq!(body["Metadata"], json!({"sys": body["Metadata"]["sys"].clone()}), "a timer's Metadata is sys alone");
    assert_same_shape("timer-first-run.json", &body);
}

#[test]
fn the_classifier_tells_the_encodings_apart() {
    let kinds: Map<String, Value> = [
        ("\"x\"", "JSON-encoded string"),
        ("41", "number as text"),
        ("2026-11-28T11:59:58", "date"),
        ("2026-11-28T11:59:58+00:00", "date+offset+00:00:00"),
        ("2026-11-28T11:59:58.5Z", "date in UTC"),
        ("plain", "text"),
    ]
    .into_iter()
    .map(|(text, kind)| (text.to_string(), Value::String(kind.to_string())))
    .collect();
    for (text, expected) in kinds {
        assert_eq!(kind(&Value::String(text.clone())), expected.as_str().unwrap(), "{text}");
    }
}
