//! What audit logging needs from ARM, through an `azure_core` pipeline: `Microsoft.Storage/storageAccounts` (the
//! long-running create, naming rules, global uniqueness, locks), `Microsoft.Insights/diagnosticSettings` on a vault
//! (validation, the setting outliving a deleted vault and coming back with it), and provider registration
//! (`MissingSubscriptionRegistration`, `unregister`). One test per area, each step asserting ARM's answer.

mod support;

use azure_core::http::Method;
use serde_json::{Value, json};
use support::*;

const STORAGE_API: &str = "api-version=2023-05-01";
const INSIGHTS_API: &str = "api-version=2021-05-01-preview";

fn arm() -> Arm {
    shared();
    Arm::new(managed_identity(None))
}

/// An operator with every action on the subscription (edgevault's identity may neither delete storage accounts nor
/// register providers).
async fn operator(la: &LocalAzure) -> Arm {
    let oid = la.admin_post("/admin/principals", json!({ "displayName": unique("operator") })).await["objectId"]
        .as_str()
        .unwrap()
        .to_string();
    la.admin_post(
        "/admin/grants",
        json!({ "principalId": oid, "scope": format!("/subscriptions/{}", la.var("AZURE_SUBSCRIPTION_ID")), "actions": ["*"], "roleName": "Owner" }),
    )
    .await;
    Arm::new(managed_identity(Some(azure_identity::UserAssignedId::ObjectId(oid))))
}

fn account_path(group_path: &str, name: &str) -> String {
    format!("{group_path}/providers/Microsoft.Storage/storageAccounts/{name}?{STORAGE_API}")
}

fn account_body(la: &LocalAzure, tags: Value) -> Value {
    json!({ "sku": { "name": "Standard_ZRS" }, "kind": "StorageV2", "location": la.var("AZURE_LOCATION"), "tags": tags })
}

/// Creates an account and follows its long-running operation to the end; answers the account.
async fn create_account(arm: &Arm, la: &LocalAzure, name: &str) -> Value {
    let r = arm
        .call(Method::Put, &account_path(&rg_path(la), name), Some(&account_body(la, json!({ "owner": "t" }))))
        .await;
    assert_eq!(r.status, 202, "a create is long-running: {}", r.body);
    let location = r.header("location").expect("a Location to poll");
    assert!(location.contains("/providers/Microsoft.Storage/locations/"), "{location}");
    let done = arm.call(Method::Get, &location, None).await;
    assert_eq!(done.status, 200, "{}", done.body);
    done.body
}

