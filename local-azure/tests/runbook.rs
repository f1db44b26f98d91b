//! The manual recovery runbook (`docs/runbook/recover-deleted-vault.sh`, explained in `docs/RUNBOOK.md`) run with the
//! Azure CLI against local-azure without the app: a device provisioned as edgevault leaves it (identity, vault with
//! its access policies, lock, CIK, extended information), the vault unlocked and deleted, then the script. Every
//! assertion reads the result back from ARM or Key Vault.

mod support;

use std::path::PathBuf;

use azure_identity::UserAssignedId;
use azure_security_keyvault_secrets::SecretClient;
use serde_json::{Value, json};
use support::az::{Az, operator};
use support::*;

const LOCK: &str = "edgevault-do-not-delete";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/runbook/recover-deleted-vault.sh")
}

/// Runs the runbook as `az`'s logged-in operator; answers (exit code, stdout, stderr).
fn run_runbook(az: &Az, device: &str, operator: &str) -> (i32, String, String) {
    let bin_dir = support::az::az_binary().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = std::process::Command::new("bash")
        .arg(script())
        .args([device, operator])
        .env_clear()
        .envs(az.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PATH", path)
        .current_dir(az.config.path())
        .output()
        .expect("running the runbook");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

struct Provisioned {
    device: String,
    vault: String,
    principal: String,
    cik_version: String,
}

/// What edgevault leaves for a device, written in one seed request (no events follow).
async fn provisioned(la: &LocalAzure, name: &str) -> Provisioned {
    let rg = rg_path(la);
    let device = format!("{rg}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}");
    let vault_name = unique("rbkv");
    let vault = format!("{rg}/providers/Microsoft.KeyVault/vaults/{vault_name}");
    let principal = uuid::Uuid::new_v4().to_string();
    let cik_version = uuid::Uuid::new_v4().simple().to_string();
    let tenant = la.var("AZURE_TENANT_ID");
    let policy = |oid: &str, secrets: &[&str]| json!({ "tenantId": tenant, "objectId": oid, "permissions": { "secrets": secrets } });
    la.admin_post(
        "/admin/seed",
        json!({
            "devices": [{ "id": device, "location": "westus2", "sku": { "name": "Edge" }, "identity": { "principalId": principal },
                          "extendedInformation": { "clientSecretStoreId": vault, "clientSecretStoreUrl": format!("https://{vault_name}.vault.azure.net/"),
                                                   "channelIntegrityKeyName": "ase-cik-1", "channelIntegrityKeyVersion": cik_version,
                                                   "syncStatus": "KeyVaultSynced" } }],
            "vaults": [{ "id": vault, "location": "westus2", "tags": { "edgevault-device": device },
                         "properties": { "tenantId": tenant, "sku": { "family": "A", "name": "standard" }, "enablePurgeProtection": true,
                                         "accessPolicies": [policy(&principal, &["get", "set"]), policy(&la.var("EDGEVAULT_PRINCIPAL_ID"), &["get", "set", "list", "delete", "recover"])] } }],
            "locks": [{ "scope": vault, "name": LOCK, "level": "CanNotDelete" }],
            "secrets": [{ "vault": vault_name, "name": "ase-cik-1", "value": uuid::Uuid::new_v4().to_string(), "version": cik_version }],
        }),
    )
    .await;
    Provisioned { device, vault, principal, cik_version }
}

/// The accident: someone removes the lock and deletes the vault.
fn unlock_and_delete(az: &Az, vault: &str) {
    let name = vault.rsplit('/').next().unwrap();
    let group = vault.split('/').nth(4).unwrap();
    az.json(&[
        "lock",
        "delete",
        "-n",
        LOCK,
        "-g",
        group,
        "--resource",
        name,
        "--resource-type",
        "Microsoft.KeyVault/vaults",
    ]);
    az.json(&["keyvault", "delete", "-n", name]);
    assert_eq!(az.json(&["keyvault", "show-deleted", "-n", name])["properties"]["vaultId"], vault);
}

#[tokio::test]
async fn the_runbook_recovers_a_deleted_vault_with_its_lock_policy_cik_and_link() {
    let la = shared();
    let (az, oid) = operator(la).await;
    let p = provisioned(la, &unique("rbdev")).await;
    unlock_and_delete(&az, &p.vault);

    let (code, stdout, stderr) = run_runbook(&az, &p.device, &oid);
    assert_eq!(code, 0, "runbook failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("CIK {} intact", p.cik_version)), "{stdout}");

    let name = p.vault.rsplit('/').next().unwrap();
    let vault = az.json(&["keyvault", "show", "-n", name]);
    assert_eq!(vault["id"], p.vault, "the vault is back");
    assert_eq!(vault["properties"]["enablePurgeProtection"], true);
    let policies = vault["properties"]["accessPolicies"].as_array().unwrap();
    let device_policy = policies.iter().find(|x| x["objectId"] == p.principal.as_str()).expect("the device's policy");
    let mut secrets: Vec<&str> =
        device_policy["permissions"]["secrets"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    secrets.sort_unstable();
    assert_eq!(secrets, ["get", "set"]);
    assert!(policies.iter().all(|x| x["objectId"] != oid.as_str()), "the operator's temporary policy is removed");
    let locks = az.json(&["lock", "list", "-g", p.vault.split('/').nth(4).unwrap()]);
    let lock = locks
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == format!("{}/providers/Microsoft.Authorization/locks/{LOCK}", p.vault));
    assert_eq!(lock.expect("the lock is back")["level"], "CanNotDelete");
    let info = az.json(&[
        "rest",
        "-m",
        "post",
        "--url",
        &format!("https://management.azure.com{}/getExtendedInformation?api-version=2023-12-01", p.device),
    ]);
    assert_eq!(info["properties"]["keyVaultSyncStatus"], "KeyVaultSynced");
    assert_eq!(info["properties"]["channelIntegrityKeyVersion"], p.cik_version);

    // The device, as its own identity through the Rust SDK, reads its CIK again.
    let credential = managed_identity(Some(UserAssignedId::ObjectId(p.principal.clone())));
    let client = SecretClient::new(&format!("https://{name}.vault.azure.net/"), credential, None).unwrap();
    let secret = client.get_secret("ase-cik-1", None).await.expect("the device reads its CIK").into_model().unwrap();
    assert!(secret.id.unwrap().ends_with(&p.cik_version));
}

#[tokio::test]
async fn the_runbook_stops_when_the_vault_is_past_recovery() {
    let la = shared();
    let (az, oid) = operator(la).await;
    let p = provisioned(la, &unique("rbgone")).await;
    // Never deleted, so not in the soft-deleted list either: nothing the runbook may recover.
    let (code, stdout, stderr) = run_runbook(&az, &p.device, &oid);
    assert_eq!(code, 3, "{stdout}\n{stderr}");
    assert!(stderr.contains("cannot be recovered"), "{stderr}");
    let _ = p.principal;
}
