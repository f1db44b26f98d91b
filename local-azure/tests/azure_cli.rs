//! The unmodified Azure CLI (`azure-cli==2.91.0` from PyPI, installed by `tests/tools/install-azure-cli.sh`) against
//! local-azure, through its proxy and CA (`HTTPS_PROXY`, `REQUESTS_CA_BUNDLE`) and its managed-identity endpoint
//! (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`) — nothing in the CLI switched off. Each test has its own
//! `AZURE_CONFIG_DIR`, and asserts what the command answered, not only that it exited 0.
//!
//! The `databoxedge` CLI extension is not on PyPI (it is published on the CLI's own extension index, which needs the
//! internet), so devices are driven with `az rest` and read with `az resource`, which is what the extension's
//! commands call underneath (`docs/FIDELITY.md`).

mod support;

use serde_json::{Value, json};
use support::az::{Az, operator};
use support::*;

fn device_url(la: &LocalAzure, name: &str) -> String {
    format!(
        "https://management.azure.com/subscriptions/{}/resourceGroups/{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}",
        la.var("AZURE_SUBSCRIPTION_ID"),
        la.var("AZURE_RESOURCE_GROUP")
    )
}

#[tokio::test]
async fn login_with_the_managed_identity_then_account_show() {
    let la = shared();
    let sub = la.var("AZURE_SUBSCRIPTION_ID");
    let tenant = la.var("AZURE_TENANT_ID");

    // The function app's own identity (no id given): Subscriptions – List shows the subscription it has a grant in.
    let az = Az::new(la);
    let accounts = az.json(&["login", "--identity"]);
    assert_eq!(accounts.as_array().map(Vec::len), Some(1), "{accounts}");
    let account = az.json(&["account", "show"]);
    assert_eq!(account["id"], sub);
    assert_eq!(account["tenantId"], tenant);
    assert_eq!(account["name"], "local-azure default");
    assert_eq!(account["state"], "Enabled");
    assert_eq!(account["user"]["type"], "servicePrincipal");
    assert_eq!(account["user"]["assignedIdentityInfo"], "MSI");

    // Another identity, by object id.
    let (op, oid) = operator(la).await;
    let account = op.json(&["account", "show"]);
    assert_eq!(account["user"]["assignedIdentityInfo"], format!("MSIObject-{oid}"));
    assert_eq!(account["user"]["name"], "userAssignedIdentity");

    // An identity with no role assignment sees no subscription: refused, unless tenant-level access is asked for.
    let nobody = la.admin_post("/admin/principals", json!({ "displayName": unique("nobody") })).await["objectId"]
        .as_str()
        .unwrap()
        .to_string();
    let lonely = Az::new(la);
    let stderr = lonely.fails(&["login", "--identity", "--object-id", &nobody]);
    assert!(stderr.contains("no subscriptions were found"), "{stderr}");
    lonely.json(&["login", "--identity", "--object-id", &nobody, "--allow-no-subscriptions"]);
    let account = lonely.json(&["account", "show"]);
    assert_eq!(account["id"], tenant, "a tenant-level account is named by its tenant");
    assert_eq!(account["name"], "N/A(tenant level account)");
}

