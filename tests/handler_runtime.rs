//! The real `edgevault` binary on a free port, driven the way the Functions host drives it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use edgevault_tests::{Handler, binary, fixture, signed_in};

/// The caller of the API invocations below (App Service Authentication's, as the host passes it on).
const CALLER: &str = "0f3c2b1a-0000-4000-8000-00000000c0de";
use serde_json::{Value, json};

fn start() -> Handler {
    Handler::start().expect("edgevault starts")
}

/// Proves the process is still healthy after whatever a test threw at it.
fn assert_still_serves(handler: &mut Handler) {
    assert!(handler.is_running(), "the process exited");
    let (status, body) = handler.invoke("ArmEvents", &fixture("triggers/event-grid-validation.json").unwrap()).unwrap();
    assert_eq!(status, 200, "{body}");
}

/// With Azure unreachable (the placeholder settings), every valid invocation reaches its handler and gets the
/// documented answer for an Azure outage: HTTP callers a 503 with `Retry-After`, other triggers a failed, retryable
/// invocation (so Service Bus redelivers) — never a false success.
#[test]
fn each_trigger_type_gets_its_documented_answer() {
    let handler = start();

    // httpTrigger: the invocation succeeds and carries the HTTP answer in the `res` output, as an object. Without a
    // signed-in caller that answer is a 401 before anything else; with one, the outage (the permission check is the
    // first Azure call).
    let post = fixture("triggers/http-post.json").unwrap();
    let (status, body) = handler.invoke("ActivationKeyApi", &post).unwrap();
    assert_eq!((status, body["Outputs"]["res"]["statusCode"].as_u64()), (200, Some(401)), "{body}");
    let (status, body) = handler.invoke("ActivationKeyApi", &signed_in(&post, CALLER)).unwrap();
    assert_eq!(status, 200, "{body}");
    let res = &body["Outputs"]["res"];
    assert_eq!(res["statusCode"], 503, "{body}");
    assert_eq!(res["headers"]["Content-Type"], "application/json");
    assert_eq!(res["headers"]["Retry-After"], "5");
    assert_eq!(res["body"]["error"]["code"], "AzureUnavailable");
    assert!(body["Logs"].is_array() && body.get("ReturnValue").is_some());

    for (function, file) in [
        ("RecoverySweep", "triggers/timer.json"),
        ("RecoverySweep", "triggers/timer-first-run.json"),
        ("RecoverySweep", "triggers/real-host/timer-first-run.json"),
        ("ResourceCreated", "triggers/service-bus.json"),
        ("ActivationKeyRequested", "triggers/real-host/service-bus.json"),
        ("ArmEvents", "triggers/event-grid-write.json"),
        ("ArmEvents", "triggers/real-host/event-grid-write.json"),
        ("ArmEvents", "triggers/cloud-events-delete.json"),
    ] {
        let (status, body) = handler.invoke(function, &fixture(file).unwrap()).unwrap();
        assert_eq!(status, 503, "{function} with {file}: {body}");
        assert_eq!(body["error"]["code"], "AzureCallFailed");
        assert_eq!(body["error"]["retryable"], true);
        assert!(!body["Logs"][0].as_str().unwrap().is_empty(), "{body}");
    }

    // eventGridTrigger: a subscription-validation event is acknowledged without touching Azure.
    let (status, body) = handler.invoke("ArmEvents", &fixture("triggers/event-grid-validation.json").unwrap()).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["Logs"][0].as_str().unwrap().contains("512d38b6-c7b8-40c8-89fe-f46f9e9622b6"));
}

