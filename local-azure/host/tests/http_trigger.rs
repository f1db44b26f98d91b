//! HTTP triggers: the exact `Data.req` / `Metadata` the handler receives (as the real host builds them:
//! `GetRequestAsJObject`, `PopulateRouteData`, the HTTP extension's binding data), the response mapping, and auth
//! levels.

mod common;

use common::TestApp;
use serde_json::{Value, json};

fn app() -> TestApp {
    TestApp::new()
        .http("EchoItems", "function", "items/{id}/{name?}", &["get", "post"])
        .http("EchoOpen", "anonymous", "open", &["get"])
        .http("EchoAdmin", "admin", "admin-only", &["get"])
        .http("Plain", "function", "plain", &["get"])
        .http("FailHttp", "anonymous", "fail", &["get"])
}

#[tokio::test]
async fn the_handler_receives_the_documented_request_shape() {
    let t = app().start().await;
    let key = t.host.function_key("EchoItems").unwrap();
    let url = format!("{}/items/42/bob?x=1&y=two%20words", t.host.api_base_url());
    let response = t
        .http
        .post(&url)
        .header("x-functions-key", &key)
        .header("X-Custom", "a")
        .header("X-Multi", "one")
        .header("X-Multi", "two")
        .header("Content-Type", "text/plain")
        .body("hello body")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-echo"], "EchoItems");
    assert_eq!(response.headers()["content-type"], "application/json");
    let echoed: Value = response.json().await.unwrap();

    let received = t.received("EchoItems");
    assert_eq!(received.len(), 1);
    let request = &received[0]["request"];
    assert_eq!(&echoed, request, "the response body is what the handler put in Outputs.res.body");
    let invocation_id = received[0]["invocationId"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(invocation_id).is_ok(), "{invocation_id}");

    let req = &request["Data"]["req"];
    let addr = t.host.local_addr();
    assert_eq!(req["Url"], format!("http://{addr}/api/items/42/bob?x=1&y=two%20words"));
    assert_eq!(req["Method"], "POST");
    assert_eq!(req["Query"], json!({"x": "1", "y": "two words"}));
    assert_eq!(req["Params"], json!({"id": "42", "name": "bob"}));
    assert_eq!(req["Identities"][0]["AuthenticationType"], "WebJobsAuthLevel", "a key was used");
    assert_eq!(req["Identities"][0]["IsAuthenticated"], true);
    let claims: Vec<(&str, &str)> = req["Identities"][0]["Claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["Type"].as_str().unwrap(), c["Value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        claims,
        [
            ("http://schemas.microsoft.com/2017/07/functions/claims/authlevel", "Function"),
            ("http://schemas.microsoft.com/2017/07/functions/claims/invoke", "true"),
            ("http://schemas.microsoft.com/2017/07/functions/claims/keyid", "default"),
        ]
    );
    assert_eq!(req["Body"], "hello body");
    let headers = req["Headers"].as_object().unwrap();
    assert_eq!(headers["X-Custom"], json!(["a"]));
    assert_eq!(headers["X-Multi"], json!(["one", "two"]), "repeated headers keep every value");
    assert_eq!(headers["Content-Type"], json!(["text/plain"]));
    assert!(headers.values().all(Value::is_array), "header values are arrays: {headers:?}");
    let keys: Vec<&str> = req.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 7, "exactly Url, Method, Query, Headers, Params, Identities, Body: {keys:?}");

    // Metadata: route values and query parameters JSON-encoded once more, Query and Headers as objects of strings.
    let metadata = &request["Metadata"];
    assert_eq!(metadata["id"], "\"42\"");
    assert_eq!(metadata["name"], "\"bob\"");
    assert_eq!(metadata["x"], "\"1\"");
    assert_eq!(metadata["y"], "\"two words\"");
    assert_eq!(metadata["Query"], json!({"x": "1", "y": "two words"}));
    assert_eq!(metadata["Headers"]["X-Custom"], "a");
    assert_eq!(metadata["Headers"]["X-Multi"], "one,two", "StringValues joined by commas");
    assert_eq!(metadata["sys"]["MethodName"], "EchoItems");
    assert_eq!(metadata["sys"]["UtcNow"], "2026-11-28T12:03:00Z", "UtcNow comes from the injected clock");
    assert!(uuid::Uuid::parse_str(metadata["sys"]["RandGuid"].as_str().unwrap()).is_ok());

    // The handler's Logs are kept with the invocation id.
    let logs = t.host.logs();
    assert!(
        logs.iter()
            .any(|l| l.function == "EchoItems" && l.invocation_id == invocation_id && l.message == "echo EchoItems")
    );
}

