//! The failures Azure gives, with the status and error code Azure uses.

mod support;

use azure_core::http::Method;
use serde_json::{Value, json};
use support::*;

const MGMT: &str = "https://management.azure.com";

struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Raw {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// A plain request through the proxy (env) with an explicit token.
async fn raw(method: reqwest::Method, url: &str, token: Option<&str>, body: Option<Value>) -> Raw {
    let client = reqwest::Client::new();
    let mut rb = client.request(method, url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    Raw { status, headers, body }
}

fn vault_url(la: &LocalAzure, name: &str) -> String {
    format!("{MGMT}{}/providers/Microsoft.KeyVault/vaults/{name}?api-version=2024-11-01", rg_path(la))
}

fn app_arm() -> Arm {
    shared();
    Arm::new(managed_identity(None))
}

async fn put_vault(arm: &Arm, la: &LocalAzure, rg: &str, name: &str, body: &Value) -> ArmResponse {
    arm.call(
        Method::Put,
        &format!(
            "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}",
            la.var("AZURE_SUBSCRIPTION_ID")
        ),
        Some(body),
    )
    .await
}

async fn new_group(la: &LocalAzure) -> String {
    let rg = unique("rg");
    la.admin_post(
        "/admin/resource-groups",
        json!({ "subscriptionId": la.var("AZURE_SUBSCRIPTION_ID"), "name": rg, "location": "westus2" }),
    )
    .await;
    rg
}

#[tokio::test]
async fn invalid_vault_names_are_rejected() {
    let la = shared();
    let arm = app_arm();
    let rg = la.var("AZURE_RESOURCE_GROUP");
    let body = vault_body(la, &[], false);
    for bad in ["ab", "1vault", "vault-", "va--ult", "vault_1", "a234567890123456789012345"] {
        let r = put_vault(&arm, la, &rg, bad, &body).await;
        assert_eq!((r.status, r.code()), (400, "VaultNameNotValid"), "{bad}: {}", r.body);
        let c = arm
            .call(
                Method::Post,
                &format!(
                    "/subscriptions/{}/providers/Microsoft.KeyVault/checkNameAvailability",
                    la.var("AZURE_SUBSCRIPTION_ID")
                ),
                Some(&json!({ "name": bad, "type": "Microsoft.KeyVault/vaults" })),
            )
            .await;
        assert_eq!(c.body["nameAvailable"], false);
        assert_eq!(c.body["reason"], "AccountNameInvalid");
    }
}

#[tokio::test]
async fn vault_names_are_global_and_soft_deleted_names_stay_reserved() {
    let la = shared();
    let arm = app_arm();
    let rg = la.var("AZURE_RESOURCE_GROUP");
    let other_rg = new_group(la).await;
    let name = unique("taken");
    let body = vault_body(la, &[], false);
    assert_eq!(put_vault(&arm, la, &rg, &name, &body).await.status, 201);

    let r = put_vault(&arm, la, &other_rg, &name, &body).await;
    assert_eq!((r.status, r.code()), (409, "VaultAlreadyExists"), "{}", r.body);

    assert_eq!(arm.call(Method::Delete, &vault_url(la, &name), None).await.status, 200);
    let r = put_vault(&arm, la, &rg, &name, &body).await;
    assert_eq!((r.status, r.code()), (409, "ConflictError"), "{}", r.body);
    let c = arm
        .call(
            Method::Post,
            &format!(
                "/subscriptions/{}/providers/Microsoft.KeyVault/checkNameAvailability",
                la.var("AZURE_SUBSCRIPTION_ID")
            ),
            Some(&json!({ "name": name, "type": "Microsoft.KeyVault/vaults" })),
        )
        .await;
    assert_eq!((c.body["nameAvailable"].clone(), c.body["reason"].clone()), (json!(false), json!("AlreadyExists")));
}

#[tokio::test]
async fn recover_needs_a_soft_deleted_vault() {
    let la = shared();
    let arm = app_arm();
    let rg = la.var("AZURE_RESOURCE_GROUP");
    let mut recover = vault_body(la, &[], false);
    recover["properties"]["createMode"] = json!("recover");
    let r = put_vault(&arm, la, &rg, &unique("never"), &recover).await;
    assert_eq!((r.status, r.code()), (400, "SoftDeletedVaultDoesNotExist"), "{}", r.body);

    let name = unique("live");
    assert_eq!(put_vault(&arm, la, &rg, &name, &vault_body(la, &[], false)).await.status, 201);
    let r = put_vault(&arm, la, &rg, &name, &recover).await;
    assert_eq!((r.status, r.code()), (400, "SoftDeletedVaultDoesNotExist"), "{}", r.body);
}

#[tokio::test]
async fn retention_and_purge_protection_cannot_be_undone() {
    let la = shared();
    let arm = app_arm();
    let rg = la.var("AZURE_RESOURCE_GROUP");
    let name = unique("irrev");
    assert_eq!(put_vault(&arm, la, &rg, &name, &vault_body(la, &[], true)).await.status, 201);
    let r = arm
        .call(Method::Patch, &vault_url(la, &name), Some(&json!({ "properties": { "softDeleteRetentionInDays": 30 } })))
        .await;
    assert_eq!((r.status, r.code()), (400, "BadRequest"), "{}", r.body);
    let r = arm
        .call(Method::Patch, &vault_url(la, &name), Some(&json!({ "properties": { "enablePurgeProtection": false } })))
        .await;
    assert_eq!((r.status, r.code()), (400, "BadRequest"), "{}", r.body);
    let mut short = vault_body(la, &[], false);
    short["properties"]["softDeleteRetentionInDays"] = json!(5);
    let r = put_vault(&arm, la, &rg, &unique("short"), &short).await;
    assert_eq!(r.status, 400);
    // A PUT without the flag keeps purge protection on.
    let r = put_vault(&arm, la, &rg, &name, &vault_body(la, &[], false)).await;
    assert_eq!(r.body["properties"]["enablePurgeProtection"], true);
}

#[tokio::test]
async fn purge_is_refused_under_purge_protection_and_without_the_permission() {
    let la = shared();
    let arm = app_arm();
    let rg = la.var("AZURE_RESOURCE_GROUP");
    let sub = la.var("AZURE_SUBSCRIPTION_ID");
    let name = unique("pp");
    let loc = la.var("AZURE_LOCATION");
    assert_eq!(put_vault(&arm, la, &rg, &name, &vault_body(la, &[], true)).await.status, 201);
    assert_eq!(arm.call(Method::Delete, &vault_url(la, &name), None).await.status, 200);
    let purge = format!("/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{loc}/deletedVaults/{name}/purge");

    // edgevault's identity may recover but not purge.
    let r = arm.call(Method::Post, &purge, None).await;
    assert_eq!((r.status, r.code()), (403, "AuthorizationFailed"), "{}", r.body);

    // An owner is refused too while purge protection holds.
    let owner = la.admin_post("/admin/principals", json!({ "displayName": "owner" })).await;
    let owner_id = owner["objectId"].as_str().unwrap();
    la.admin_post(
        "/admin/grants",
        json!({ "principalId": owner_id, "scope": format!("/subscriptions/{sub}"), "actions": ["*"] }),
    )
    .await;
    let token = la.token(owner_id, "https://management.azure.com/").await;
    let r = raw(reqwest::Method::POST, &format!("{MGMT}{purge}?api-version=2024-11-01"), Some(&token), None).await;
    assert_eq!((r.status, r.code()), (405, "MethodNotAllowed"), "{}", r.body);
}

#[tokio::test]
async fn locks_block_deletes_at_every_scope() {
    let la = shared();
    let arm = app_arm();
    let sub = la.var("AZURE_SUBSCRIPTION_ID");
    let rg = new_group(la).await;
    let name = unique("lockd");
    let vault = format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}");
    let device =
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}");
    assert_eq!(put_vault(&arm, la, &rg, &name, &vault_body(la, &[], false)).await.status, 201);
    assert_eq!(
        arm.call(Method::Put, &device, Some(&json!({ "location": "westus2", "sku": { "name": "Edge" } }))).await.status,
        200
    );

    let rg_lock = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Authorization/locks/rg-lock?api-version=2020-05-01"
    );
    let r = arm.call(Method::Put, &rg_lock, Some(&json!({ "properties": { "level": "CanNotDelete" } }))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    for target in [&vault, &device] {
        let r = arm.call(Method::Delete, target, None).await;
        assert_eq!((r.status, r.code()), (409, "ScopeLocked"), "{}", r.body);
    }
    assert_eq!(arm.call(Method::Delete, &rg_lock, None).await.status, 200);

    // ReadOnly blocks writes as well.
    let vault_lock = format!("{vault}/providers/Microsoft.Authorization/locks/ro");
    assert_eq!(
        arm.call(Method::Put, &vault_lock, Some(&json!({ "properties": { "level": "ReadOnly" } }))).await.status,
        201
    );
    let r = arm.call(Method::Patch, &vault, Some(&json!({ "tags": { "a": "b" } }))).await;
    assert_eq!((r.status, r.code()), (409, "ScopeLocked"));
    assert_eq!(arm.call(Method::Delete, &vault_lock, None).await.status, 200);
    assert_eq!(arm.call(Method::Delete, &vault, None).await.status, 200);
    assert_eq!(arm.call(Method::Delete, &device, None).await.status, 200);
}