/// Every function, invoked as the real host invokes it (chunked, `null` optional route parameter, key identity,
/// JSON-encoded metadata with the message's fields merged in) and as Core Tools does (buffered), reaches its handler:
/// with Azure unreachable each answers the documented outage, never a `4xx` about its input.
#[test]
fn every_function_takes_the_real_hosts_invocations_chunked_and_buffered() {
    let handler = start();
    let device = "/subscriptions/4385cf00-2d3a-425a-832f-f4285b1c9dce/resourceGroups/GroupForEdgeAutomation/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/testedgedevice";
    let vault = "/subscriptions/4385cf00-2d3a-425a-832f-f4285b1c9dce/resourceGroups/GroupForEdgeAutomation/providers/Microsoft.KeyVault/vaults/testedgedevice-kv";
    let messages = [
        ("ResourceCreated", json!({"schemaVersion": 1, "kind": "ResourceCreated", "device": device, "cause": "e1"})),
        ("ActivationKeyRequested", fixture("messages/activation-key-requested.json").unwrap()),
        ("VaultDeleted", json!({"schemaVersion": 1, "kind": "VaultDeleted", "vault": vault, "cause": "e2"})),
        ("ResourceDeleted", json!({"schemaVersion": 1, "kind": "ResourceDeleted", "device": device, "cause": "e3"})),
    ];
    let mut cases: Vec<(&str, Value, u16)> = messages
        .into_iter()
        .map(|(function, body)| (function, edgevault_tests::real_host_message(&body), 503))
        .collect();
    cases.push(("RecoverySweep", fixture("triggers/real-host/timer-first-run.json").unwrap(), 503));
    cases.push(("ArmEvents", fixture("triggers/real-host/event-grid-write.json").unwrap(), 503));
    cases.push(("ActivationKeyApi", signed_in(&fixture("triggers/real-host/http-post.json").unwrap(), CALLER), 200));
    let status = signed_in(&fixture("triggers/real-host/http-get-status.json").unwrap(), CALLER);
    cases.push(("ActivationKeyApi", status, 200));
    for (function, invocation, expected) in &cases {
        for (form, (status, body)) in [
            ("chunked", handler.invoke(function, invocation).unwrap()),
            ("buffered", handler.invoke_buffered(function, invocation).unwrap()),
        ] {
            assert_eq!(status, *expected, "{function} ({form}): {body}");
            if *expected == 200 {
                let answer = &body["Outputs"]["res"];
                assert!(matches!(answer["statusCode"].as_u64(), Some(503) | Some(404)), "{function} ({form}): {body}");
            } else {
                assert_eq!(body["error"]["code"], "AzureCallFailed", "{function} ({form}): {body}");
            }
        }
    }
}

