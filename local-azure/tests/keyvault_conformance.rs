//! The official Key Vault and identity crates, unmodified and with default safety settings
//! (challenge-resource verification on, TLS verified against local-azure's CA), through the
//! `HTTPS_PROXY` gateway.

mod support;

use azure_core::credentials::TokenCredential;
use azure_core::http::Method;
use azure_identity::UserAssignedId;
use azure_security_keyvault_secrets::models::{
    SecretClientGetSecretOptions, SetSecretParameters, UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use futures::TryStreamExt;
use serde_json::{Value, json};
use support::*;

fn secret_client(vault: &str, credential: std::sync::Arc<dyn TokenCredential>) -> SecretClient {
    SecretClient::new(
        &format!("https://{vault}.vault.azure.net/"),
        credential,
        Some(SecretClientOptions { client_options: client_options(), ..Default::default() }),
    )
    .unwrap()
}

async fn create_vault(la: &LocalAzure, name: &str, policies: &[(&str, &[&str])]) {
    let arm = Arm::new(managed_identity(None));
    let r = arm
        .call(
            Method::Put,
            &format!("{}/providers/Microsoft.KeyVault/vaults/{name}", rg_path(la)),
            Some(&vault_body(la, policies, false)),
        )
        .await;
    assert!(r.status == 200 || r.status == 201, "{} {}", r.status, r.body);
}

#[tokio::test]
async fn managed_identity_credential_gets_tokens() {
    let la = shared();
    let cred = managed_identity(None);
    let token = cred.get_token(&["https://management.azure.com/.default"], None).await.unwrap();
    let claims = decode_claims(token.token.secret());
    assert_eq!(claims["oid"], la.var("EDGEVAULT_PRINCIPAL_ID"));
    assert_eq!(claims["tid"], la.var("AZURE_TENANT_ID"));
    assert_eq!(claims["aud"], "https://management.azure.com");
    assert!(token.expires_on > time::OffsetDateTime::now_utc());

    // Selecting the app identity explicitly by client id works too.
    let by_client = managed_identity(Some(UserAssignedId::ClientId(la.var("EDGEVAULT_CLIENT_ID"))));
    let t = by_client.get_token(&["https://vault.azure.net/.default"], None).await.unwrap();
    assert_eq!(decode_claims(t.token.secret())["aud"], "https://vault.azure.net");
}

fn api(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}api-version=7.5")
}