#[tokio::test]
async fn storage_accounts_are_long_running_globally_unique_and_locked() {
    let la = shared();
    let arm = arm();
    let sub = la.var("AZURE_SUBSCRIPTION_ID");
    let name = unique("audit").to_ascii_lowercase();

    let check = |n: &str| json!({ "name": n, "type": "Microsoft.Storage/storageAccounts" });
    let check_path = format!("/subscriptions/{sub}/providers/Microsoft.Storage/checkNameAvailability?{STORAGE_API}");
    let r = arm.call(Method::Post, &check_path, Some(&check(&name))).await;
    assert_eq!(r.body["nameAvailable"], true, "{}", r.body);
    let r = arm.call(Method::Post, &check_path, Some(&check("Not-Valid"))).await;
    assert_eq!(
        (r.body["nameAvailable"].clone(), r.body["reason"].clone()),
        (json!(false), json!("AccountNameInvalid"))
    );

    let bad = arm.call(Method::Put, &account_path(&rg_path(la), "Has-Upper"), Some(&account_body(la, json!({})))).await;
    assert_eq!((bad.status, bad.code()), (400, "AccountNameInvalid"), "{}", bad.body);
    let mut no_sku = account_body(la, json!({}));
    no_sku.as_object_mut().unwrap().remove("sku");
    let bad = arm.call(Method::Put, &account_path(&rg_path(la), &name), Some(&no_sku)).await;
    assert_eq!(bad.status, 400, "sku is required: {}", bad.body);

    let account = create_account(&arm, la, &name).await;
    assert_eq!(account["sku"]["name"], "Standard_ZRS");
    assert_eq!(account["kind"], "StorageV2");
    assert_eq!(account["properties"]["provisioningState"], "Succeeded");
    let got = arm.call(Method::Get, &account_path(&rg_path(la), &name), None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["tags"]["owner"], "t");
    // An update is synchronous.
    let again = arm
        .call(Method::Put, &account_path(&rg_path(la), &name), Some(&account_body(la, json!({ "owner": "u" }))))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["tags"]["owner"], "u");

    // The name is global: taken in another resource group, and reported taken.
    let other = unique("other");
    la.admin_post(
        "/admin/resource-groups",
        json!({ "subscriptionId": sub, "name": other, "location": la.var("AZURE_LOCATION") }),
    )
    .await;
    let elsewhere = format!("/subscriptions/{sub}/resourceGroups/{other}");
    let taken = arm.call(Method::Put, &account_path(&elsewhere, &name), Some(&account_body(la, json!({})))).await;
    assert_eq!((taken.status, taken.code()), (409, "StorageAccountAlreadyTaken"), "{}", taken.body);
    let r = arm.call(Method::Post, &check_path, Some(&check(&name))).await;
    assert_eq!(r.body["reason"], "AlreadyExists");

    // Lists, by subscription and by group, and the generic resource list.
    let ids = |v: &Value| -> Vec<String> {
        v["value"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().to_string()).collect()
    };
    let by_sub = arm
        .call(
            Method::Get,
            &format!("/subscriptions/{sub}/providers/Microsoft.Storage/storageAccounts?{STORAGE_API}"),
            None,
        )
        .await;
    assert!(ids(&by_sub.body).contains(&name), "{}", by_sub.body);
    let by_rg = arm
        .call(Method::Get, &format!("{}/providers/Microsoft.Storage/storageAccounts?{STORAGE_API}", rg_path(la)), None)
        .await;
    assert!(ids(&by_rg.body).contains(&name));
    let in_other = arm
        .call(Method::Get, &format!("{elsewhere}/providers/Microsoft.Storage/storageAccounts?{STORAGE_API}"), None)
        .await;
    assert!(ids(&in_other.body).is_empty(), "{}", in_other.body);
    let generic = arm
        .call(
            Method::Get,
            &format!(
                "/subscriptions/{sub}/resources?$filter=resourceType eq 'Microsoft.Storage/storageAccounts'&api-version=2021-04-01"
            ),
            None,
        )
        .await;
    assert!(ids(&generic.body).contains(&name), "{}", generic.body);

    // A CanNotDelete lock stops the delete; without it the account goes.
    let scope = format!("{}/providers/Microsoft.Storage/storageAccounts/{name}", rg_path(la));
    let lock = format!("{scope}/providers/Microsoft.Authorization/locks/keep?api-version=2020-05-01");
    let refused = arm.call(Method::Delete, &account_path(&rg_path(la), &name), None).await;
    assert_eq!(refused.status, 403, "edgevault's identity may not delete storage accounts: {}", refused.body);
    let arm = operator(la).await;
    let r = arm.call(Method::Put, &lock, Some(&json!({ "properties": { "level": "CanNotDelete" } }))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let refused = arm.call(Method::Delete, &account_path(&rg_path(la), &name), None).await;
    assert_eq!((refused.status, refused.code()), (409, "ScopeLocked"), "{}", refused.body);
    assert_eq!(arm.call(Method::Delete, &lock, None).await.status, 200);
    assert_eq!(arm.call(Method::Delete, &account_path(&rg_path(la), &name), None).await.status, 200);
    assert_eq!(arm.call(Method::Get, &account_path(&rg_path(la), &name), None).await.status, 404);
    assert_eq!(arm.call(Method::Delete, &account_path(&rg_path(la), &name), None).await.status, 204);
}

