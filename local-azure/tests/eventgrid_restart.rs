//! Event Grid across SIGKILL: the cursor and the pending retries live in the store, so a restart neither loses nor
//! repeats a delivered event; an event past its TTL is dead-lettered when the clock moves.

mod support;

use azure_core::http::Method;
use serde_json::json;
use support::*;

fn port(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn deliveries_resume_after_sigkill_and_expire_by_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalAzure::start(dir.path());
    first.export_env();
    let (gw, admin) = (port(&first.gateway), port(first.admin.trim_start_matches("http://")));
    let app = first.var("EDGEVAULT_PRINCIPAL_ID");
    let good = Webhook::start(true, 0).await;
    let failing = Webhook::start(true, u32::MAX).await;
    first.admin_post("/admin/eventgrid/subscriptions", json!({"name": "good", "endpoint": good.url})).await;
    first
        .admin_post(
            "/admin/eventgrid/subscriptions",
            json!({"name": "failing", "endpoint": failing.url, "retryDelayMs": 600000, "eventTtlMinutes": 1}),
        )
        .await;

    let arm = Arm::new(managed_identity(None));
    let one = format!("{}/providers/Microsoft.KeyVault/vaults/{}", rg_path(&first), unique("rsa"));
    assert_eq!(
        arm.call(Method::Put, &one, Some(&vault_body(&first, &[(&app, ALL_SECRET_PERMS)], false))).await.status,
        201
    );
    assert_eq!(good.next().await.body[0]["subject"], one);
    assert_eq!(failing.next().await.body[0]["subject"], one);
    eventually(|| async {
        let s = first.admin_get("/admin/eventgrid/subscriptions/good").await;
        (s["deliveredCount"] == 1).then_some(())
    })
    .await;
    first.kill();

    let second = LocalAzure::start_on(dir.path(), gw, admin);
    let arm = Arm::new(managed_identity(None));
    let two = format!("{}/providers/Microsoft.KeyVault/vaults/{}", rg_path(&second), unique("rsb"));
    assert_eq!(
        arm.call(Method::Put, &two, Some(&vault_body(&second, &[(&app, ALL_SECRET_PERMS)], false))).await.status,
        201
    );
    // The next event for the good endpoint is the new one: the first is not delivered again.
    assert_eq!(good.next().await.body[0]["subject"], two);
    // The failing subscription still holds event one for a retry ten minutes out; its TTL (a minute) runs out first.
    second.admin_post("/admin/clock/advance", json!({ "seconds": 3600 })).await;
    let letters = eventually(|| async {
        let v = second.admin_get("/admin/eventgrid/deadletters?subscription=failing").await;
        (v["value"].as_array().unwrap().len() == 2).then_some(v)
    })
    .await;
    let letters = letters["value"].as_array().unwrap();
    assert!(letters.iter().all(|l| l["deadLetterReason"] == "TimeToLiveExceeded"), "{letters:?}");
    assert_eq!(letters[0]["event"]["subject"], one.as_str());
    assert_eq!(letters[1]["event"]["subject"], two.as_str());
}
