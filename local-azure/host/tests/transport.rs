//! How invocations travel, as the real host sends them (`DefaultHttpWorkerService`, `HttpWorkerConstants`,
//! `HttpScriptInvocationContextExtensions`) and as Core Tools does: chunked or buffered bodies, the host's headers,
//! the readiness probe, the worker's environment, answers without a result, and a `ReturnValue` used as outputs.

mod common;

use common::TestApp;
use local_azure_host::{HOST_VERSION, HostEvent, HostForm};
use serde_json::{Value, json};

fn app() -> TestApp {
    TestApp::new()
        .http("EchoHttp", "anonymous", "echo", &["post"])
        .http("ReturnHttp", "anonymous", "returned", &["get"])
        .http("EnvHttp", "anonymous", "env", &["get"])
}

#[tokio::test]
async fn the_real_host_sends_invocations_chunked_with_its_headers() {
    let t = app().start().await;
    let response = t.http.post(format!("{}/echo", t.host.api_base_url())).body("x").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let transport = &t.received("EchoHttp")[0]["transport"];
    assert_eq!(transport["transferEncoding"], "chunked", "an ObjectContent has no length: {transport}");
    assert_eq!(transport["contentLength"], Value::Null);
    assert_eq!(transport["contentType"], "application/json; charset=utf-8");
    assert_eq!(transport["hostVersion"], HOST_VERSION);
    assert_eq!(transport["userAgent"], format!("Azure-Functions-Host/{HOST_VERSION}"));
    assert!(HOST_VERSION.starts_with("4.1037."), "the version the facts were read from");
}

#[tokio::test]
async fn core_tools_buffers_the_body_and_sends_its_length() {
    let t = app().form(HostForm::CoreTools).start().await;
    let response = t.http.post(format!("{}/echo", t.host.api_base_url())).body("x").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let record = &t.received("EchoHttp")[0];
    let transport = &record["transport"];
    assert_eq!(transport["transferEncoding"], Value::Null, "{transport}");
    let length: usize = transport["contentLength"].as_str().unwrap().parse().unwrap();
    assert_eq!(length, record["request"].to_string().len(), "the whole body, announced up front");
    assert_eq!(transport["hostVersion"], HOST_VERSION);
    assert_eq!("core-tools".parse::<HostForm>(), Ok(HostForm::CoreTools));
    assert_eq!("real".parse::<HostForm>(), Ok(HostForm::Real));
    assert!("func".parse::<HostForm>().is_err());
}

#[tokio::test]
async fn the_host_waits_for_any_answer_to_get_root_and_sets_the_worker_environment() {
    let t = app().start().await;
    // The test handler answers `GET /` with 404: any answer means ready, as in `IsWorkerReady`.
    assert!(!t.received("_probe").is_empty(), "the host probed GET / before invoking");
    let env: Value = t.http.get(format!("{}/env", t.host.api_base_url())).send().await.unwrap().json().await.unwrap();
    let port = t.host.handler_port().unwrap().to_string();
    assert_eq!(env["FUNCTIONS_CUSTOMHANDLER_PORT"], port);
    assert_eq!(env["FUNCTIONS_HTTPWORKER_PORT"], port);
    assert_eq!(env["FUNCTIONS_WORKER_RUNTIME"], "custom");
    assert_eq!(env["FUNCTIONS_CUSTOMHANDLER_WORKER_ID"], env["FUNCTIONS_HTTPWORKER_ID"]);
    assert!(uuid::Uuid::parse_str(env["FUNCTIONS_CUSTOMHANDLER_WORKER_ID"].as_str().unwrap()).is_ok());
    let root = std::path::PathBuf::from(env["FUNCTIONS_APP_ROOT_PATH"].as_str().unwrap());
    assert!(root.join("host.json").is_file(), "{root:?}");
}

#[tokio::test]
async fn a_return_value_object_without_a_return_binding_is_used_as_outputs() {
    let t = app().start().await;
    // `WorkerFunctionInvoker.HandleOutputDictionary`: the handler answered only ReturnValue = {"res": {...}}.
    let response = t.http.get(format!("{}/returned", t.host.api_base_url())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"returned": true}));
}

#[tokio::test]
async fn an_answer_without_a_result_hangs_until_function_timeout_and_restarts_the_handler() {
    let mut t = TestApp::new()
        .http("EmptyHttp", "anonymous", "empty", &["get"])
        .host_json(|h| h["functionTimeout"] = json!("00:00:01"))
        .start()
        .await;
    // `ReadAsAsync` reads no result from an empty 200, so the host never completes the invocation.
    let response = t.http.get(format!("{}/empty", t.host.api_base_url())).send().await.unwrap();
    assert_eq!(response.status(), 500);
    let exited = t.wait_for("the handler killed", |e| matches!(e, HostEvent::HandlerExited { .. })).await;
    assert!(matches!(&exited, HostEvent::HandlerExited { exit } if exit.contains("functionTimeout")), "{exited:?}");
    t.wait_for("a new handler", |e| matches!(e, HostEvent::HandlerReady { restarts: 1, .. })).await;
}
