//! What a service asks on a caller's behalf: Entra ID's on-behalf-of exchange at
//! `login.microsoftonline.com/{tenant}/oauth2/v2.0/token`, and ARM's permissions API (`GET {scope}/providers/
//! Microsoft.Authorization/permissions?api-version=2022-04-01`) computed from local-azure's grants. Raw REST (reqwest
//! through the proxy) for the token endpoint, the `azure_core` pipeline for ARM, as edgevault calls them.

mod support;

use std::sync::Arc;

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::Method;
use serde_json::{Value, json};
use support::*;

const API: &str = "api://edgevault";
const API_CLIENT_ID: &str = "e0e0e0e0-0000-4000-8000-000000000005";
const APP_PRINCIPAL: &str = "e0e0e0e0-0000-4000-8000-000000000003";
const DEVICES: &str = "Microsoft.DataBoxEdge/dataBoxEdgeDevices";

/// A fixed token, as a credential for the ARM pipeline.
#[derive(Debug)]
struct Fixed(String);

#[async_trait::async_trait]
impl TokenCredential for Fixed {
    async fn get_token(&self, _: &[&str], _: Option<TokenRequestOptions<'_>>) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            Secret::new(self.0.clone()),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

async fn user(la: &LocalAzure, name: &str) -> String {
    let body = json!({"displayName": name, "userPrincipalName": format!("{name}@contoso.test")});
    la.admin_post("/admin/principals", body).await["objectId"].as_str().unwrap().to_string()
}

async fn grant(la: &LocalAzure, principal: &str, scope: &str, actions: &[&str], not_actions: &[&str]) {
    la.admin_post(
        "/admin/grants",
        json!({"principalId": principal, "scope": scope, "actions": actions, "notActions": not_actions}),
    )
    .await;
}

async fn permissions(token: &str, scope: &str) -> ArmResponse {
    let arm = Arm::new(Arc::new(Fixed(token.to_string())));
    arm.call(
        Method::Get,
        &format!("{scope}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01"),
        None,
    )
    .await
}

/// `POST …/oauth2/v2.0/token` with the on-behalf-of form; `assertion` is the caller's token, `client_assertion` the
/// app's managed-identity token for `api://AzureADTokenExchange`.
async fn exchange(la: &LocalAzure, client_id: &str, client_assertion: &str, assertion: &str) -> (u16, Value) {
    let url = format!("https://login.microsoftonline.com/{}/oauth2/v2.0/token", la.var("AZURE_TENANT_ID"));
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("client_id", client_id),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", client_assertion),
        ("assertion", assertion),
        ("scope", "https://management.azure.com/user_impersonation"),
        ("requested_token_use", "on_behalf_of"),
    ];
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_permissions_api_lists_the_callers_grants_at_and_above_the_scope_only() {
    let la = shared();
    la.export_env();
    let rg = rg_path(la);
    let device = format!("{rg}/providers/{DEVICES}/{}", unique("ase"));
    let (ada, eve) = (user(la, &unique("ada")).await, user(la, &unique("eve")).await);
    grant(la, &ada, &format!("/subscriptions/{}", la.var("AZURE_SUBSCRIPTION_ID")), &["*/read"], &[]).await;
    grant(la, &ada, &device, &["Microsoft.DataBoxEdge/*"], &["Microsoft.DataBoxEdge/*/delete"]).await;
    grant(la, &eve, &device, &["*"], &[]).await;
    let other_device = format!("{rg}/providers/{DEVICES}/{}", unique("ase"));

    let token = la.token(&ada, "https://management.azure.com/").await;
    let at_device = permissions(&token, &device).await;
    assert_eq!(at_device.status, 200, "{}", at_device.body);
    let mut entries: Vec<Value> = at_device.body["value"].as_array().unwrap().clone();
    entries.sort_by_key(|e| e["actions"][0].as_str().unwrap_or_default().to_string());
    assert_eq!(
        entries,
        vec![
            json!({"actions": ["*/read"], "notActions": [], "dataActions": [], "notDataActions": []}),
            json!({"actions": ["Microsoft.DataBoxEdge/*"], "notActions": ["Microsoft.DataBoxEdge/*/delete"], "dataActions": [], "notDataActions": []}),
        ],
        "Ada's two grants, not Eve's"
    );
    let elsewhere = permissions(&token, &other_device).await;
    assert_eq!(
        elsewhere.body["value"].as_array().unwrap().len(),
        1,
        "only the subscription's read: {}",
        elsewhere.body
    );
    // No grant, no entries; still 200 (anyone may ask about themselves).
    let nobody = user(la, &unique("nobody")).await;
    let none = permissions(&la.token(&nobody, "https://management.azure.com/").await, &device).await;
    assert_eq!((none.status, none.body["value"].as_array().map(Vec::len)), (200, Some(0)), "{}", none.body);

    // notActions bind ARM itself too: Ada may write the device but not delete it.
    let arm = Arm::new(Arc::new(Fixed(token)));
    let delete = arm.call(Method::Delete, &format!("{device}?api-version=2023-12-01"), None).await;
    assert_eq!((delete.status, delete.code()), (403, "AuthorizationFailed"), "{}", delete.body);
}

#[tokio::test]
async fn the_on_behalf_of_exchange_gives_the_user_an_arm_token_and_refuses_what_entra_id_refuses() {
    let la = shared();
    la.export_env();
    let ada = user(la, &unique("ada")).await;
    let device = format!("{}/providers/{DEVICES}/{}", rg_path(la), unique("ase"));
    grant(la, &ada, &device, &["Microsoft.DataBoxEdge/dataBoxEdgeDevices/write"], &[]).await;
    let caller = la.token(&ada, API).await;
    // The function app's identity, trusted by the API's registration as a federated credential.
    let credential = la.token(APP_PRINCIPAL, "api://AzureADTokenExchange").await;

    let (status, answer) = exchange(la, API_CLIENT_ID, &credential, &caller).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["scope"], "https://management.azure.com/user_impersonation");
    assert!(answer["expires_in"].as_u64().unwrap() > 300);
    let obo = answer["access_token"].as_str().unwrap();
    let on_behalf = permissions(obo, &device).await;
    assert_eq!(on_behalf.status, 200, "ARM takes the exchanged token: {}", on_behalf.body);
    assert_eq!(on_behalf.body["value"][0]["actions"][0], "Microsoft.DataBoxEdge/dataBoxEdgeDevices/write", "as Ada");

    let expired = la
        .admin_post("/admin/tokens", json!({"principalId": ada, "resource": API, "expiresInSeconds": 0}))
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let for_arm = la.token(&ada, "https://management.azure.com/").await;
    let app_only = la.token(APP_PRINCIPAL, API).await;
    let untrusted = la.token(&ada, "api://AzureADTokenExchange").await;
    for (what, client_id, client_assertion, assertion, status, error, code) in [
        (
            "an expired caller token",
            API_CLIENT_ID,
            credential.as_str(),
            expired.as_str(),
            400,
            "invalid_grant",
            500_133,
        ),
        ("a token for another audience", API_CLIENT_ID, &credential, &for_arm, 400, "invalid_grant", 50_013),
        ("an application's token", API_CLIENT_ID, &credential, &app_only, 400, "invalid_grant", 50_013),
        ("an untrusted client assertion", API_CLIENT_ID, &untrusted, &caller, 401, "invalid_client", 70_021),
        (
            "an unknown client",
            "00000000-0000-4000-8000-00000000abcd",
            &credential,
            &caller,
            400,
            "unauthorized_client",
            700_016,
        ),
    ] {
        let (got, answer) = exchange(la, client_id, client_assertion, assertion).await;
        assert_eq!((got, answer["error"].as_str()), (status, Some(error)), "{what}: {answer}");
        assert_eq!(answer["error_codes"][0], code, "{what}: {answer}");
        assert!(answer["error_description"].as_str().unwrap().starts_with(&format!("AADSTS{code}:")), "{what}");
    }
}
