//! A tiny custom handler for the host's tests. It records every invocation and answers by function-name prefix:
//!
//! - `Echo*`: `200`, `Outputs.res` = `{statusCode: 200, body: <the request as received>, headers: {X-Echo: <name>}}`
//! - `Fail*`: `500` with a log line
//! - `Crash*`: the process exits without answering
//! - `Slow*`: waits for `POST /_release`, then answers like the default
//! - `Out*`: `200` with `Outputs.out` = the request's `Data` (for output-binding tests)
//! - `Return*`: `200` with no `Outputs` and `ReturnValue` = `{"res": {statusCode: 200, body: {"returned": true}}}`
//! - `Empty*`: `200` with an empty body
//! - `Env*`: `200`, `Outputs.res.body` = the `FUNCTIONS_*` environment variables the handler was started with
//! - anything else: `200`, `Outputs.res` = `{statusCode: 200, body: {"ok": true}}`
//!
//! `GET /` (the host's readiness probe) is answered `404` (any answer means ready) and recorded as function `_probe`.
//!
//! Any other request (a forwarded HTTP request, `enableForwardingHttpRequest`) is answered `201` with
//! `{method, path, query, headers, body}` as received and an `X-Forwarded-Echo` header.
//!
//! With `TEST_HANDLER_REFUSE` set it prints that to stderr and exits at once, like a handler missing its settings.
//!
//! Records are JSON lines `{"function", "invocationId", "request", "transport"}` (`transport`: how the request
//! came: `contentLength`, `transferEncoding`, `contentType`, `userAgent`, `hostVersion`) appended to the file named by
//! `TEST_HANDLER_RECORD` (a file survives a crash; a restart starts a new process) and served by `GET /_received`.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Notify;
use warp::Filter;

#[derive(Default)]
struct State {
    received: Mutex<Vec<Value>>,
    release: Notify,
}

#[tokio::main]
async fn main() {
    if let Ok(reason) = std::env::var("TEST_HANDLER_REFUSE") {
        eprintln!("Error: {reason}");
        std::process::exit(2);
    }
    let port: u16 = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("FUNCTIONS_CUSTOMHANDLER_PORT must be set");
    let state = Arc::new(State::default());
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let received = warp::get()
        .and(warp::path!("_received"))
        .and(with_state.clone())
        .map(|state: Arc<State>| warp::reply::json(&*state.received.lock().unwrap()));
    let release = warp::post().and(warp::path!("_release")).and(with_state.clone()).map(|state: Arc<State>| {
        // notify_one keeps a permit when nobody waits yet, so a release sent early is not lost.
        state.release.notify_one();
        warp::reply()
    });
    let probe = warp::get().and(warp::path::end()).map(|| {
        record(&json!({"function": "_probe"}));
        warp::reply::with_status("not a function", warp::http::StatusCode::NOT_FOUND)
    });
    let invoke = warp::post()
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .and(with_state)
        .then(invoke);
    // enableForwardingHttpRequest: anything else is a forwarded HTTP request; echo what arrived.
    let forwarded = warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .map(
            |method: warp::http::Method,
             path: warp::path::FullPath,
             query: String,
             headers: warp::http::HeaderMap,
             body: Bytes| {
                let headers: serde_json::Map<String, Value> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), Value::String(v.to_str().unwrap_or_default().to_string())))
                    .collect();
                let echo = json!({"method": method.as_str(), "path": path.as_str(), "query": query, "headers": headers,
                              "body": String::from_utf8_lossy(&body)});
                warp::reply::with_status(
                    warp::reply::with_header(warp::reply::json(&echo), "X-Forwarded-Echo", "1"),
                    warp::http::StatusCode::CREATED,
                )
            },
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the handler port");
    eprintln!("test-handler listening on {port}");
    warp::serve(received.or(release).or(probe).or(invoke).or(forwarded)).incoming(listener).run().await;
}

/// Appends one record to `TEST_HANDLER_RECORD`, in one write: readers must never see half a line.
fn record(record: &Value) {
    if let Ok(path) = std::env::var("TEST_HANDLER_RECORD") {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the record file");
        file.write_all(format!("{record}\n").as_bytes()).expect("write the record");
    }
}

async fn invoke(
    function: String,
    headers: warp::http::HeaderMap,
    body: Bytes,
    state: Arc<State>,
) -> warp::reply::Response {
    use warp::Reply as _;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let request: Value =
        serde_json::from_slice(&body).unwrap_or_else(|_| json!({"unparseable": String::from_utf8_lossy(&body)}));
    let transport = json!({
        "contentLength": header("content-length"),
        "transferEncoding": header("transfer-encoding"),
        "contentType": header("content-type"),
        "userAgent": header("user-agent"),
        "hostVersion": header("x-azure-functions-hostversion"),
    });
    let record = json!({"function": function, "invocationId": header("x-azure-functions-invocationid"),
                        "request": request, "transport": transport});
    self::record(&record);
    state.received.lock().unwrap().push(record);
    let answer = |status: u16, body: Value| {
        let mut reply = warp::reply::json(&body).into_response();
        *reply.status_mut() = warp::http::StatusCode::from_u16(status).unwrap();
        reply
    };
    if function.starts_with("Crash") {
        eprintln!("crashing as {function} asks");
        std::process::exit(3);
    }
    if function.starts_with("Fail") {
        return answer(
            500,
            json!({"Outputs": {}, "Logs": [format!("{function} fails as asked")], "ReturnValue": null}),
        );
    }
    if function.starts_with("Slow") {
        state.release.notified().await;
    }
    if function.starts_with("Echo") {
        return answer(
            200,
            json!({
                "Outputs": {"res": {"statusCode": 200, "body": request, "headers": {"X-Echo": function}}},
                "Logs": [format!("echo {function}"), "second line"],
                "ReturnValue": null
            }),
        );
    }
    if function.starts_with("Return") {
        let returned = json!({"res": {"statusCode": 200, "body": {"returned": true}}});
        return answer(200, json!({"Logs": [], "ReturnValue": returned}));
    }
    if function.starts_with("Env") {
        let env: serde_json::Map<String, Value> =
            std::env::vars().filter(|(k, _)| k.starts_with("FUNCTIONS_")).map(|(k, v)| (k, Value::String(v))).collect();
        return answer(200, json!({"Outputs": {"res": {"statusCode": 200, "body": env}}, "Logs": []}));
    }
    if function.starts_with("Empty") {
        return warp::reply::with_status(String::new(), warp::http::StatusCode::OK).into_response();
    }
    if function.starts_with("Out") {
        return answer(200, json!({"Outputs": {"out": request["Data"]}, "Logs": [], "ReturnValue": null}));
    }
    answer(
        200,
        json!({"Outputs": {"res": {"statusCode": 200, "body": {"ok": true}}}, "Logs": [format!("ran {function}")], "ReturnValue": null}),
    )
}
