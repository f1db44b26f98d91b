//! local-azure's clock governs soft-delete retention (and message locks); tests move it instead of
//! sleeping. Tokens live on the wall clock, as a client's token cache does.

mod support;

use azure_core::http::Method;
use serde_json::{Value, json};
use support::*;

async fn get(url: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// One test on purpose: moving the clock affects everything in this local-azure.
#[tokio::test]
async fn clock_drives_retention_and_tokens_expire_on_the_wall_clock() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let sub = la.var("AZURE_SUBSCRIPTION_ID");
    let loc = la.var("AZURE_LOCATION");
    let arm = Arm::new(managed_identity(None));
    let name = unique("clk");
    let path = format!("{}/providers/Microsoft.KeyVault/vaults/{name}", rg_path(la));
    let mut body = vault_body(la, &[(&app, ALL_SECRET_PERMS)], false);
    body["properties"]["softDeleteRetentionInDays"] = json!(7);
    assert_eq!(arm.call(Method::Put, &path, Some(&body)).await.status, 201);

    let start = la.admin_get("/admin/clock").await;
    let arm_token = la.token(&app, "https://management.azure.com/").await;
    let vault_token = la.token(&app, "https://vault.azure.net").await;
    let vault_url = format!("https://management.azure.com{path}?api-version=2024-11-01");
    assert_eq!(get(&vault_url, &arm_token).await.0, 200);

    // Moving the clock a day ahead leaves tokens valid: they live on the wall clock, like the caches of the
    // clients holding them, so official clients built before the jump keep working on their cached tokens.
    let moved = la.admin_post("/admin/clock/advance", json!({ "seconds": 25 * 3600 })).await;
    assert_eq!(moved["offsetSeconds"].as_i64().unwrap(), start["offsetSeconds"].as_i64().unwrap() + 25 * 3600);
    assert_eq!(get(&vault_url, &arm_token).await.0, 200);
    assert_eq!(arm.call(Method::Get, &path, None).await.status, 200);
    let secrets_url = format!("https://{name}.vault.azure.net/secrets?api-version=2025-07-01");
    let r = reqwest::Client::new().get(&secrets_url).bearer_auth(&vault_token).send().await.unwrap();
    assert_eq!(r.status(), 200, "the vault token still holds");

    // An expired token (minted with no lifetime left) is refused as Azure refuses it.
    let expired = |resource: &str| {
        la.admin_post("/admin/tokens", json!({ "principalId": app, "resource": resource, "expiresInSeconds": 0 }))
    };
    let stale_arm = expired("https://management.azure.com/").await["access_token"].as_str().unwrap().to_string();
    let (status, body) = get(&vault_url, &stale_arm).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("ExpiredAuthenticationToken")));
    let stale_vault = expired("https://vault.azure.net").await["access_token"].as_str().unwrap().to_string();
    let r = reqwest::Client::new().get(&secrets_url).bearer_auth(&stale_vault).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let fresh = la.token(&app, "https://management.azure.com/").await;
    assert_eq!(get(&vault_url, &fresh).await.0, 200);

    // Soft delete schedules the purge at deletion + retention; the clock reaching it purges.
    let r = reqwest::Client::new().delete(&vault_url).bearer_auth(&fresh).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let deleted_url = format!(
        "https://management.azure.com/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{loc}/deletedVaults/{name}?api-version=2024-11-01"
    );
    let (status, deleted) = get(&deleted_url, &fresh).await;
    assert_eq!(status, 200);
    let deletion = time::OffsetDateTime::parse(
        deleted["properties"]["deletionDate"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let purge = time::OffsetDateTime::parse(
        deleted["properties"]["scheduledPurgeDate"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!((purge - deletion).whole_days(), 7);

    la.admin_post("/admin/clock/advance", json!({ "seconds": 6 * 86_400 })).await;
    let fresh = la.token(&app, "https://management.azure.com/").await;
    assert_eq!(get(&deleted_url, &fresh).await.0, 200, "still inside retention");
    la.admin_post("/admin/clock/advance", json!({ "seconds": 86_400 + 60 })).await;
    let fresh = la.token(&app, "https://management.azure.com/").await;
    assert_eq!(get(&deleted_url, &fresh).await.0, 404, "purged after retention");
}
