//! Durability: state written, local-azure killed with SIGKILL, restarted on the same data
//! directory (same ports, so the exported environment stays valid), state intact.

mod support;

use azure_core::http::Method;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use serde_json::json;
use support::*;

fn port(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn state_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalAzure::start(dir.path());
    first.export_env();
    let app = first.var("EDGEVAULT_PRINCIPAL_ID");
    let header = first.var("IDENTITY_HEADER");
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let (gw, admin) = (port(&first.gateway), port(first.admin.trim_start_matches("http://")));

    let arm = Arm::new(managed_identity(None));
    let name = unique("dur");
    let vault = format!("{}/providers/Microsoft.KeyVault/vaults/{name}", rg_path(&first));
    let device = format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}", rg_path(&first));
    assert_eq!(
        arm.call(Method::Put, &vault, Some(&vault_body(&first, &[(&app, ALL_SECRET_PERMS)], true))).await.status,
        201
    );
    let r = arm
        .call(
            Method::Put,
            &device,
            Some(
                &json!({ "location": "westus2", "sku": { "name": "Edge" }, "identity": { "type": "SystemAssigned" } }),
            ),
        )
        .await;
    let msi = r.body["identity"]["principalId"].as_str().unwrap().to_string();
    assert_eq!(
        arm.call(
            Method::Put,
            &format!("{vault}/providers/Microsoft.Authorization/locks/keep"),
            Some(&json!({ "properties": { "level": "CanNotDelete" } }))
        )
        .await
        .status,
        201
    );
    let options = || Some(SecretClientOptions { client_options: client_options(), ..Default::default() });
    let client =
        SecretClient::new(&format!("https://{name}.vault.azure.net/"), managed_identity(None), options()).unwrap();
    let set = set_value(&client, "cik", "durable").await.unwrap().into_model().unwrap();
    first.admin_post("/admin/clock/advance", json!({ "seconds": 3600 })).await;
    let last_seq = first.admin_get("/admin/activity?after=0").await["last"].as_u64().unwrap();

    first.kill();
    let second = LocalAzure::start_on(dir.path(), gw, admin);
    assert_eq!(second.var("IDENTITY_HEADER"), header);
    assert_eq!(std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(), ca);
    assert_eq!(second.admin_get("/admin/clock").await["offsetSeconds"], 3600);

    // Fresh clients (old pooled connections are dead), same environment.
    let arm = Arm::new(managed_identity(None));
    let r = arm.call(Method::Get, &vault, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["properties"]["enablePurgeProtection"], true);
    let r = arm.call(Method::Get, &device, None).await;
    assert_eq!(r.body["identity"]["principalId"], msi.as_str());
    assert_eq!(arm.call(Method::Delete, &vault, None).await.code(), "ScopeLocked");
    let client =
        SecretClient::new(&format!("https://{name}.vault.azure.net/"), managed_identity(None), options()).unwrap();
    let got = client.get_secret("cik", None).await.unwrap().into_model().unwrap();
    assert_eq!(got.value.as_deref(), Some("durable"));
    assert_eq!(got.id, set.id);
    // The device MSI can still get tokens.
    let device_cred = managed_identity(Some(azure_identity::UserAssignedId::ObjectId(msi)));
    use azure_core::credentials::TokenCredential;
    device_cred.get_token(&["https://vault.azure.net/.default"], None).await.unwrap();
    // The activity log continues where it stopped.
    let log = second.admin_get(&format!("/admin/activity?after={last_seq}")).await;
    assert!(log["value"].as_array().unwrap().iter().all(|e| e["sequenceNumber"].as_u64().unwrap() > last_seq));
    assert!(second.admin_get("/admin/activity?after=0").await["last"].as_u64().unwrap() >= last_seq);
}