/// A chunked body is held to the same limit as a declared one: refused once the running total passes it, and the
/// process keeps serving.
#[test]
fn an_oversized_chunked_body_is_refused_and_the_process_keeps_serving() {
    let mut handler = start();
    let mut stream = TcpStream::connect(("127.0.0.1", handler.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = "POST /ResourceCreated HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    // 5 MiB in 64 KiB chunks, past the 4 MiB limit; the server may stop reading (and close) before the end.
    for _ in 0..80 {
        if stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PayloadTooLarge"), "{answer}");
    assert!(
        handler.wait_for_log(Duration::from_secs(10), |l| l.contains("PayloadTooLarge")).is_some(),
        "on stderr too"
    );
    assert_still_serves(&mut handler);
}

#[test]
fn a_worker_refuses_a_command_meant_for_another_worker() {
    let handler = start();
    for function in ["ActivationKeyRequested", "VaultDeleted", "ResourceDeleted"] {
        let (status, body) = handler.invoke(function, &fixture("triggers/service-bus.json").unwrap()).unwrap();
        assert_eq!(status, 400, "{function}: {body}");
        assert_eq!(body["error"]["field"], "Data.message.kind", "{body}");
    }
}

#[test]
fn a_trigger_value_sent_json_encoded_a_second_time_is_accepted() {
    let handler = start();
    let mut invocation = fixture("triggers/timer.json").unwrap();
    let timer = invocation["Data"]["timer"].to_string();
    invocation["Data"]["timer"] = Value::String(Value::String(timer).to_string());
    let (status, body) = handler.invoke("RecoverySweep", &invocation).unwrap();
    assert_eq!(status, 503, "decoded and reached the handler (which found Azure unreachable): {body}");
}

#[test]
fn malformed_json_is_a_400_naming_the_body() {
    let mut handler = start();
    let (status, body) = handler.invoke_raw("ResourceCreated", "{\"Data\": {").unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "InvalidInput");
    assert_eq!(body["error"]["field"], "body");
    assert_eq!(body["error"]["retryable"], false);
    assert_still_serves(&mut handler);
}

#[test]
fn a_wrong_field_type_is_a_400_naming_the_field() {
    let mut handler = start();
    let cases = [
        ("ResourceCreated", json!({"Data": 5}), "Data"),
        ("RecoverySweep", json!({"Data": {"timer": {"IsPastDue": "yes"}}}), "Data.timer.IsPastDue"),
        ("ResourceCreated", json!({"Data": {"message": {}}, "Metadata": {"MessageId": 7}}), "Metadata.MessageId"),
        ("ActivationKeyApi", json!({"Data": {"req": {"Url": "u"}}}), "Data.req"),
        (
            "ArmEvents",
            json!({"Data": {"event": [{"id": "1", "subject": "s", "eventType": 3, "eventTime": "t"}]}}),
            "Data.event[0].eventType",
        ),
        ("ResourceCreated", json!({"Data": {}}), "Data.message"),
    ];
    for (function, invocation, field) in cases {
        let (status, body) = handler.invoke(function, &invocation).unwrap();
        assert_eq!(status, 400, "{function}: {body}");
        assert_eq!(body["error"]["field"], field, "{function}: {body}");
        assert!(body["Logs"][0].as_str().unwrap().contains(field), "{body}");
    }
    assert_still_serves(&mut handler);
}

#[test]
fn an_unknown_function_is_a_404_listing_the_known_ones() {
    let mut handler = start();
    let (status, body) = handler.invoke("NoSuchFunction", &json!({"Data": {}})).unwrap();
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "FunctionNotFound");
    assert!(body["error"]["message"].as_str().unwrap().contains("ActivationKeyApi"));
    let response =
        reqwest::blocking::Client::builder().no_proxy().build().unwrap().get(handler.url("/")).send().unwrap();
    assert!(matches!(response.status().as_u16(), 404 | 405), "{}", response.status());
    assert_still_serves(&mut handler);
}

#[test]
fn a_10_mib_body_is_refused_and_the_process_keeps_serving() {
    let mut handler = start();
    // Announce a 10 MiB body and read the answer before sending it: the server must refuse from the headers alone,
    // without buffering the body (an HTTP client library would see the connection closed mid-upload instead).
    let mut stream = TcpStream::connect(("127.0.0.1", handler.port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /ResourceCreated HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        10 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&[b'x'; 64 * 1024]).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PayloadTooLarge"), "{answer}");
    assert_still_serves(&mut handler);
}

#[test]
fn every_invocation_is_logged_in_a_span_with_its_id_and_function() {
    let handler = start();
    handler.invoke("ResourceCreated", &fixture("triggers/service-bus.json").unwrap()).unwrap();
    let line = handler
        .wait_for_log(Duration::from_secs(30), |l| l.contains("invocation done"))
        .unwrap_or_else(|| panic!("no completion line in:\n{}", handler.log().join("\n")));
    assert!(line.contains("function=\"ResourceCreated\"") || line.contains("function=ResourceCreated"), "{line}");
    assert!(line.contains("00000000-0000-0000-0000-00000000test"), "{line}");
    assert!(line.contains("status=503"), "{line}");
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let mut handler = start();
    let pid = handler.pid();
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let exit = handler.wait_for_exit(Duration::from_secs(30)).expect("exits after SIGTERM");
    assert!(exit.success(), "{exit}");
    assert!(
        handler.wait_for_log(Duration::from_secs(30), |l| l.contains("SIGTERM received")).is_some(),
        "{:?}",
        handler.log()
    );
}

#[test]
fn without_a_port_the_binary_exits_with_an_error_naming_both_variables() {
    let mut child = Command::new(binary("edgevault").unwrap())
        .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
        .env_remove("FUNCTIONS_HTTPWORKER_PORT")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let text = rx.recv_timeout(Duration::from_secs(30)).expect("the process exits");
    assert!(!child.wait().unwrap().success());
    assert!(text.contains("FUNCTIONS_CUSTOMHANDLER_PORT") && text.contains("FUNCTIONS_HTTPWORKER_PORT"), "{text}");
}