#[tokio::test]
async fn principals_without_grants_get_authorization_failed() {
    let la = shared();
    let stranger = la.admin_post("/admin/principals", json!({ "displayName": "stranger" })).await;
    let token = la.token(stranger["objectId"].as_str().unwrap(), "https://management.azure.com").await;
    let r = raw(reqwest::Method::GET, &vault_url(la, "whatever"), Some(&token), None).await;
    assert_eq!((r.status, r.code()), (403, "AuthorizationFailed"), "{}", r.body);
    let lock = format!("{MGMT}{}/providers/Microsoft.Authorization/locks/x?api-version=2020-05-01", rg_path(la));
    let r = raw(reqwest::Method::PUT, &lock, Some(&token), Some(json!({ "properties": { "level": "CanNotDelete" } })))
        .await;
    assert_eq!((r.status, r.code()), (403, "AuthorizationFailed"));
}

#[tokio::test]
async fn secret_read_without_an_access_policy_is_forbidden() {
    let la = shared();
    let arm = app_arm();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let name = unique("nopol");
    let r = put_vault(
        &arm,
        la,
        &la.var("AZURE_RESOURCE_GROUP"),
        &name,
        &vault_body(la, &[(&app, ALL_SECRET_PERMS)], false),
    )
    .await;
    assert_eq!(r.status, 201);
    let stranger = la.admin_post("/admin/principals", json!({ "displayName": "reader" })).await;
    let token = la.token(stranger["objectId"].as_str().unwrap(), "https://vault.azure.net").await;
    let r = raw(
        reqwest::Method::GET,
        &format!("https://{name}.vault.azure.net/secrets/cik?api-version=2025-07-01"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.code(), "Forbidden");
    assert_eq!(r.body["error"]["innererror"]["code"], "AccessDenied");
}

#[tokio::test]
async fn forged_missing_and_misdirected_tokens_are_rejected() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let url = vault_url(la, "anything");

    let r = raw(reqwest::Method::GET, &url, None, None).await;
    assert_eq!((r.status, r.code()), (401, "AuthenticationFailed"));
    assert!(r.headers.contains_key("www-authenticate"));

    // Same claims, different signing key: forged.
    let good = la.token(&app, "https://management.azure.com/").await;
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[2] = "AAAA".repeat(10);
    let forged = parts.join(".");
    let r = raw(reqwest::Method::GET, &url, Some(&forged), None).await;
    assert_eq!((r.status, r.code()), (401, "InvalidAuthenticationToken"));
    let r = raw(reqwest::Method::GET, &url, Some("not-a-jwt"), None).await;
    assert_eq!((r.status, r.code()), (401, "InvalidAuthenticationToken"));

    let vault_token = la.token(&app, "https://vault.azure.net").await;
    let r = raw(reqwest::Method::GET, &url, Some(&vault_token), None).await;
    assert_eq!((r.status, r.code()), (401, "InvalidAuthenticationTokenAudience"));

    // A management token at Key Vault is refused with the challenge.
    let arm = app_arm();
    let name = unique("aud");
    put_vault(&arm, la, &la.var("AZURE_RESOURCE_GROUP"), &name, &vault_body(la, &[(&app, ALL_SECRET_PERMS)], false))
        .await;
    let r = raw(
        reqwest::Method::GET,
        &format!("https://{name}.vault.azure.net/secrets?api-version=2025-07-01"),
        Some(&good),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.headers["www-authenticate"].to_str().unwrap().contains("resource=\"https://vault.azure.net\""));
}

