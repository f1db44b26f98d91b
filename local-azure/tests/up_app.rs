//! `local-azure up --app`: the repository's function app in the embedded Functions host, wired to local-azure.
//! Needs the handler built (`cargo build -p edgevault`).

mod support;

use std::path::PathBuf;

use serde_json::Value;
use support::*;

/// `target/debug/edgevault`, found next to this test binary's directory.
fn handler() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().skip(1).take(3).map(|d| d.join("edgevault")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("the edgevault handler is not built near {}: run `cargo build -p edgevault`", exe.display())
    })
}

#[tokio::test]
async fn the_function_app_answers_a_signed_in_caller_and_is_subscribed_to_arm_events() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = vec![
        "--app".into(),
        repo.display().to_string(),
        "--handler".into(),
        handler().display().to_string(),
        "--host-port".into(),
        "0".into(),
        "--settings".into(),
        "RecoverySweepSchedule=0 0 0 1 1 *".into(),
    ];
    let la = LocalAzure::start_with(dir.path(), 0, 0, &args);
    let base = la.var("EDGEVAULT_API_BASE_URL");
    let key = la.var("EDGEVAULT_FUNCTION_KEY");
    assert!(base.starts_with("http://127.0.0.1:") && base.ends_with("/api"), "{base}");
    assert!(!key.is_empty() && !la.var("EDGEVAULT_MASTER_KEY").is_empty());

    // App Service Authentication is in front of the API: a user's token for it is admitted (the handler answers),
    // the function key alone is not.
    let user = la
        .admin_post(
            "/admin/principals",
            serde_json::json!({"displayName": "ada", "userPrincipalName": "ada@local-azure.test"}),
        )
        .await;
    let api_token = la.token(user["objectId"].as_str().unwrap(), "api://edgevault").await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let with_token = http.get(format!("{base}/activation-keys/x")).bearer_auth(api_token).send().await.unwrap();
    assert_ne!(with_token.status(), 401, "the handler answered: {}", with_token.text().await.unwrap_or_default());
    let key_only = http.get(format!("{base}/activation-keys/x?code={key}")).send().await.unwrap();
    assert_eq!(key_only.status(), 401, "a function key is no caller");
    let without = http.get(format!("{base}/activation-keys/x")).send().await.unwrap();
    assert_eq!(without.status(), 401);

    // ArmEvents (eventGridTrigger) is subscribed and validated.
    let subs = la.admin_get("/admin/eventgrid/subscriptions").await;
    let arm_events = subs["value"].as_array().unwrap().iter().find(|s| s["name"] == "functions-armevents").cloned();
    let arm_events = arm_events.unwrap_or(Value::Null);
    assert_eq!(arm_events["provisioningState"], "Succeeded", "{subs}");
    assert!(
        arm_events["endpoint"].as_str().unwrap().contains("/runtime/webhooks/eventgrid?functionName=ArmEvents&code=")
    );

    // An ARM write reaches ArmEvents through Event Grid (the host answers 2xx once the function ran).
    la.export_env();
    let owner = la.admin_post("/admin/principals", serde_json::json!({"displayName": "owner"})).await;
    let oid = owner["objectId"].as_str().unwrap();
    la.admin_post(
        "/admin/grants",
        serde_json::json!({"principalId": oid, "scope": format!("/subscriptions/{}", la.var("AZURE_SUBSCRIPTION_ID")), "actions": ["*"]}),
    )
    .await;
    let token = la.token(oid, "https://management.azure.com/").await;
    let rg = format!(
        "https://management.azure.com/subscriptions/{}/resourceGroups/{}?api-version=2022-09-01",
        la.var("AZURE_SUBSCRIPTION_ID"),
        unique("uprg")
    );
    let r = reqwest::Client::new()
        .put(&rg)
        .bearer_auth(token)
        .json(&serde_json::json!({"location": "westus2"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    eventually(|| async {
        let s = la.admin_get("/admin/eventgrid/subscriptions/functions-armevents").await;
        (s["deliveredCount"].as_u64() >= Some(1)).then_some(())
    })
    .await;

    // env.json (and `local-azure env`) carry the additions.
    let env: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("env.json")).unwrap()).unwrap();
    assert_eq!(env["EDGEVAULT_API_BASE_URL"], base.as_str());
    assert_eq!(env["EDGEVAULT_FUNCTION_KEY"], key.as_str());
    assert_eq!(la.admin_get("/admin/env").await, env);
}