#[tokio::test]
async fn optional_params_methods_and_unknown_routes() {
    let t = app().start().await;
    let key = t.host.function_key("EchoItems").unwrap();
    let api = t.host.api_base_url();
    let response = t.http.get(format!("{api}/items/7?code={key}")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["Data"]["req"]["Params"], json!({"id": "7", "name": null}), "an unused optional parameter is null");
    assert_eq!(body["Data"]["req"]["Method"], "GET");
    assert!(body["Data"]["req"].get("Body").is_none(), "no body, no Body");
    assert_eq!(body["Metadata"]["id"], "\"7\"");
    assert!(body["Metadata"].get("name").is_none(), "a null route value is not in Metadata");
    assert!(body["Metadata"].get("code").is_none(), "the key parameter is not binding data");
    assert_eq!(body["Metadata"]["Query"]["code"], key, "but it is in the Query object");
    // A method the definition does not list does not match the route.
    assert_eq!(t.http.delete(format!("{api}/items/7?code={key}")).send().await.unwrap().status(), 404);
    assert_eq!(t.http.get(format!("{api}/nowhere")).send().await.unwrap().status(), 404);
    // Without the prefix nothing matches.
    assert_eq!(t.http.get(t.url("/open")).send().await.unwrap().status(), 404);
    // A plain JSON body in Outputs.res is served as JSON.
    let plain = t.http.get(format!("{api}/plain?code={}", t.host.function_key("Plain").unwrap())).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    assert_eq!(plain.json::<Value>().await.unwrap(), json!({"ok": true}));
}