#[tokio::test]
async fn identity_endpoint_checks_the_header() {
    let la = shared();
    let endpoint = la.var("IDENTITY_ENDPOINT");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{endpoint}?api-version=2019-08-01&resource=https://vault.azure.net");
    let r = client.get(&url).header("X-IDENTITY-HEADER", "wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client.get(&url).header("X-IDENTITY-HEADER", la.var("IDENTITY_HEADER")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["resource"], "https://vault.azure.net");
    assert!(v["expires_on"].as_str().unwrap().parse::<i64>().is_ok());
    assert_eq!(v["client_id"], la.var("EDGEVAULT_CLIENT_ID"));
    let r = client
        .get(format!("{url}&principal_id=00000000-0000-0000-0000-000000000000"))
        .header("X-IDENTITY-HEADER", la.var("IDENTITY_HEADER"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn the_proxy_refuses_other_hosts_and_missing_vaults() {
    let la = shared();
    let proxy = reqwest::Proxy::https(format!("http://{}", la.gateway)).unwrap();
    let client = reqwest::Client::builder().proxy(proxy).build().unwrap();
    // reqwest reports a refused CONNECT as a connection error; check the proxy answer directly.
    assert!(client.get("https://example.com/").send().await.is_err());
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (target, expected) in [
        ("example.com:443", "403"),
        ("management.azure.com:80", "403"),
        ("no-such-vault-xyz.vault.azure.net:443", "502"),
        ("management.azure.com:443", "200"),
    ] {
        let mut s = tokio::net::TcpStream::connect(&la.gateway).await.unwrap();
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(head.starts_with(&format!("HTTP/1.1 {expected}")), "{target}: {head}");
    }
}

#[tokio::test]
async fn a_subscription_lock_blocks_deletes_in_it() {
    let la = shared();
    let arm = app_arm();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    // A subscription of its own, so the lock doesn't disturb the other tests.
    let sub = "5b0c7e2a-0000-4000-8000-00000000beef";
    la.admin_post(
        "/admin/subscriptions",
        json!({ "subscriptionId": sub, "tenantId": la.var("AZURE_TENANT_ID"), "displayName": "locked" }),
    )
    .await;
    la.admin_post("/admin/resource-groups", json!({ "subscriptionId": sub, "name": "rg", "location": "westus2" }))
        .await;
    la.admin_post(
        "/admin/grants",
        json!({ "principalId": app, "scope": format!("/subscriptions/{sub}"), "actions": ["Microsoft.KeyVault/*", "Microsoft.Authorization/locks/*"] }),
    )
    .await;
    let name = unique("sublk");
    let vault = format!("/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/{name}");
    assert_eq!(arm.call(Method::Put, &vault, Some(&vault_body(la, &[], false))).await.status, 201);
    let lock = format!("/subscriptions/{sub}/providers/Microsoft.Authorization/locks/sub-lock?api-version=2020-05-01");
    assert_eq!(
        arm.call(Method::Put, &lock, Some(&json!({ "properties": { "level": "CanNotDelete" } }))).await.status,
        201
    );
    let r = arm.call(Method::Delete, &vault, None).await;
    assert_eq!((r.status, r.code()), (409, "ScopeLocked"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains(&format!("/subscriptions/{sub}")));
    assert_eq!(arm.call(Method::Delete, &lock, None).await.status, 200);
    assert_eq!(arm.call(Method::Delete, &vault, None).await.status, 200);
}