#[tokio::test]
async fn a_vault_through_its_whole_life_with_the_cli() {
    let la = shared();
    let rg = la.var("AZURE_RESOURCE_GROUP");
    let (az, oid) = operator(la).await;
    let name = unique("clikv");

    // Create: purge protection, 90-day retention, access policies (not RBAC), no policy for the caller.
    let vault = az.json(&[
        "keyvault",
        "create",
        "-n",
        &name,
        "-g",
        &rg,
        "--enable-purge-protection",
        "true",
        "--retention-days",
        "90",
        "--enable-rbac-authorization",
        "false",
        "--no-self-perms",
    ]);
    assert_eq!(vault["name"], name);
    assert_eq!(vault["properties"]["enablePurgeProtection"], true);
    assert_eq!(vault["properties"]["softDeleteRetentionInDays"], 90);
    assert_eq!(vault["properties"]["enableRbacAuthorization"], false);
    assert_eq!(vault["properties"]["accessPolicies"], json!([]), "--no-self-perms adds no policy");
    assert_eq!(vault["properties"]["vaultUri"], format!("https://{name}.vault.azure.net/"));

    // Show with and without the resource group (without: found through Resources – List).
    let shown = az.json(&["keyvault", "show", "-n", &name, "-g", &rg]);
    assert_eq!(shown["id"], vault["id"]);
    let shown = az.json(&["keyvault", "show", "-n", &name]);
    assert_eq!(shown["id"], vault["id"]);
    assert_eq!(shown["resourceGroup"], rg);
    let listed = az.json(&["keyvault", "list"]);
    let names: Vec<&str> = listed.as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert!(names.contains(&name.as_str()), "{names:?}");

    // Access policy, then secrets through the data plane.
    let policies = az.json(&[
        "keyvault",
        "set-policy",
        "-n",
        &name,
        "--object-id",
        &oid,
        "--secret-permissions",
        "get",
        "set",
        "list",
    ]);
    let mine = policies["properties"]["accessPolicies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["objectId"] == oid)
        .cloned()
        .expect("the operator's policy");
    let mut granted: Vec<&str> =
        mine["permissions"]["secrets"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    granted.sort_unstable();
    assert_eq!(granted, ["get", "list", "set"]);
    let value = uuid::Uuid::new_v4().to_string();
    let set = az.json(&["keyvault", "secret", "set", "--vault-name", &name, "-n", "cik", "--value", &value]);
    assert!(set["id"].as_str().unwrap().starts_with(&format!("https://{name}.vault.azure.net/secrets/cik/")));
    let got = az.json(&["keyvault", "secret", "show", "--vault-name", &name, "-n", "cik"]);
    assert!(got["value"] == value.as_str(), "the secret read back is not the one set");
    assert_eq!(got["id"], set["id"]);
    let secrets = az.json(&["keyvault", "secret", "list", "--vault-name", &name]);
    assert_eq!(secrets.as_array().map(Vec::len), Some(1));
    assert_eq!(secrets[0]["name"], "cik");

    // A CanNotDelete lock refuses the delete.
    let lock_args = ["-n", "keep", "-g", &rg, "--resource", &name, "--resource-type", "Microsoft.KeyVault/vaults"];
    let lock = az.json(&[&["lock", "create", "--lock-type", "CanNotDelete"], &lock_args[..]].concat());
    assert_eq!(lock["level"], "CanNotDelete");
    assert!(lock["id"].as_str().unwrap().ends_with("/providers/Microsoft.Authorization/locks/keep"));
    let locks = az.json(&["lock", "list", "-g", &rg]);
    assert!(locks.as_array().unwrap().iter().any(|l| l["id"] == lock["id"]), "{locks}");
    assert_eq!(az.json(&[&["lock", "show"], &lock_args[..]].concat())["level"], "CanNotDelete");
    let stderr = az.fails(&["keyvault", "delete", "-n", &name]);
    assert!(stderr.contains("ScopeLocked"), "{stderr}");
    az.json(&[&["lock", "delete"], &lock_args[..]].concat());
    assert!(!az.json(&["lock", "list", "-g", &rg]).as_array().unwrap().iter().any(|l| l["id"] == lock["id"]));

    // Delete: soft-deleted, listed as such, gone from the live list; purge refused under purge protection.
    az.json(&["keyvault", "delete", "-n", &name]);
    let deleted = az.json(&["keyvault", "list-deleted"]);
    let mine = deleted.as_array().unwrap().iter().find(|v| v["name"] == name.as_str()).cloned().expect("listed");
    assert_eq!(mine["properties"]["vaultId"], vault["id"]);
    let shown = az.json(&["keyvault", "show-deleted", "-n", &name]);
    assert_eq!(shown["properties"]["purgeProtectionEnabled"], true);
    assert!(shown["properties"]["scheduledPurgeDate"].as_str().is_some_and(|d| !d.is_empty()));
    let live = az.json(&["keyvault", "list"]);
    assert!(!live.as_array().unwrap().iter().any(|v| v["name"] == name.as_str()), "{live}");
    let stderr = az.fails(&["keyvault", "purge", "-n", &name]);
    assert!(stderr.contains("MethodNotAllowed") && stderr.contains("DeletedVaultPurge"), "{stderr}");

    // Recover: back with its properties, policies and secrets.
    let recovered = az.json(&["keyvault", "recover", "-n", &name]);
    assert_eq!(recovered["id"], vault["id"]);
    assert_eq!(recovered["properties"]["enablePurgeProtection"], true);
    assert!(az.json(&["keyvault", "list-deleted"]).as_array().unwrap().iter().all(|v| v["name"] != name.as_str()));
    let got = az.json(&["keyvault", "secret", "show", "--vault-name", &name, "-n", "cik"]);
    assert!(got["value"] == value.as_str(), "the recovered secret is not the one set");
}

#[tokio::test]
async fn devices_through_az_resource_and_az_rest() {
    let la = shared();
    let rg = la.var("AZURE_RESOURCE_GROUP");
    let (az, _) = operator(la).await;
    let name = unique("clidev");
    let url = device_url(la, &name);
    let api = "?api-version=2023-12-01";
    let tag = unique("owner");

    let body = json!({ "location": "westus2", "sku": { "name": "Edge" }, "tags": { tag.as_str(): "ops" } }).to_string();
    let put = az.json(&["rest", "-m", "put", "--url", &format!("{url}{api}"), "--body", &body]);
    assert_eq!(put["name"], name);
    let body = json!({ "identity": { "type": "SystemAssigned" } }).to_string();
    let patched = az.json(&["rest", "-m", "patch", "--url", &format!("{url}{api}"), "--body", &body]);
    let principal = patched["identity"]["principalId"].as_str().expect("a system-assigned identity").to_string();

    // `az resource show --ids` picks the api-version from Providers – Get.
    let id = put["id"].as_str().unwrap();
    let shown = az.json(&["resource", "show", "--ids", id]);
    assert_eq!(shown["type"], "Microsoft.DataBoxEdge/dataBoxEdgeDevices");
    assert_eq!(shown["sku"]["name"], "Edge");
    assert_eq!(shown["identity"]["principalId"], principal);
    assert_eq!(shown["properties"]["dataBoxEdgeDeviceStatus"], "ReadyToSetup");

    // Resources – List with a resource-type filter, at resource-group scope, and by tag at subscription scope.
    let listed =
        az.json(&["resource", "list", "-g", &rg, "--resource-type", "Microsoft.DataBoxEdge/dataBoxEdgeDevices"]);
    let items = listed.as_array().unwrap();
    assert!(items.iter().any(|r| r["id"] == id), "{listed}");
    assert!(items.iter().all(|r| r["type"] == "Microsoft.DataBoxEdge/dataBoxEdgeDevices"));
    let tagged = az.json(&["resource", "list", "--tag", &format!("{tag}=ops")]);
    assert_eq!(tagged.as_array().map(Vec::len), Some(1), "{tagged}");
    assert_eq!(tagged[0]["id"], id);
    assert!(az.json(&["resource", "list", "--tag", &format!("{tag}=dev")]).as_array().unwrap().is_empty());

    // The extended information (the databoxedge extension's `device show-extended-information`), read and written.
    let ext_url = format!("{url}/getExtendedInformation{api}");
    let ext = az.json(&["rest", "-m", "post", "--url", &ext_url]);
    assert_eq!(ext["properties"]["keyVaultSyncStatus"], "KeyVaultNotConfigured");
    let store = format!(
        "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/x",
        la.var("AZURE_SUBSCRIPTION_ID")
    );
    let body = json!({ "clientSecretStoreId": store, "syncStatus": "KeyVaultSynced" }).to_string();
    let updated =
        az.json(&["rest", "-m", "post", "--url", &format!("{url}/updateExtendedInformation{api}"), "--body", &body]);
    assert_eq!(updated["properties"]["keyVaultSyncStatus"], "KeyVaultSynced");
    let ext = az.json(&["rest", "-m", "post", "--url", &ext_url]);
    assert_eq!(ext["properties"]["clientSecretStoreId"], store);
}

#[tokio::test]
async fn providers_and_resource_list_paging_through_az_rest() {
    let la = shared();
    let sub = la.var("AZURE_SUBSCRIPTION_ID");
    let rg = la.var("AZURE_RESOURCE_GROUP");
    let (az, _) = operator(la).await;
    let base = format!("https://management.azure.com/subscriptions/{sub}");

    let p = az.json(&["provider", "show", "-n", "Microsoft.KeyVault"]);
    assert_eq!(p["registrationState"], "Registered");
    let vaults =
        p["resourceTypes"].as_array().unwrap().iter().find(|t| t["resourceType"] == "vaults").cloned().unwrap();
    assert!(vaults["apiVersions"].as_array().unwrap().iter().any(|v| v == "2024-11-01"));
    let registered = az.json(&["provider", "register", "-n", "Microsoft.DataBoxEdge", "--wait"]);
    assert!(registered.is_null() || registered["registrationState"] == "Registered", "{registered}");
    let stderr = az.fails(&["provider", "show", "-n", "Microsoft.Nope"]);
    assert!(stderr.contains("InvalidResourceNamespace"), "{stderr}");

    // Three devices in a group of their own, listed two by two.
    let group = unique("pagerg");
    az.json(&["group", "create", "-n", &group, "-l", "westus2"]);
    for i in 0..3 {
        let url = format!(
            "{base}/resourceGroups/{group}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d{i}?api-version=2023-12-01"
        );
        az.json(&["rest", "-m", "put", "--url", &url, "--body", r#"{"location":"westus2","sku":{"name":"Edge"}}"#]);
    }
    let first =
        az.json(&["rest", "--url", &format!("{base}/resourceGroups/{group}/resources?api-version=2022-12-01&$top=2")]);
    assert_eq!(first["value"].as_array().map(Vec::len), Some(2), "{first}");
    let next = first["nextLink"].as_str().expect("a nextLink after the first page");
    let second = az.json(&["rest", "--url", next]);
    assert_eq!(second["value"].as_array().map(Vec::len), Some(1), "{second}");
    assert!(second.get("nextLink").is_none_or(Value::is_null));
    let all = az.json(&["resource", "list", "-g", &group]);
    assert_eq!(all.as_array().map(Vec::len), Some(3));
    let stderr =
        az.fails(&["rest", "--url", &format!("{base}/resources?api-version=2022-12-01&$filter=color eq 'red'")]);
    assert!(stderr.contains("InvalidFilterInQueryString"), "{stderr}");
    let _ = rg;

    // No managed HSMs: list-deleted without --resource-type also asks for deleted HSMs, and Azure answers [] there.
    let hsms = az.json(&[
        "rest",
        "--url",
        &format!("{base}/providers/Microsoft.KeyVault/deletedManagedHSMs?api-version=2023-07-01"),
    ]);
    assert_eq!(hsms["value"], json!([]));
}

#[tokio::test]
async fn table_entities_with_the_cli_and_entra_id() {
    let la = shared();
    let (op, _) = operator(la).await;
    let account = ["--account-name", "edgevaultrecords", "--auth-mode", "login"];
    let with = |args: &[&'static str]| -> Vec<&str> { args.iter().copied().chain(account).collect() };

    let created = op.json(&with(&["storage", "table", "create", "--name", "clitable"]));
    assert_eq!(created["created"], true, "{created}");
    let tables = op.json(&with(&["storage", "table", "list"]));
    assert!(tables.as_array().unwrap().iter().any(|t| t["name"] == "clitable"), "{tables}");

    let insert = |row: &str| {
        let row = format!("RowKey={row}");
        let mut args = vec!["storage", "entity", "insert", "--table-name", "clitable", "--entity", "PartitionKey=p"];
        args.extend([row.as_str(), "Record={\"a\":1}"]);
        args.extend(account);
        op.run(&args)
    };
    for row in ["r1", "r2", "r'3"] {
        let out = insert(row);
        assert!(out.status.success(), "inserting {row}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Insert Entity does not overwrite: the second insert of a key is refused with the service's message.
    let again = insert("r1");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && stderr.contains("The specified entity already exists"), "{stderr}");

    let key = ["--table-name", "clitable", "--partition-key", "p", "--row-key", "r'3"];
    let shown = op.json(&with(&["storage", "entity", "show"]).into_iter().chain(key).collect::<Vec<_>>());
    assert_eq!((shown["RowKey"].as_str(), shown["Record"].as_str()), (Some("r'3"), Some("{\"a\":1}")), "{shown}");

    let query = ["storage", "entity", "query", "--table-name", "clitable"];
    let found = op.json(&with(&query).into_iter().chain(["--filter", "RowKey lt 'r2'"]).collect::<Vec<_>>());
    let rows: Vec<&str> = found["items"].as_array().unwrap().iter().map(|e| e["RowKey"].as_str().unwrap()).collect();
    // Rows come in key order: a quote (U+0027) sorts before the digits.
    assert_eq!(rows, ["r'3", "r1"], "{found}");

    let key = ["--table-name", "clitable", "--partition-key", "p", "--row-key", "r1"];
    op.json(&with(&["storage", "entity", "delete"]).into_iter().chain(key).collect::<Vec<_>>());
    let left = op.json(&with(&query));
    assert_eq!(left["items"].as_array().map(Vec::len), Some(2), "{left}");

    // An identity with no data role on the account: the service refuses, and the CLI says so.
    let nobody = la.admin_post("/admin/principals", json!({ "displayName": unique("nobody") })).await["objectId"]
        .as_str()
        .unwrap()
        .to_string();
    let scope = format!("/subscriptions/{}", la.var("AZURE_SUBSCRIPTION_ID"));
    la.admin_post(
        "/admin/grants",
        json!({ "principalId": nobody, "scope": scope, "actions": ["Microsoft.KeyVault/*"] }),
    )
    .await;
    let reader = Az::new(la);
    reader.json(&["login", "--identity", "--object-id", &nobody]);
    let stderr = reader.fails(&with(&query));
    // The CLI recognises the service's `AuthorizationPermissionMismatch` and names the roles that would grant it.
    assert!(stderr.contains("You do not have the required permissions"), "{stderr}");
}

#[tokio::test]
async fn audit_logging_with_the_cli_storage_account_diagnostic_setting_and_provider_registration() {
    let la = shared();
    let rg = la.var("AZURE_RESOURCE_GROUP");
    let (az, _) = operator(la).await;
    let account = unique("clisa").to_ascii_lowercase();

    // A zone-redundant account: `az storage account create` follows the long-running create to the account.
    let created = az.json(&[
        "storage",
        "account",
        "create",
        "-n",
        &account,
        "-g",
        &rg,
        "--sku",
        "Standard_ZRS",
        "--kind",
        "StorageV2",
        "--tags",
        "edgevault-vault=clikv",
    ]);
    assert_eq!(created["name"], account);
    assert_eq!(created["sku"]["name"], "Standard_ZRS");
    assert_eq!(created["provisioningState"], "Succeeded", "{created}");
    assert_eq!(created["tags"]["edgevault-vault"], "clikv");
    let shown = az.json(&["storage", "account", "show", "-n", &account, "-g", &rg]);
    assert_eq!(shown["id"], created["id"]);
    let check = az.json(&["storage", "account", "check-name", "-n", &account]);
    assert_eq!((check["nameAvailable"].as_bool(), check["reason"].as_str()), (Some(false), Some("AlreadyExists")));
    let check = az.json(&["storage", "account", "check-name", "-n", "Not-Valid"]);
    assert_eq!(check["reason"], "AccountNameInvalid");
    let account_id = created["id"].as_str().unwrap().to_string();

    // A vault's diagnostic setting sending its audit logs there.
    let vault = unique("auditkv");
    let made = az.json(&["keyvault", "create", "-n", &vault, "-g", &rg, "--no-self-perms"]);
    let vault_id = made["id"].as_str().unwrap().to_string();
    let logs = r#"[{"categoryGroup":"audit","enabled":true}]"#;
    let create_setting = [
        "monitor",
        "diagnostic-settings",
        "create",
        "-n",
        "audit",
        "--resource",
        &vault_id,
        "--storage-account",
        &account_id,
        "--logs",
        logs,
    ];
    let setting = az.json(&create_setting);
    assert_eq!(setting["storageAccountId"], account_id.as_str(), "{setting}");
    let listed = az.json(&["monitor", "diagnostic-settings", "list", "--resource", &vault_id]);
    let listed = listed.as_array().cloned().or_else(|| listed["value"].as_array().cloned()).unwrap_or_default();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["logs"][0]["categoryGroup"], "audit");

    // Provider registration: unregistered, a write in the namespace is refused with ARM's
    // `409 MissingSubscriptionRegistration`, which the CLI recognises (azure-mgmt-core's
    // `ARMAutoResourceProviderRegistrationPolicy` reads the code and the quoted namespace of the message): it
    // registers the namespace itself and sends the write again.
    az.json(&["provider", "unregister", "--namespace", "Microsoft.Insights"]);
    let provider = az.json(&["provider", "show", "-n", "Microsoft.Insights"]);
    assert_eq!(provider["registrationState"], "NotRegistered");
    let out = az.run(&create_setting);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("'Microsoft.Insights' used by this operation is not registered"), "{stderr}");
    let provider = az.json(&["provider", "show", "-n", "Microsoft.Insights"]);
    assert_eq!(provider["registrationState"], "Registered");
    // (The refusal itself, which this CLI command never shows since its pipeline always carries that policy
    // (`azure.cli.core.aaz._client`), is asserted through the Rust pipeline in `tests/audit_resources.rs`.)
    az.json(&["provider", "unregister", "--namespace", "Microsoft.Insights"]);
    az.json(&["provider", "register", "--namespace", "Microsoft.Insights"]);
    assert_eq!(az.json(&["provider", "show", "-n", "Microsoft.Insights"])["registrationState"], "Registered");

    // A CanNotDelete lock refuses the account's delete.
    let lock_args =
        ["-n", "keep", "-g", &rg, "--resource", &account, "--resource-type", "Microsoft.Storage/storageAccounts"];
    az.json(&[&["lock", "create", "--lock-type", "CanNotDelete"], &lock_args[..]].concat());
    let stderr = az.fails(&["storage", "account", "delete", "-n", &account, "-g", &rg, "--yes"]);
    assert!(stderr.contains("ScopeLocked"), "{stderr}");
    az.json(&[&["lock", "delete"], &lock_args[..]].concat());
    az.json(&["storage", "account", "delete", "-n", &account, "-g", &rg, "--yes"]);
    let stderr = az.fails(&["storage", "account", "show", "-n", &account, "-g", &rg]);
    assert!(stderr.contains("ResourceNotFound") || stderr.contains("was not found"), "{stderr}");
}
