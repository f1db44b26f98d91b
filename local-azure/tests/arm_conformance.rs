//! ARM through an `azure_core` pipeline (bearer-token policy, managed identity), each operation
//! driven with the request of its REST-spec fixture and checked against the fixture's response
//! shape.

mod support;

use azure_core::http::Method;
use serde_json::{Value, json};
use support::*;

const DBE: &str = "databoxedge/resource-manager/Microsoft.DataBoxEdge/stable/";
const KV: &str = "keyvault/resource-manager/Microsoft.KeyVault/stable/2024-11-01/examples/";
const LOCKS: &str = "resources/resource-manager/Microsoft.Authorization/stable/2020-05-01/examples/";

fn arm() -> Arm {
    shared();
    Arm::new(managed_identity(None))
}

fn device_path(la: &LocalAzure, name: &str) -> String {
    format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}", rg_path(la))
}

fn vault_path(la: &LocalAzure, name: &str) -> String {
    format!("{}/providers/Microsoft.KeyVault/vaults/{name}", rg_path(la))
}

#[tokio::test]
async fn devices_follow_the_fixtures() {
    let la = shared();
    let arm = arm();
    let name = unique("edge");
    let path = device_path(la, &name);

    let put_fx = fixture(&format!("{DBE}2022-03-01/examples/DataBoxEdgeDevicePut.json"));
    let r = arm
        .call(Method::Put, &format!("{path}?api-version=2022-03-01"), Some(&put_fx["parameters"]["dataBoxEdgeDevice"]))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_shape(&put_fx["responses"]["200"]["body"], &r.body, &[]);

    let patch_fx = fixture(&format!("{DBE}2023-12-01/examples/DataBoxEdgeDevicePatch.json"));
    let mut patch = patch_fx["parameters"]["parameters"].clone();
    patch["identity"] = json!({ "type": "SystemAssigned" });
    let r = arm.call(Method::Patch, &format!("{path}?api-version=2023-12-01"), Some(&patch)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_shape(&patch_fx["responses"]["200"]["body"], &r.body, &[]);
    assert_eq!(r.body["identity"]["tenantId"], la.var("AZURE_TENANT_ID"));
    let principal = r.body["identity"]["principalId"].as_str().unwrap().to_string();
    // A second PATCH keeps the same identity: the MSI lives as long as the resource.
    let again = arm.call(Method::Patch, &path, Some(&json!({ "identity": { "type": "SystemAssigned" } }))).await;
    assert_eq!(again.body["identity"]["principalId"], principal.as_str());

    let get_fx = fixture(&format!("{DBE}2023-12-01/examples/DataBoxEdgeDeviceGetByName.json"));
    let r = arm.call(Method::Get, &format!("{path}?api-version=2023-12-01"), None).await;
    assert_eq!(r.status, 200);
    assert_shape(&get_fx["responses"]["200"]["body"], &r.body, &[]);
    // Case-insensitive paths and doubled slashes, any api-version.
    let odd = format!("{}?api-version=2019-08-01", path.to_uppercase().replacen("/PROVIDERS", "//PROVIDERS", 1))
        .replace(&name.to_uppercase(), &name);
    assert_eq!(arm.call(Method::Get, &odd, None).await.status, 200);

    let ext_fx = fixture(&format!("{DBE}2023-12-01/examples/ExtendedInfoPost.json"));
    let r = arm.call(Method::Post, &format!("{path}/getExtendedInformation?api-version=2023-12-01"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_shape(&ext_fx["responses"]["200"]["body"], &r.body, &[]);
    assert_eq!(r.body["properties"]["keyVaultSyncStatus"], "KeyVaultNotConfigured");

    let upd_fx = fixture(&format!("{DBE}2022-03-01/examples/GetUpdateExtendedInfo.json"));
    let expected = &upd_fx["responses"]["200"]["body"];
    let body = json!({
        "clientSecretStoreId": format!("{}/providers/Microsoft.KeyVault/vaults/v1", rg_path(la)),
        "clientSecretStoreUrl": "https://v1.vault.azure.net",
        "channelIntegrityKeyName": "ase-cik-1",
        "channelIntegrityKeyVersion": "95e9b619e65f433d82c9e1ead48214b9",
        "syncStatus": "KeyVaultSynced",
    });
    let r =
        arm.call(Method::Post, &format!("{path}/updateExtendedInformation?api-version=2023-12-01"), Some(&body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_shape(expected, &r.body, &[]);
    assert_eq!(r.body["properties"]["keyVaultSyncStatus"], "KeyVaultSynced");
    for status in
        ["KeyVaultSyncFailed", "KeyVaultNotConfigured", "KeyVaultSyncPending", "KeyVaultSyncing", "KeyVaultNotSynced"]
    {
        let r = arm
            .call(Method::Post, &format!("{path}/updateExtendedInformation"), Some(&json!({ "syncStatus": status })))
            .await;
        assert_eq!(r.body["properties"]["keyVaultSyncStatus"], status);
    }
    let bad = arm
        .call(Method::Post, &format!("{path}/updateExtendedInformation"), Some(&json!({ "syncStatus": "Bogus" })))
        .await;
    assert_eq!(bad.status, 400);

    let r = arm.call(Method::Delete, &format!("{path}?api-version=2023-12-01"), None).await;
    assert_eq!(r.status, 200);
    assert_eq!(arm.call(Method::Get, &path, None).await.status, 404);
    assert_eq!(arm.call(Method::Delete, &path, None).await.status, 204);
}

#[tokio::test]
async fn device_lists_are_paged() {
    let la = shared();
    let arm = arm();
    for _ in 0..3 {
        let r = arm
            .call(
                Method::Put,
                &device_path(la, &unique("pg")),
                Some(&json!({ "location": "westus2", "sku": { "name": "Edge" } })),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let list_fx = fixture(&format!("{DBE}2023-12-01/examples/DataBoxEdgeDeviceGetBySubscription.json"));
    let mut next = Some(format!(
        "/subscriptions/{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices?api-version=2023-12-01&$top=1",
        la.var("AZURE_SUBSCRIPTION_ID")
    ));
    let mut seen = 0;
    while let Some(url) = next {
        let r = arm.call(Method::Get, &url, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_shape(
            &list_fx["responses"]["200"]["body"],
            &r.body,
            &["/value/0/identity/principalId", "/value/0/identity/tenantId"],
        );
        seen += r.body["value"].as_array().unwrap().len();
        next = r.body["nextLink"].as_str().map(str::to_string);
    }
    assert!(seen >= 3);
    let by_rg = arm
        .call(Method::Get, &format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices", rg_path(la)), None)
        .await;
    assert!(by_rg.body["value"].as_array().unwrap().len() >= 3);
}

fn create_vault_body(la: &LocalAzure) -> Value {
    let fx = fixture(&format!("{KV}createVault.json"));
    let mut body = fx["parameters"]["parameters"].clone();
    body["properties"]["tenantId"] = json!(la.var("AZURE_TENANT_ID"));
    body["properties"]["accessPolicies"][0]["tenantId"] = json!(la.var("AZURE_TENANT_ID"));
    body["properties"]["accessPolicies"][0]["objectId"] = json!(la.var("EDGEVAULT_PRINCIPAL_ID"));
    body
}

#[tokio::test]
async fn vaults_follow_the_fixtures() {
    let la = shared();
    let arm = arm();
    let name = unique("vfx");
    let path = vault_path(la, &name);
    let sub = la.var("AZURE_SUBSCRIPTION_ID");
    let no_hsm = ["/properties/hsmPoolResourceId"];

    let check_fx = fixture(&format!("{KV}checkVaultNameAvailability.json"));
    let r = arm
        .call(
            Method::Post,
            &format!("/subscriptions/{sub}/providers/Microsoft.KeyVault/checkNameAvailability"),
            Some(&json!({ "name": name, "type": "Microsoft.KeyVault/vaults" })),
        )
        .await;
    assert_shape(&check_fx["responses"]["200"]["body"], &r.body, &[]);
    assert_eq!(r.body["nameAvailable"], true);

    let create_fx = fixture(&format!("{KV}createVault.json"));
    let r = arm.call(Method::Put, &path, Some(&create_vault_body(la))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_shape(&create_fx["responses"]["201"]["body"], &r.body, &no_hsm);
    assert_eq!(r.body["properties"]["vaultUri"], format!("https://{name}.vault.azure.net/"));
    // PUT again is an update.
    let r = arm.call(Method::Put, &path, Some(&create_vault_body(la))).await;
    assert_eq!(r.status, 200);
    // The fixture's updated vault had network rules and private endpoints set up beforehand.
    let preexisting =
        ["/properties/hsmPoolResourceId", "/properties/networkAcls", "/properties/privateEndpointConnections"];
    assert_shape(&create_fx["responses"]["200"]["body"], &r.body, &preexisting);

    let get_fx = fixture(&format!("{KV}getVault.json"));
    let r = arm.call(Method::Get, &path, None).await;
    assert_eq!(r.status, 200);
    assert_shape(&get_fx["responses"]["200"]["body"], &r.body, &no_hsm);

    let update_fx = fixture(&format!("{KV}updateVault.json"));
    let mut patch = update_fx["parameters"]["parameters"].clone();
    patch["properties"]["tenantId"] = json!(la.var("AZURE_TENANT_ID"));
    patch["properties"]["accessPolicies"] = create_vault_body(la)["properties"]["accessPolicies"].clone();
    let r = arm.call(Method::Patch, &path, Some(&patch)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The fixture's vault had network rules and private endpoints from before the PATCH.
    assert_shape(
        &update_fx["responses"]["200"]["body"],
        &r.body,
        &["/properties/hsmPoolResourceId", "/properties/networkAcls", "/properties/privateEndpointConnections"],
    );

    let ap_fx = fixture(&format!("{KV}updateAccessPoliciesAdd.json"));
    let mut ap = ap_fx["parameters"]["parameters"].clone();
    ap["properties"]["accessPolicies"][0]["tenantId"] = json!(la.var("AZURE_TENANT_ID"));
    let r = arm.call(Method::Put, &format!("{path}/accessPolicies/add"), Some(&ap)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_shape(&ap_fx["responses"]["200"]["body"], &r.body, &[]);
    let policies = arm.call(Method::Get, &path, None).await.body["properties"]["accessPolicies"].clone();
    assert_eq!(policies.as_array().unwrap().len(), 2);

    let second = unique("vfx");
    assert_eq!(arm.call(Method::Put, &vault_path(la, &second), Some(&create_vault_body(la))).await.status, 201);
    let list_fx = fixture(&format!("{KV}listVaultByResourceGroup.json"));
    let r = arm
        .call(
            Method::Get,
            &format!("{}/providers/Microsoft.KeyVault/vaults?api-version=2024-11-01&$top=1", rg_path(la)),
            None,
        )
        .await;
    assert_shape(&list_fx["responses"]["200"]["body"], &r.body, &["/value/0/properties/hsmPoolResourceId"]);
    assert!(r.body["nextLink"].as_str().is_some());

    // Delete → soft-deleted, visible under deletedVaults.
    let del_fx = fixture(&format!("{KV}deleteVault.json"));
    let r = arm.call(Method::Delete, &path, None).await;
    assert!(del_fx["responses"].get(r.status.to_string()).is_some(), "{}", r.status);
    assert_eq!(arm.call(Method::Get, &path, None).await.status, 404);
    let loc = create_vault_body(la)["location"].as_str().unwrap().to_string();
    let deleted_path =
        format!("/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{loc}/deletedVaults/{name}");
    let r = arm.call(Method::Get, &deleted_path, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_shape(&fixture(&format!("{KV}getDeletedVault.json"))["responses"]["200"]["body"], &r.body, &[]);
    let r =
        arm.call(Method::Get, &format!("/subscriptions/{sub}/providers/Microsoft.KeyVault/deletedVaults"), None).await;
    assert_shape(&fixture(&format!("{KV}listDeletedVaults.json"))["responses"]["200"]["body"], &r.body, &["/nextLink"]);

    // Recover brings it back with its access policies.
    let mut recover = json!({ "location": loc, "properties": { "createMode": "recover" } });
    recover["properties"]["tenantId"] = json!(la.var("AZURE_TENANT_ID"));
    let r = arm.call(Method::Put, &path, Some(&recover)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["properties"]["accessPolicies"].as_array().unwrap().len(), 2);

    // Purge (needs the purge action, which edgevault's identity is not granted by default).
    la.admin_post(
        "/admin/grants",
        json!({
            "principalId": la.var("EDGEVAULT_PRINCIPAL_ID"),
            "scope": format!("/subscriptions/{sub}"),
            "actions": ["Microsoft.KeyVault/locations/deletedVaults/purge/action"],
        }),
    )
    .await;
    assert_eq!(arm.call(Method::Delete, &path, None).await.status, 200);
    let purge_fx = fixture(&format!("{KV}purgeDeletedVault.json"));
    let r = arm.call(Method::Post, &format!("{deleted_path}/purge"), None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(purge_fx["responses"]["202"]["headers"]["Location"].is_string());
    let location = r.header("location").expect("Location header");
    let r = arm.call(Method::Get, &location, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(arm.call(Method::Get, &deleted_path, None).await.status, 404);
    let r = arm
        .call(
            Method::Post,
            &format!("/subscriptions/{sub}/providers/Microsoft.KeyVault/checkNameAvailability"),
            Some(&json!({ "name": name, "type": "Microsoft.KeyVault/vaults" })),
        )
        .await;
    assert_eq!(r.body["nameAvailable"], true);
}

#[tokio::test]
async fn locks_follow_the_fixtures() {
    let la = shared();
    let arm = arm();
    let name = unique("vlk");
    let path = vault_path(la, &name);
    assert_eq!(arm.call(Method::Put, &path, Some(&create_vault_body(la))).await.status, 201);
    let lock_path = format!("{path}/providers/Microsoft.Authorization/locks/keep?api-version=2020-05-01");

    let put_fx = fixture(&format!("{LOCKS}ManagementLocks_CreateOrUpdateAtScope.json"));
    let r = arm.call(Method::Put, &lock_path, Some(&put_fx["parameters"]["parameters"])).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_shape(&put_fx["responses"]["201"]["body"], &r.body, &[]);
    assert_eq!(r.body["id"], format!("{path}/providers/Microsoft.Authorization/locks/keep"));
    let r = arm
        .call(
            Method::Put,
            &lock_path,
            Some(&json!({ "properties": { "level": "CanNotDelete", "notes": "edgevault" } })),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_shape(&put_fx["responses"]["200"]["body"], &r.body, &[]);

    let r = arm.call(Method::Get, &lock_path, None).await;
    assert_shape(
        &fixture(&format!("{LOCKS}ManagementLocks_GetAtScope.json"))["responses"]["200"]["body"],
        &r.body,
        &[],
    );
    let r = arm
        .call(
            Method::Get,
            &format!("{}/providers/Microsoft.Authorization/locks?api-version=2020-05-01", rg_path(la)),
            None,
        )
        .await;
    assert_shape(
        &fixture(&format!("{LOCKS}ManagementLocks_ListAtScope.json"))["responses"]["200"]["body"],
        &r.body,
        &[],
    );
    assert!(r.body["value"].as_array().unwrap().iter().any(|l| l["name"] == "keep"));

    let r = arm.call(Method::Delete, &path, None).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "ScopeLocked");

    let del_fx = fixture(&format!("{LOCKS}ManagementLocks_DeleteAtScope.json"));
    let r = arm.call(Method::Delete, &lock_path, None).await;
    assert!(del_fx["responses"].get(r.status.to_string()).is_some(), "{}", r.status);
    assert_eq!(arm.call(Method::Delete, &path, None).await.status, 200);
}

#[tokio::test]
async fn mutations_are_recorded_in_the_activity_log() {
    let la = shared();
    let arm = arm();
    let name = unique("vact");
    let path = vault_path(la, &name);
    let before = la.admin_get("/admin/activity?after=0").await["last"].as_u64().unwrap();
    let r = arm.call(Method::Put, &path, Some(&create_vault_body(la))).await;
    assert_eq!(r.status, 201);
    let correlation = r.header("x-ms-correlation-request-id").unwrap();
    assert_eq!(arm.call(Method::Delete, &path, None).await.status, 200);
    let log = la.admin_get(&format!("/admin/activity?after={before}")).await;
    let entries: Vec<&Value> = log["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resourceId"].as_str().is_some_and(|id| id.ends_with(&name)))
        .collect();
    assert_eq!(entries.len(), 2, "{log:#}");
    assert_eq!(entries[0]["operationName"], "Microsoft.KeyVault/vaults/write");
    assert_eq!(entries[0]["status"], "Succeeded");
    assert_eq!(entries[0]["correlationId"], correlation.as_str());
    assert_eq!(entries[0]["principal"]["oid"], la.var("EDGEVAULT_PRINCIPAL_ID"));
    assert_eq!(entries[0]["httpRequest"]["method"], "PUT");
    assert_eq!(entries[1]["operationName"], "Microsoft.KeyVault/vaults/delete");
    assert!(entries[1]["sequenceNumber"].as_u64() > entries[0]["sequenceNumber"].as_u64());
}

/// `Microsoft.Resources` reads through the SDK pipeline, with the shapes of the 2022-12-01 examples
/// (`GetSubscriptions.json`, `GetTenants.json`, `GetProvider.json`) and `Resources_List`'s `$filter` / `$top`.
#[tokio::test]
async fn subscriptions_tenants_providers_and_resource_lists() {
    let la = shared();
    let arm = arm();
    let sub = la.var("AZURE_SUBSCRIPTION_ID");

    let r = arm.call(Method::Get, "/subscriptions?api-version=2022-12-01", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mine = r.body["value"].as_array().unwrap().iter().find(|s| s["subscriptionId"] == sub.as_str()).cloned();
    let mine = mine.expect("edgevault's identity sees the subscription it has a grant in");
    for key in
        ["id", "subscriptionId", "tenantId", "displayName", "state", "subscriptionPolicies", "authorizationSource"]
    {
        assert!(mine.get(key).is_some(), "{key} in {mine}");
    }
    assert_eq!(mine["id"], format!("/subscriptions/{sub}"));
    let one = arm.call(Method::Get, &format!("/subscriptions/{sub}?api-version=2022-12-01"), None).await;
    assert_eq!(one.body, mine, "Subscriptions – Get answers what the list holds");

    let r = arm.call(Method::Get, "/tenants?api-version=2022-12-01", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["value"][0]["tenantId"], la.var("AZURE_TENANT_ID"));
    assert_eq!(r.body["value"][0]["id"], format!("/tenants/{}", la.var("AZURE_TENANT_ID")));
    assert_eq!(r.body["value"][0]["tenantCategory"], "Home");

    let r = arm
        .call(
            Method::Get,
            &format!("/subscriptions/{sub}/providers/microsoft.databoxedge?api-version=2022-12-01"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["namespace"], "Microsoft.DataBoxEdge");
    assert_eq!(r.body["registrationState"], "Registered");
    let devices = r.body["resourceTypes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["resourceType"] == "dataBoxEdgeDevices")
        .cloned()
        .unwrap();
    assert_eq!(devices["apiVersions"][0], "2023-12-01");
    assert!(devices["locations"].as_array().unwrap().iter().any(|l| l == "West US 2"));
    let r = arm
        .call(Method::Get, &format!("/subscriptions/{sub}/providers/Microsoft.Nope?api-version=2022-12-01"), None)
        .await;
    assert_eq!((r.status, r.code()), (404, "InvalidResourceNamespace"));
    let r = arm.call(Method::Get, &format!("/subscriptions/{sub}/providers?api-version=2022-12-01"), None).await;
    let namespaces: Vec<&str> =
        r.body["value"].as_array().unwrap().iter().filter_map(|p| p["namespace"].as_str()).collect();
    assert!(
        namespaces.contains(&"Microsoft.KeyVault") && namespaces.contains(&"Microsoft.Authorization"),
        "{namespaces:?}"
    );
    // Registering needs the namespace's register action, which edgevault's identity does not have.
    let r = arm
        .call(
            Method::Post,
            &format!("/subscriptions/{sub}/providers/Microsoft.KeyVault/register?api-version=2022-12-01"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "AuthorizationFailed"), "{}", r.body);

    // Resources – List: two tagged vaults, by type, by tag (tags then left out), one page at a time.
    let tag = unique("t");
    let mut ids = Vec::new();
    for i in 0..2 {
        let path = vault_path(la, &unique(&format!("rl{i}")));
        let mut body = create_vault_body(la);
        body["tags"] = json!({ tag.as_str(): format!("v{i}") });
        assert_eq!(arm.call(Method::Put, &format!("{path}?api-version=2024-11-01"), Some(&body)).await.status, 201);
        ids.push(path);
    }
    let filter = format!("tagName eq '{tag}'");
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("$filter", &filter)
        .append_pair("$top", "1")
        .finish();
    let r = arm.call(Method::Get, &format!("/subscriptions/{sub}/resources?api-version=2022-12-01&{q}"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["value"].as_array().map(Vec::len), Some(1));
    assert!(r.body["value"][0].get("tags").is_none(), "a tag filter leaves tags out, as the spec says");
    let next = r.body["nextLink"].as_str().expect("a second page").to_string();
    let r2 = arm.call(Method::Get, next.strip_prefix("https://management.azure.com").unwrap(), None).await;
    assert_eq!(r2.body["value"].as_array().map(Vec::len), Some(1), "{}", r2.body);
    let mut seen = vec![r.body["value"][0]["id"].clone(), r2.body["value"][0]["id"].clone()];
    seen.sort_by_key(|v| v.to_string());
    let mut expected: Vec<Value> = ids.iter().map(|i| json!(i)).collect();
    expected.sort_by_key(|v| v.to_string());
    assert_eq!(seen, expected);
    let filter = format!("tagName eq '{tag}' and tagValue eq 'v1'");
    let q = form_urlencoded::Serializer::new(String::new()).append_pair("$filter", &filter).finish();
    let r = arm.call(Method::Get, &format!("{}/resources?api-version=2022-12-01&{q}", rg_path(la)), None).await;
    assert_eq!(r.body["value"].as_array().map(Vec::len), Some(1));
    assert_eq!(r.body["value"][0]["id"], ids[1].as_str());
    assert_eq!(r.body["value"][0]["type"], "Microsoft.KeyVault/vaults");
    let q = form_urlencoded::Serializer::new(String::new()).append_pair("$filter", "name gt 'x'").finish();
    let r = arm.call(Method::Get, &format!("/subscriptions/{sub}/resources?api-version=2022-12-01&{q}"), None).await;
    assert_eq!((r.status, r.code()), (400, "InvalidFilterInQueryString"));
    let r = arm
        .call(
            Method::Get,
            &format!("/subscriptions/{sub}/resourceGroups/no-such-rg/resources?api-version=2022-12-01"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "ResourceGroupNotFound"));
}

/// Resources – Move Resources (resources.json 2021-04-01, `Resources_MoveResources`): a vault moves to another
/// resource group with its tags, properties and `CanNotDelete` lock, its id changes, a tag filter finds it there;
/// a read-only lock on a group stops a move; the caller needs the move action.
#[tokio::test]
async fn a_vault_moves_to_another_resource_group_with_its_tags_and_lock() {
    let la = shared();
    let sub = la.var("AZURE_SUBSCRIPTION_ID").to_string();
    let mover = la.admin_post("/admin/principals", json!({"displayName": "mover"})).await;
    let oid = mover["objectId"].as_str().unwrap().to_string();
    la.admin_post(
        "/admin/grants",
        json!({"principalId": oid, "scope": format!("/subscriptions/{sub}"), "actions": ["*"]}),
    )
    .await;
    let arm = Arm::new(managed_identity(Some(azure_identity::UserAssignedId::ObjectId(oid.clone()))));
    let target = format!("/subscriptions/{sub}/resourceGroups/{}", unique("moved-to"));
    let r =
        arm.call(Method::Put, &format!("{target}?api-version=2022-09-01"), Some(&json!({"location": "westus2"}))).await;
    assert!(matches!(r.status, 200 | 201), "{}", r.body);

    let name = unique("mv");
    let path = vault_path(la, &name);
    let owner = unique("device");
    let mut body = create_vault_body(la);
    body["tags"] = json!({"edgevault-device": owner});
    assert_eq!(arm.call(Method::Put, &path, Some(&body)).await.status, 201);
    let lock = "providers/Microsoft.Authorization/locks/keep?api-version=2020-05-01";
    let level = json!({"properties": {"level": "CanNotDelete"}});
    assert_eq!(arm.call(Method::Put, &format!("{path}/{lock}"), Some(&level)).await.status, 201);
    let before = arm.call(Method::Get, &path, None).await.body;

    let move_path = format!("{}/moveResources?api-version=2021-04-01", rg_path(la));
    let request = json!({"resources": [path], "targetResourceGroup": target});
    let r = Arm::new(managed_identity(None)).call(Method::Post, &move_path, Some(&request)).await;
    assert_eq!((r.status, r.code()), (403, "AuthorizationFailed"), "edgevault may not move: {}", r.body);
    let r = arm.call(Method::Post, &move_path, Some(&request)).await;
    assert_eq!(r.status, 204, "{}", r.body);

    let moved = format!("{target}/providers/Microsoft.KeyVault/vaults/{name}");
    assert_eq!(arm.call(Method::Get, &path, None).await.status, 404, "the old id is gone");
    let after = arm.call(Method::Get, &moved, None).await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(after.body["id"], moved.as_str());
    assert_eq!((&after.body["tags"], &after.body["properties"]), (&before["tags"], &before["properties"]));
    assert_eq!(arm.call(Method::Get, &format!("{moved}/{lock}"), None).await.status, 200, "the lock moved with it");
    let filter = format!("tagName eq 'edgevault-device' and tagValue eq '{owner}'");
    let q = form_urlencoded::Serializer::new(String::new()).append_pair("$filter", &filter).finish();
    let r = arm.call(Method::Get, &format!("/subscriptions/{sub}/resources?api-version=2021-04-01&{q}"), None).await;
    let ids: Vec<&str> = r.body["value"].as_array().unwrap().iter().filter_map(|v| v["id"].as_str()).collect();
    assert_eq!(ids, [moved.as_str()], "{}", r.body);

    // Back again: not from a group it is not in; not while the target group has a read-only lock.
    let back = json!({"resources": [moved], "targetResourceGroup": rg_path(la)});
    let wrong_source = json!({"resources": [moved], "targetResourceGroup": target});
    let r = arm.call(Method::Post, &move_path, Some(&wrong_source)).await;
    assert_eq!((r.status, r.code()), (400, "ResourceNotInSourceResourceGroup"), "{}", r.body);
    let read_only = json!({"properties": {"level": "ReadOnly"}});
    let group_lock = format!("{target}/providers/Microsoft.Authorization/locks/frozen?api-version=2020-05-01");
    assert_eq!(arm.call(Method::Put, &group_lock, Some(&read_only)).await.status, 201);
    let r = arm.call(Method::Post, &format!("{target}/moveResources?api-version=2021-04-01"), Some(&back)).await;
    assert_eq!((r.status, r.code()), (409, "ScopeLocked"), "{}", r.body);
    assert_eq!(arm.call(Method::Get, &moved, None).await.status, 200, "nothing moved");
}
