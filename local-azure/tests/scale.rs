//! What benchmarks at fleet scale need from local-azure: the bulk seed (`POST /admin/seed`), served by the same APIs
//! as resources created through them, and the rate limit (ARM's `429` with `Retry-After` beyond N requests/s).

mod support;

use std::time::Instant;

use azure_core::http::Method;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use serde_json::{Value, json};
use support::*;

async fn seed(la: &LocalAzure, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/admin/seed", la.admin))
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_seeded_fleet_is_served_like_one_created_through_the_apis() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let tenant = la.var("AZURE_TENANT_ID");
    let location = la.var("AZURE_LOCATION");
    let rg = rg_path(la);
    let prefix = unique("seed");
    let device_id = |i: usize| format!("{rg}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{prefix}-{i}");
    let vault_name = |i: usize| format!("{prefix}v{i}");
    let vault_id = |i: usize| format!("{rg}/providers/Microsoft.KeyVault/vaults/{}", vault_name(i));
    let principal = uuid::Uuid::new_v4().to_string();
    let version = uuid::Uuid::new_v4().simple().to_string();
    let props = json!({ "tenantId": tenant, "sku": { "family": "A", "name": "standard" }, "enablePurgeProtection": true,
        "accessPolicies": [{ "tenantId": tenant, "objectId": app, "permissions": { "secrets": ["get"] } },
                           { "tenantId": tenant, "objectId": principal, "permissions": { "secrets": ["get"] } }] });
    let devices: Vec<Value> = (0..5)
        .map(|i| {
            let mut d = json!({ "id": device_id(i), "location": location, "sku": { "name": "Edge" } });
            if i == 0 {
                d["identity"] = json!({ "principalId": principal });
                d["extendedInformation"] = json!({ "clientSecretStoreId": vault_id(0), "clientSecretStoreUrl": format!("https://{}.vault.azure.net", vault_name(0)),
                    "channelIntegrityKeyName": "cik", "channelIntegrityKeyVersion": version, "syncStatus": "KeyVaultSynced" });
            }
            d
        })
        .collect();
    let body = json!({
        "devices": devices,
        "vaults": [{ "id": vault_id(0), "location": location, "properties": props },
                   { "id": vault_id(1), "location": location, "properties": props, "softDeleted": true }],
        "locks": [{ "scope": vault_id(0), "name": "keep", "level": "CanNotDelete" }],
        "secrets": [{ "vault": vault_name(0), "name": "cik", "value": "c2VjcmV0", "version": version }],
    });
    let (status, answer) = seed(la, &body).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["devices"], 5);
    assert_eq!(answer["principals"][0]["principalId"], principal.as_str());

    let arm = Arm::new(managed_identity(None));
    // Paged listing (keyset pages of 2) returns every seeded device once, in order.
    let mut url = format!("{rg}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices?api-version=2023-12-01&$top=2");
    let mut listed = Vec::new();
    let mut pages = 0;
    loop {
        let r = arm.call(Method::Get, &url, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        pages += 1;
        listed.extend(r.body["value"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap().to_string()));
        match r.body["nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    let ours: Vec<&String> = listed.iter().filter(|n| n.starts_with(&prefix)).collect();
    assert_eq!(ours, (0..5).map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>().iter().collect::<Vec<_>>());
    assert!(pages >= 3, "5 devices in pages of 2: {pages} pages");

    let device = arm.call(Method::Get, &device_id(0), None).await;
    assert_eq!(device.body["identity"]["principalId"], principal.as_str());
    let info =
        arm.call(Method::Post, &format!("{}/getExtendedInformation?api-version=2023-12-01", device_id(0)), None).await;
    assert_eq!(info.body["properties"]["channelIntegrityKeyVersion"], version.as_str());
    assert_eq!(info.body["properties"]["keyVaultSyncStatus"], "KeyVaultSynced");
    let vault = arm.call(Method::Get, &vault_id(0), None).await;
    assert_eq!((vault.status, vault.body["properties"]["enableSoftDelete"].clone()), (200, json!(true)));
    assert_eq!(arm.call(Method::Get, &vault_id(1), None).await.status, 404, "soft-deleted");
    let sub = la.var("AZURE_SUBSCRIPTION_ID");
    let deleted = arm
        .call(
            Method::Get,
            &format!(
                "/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{location}/deletedVaults/{}",
                vault_name(1)
            ),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200);
    let lock = arm
        .call(
            Method::Get,
            &format!("{}/providers/Microsoft.Authorization/locks/keep?api-version=2020-05-01", vault_id(0)),
            None,
        )
        .await;
    assert_eq!(lock.body["properties"]["level"], "CanNotDelete");
    // The lock holds: the seeded vault cannot be deleted.
    assert_eq!(arm.call(Method::Delete, &vault_id(0), None).await.status, 409);

    // The device's identity gets tokens by its resource id (an index, not a scan of every principal).
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!(
            "{}?api-version=2019-08-01&resource=https://vault.azure.net&mi_res_id={}",
            la.var("IDENTITY_ENDPOINT"),
            device_id(0)
        ))
        .header("X-IDENTITY-HEADER", la.var("IDENTITY_HEADER"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let client = SecretClient::new(
        &format!("https://{}.vault.azure.net/", vault_name(0)),
        managed_identity(None),
        Some(SecretClientOptions { client_options: client_options(), ..Default::default() }),
    )
    .unwrap();
    let secret = client.get_secret("cik", None).await.unwrap().into_model().unwrap();
    assert_eq!(secret.value.as_deref(), Some("c2VjcmV0"));
    assert!(secret.id.unwrap().ends_with(&version));

    // One transaction: a refused item leaves nothing behind.
    let bad = json!({ "devices": [{ "id": device_id(9), "location": location }],
        "vaults": [{ "id": format!("{rg}/providers/Microsoft.KeyVault/vaults/1bad"), "location": location, "properties": props }] });
    assert_eq!(seed(la, &bad).await.0, 400);
    assert_eq!(arm.call(Method::Get, &device_id(9), None).await.status, 404);
}

/// A vault's audit logging as edgevault makes it (`handlers/src/lifecycle/audit.rs`: a locked zone-redundant
/// account tagged with the vault's name, a setting sending the `audit` group there), seeded with the vault in one
/// request: GETs of the setting and the account answer what their PUTs would have left, the account's lock holds,
/// and a request with an item ARM would refuse writes nothing.
#[tokio::test]
async fn a_seeded_vaults_audit_logging_is_served_like_one_made_through_the_apis() {
    let la = shared();
    let tenant = la.var("AZURE_TENANT_ID");
    let location = la.var("AZURE_LOCATION");
    let rg = rg_path(la);
    let vault_name = unique("audv");
    let account_name: String =
        vault_name.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase();
    let vault_id = format!("{rg}/providers/Microsoft.KeyVault/vaults/{vault_name}");
    let account_id = format!("{rg}/providers/Microsoft.Storage/storageAccounts/{account_name}");
    let vault = json!({ "id": vault_id, "location": location,
        "properties": { "tenantId": tenant, "sku": { "family": "A", "name": "standard" }, "enablePurgeProtection": true, "accessPolicies": [] } });
    let account = json!({ "id": account_id, "location": location, "sku": { "name": "Standard_ZRS" }, "kind": "StorageV2",
        "tags": { "edgevault-vault": vault_name }, "properties": { "minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": false } });
    let setting = json!({ "scope": vault_id, "name": "edgevault-audit",
        "properties": { "storageAccountId": account_id, "logs": [{ "categoryGroup": "audit", "enabled": true }] } });
    let lock = json!({ "scope": account_id, "name": "keep", "level": "CanNotDelete" });

    // Refused as ARM refuses the PUT (a setting whose account is not there), and nothing of the request is written.
    let mut dangling = setting.clone();
    dangling["properties"]["storageAccountId"] =
        format!("{rg}/providers/Microsoft.Storage/storageAccounts/nosuch{account_name}").into();
    let (status, answer) = seed(la, &json!({ "vaults": [vault], "diagnosticSettings": [dangling] })).await;
    assert_eq!(status, 400, "{answer}");
    let arm = Arm::new(managed_identity(None));
    assert_eq!(arm.call(Method::Get, &vault_id, None).await.status, 404, "one transaction: the vault is not written");

    let (status, answer) = seed(
        la,
        &json!({ "vaults": [vault], "storageAccounts": [account], "locks": [lock], "diagnosticSettings": [setting] }),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!((answer["storageAccounts"].clone(), answer["diagnosticSettings"].clone()), (json!(1), json!(1)));

    let got = arm
        .call(
            Method::Get,
            &format!("{vault_id}/providers/Microsoft.Insights/diagnosticSettings/edgevault-audit?api-version=2021-05-01-preview"),
            None,
        )
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["properties"]["storageAccountId"], account_id.as_str());
    assert_eq!(got.body["properties"]["logs"], json!([{ "categoryGroup": "audit", "enabled": true }]));
    let got = arm.call(Method::Get, &format!("{account_id}?api-version=2023-05-01"), None).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["sku"], json!({ "name": "Standard_ZRS", "tier": "Standard" }));
    assert_eq!((got.body["kind"].clone(), got.body["location"].clone()), (json!("StorageV2"), json!(location)));
    assert_eq!(got.body["tags"]["edgevault-vault"], vault_name.as_str());
    assert_eq!(got.body["properties"]["provisioningState"], "Succeeded", "completed as a create completes it");
    // The account's global name is taken, as after a create.
    let check = arm
        .call(
            Method::Post,
            &format!(
                "/subscriptions/{}/providers/Microsoft.Storage/checkNameAvailability?api-version=2023-05-01",
                la.var("AZURE_SUBSCRIPTION_ID")
            ),
            Some(&json!({ "name": account_name, "type": "Microsoft.Storage/storageAccounts" })),
        )
        .await;
    assert_eq!(check.body["nameAvailable"], false, "{}", check.body);
    let lock = arm
        .call(
            Method::Get,
            &format!("{account_id}/providers/Microsoft.Authorization/locks/keep?api-version=2020-05-01"),
            None,
        )
        .await;
    assert_eq!(lock.body["properties"]["level"], "CanNotDelete", "{}", lock.body);
}

#[tokio::test]
async fn a_rate_limit_answers_arms_429_with_retry_after_beyond_the_rate() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let name = unique("rl");
    let path = format!("{}/providers/Microsoft.KeyVault/vaults/{name}", rg_path(la));
    let arm = Arm::new(managed_identity(None));
    assert_eq!(arm.call(Method::Put, &path, Some(&vault_body(la, &[(&app, &["get"])], false))).await.status, 201);
    let rule = la
        .admin_post(
            "/admin/faults",
            json!({ "service": "arm", "pathRegex": format!("(?i)/vaults/{name}$"), "action": { "type": "rateLimit", "perSecond": 1, "burst": 2 } }),
        )
        .await;
    let token = la.token(&app, "https://management.azure.com/").await;
    let get = || async {
        reqwest::Client::new()
            .get(format!("https://management.azure.com{path}?api-version=2024-11-01"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
    };
    // The burst, then refusals (a token comes back every second; these requests take far less).
    let first = get().await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ms-ratelimit-remaining-subscription-reads"], "1");
    let second = get().await;
    assert_eq!(second.headers()["x-ms-ratelimit-remaining-subscription-reads"], "0");
    let refused = get().await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["x-ms-ratelimit-remaining-subscription-reads"], "0");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SubscriptionRequestsThrottled");
    assert!(body["error"]["message"].as_str().unwrap().contains(&app), "{body}");

    // The official pipeline waits as told and gets through.
    let started = Instant::now();
    assert_eq!(arm.call(Method::Get, &path, None).await.status, 200);
    assert!(started.elapsed().as_millis() >= 900, "Retry-After honoured: {:?}", started.elapsed());
    let rules = la.admin_get("/admin/faults").await;
    let fired =
        rules["value"].as_array().unwrap().iter().find(|r| r["id"] == rule["id"]).unwrap()["fired"].as_u64().unwrap();
    assert!(fired >= 2, "the refusals are the firings: {fired}");
    // Other resources are not limited by this rule.
    let other = format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices", rg_path(la));
    for _ in 0..5 {
        assert_eq!(arm.call(Method::Get, &other, None).await.status, 200);
    }
    la.admin_delete(&format!("/admin/faults/{}", rule["id"].as_str().unwrap())).await;
    assert_eq!(get().await.status(), 200);
}

/// Every page of a list, from `url` on, following `nextLink`: the items' ids and how many pages there were.
async fn all_pages(arm: &Arm, mut url: String) -> (Vec<String>, usize) {
    let (mut ids, mut pages) = (Vec::new(), 0);
    loop {
        let r = arm.call(Method::Get, &url, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        pages += 1;
        ids.extend(r.body["value"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_ascii_lowercase()));
        match r.body["nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => return (ids, pages),
        }
    }
}

#[tokio::test]
async fn the_subscriptions_vaults_and_locks_are_listed_in_pages_each_once() {
    // What the sweep reads instead of one vault and one lock per device: Vaults_ListBySubscription (`$top`) and
    // ManagementLocks_ListAtSubscriptionLevel, both `x-ms-pageable` with `nextLink`.
    let la = shared();
    let tenant = la.var("AZURE_TENANT_ID");
    let location = la.var("AZURE_LOCATION");
    let sub = la.var("AZURE_SUBSCRIPTION_ID");
    let rg = rg_path(la);
    let prefix = unique("list");
    let vault_id = |i: usize| format!("{rg}/providers/Microsoft.KeyVault/vaults/{prefix}v{i}");
    let props = json!({ "tenantId": tenant, "sku": { "family": "A", "name": "standard" }, "accessPolicies": [] });
    let vaults: Vec<Value> = (0..7)
        .map(|i| json!({ "id": vault_id(i), "location": location, "properties": props, "softDeleted": i == 6 }))
        .collect();
    let locks: Vec<Value> =
        (0..5).map(|i| json!({ "scope": vault_id(i), "name": "keep", "level": "CanNotDelete" })).collect();
    let (status, answer) = seed(la, &json!({ "devices": [], "vaults": vaults, "locks": locks, "secrets": [] })).await;
    assert_eq!(status, 201, "{answer}");

    let arm = Arm::new(managed_identity(None));
    let (listed, pages) = all_pages(
        &arm,
        format!("/subscriptions/{sub}/providers/Microsoft.KeyVault/vaults?api-version=2024-11-01&$top=2"),
    )
    .await;
    let ours: Vec<String> = listed.iter().filter(|id| id.contains(&prefix)).cloned().collect();
    let expected: Vec<String> = (0..6).map(|i| vault_id(i).to_ascii_lowercase()).collect();
    assert_eq!(ours, expected, "every live vault once, in name order; the soft-deleted one is not listed");
    assert!(pages >= 3, "at least 6 vaults in pages of 2: {pages}");
    let unique: std::collections::BTreeSet<_> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "no vault on two pages");

    let (listed, pages) = all_pages(
        &arm,
        format!("/subscriptions/{sub}/providers/Microsoft.Authorization/locks?api-version=2020-05-01&$top=2"),
    )
    .await;
    let ours: Vec<String> = listed.iter().filter(|id| id.contains(&prefix)).cloned().collect();
    let expected: Vec<String> = (0..5)
        .map(|i| format!("{}/providers/microsoft.authorization/locks/keep", vault_id(i).to_ascii_lowercase()))
        .collect();
    assert_eq!(ours, expected, "the locks on everything in the subscription, each once");
    assert!(pages >= 3, "{pages}");
    let unique: std::collections::BTreeSet<_> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "no lock on two pages");
}