fn decode_claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn secret_client_sets_gets_versions_and_deletes() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let vault = unique("kvconf");
    create_vault(la, &vault, &[(&app, ALL_SECRET_PERMS)]).await;
    let client = secret_client(&vault, managed_identity(None));

    let first = client
        .set_secret(
            "cik",
            SetSecretParameters {
                value: Some("one".into()),
                content_type: Some("text/plain".into()),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let first_id = first.resource_id().unwrap();
    assert_eq!(first_id.name, "cik");
    assert_eq!(first_id.vault_url, format!("https://{vault}.vault.azure.net"));
    let second = set_value(&client, "cik", "two").await.unwrap().into_model().unwrap();

    let latest = client.get_secret("cik", None).await.unwrap().into_model().unwrap();
    assert_eq!(latest.value.as_deref(), Some("two"));
    let old = client
        .get_secret(
            "cik",
            Some(SecretClientGetSecretOptions { secret_version: first_id.version.clone(), ..Default::default() }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(old.value.as_deref(), Some("one"));
    assert_eq!(old.content_type.as_deref(), Some("text/plain"));

    let versions: Vec<_> = client.list_secret_properties_versions("cik", None).unwrap().try_collect().await.unwrap();
    assert_eq!(versions.len(), 2);
    let listed: Vec<_> = client.list_secret_properties(None).unwrap().try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);

    client
        .update_secret_properties(
            "cik",
            UpdateSecretPropertiesParameters {
                tags: Some([("owner".to_string(), "edgevault".to_string())].into()),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap();
    let tagged = client.get_secret("cik", None).await.unwrap().into_model().unwrap();
    assert_eq!(tagged.tags.unwrap()["owner"], "edgevault");
    let attrs = second.attributes.unwrap();
    assert_eq!(attrs.enabled, Some(true));
    assert!(attrs.created.is_some());

    client.delete_secret("cik", None).await.unwrap();
    let err = client.get_secret("cik", None).await.unwrap_err();
    assert_eq!(err.http_status().map(u16::from), Some(404));
    let deleted = client.get_deleted_secret("cik", None).await.unwrap().into_model().unwrap();
    assert!(deleted.recovery_id.unwrap().ends_with("/deletedsecrets/cik"));
    client.recover_deleted_secret("cik", None).await.unwrap();
    let back = client.get_secret("cik", None).await.unwrap().into_model().unwrap();
    assert_eq!(back.value.as_deref(), Some("two"));
    client.delete_secret("cik", None).await.unwrap();
    client.purge_deleted_secret("cik", None).await.unwrap();
    let gone = client.get_deleted_secret("cik", None).await.unwrap_err();
    assert_eq!(gone.http_status().map(u16::from), Some(404));
}

#[tokio::test]
async fn device_msi_reads_only_what_its_policy_allows() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let arm = Arm::new(managed_identity(None));
    let device = unique("dev");
    let path = format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{device}", rg_path(la));
    let r = arm
        .call(
            Method::Put,
            &path,
            Some(&json!({ "location": "westus2", "sku": { "name": "Edge", "tier": "Standard" } })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = arm.call(Method::Patch, &path, Some(&json!({ "identity": { "type": "SystemAssigned" } }))).await;
    let msi = r.body["identity"]["principalId"].as_str().unwrap().to_string();

    let vault = unique("kvdev");
    create_vault(la, &vault, &[(&app, ALL_SECRET_PERMS), (&msi, &["get"])]).await;
    let app_client = secret_client(&vault, managed_identity(None));
    set_value(&app_client, "ase-cik", "k").await.unwrap();

    // Acting as the device's MSI (azure_identity sends object_id=…).
    let device_client = secret_client(&vault, managed_identity(Some(UserAssignedId::ObjectId(msi.clone()))));
    let got = device_client.get_secret("ase-cik", None).await.unwrap().into_model().unwrap();
    assert_eq!(got.value.as_deref(), Some("k"));
    let err = set_value(&device_client, "other", "x").await.unwrap_err();
    assert_eq!(err.http_status().map(u16::from), Some(403));
}

#[tokio::test]
async fn data_plane_responses_have_the_fixture_shapes() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let vault = unique("kvshape");
    create_vault(la, &vault, &[(&app, ALL_SECRET_PERMS)]).await;
    let token = la.token(&app, "https://vault.azure.net").await;
    let http = reqwest::Client::builder().build().unwrap();
    let base = format!("https://{vault}.vault.azure.net");
    let dp = "keyvault/data-plane/Microsoft.KeyVault/stable/7.5/examples/";
    let call = |m: reqwest::Method, path: String, body: Option<Value>| {
        let mut rb = http.request(m, api(&format!("{base}{path}"))).bearer_auth(&token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        async move {
            let r = rb.send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            r.json::<Value>().await.unwrap()
        }
    };
    let set_fx = fixture(&format!("{dp}SetSecret-example.json"));
    let set =
        call(reqwest::Method::PUT, "/secrets/crpsecret".into(), Some(set_fx["parameters"]["parameters"].clone())).await;
    assert_shape(&set_fx["responses"]["200"]["body"], &set, &[]);
    let get = call(reqwest::Method::GET, "/secrets/crpsecret/".into(), None).await;
    assert_shape(&fixture(&format!("{dp}GetSecret-example.json"))["responses"]["200"]["body"], &get, &[]);
    call(reqwest::Method::PUT, "/secrets/crpsecret".into(), Some(json!({"value":"2"}))).await;
    let versions = call(reqwest::Method::GET, "/secrets/crpsecret/versions?maxresults=1".into(), None).await;
    assert_shape(&fixture(&format!("{dp}GetSecretVersions-example.json"))["responses"]["200"]["body"], &versions, &[]);
    let deleted = call(reqwest::Method::DELETE, "/secrets/crpsecret".into(), None).await;
    assert_shape(&fixture(&format!("{dp}DeleteSecret-example.json"))["responses"]["200"]["body"], &deleted, &[]);
    let got_deleted = call(reqwest::Method::GET, "/deletedsecrets/crpsecret".into(), None).await;
    assert_shape(
        &fixture(&format!("{dp}GetDeletedSecret-example.json"))["responses"]["200"]["body"],
        &got_deleted,
        &[],
    );
    let recovered = call(reqwest::Method::POST, "/deletedsecrets/crpsecret/recover".into(), None).await;
    assert_shape(
        &fixture(&format!("{dp}RecoverDeletedSecret-example.json"))["responses"]["200"]["body"],
        &recovered,
        &[],
    );
}

#[tokio::test]
async fn unauthenticated_request_gets_the_key_vault_challenge() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let vault = unique("kvchal");
    create_vault(la, &vault, &[(&app, ALL_SECRET_PERMS)]).await;
    let r = reqwest::get(format!("https://{vault}.vault.azure.net/secrets/x?api-version=2025-07-01")).await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"",
            la.var("AZURE_TENANT_ID")
        )
    );
}

#[tokio::test]
async fn access_policy_changes_take_effect_on_the_data_plane() {
    let la = shared();
    let app = la.var("EDGEVAULT_PRINCIPAL_ID");
    let tenant = la.var("AZURE_TENANT_ID");
    let vault = unique("kvap");
    create_vault(la, &vault, &[(&app, ALL_SECRET_PERMS)]).await;
    let reader = la.admin_post("/admin/principals", json!({ "displayName": "reader" })).await;
    let reader_id = reader["objectId"].as_str().unwrap().to_string();
    let token = la.token(&reader_id, "https://vault.azure.net").await;
    let app_client = secret_client(&vault, managed_identity(None));
    set_value(&app_client, "s", "v").await.unwrap();
    let read = || async {
        reqwest::Client::new()
            .get(format!("https://{vault}.vault.azure.net/secrets/s?api-version=7.5"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(read().await, 403);

    let arm = Arm::new(managed_identity(None));
    let path = format!("{}/providers/Microsoft.KeyVault/vaults/{vault}/accessPolicies", rg_path(la));
    let policy = |perms: &[&str]| json!({ "properties": { "accessPolicies": [ { "tenantId": tenant, "objectId": reader_id, "permissions": { "secrets": perms } } ] } });
    assert_eq!(arm.call(Method::Put, &format!("{path}/add"), Some(&policy(&["get"]))).await.status, 200);
    assert_eq!(read().await, 200);
    assert_eq!(arm.call(Method::Put, &format!("{path}/replace"), Some(&policy(&["list"]))).await.status, 200);
    assert_eq!(read().await, 403);
    assert_eq!(arm.call(Method::Put, &format!("{path}/add"), Some(&policy(&["get"]))).await.status, 200);
    assert_eq!(read().await, 200);
    assert_eq!(arm.call(Method::Put, &format!("{path}/remove"), Some(&policy(&["get", "list"]))).await.status, 200);
    assert_eq!(read().await, 403);

    // A disabled secret can't be read, even with permission.
    app_client
        .update_secret_properties(
            "s",
            UpdateSecretPropertiesParameters {
                secret_attributes: Some(azure_security_keyvault_secrets::models::SecretAttributes {
                    enabled: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap();
    let err = app_client.get_secret("s", None).await.unwrap_err();
    assert_eq!(err.http_status().map(u16::from), Some(403));
}