#[tokio::test]
async fn auth_levels_are_enforced() {
    let t = app().start().await;
    let api = t.host.api_base_url();
    let items_key = t.host.function_key("EchoItems").unwrap();
    let plain_key = t.host.function_key("Plain").unwrap();
    let master = t.host.master_key();
    assert_ne!(items_key, plain_key);
    let status = |url: String, header: Option<String>| {
        let mut request = t.http.get(url);
        if let Some(key) = header {
            request = request.header("x-functions-key", key);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // function level
    assert_eq!(status(format!("{api}/items/1"), None).await, 401);
    assert_eq!(status(format!("{api}/items/1?code=wrong"), None).await, 401);
    assert_eq!(status(format!("{api}/items/1"), Some("wrong".into())).await, 401);
    assert_eq!(status(format!("{api}/items/1?code={plain_key}"), None).await, 401, "another function's key");
    assert_eq!(status(format!("{api}/items/1?code={items_key}"), None).await, 200);
    assert_eq!(status(format!("{api}/items/1"), Some(items_key.clone())).await, 200);
    assert_eq!(status(format!("{api}/items/1?code={master}"), None).await, 200);
    // A system key's level (System) is above Function, so it opens function-level routes too.
    assert_eq!(status(format!("{api}/items/1?code={}", t.host.eventgrid_key()), None).await, 200);
    // anonymous
    assert_eq!(status(format!("{api}/open"), None).await, 200);
    // admin
    assert_eq!(status(format!("{api}/admin-only?code={}", t.host.function_key("EchoAdmin").unwrap()), None).await, 401);
    assert_eq!(status(format!("{api}/admin-only"), None).await, 401);
    assert_eq!(status(format!("{api}/admin-only"), Some(master.clone())).await, 200);
    // Refused requests never reach the handler.
    assert_eq!(t.received("EchoItems").len(), 4);
    // A failed invocation is a bare 500, and the Logs of a non-2xx answer are never written
    // (`EnsureSuccessStatusCode` comes before `ProcessLogsFromHttpResponse`).
    let failed = t.http.get(format!("{api}/fail")).send().await.unwrap();
    assert_eq!(failed.status(), 500);
    assert_eq!(t.received("FailHttp").len(), 1);
    assert!(t.host.logs().iter().all(|l| l.function != "FailHttp"), "{:?}", t.host.logs());
}

#[tokio::test]
async fn identities_say_which_key_was_used() {
    let t = app().start().await;
    let api = t.host.api_base_url();
    let identities = |url: String| {
        let request = t.http.get(url);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["Data"]["req"]["Identities"].clone() }
    };
    // Anonymous, no key: ASP.NET Core's empty, unauthenticated identity.
    assert_eq!(
        identities(format!("{api}/open")).await,
        json!([{"AuthenticationType": null, "IsAuthenticated": false, "Actor": null, "BootstrapContext": null,
                "Claims": [], "Label": null, "Name": null,
                "NameClaimType": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
                "RoleClaimType": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"}])
    );
    // The master key: Admin, key `_master`, even on an anonymous route.
    let master = identities(format!("{api}/open?code={}", t.host.master_key())).await;
    assert_eq!(master[0]["Claims"][0]["Value"], "Admin");
    assert_eq!(master[0]["Claims"][2]["Value"], "_master");
    assert!(master[0]["Claims"][0].get("Subject").is_none(), "ReferenceLoopHandling.Ignore drops Subject");
}

#[tokio::test]
async fn a_json_body_adds_its_fields_and_repeated_query_keys_are_joined() {
    let t = app().start().await;
    let key = t.host.function_key("EchoItems").unwrap();
    let url = format!("{}/items/1?tag=a&tag=b&code={key}", t.host.api_base_url());
    let body = json!({"vaultName": "kv-1", "count": 2, "force": true, "options": {"a": 1}, "list": [1], "id": "x"});
    let echoed: Value = t.http.post(url).json(&body).send().await.unwrap().json().await.unwrap();
    let (req, metadata) = (&echoed["Data"]["req"], &echoed["Metadata"]);
    assert_eq!(req["Query"]["tag"], "a,b");
    assert_eq!(req["Body"], body.to_string());
    assert_eq!(metadata["tag"], "\"a,b\"");
    assert_eq!(metadata["vaultName"], "\"kv-1\"");
    assert_eq!(metadata["count"], "\"2\"", "scalars become strings first, then are JSON-encoded");
    assert_eq!(metadata["force"], "\"True\"", "Json.NET's text of a boolean");
    assert_eq!(metadata["options"], json!({"a": 1}), "objects stay objects");
    assert!(metadata.get("list").is_none(), "arrays are skipped");
    assert_eq!(metadata["id"], "\"1\"", "the route value comes after the body and wins");

    // A chunked request has no Content-Length: the host reads no Body for it and no fields.
    let url = format!("{}/items/1?code={key}", t.host.api_base_url());
    let text = bytes::Bytes::from(body.to_string());
    let chunks = futures::stream::once(async move { Ok::<_, std::io::Error>(text) });
    let echoed: Value =
        t.http.post(url).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap().json().await.unwrap();
    assert!(echoed["Data"]["req"].get("Body").is_none());
    assert!(echoed["Metadata"].get("vaultName").is_none());
}

#[tokio::test]
async fn the_repository_definitions_are_served() {
    // The repository layout (function-definitions/) with the real definitions, driven against the test handler.
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let record = tempfile::NamedTempFile::new().unwrap();
    // The API is anonymous at the host: App Service Authentication, in front of it, admits callers.
    struct OneToken;
    impl local_azure_host::easy_auth::TokenValidator for OneToken {
        fn validate(&self, token: &str) -> Result<serde_json::Map<String, Value>, String> {
            match token {
                "good-token" => {
                    Ok(json!({"aud": "api://edgevault", "oid": "o-1", "name": "Ada"}).as_object().unwrap().clone())
                }
                _ => Err("the token signature is invalid".into()),
            }
        }
    }
    let options = local_azure_host::HostOptions {
        handler_path: Some(env!("CARGO_BIN_EXE_test-handler").into()),
        app_settings: [
            ("RecoverySweepSchedule".to_string(), "0 0 * * * *".to_string()),
            ("TEST_HANDLER_RECORD".to_string(), record.path().display().to_string()),
        ]
        .into(),
        easy_auth: Some(local_azure_host::easy_auth::EasyAuth {
            allowed_audiences: vec!["api://edgevault".into()],
            excluded_paths: vec!["/runtime/webhooks/eventgrid".into()],
            validator: std::sync::Arc::new(OneToken),
        }),
        ..local_azure_host::HostOptions::new(&repo)
    };
    let host = local_azure_host::Host::start(options).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let key = host.function_key("ActivationKeyApi").unwrap();
    let url = format!("{}/activation-keys/op-1", host.api_base_url());
    assert_eq!(http.get(&url).bearer_auth("good-token").send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{url}?code={key}")).send().await.unwrap().status(), 401, "a key is no caller");
    assert_eq!(http.get(&url).bearer_auth("forged").send().await.unwrap().status(), 401);
    let received = common::received(record.path(), "ActivationKeyApi");
    let req = &received[0]["request"]["Data"]["req"];
    assert_eq!(req["Params"], json!({"operationId": "op-1"}));
    assert_eq!(req["Identities"][0]["AuthenticationType"], "aad", "the caller's identity, from the platform's header");
    assert_eq!(req["Identities"].as_array().unwrap().len(), 1, "no key, no key identity");
    assert_eq!(
        http.post(format!("{}/activation-keys", host.api_base_url()))
            .bearer_auth("good-token")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let received = common::received(record.path(), "ActivationKeyApi");
    assert_eq!(received[1]["request"]["Data"]["req"]["Params"], json!({"operationId": null}));
    let event = serde_json::from_str::<Value>(
        &std::fs::read_to_string(repo.join("tests/fixtures/triggers/event-grid-write.json")).unwrap(),
    )
    .unwrap()["Data"]["event"]
        .clone();
    let delivered = http
        .post(host.eventgrid_url("ArmEvents"))
        .header("aeg-event-type", "Notification")
        .json(&json!([event]))
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), 202);
    let data = &common::received(record.path(), "ArmEvents")[0]["request"]["Data"]["event"];
    let text: String = serde_json::from_str(data.as_str().unwrap()).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), event);
    host.shutdown().await;
}

#[tokio::test]
async fn forwarding_mode_passes_the_request_through() {
    let t = TestApp::new().forwarding().http("EchoFwd", "function", "fwd/{id}", &["put"]).start().await;
    let key = t.host.function_key("EchoFwd").unwrap();
    let url = format!("{}/fwd/9?a=1&code={key}", t.host.api_base_url());
    let response = t.http.put(&url).header("X-Custom", "v").body("raw body").send().await.unwrap();
    assert_eq!(response.status(), 201, "the handler's own status");
    assert_eq!(response.headers()["x-forwarded-echo"], "1");
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/api/fwd/9");
    assert_eq!(echo["query"], format!("a=1&code={key}"));
    assert_eq!(echo["body"], "raw body");
    assert_eq!(echo["headers"]["x-custom"], "v");
    assert!(uuid::Uuid::parse_str(echo["headers"]["x-azure-functions-invocationid"].as_str().unwrap()).is_ok());
    // Auth still applies before forwarding.
    let refused = t.http.put(format!("{}/fwd/9", t.host.api_base_url())).send().await.unwrap();
    assert_eq!(refused.status(), 401);
}
