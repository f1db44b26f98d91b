//! The handler process: started with FUNCTIONS_CUSTOMHANDLER_PORT and the app settings, restarted when it dies.

mod common;

use common::TestApp;
use local_azure_host::{Host, HostEvent, HostOptions};

#[tokio::test]
async fn a_crashed_handler_is_restarted_and_serves_again() {
    let mut t = TestApp::new()
        .http("CrashHttp", "anonymous", "crash", &["get"])
        .http("EchoHttp", "anonymous", "echo", &["get"])
        .start()
        .await;
    let api = t.host.api_base_url();
    assert_eq!(t.host.handler_restarts(), 0);
    let crashed = t.http.get(format!("{api}/crash")).send().await.unwrap();
    assert_eq!(crashed.status(), 500, "the invocation whose handler died failed");
    let ready = t.wait_for("handler ready again", |e| matches!(e, HostEvent::HandlerReady { restarts: 1, .. })).await;
    assert!(matches!(ready, HostEvent::HandlerReady { .. }));
    assert_eq!(t.host.handler_restarts(), 1);
    assert!(t.host.handler_port().is_some(), "the new process is up");
    let echo = t.http.get(format!("{api}/echo")).send().await.unwrap();
    assert_eq!(echo.status(), 200);
    assert_eq!(t.received("CrashHttp").len(), 1);
    assert_eq!(t.received("EchoHttp").len(), 1);
    let port = t.host.handler_port().unwrap();
    t.host.shutdown().await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "the handler is gone after shutdown");
}

#[tokio::test]
async fn keys_persist_in_the_state_directory() {
    let state = tempfile::tempdir().unwrap();
    let app = TestApp::new().http("EchoHttp", "function", "echo", &["get"]);
    let app_dir = app.write();
    let options = || HostOptions {
        handler_path: Some(env!("CARGO_BIN_EXE_test-handler").into()),
        state_dir: Some(state.path().to_path_buf()),
        ..HostOptions::new(&app_dir)
    };
    let first = Host::start(options()).await.unwrap();
    let (master, function, eventgrid) =
        (first.master_key(), first.function_key("EchoHttp").unwrap(), first.eventgrid_key());
    first.shutdown().await;
    let second = Host::start(options()).await.unwrap();
    assert_eq!(second.master_key(), master);
    assert_eq!(second.function_key("EchoHttp").unwrap(), function);
    assert_eq!(second.eventgrid_key(), eventgrid);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = http.get(format!("{}/echo?code={function}", second.api_base_url())).send().await.unwrap().status();
    assert_eq!(status, 200);
    second.shutdown().await;
}

#[tokio::test]
async fn app_settings_reach_the_handler_and_startup_errors_are_clear() {
    // The record file path itself travels as an app setting: the handler writing it proves the environment.
    let t = TestApp::new().http("EchoHttp", "anonymous", "echo", &["get"]).start().await;
    let response = t.http.get(format!("{}/echo", t.host.api_base_url())).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(t.received("EchoHttp").len(), 1);

    // host.json's defaultExecutablePath ("handler") does not exist in the test app folder.
    let app_dir = t.app.dir.path().join("app");
    let err = Host::start(HostOptions::new(&app_dir)).await.err().expect("no handler binary");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("host.json"), r#"{"version": "2.0"}"#).unwrap();
    let err = Host::start(HostOptions::new(empty.path())).await.err().expect("no functions");
    assert!(err.to_string().contains("no function definitions"), "{err}");
}

#[tokio::test]
async fn a_handler_that_exits_at_startup_is_a_startup_error_quoting_its_stderr() {
    let err = TestApp::new()
        .http("EchoHttp", "anonymous", "echo", &["get"])
        .setting("TEST_HANDLER_REFUSE", "missing app settings: AZURE_TENANT_ID")
        .try_start()
        .await
        .err()
        .expect("the handler refuses to start");
    let text = err.to_string();
    assert!(text.contains("exited during startup"), "{text}");
    assert!(text.contains("Error: missing app settings: AZURE_TENANT_ID"), "{text}");
}