#[tokio::test]
async fn a_vaults_diagnostic_setting_is_validated_outlives_the_vault_and_needs_its_provider() {
    let la = shared();
    let arm = arm();
    let sub = la.var("AZURE_SUBSCRIPTION_ID");
    let account_name = unique("diag").to_ascii_lowercase();
    let account = create_account(&arm, la, &account_name).await;
    let account_id = account["id"].as_str().unwrap().to_string();
    let vault = unique("diagkv");
    let vault_id = format!("{}/providers/Microsoft.KeyVault/vaults/{vault}", rg_path(la));
    let r = arm.call(Method::Put, &vault_id, Some(&vault_body(la, &[], true))).await;
    assert!(r.status == 200 || r.status == 201, "{}", r.body);

    let settings = format!("{vault_id}/providers/Microsoft.Insights/diagnosticSettings");
    let setting = format!("{settings}/audit?{INSIGHTS_API}");
    let body = |storage: &str, log: Value| json!({ "properties": { "storageAccountId": storage, "logs": [log] } });
    let audit = json!({ "categoryGroup": "audit", "enabled": true });

    let missing = format!("{}/providers/Microsoft.Storage/storageAccounts/nosuch{}", rg_path(la), &account_name[..6]);
    let r = arm.call(Method::Put, &setting, Some(&body(&missing, audit.clone()))).await;
    assert_eq!(r.status, 404, "the storage account must exist: {}", r.body);
    let r = arm
        .call(Method::Put, &setting, Some(&body(&account_id, json!({ "category": "NoSuch", "enabled": true }))))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("AuditEvent"), "{}", r.body);
    let r = arm.call(Method::Put, &setting, Some(&json!({ "properties": { "logs": [audit] } }))).await;
    assert_eq!(r.status, 400, "a destination is required: {}", r.body);

    let r = arm.call(Method::Put, &setting, Some(&body(&account_id, audit.clone()))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["type"], "Microsoft.Insights/diagnosticSettings");
    let got = arm.call(Method::Get, &setting, None).await;
    assert_eq!(got.body["properties"]["storageAccountId"], account_id.as_str());
    let list = arm.call(Method::Get, &format!("{settings}?{INSIGHTS_API}"), None).await;
    assert_eq!(list.body["value"].as_array().map(Vec::len), Some(1), "{}", list.body);

    // Deleted with the vault from view, kept, and back with the recovered vault.
    assert_eq!(arm.call(Method::Delete, &vault_id, None).await.status, 200);
    assert_eq!(arm.call(Method::Get, &setting, None).await.status, 404);
    let recover = json!({ "location": la.var("AZURE_LOCATION"), "properties": { "createMode": "recover", "tenantId": la.var("AZURE_TENANT_ID"), "sku": { "family": "A", "name": "standard" } } });
    let r = arm.call(Method::Put, &vault_id, Some(&recover)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(arm.call(Method::Get, &setting, None).await.status, 200, "the setting applies to the recovered vault");

    // Provider registration: a write in an unregistered namespace is refused with ARM's code; reads still work.
    let op = operator(la).await;
    let provider = |ns: &str, verb: &str| format!("/subscriptions/{sub}/providers/{ns}{verb}?api-version=2021-04-01");
    let r = op.call(Method::Post, &provider("Microsoft.Insights", "/unregister"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["registrationState"], "NotRegistered");
    let shown = arm.call(Method::Get, &provider("Microsoft.Insights", ""), None).await;
    assert_eq!(shown.body["registrationState"], "NotRegistered");
    let refused = arm.call(Method::Put, &setting, Some(&body(&account_id, audit.clone()))).await;
    assert_eq!((refused.status, refused.code()), (409, "MissingSubscriptionRegistration"), "{}", refused.body);
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("'Microsoft.Insights'"), "{}", refused.body);
    assert_eq!(arm.call(Method::Get, &setting, None).await.status, 200);
    let r = op.call(Method::Post, &provider("Microsoft.Insights", "/register"), None).await;
    assert_eq!(r.body["registrationState"], "Registered");
    assert_eq!(arm.call(Method::Put, &setting, Some(&body(&account_id, audit))).await.status, 200);
    // A namespace whose resources the subscription still has cannot be unregistered.
    let r = op.call(Method::Post, &provider("Microsoft.Storage", "/unregister"), None).await;
    assert_eq!(r.status, 409, "{}", r.body);

    assert_eq!(op.call(Method::Delete, &setting, None).await.status, 200);
    assert_eq!(op.call(Method::Delete, &setting, None).await.status, 204);
}
