//! A fleet written straight into local-azure with its bulk seed (`POST /admin/seed`, one transaction per chunk), as
//! activation would have left it: per device an identity, a vault owned by it (soft delete, purge protection, both
//! access policies), the lock, the CIK, the link in sync and the vault's audit logging (the storage account, its
//! lock, the diagnostic setting: `lifecycle::audit`'s own) — except the drift asked for. Benchmarks and the sweep's
//! tests through the host use it.

use anyhow::Context;
use serde_json::{Value, json};

use edgevault::azure::models::Vault;
use edgevault::lifecycle::audit::{self, AUDIT_LOCK_NOTES, AUDIT_SETTING_NAME};
use edgevault::lifecycle::{
    DEVICE_SECRET_PERMISSIONS, EDGEVAULT_SECRET_PERMISSIONS, LOCK_LEVEL, LOCK_NAME, LOCK_NOTES, OWNER_TAG,
    PRINCIPAL_TAG,
};
use edgevault::resource_id::ResourceId;

use crate::local_azure::LocalAzure;

/// Devices per seed request: each is one transaction, and its body must stay under local-azure's 8 MiB (about
/// 2.2 KiB a device with its audit account and setting).
pub const SEED_CHUNK: usize = 2000;

/// What a seeded device looks like to the sweep.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Healthy,
    LockMissing,
    SoftDeleted,
}

/// 80 % healthy, 10 % lock missing, 10 % soft-deleted vaults: the sweep benchmark's and tests' fleet.
pub fn kind(i: usize) -> Kind {
    match i % 10 {
        8 => Kind::LockMissing,
        9 => Kind::SoftDeleted,
        _ => Kind::Healthy,
    }
}

/// A deterministic GUID per device, so the seed can name the device's identity in its vault's access policy.
pub fn principal_of(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// Device `i`'s resource id in resource group `rg` (a resource group id) under `prefix`.
pub fn device_id(rg: &str, prefix: &str, i: usize) -> String {
    format!("{rg}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{prefix}-{i:06}")
}

/// Device `i`'s vault name (`prefix` keeps vault names of several fleets apart: they are global).
pub fn vault_name(prefix: &str, i: usize) -> String {
    format!("{prefix}v{i:06}")
}

/// Every device healthy: a fleet on which any work but the sweep's own inspection is someone else's.
pub fn all_healthy(_: usize) -> Kind {
    Kind::Healthy
}

/// The audit account and diagnostic setting edgevault makes for vault `vault_id` of device `device`
/// (`lifecycle::audit::ensure`: the first account name, its lock, the setting), as seed items.
fn audit_logging(vault_id: &str, device: &str, location: &str) -> (Value, Value, Value) {
    let vault: ResourceId = vault_id.parse().expect("a vault id");
    let device: ResourceId = device.parse().expect("a device id");
    let [name, _] = audit::account_names(&vault);
    let account_id = audit::account_id(&vault, &name);
    let observed = Vault { location: location.to_string(), ..Default::default() };
    let mut account = serde_json::to_value(audit::desired_account(&observed, &vault, &device)).expect("JSON");
    account["id"] = account_id.to_string().into();
    let setting = audit::desired_setting(&account_id);
    let setting = json!({"scope": vault_id, "name": AUDIT_SETTING_NAME,
        "properties": serde_json::to_value(setting.properties).expect("JSON")});
    let lock =
        json!({"scope": account_id.to_string(), "name": LOCK_NAME, "level": LOCK_LEVEL, "notes": AUDIT_LOCK_NOTES});
    (account, lock, setting)
}

/// The seed request for devices `range` of the fleet `prefix` in resource group `rg`, device `i` of kind `kind(i)`.
pub fn seed_body(
    la: &LocalAzure,
    rg: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
    kind: impl Fn(usize) -> Kind,
) -> Value {
    let location = la.var("AZURE_LOCATION");
    let tenant = la.var("AZURE_TENANT_ID");
    let edgevault = la.var("EDGEVAULT_PRINCIPAL_ID");
    let policy =
        |oid: &str, perms: &[&str]| json!({"tenantId": tenant, "objectId": oid, "permissions": {"secrets": perms}});
    let (mut devices, mut vaults, mut locks, mut secrets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut accounts, mut settings) = (Vec::new(), Vec::new());
    for i in range {
        let id = device_id(rg, prefix, i);
        let vault_name = vault_name(prefix, i);
        let vault_id = format!("{rg}/providers/Microsoft.KeyVault/vaults/{vault_name}");
        let principal = principal_of(i);
        let version = format!("{i:032x}");
        devices.push(json!({"id": id, "location": location, "sku": {"name": "Edge", "tier": "Standard"},
            "identity": {"principalId": principal},
            "extendedInformation": {"clientSecretStoreId": vault_id, "clientSecretStoreUrl": format!("https://{vault_name}.vault.azure.net"),
                "channelIntegrityKeyName": "ase-cik-bench", "channelIntegrityKeyVersion": version, "syncStatus": "KeyVaultSynced"}}));
        // The tags and policies are edgevault's own constants: a healthy seeded device must stay one `assess` finds
        // healthy when the rules grow (#17's principal tag and wider permissions once made every seeded device a
        // repair, and the sweep's tests and benchmarks measured the repairs).
        vaults.push(json!({"id": vault_id, "location": location, "tags": {OWNER_TAG: id, PRINCIPAL_TAG: principal},
            "properties": {"tenantId": tenant, "sku": {"family": "A", "name": "standard"},
              "accessPolicies": [policy(&principal, DEVICE_SECRET_PERMISSIONS), policy(edgevault, EDGEVAULT_SECRET_PERMISSIONS)],
              "enableSoftDelete": true, "softDeleteRetentionInDays": 90, "enablePurgeProtection": true, "enableRbacAuthorization": false},
            "softDeleted": kind(i) == Kind::SoftDeleted}));
        secrets.push(json!({"vault": vault_name, "name": "ase-cik-bench", "value": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "contentType": "application/octet-stream", "version": version}));
        if kind(i) == Kind::Healthy {
            locks.push(json!({"scope": vault_id, "name": LOCK_NAME, "level": LOCK_LEVEL, "notes": LOCK_NOTES}));
        }
        // Every live vault has its audit logging, so that a device's only drift is its kind's (a sweep reads it
        // for one vault in `AUDIT_CHECK_EVERY`: without it those would be `AuditSettingMissing` too).
        if kind(i) != Kind::SoftDeleted {
            let (account, lock, setting) = audit_logging(&vault_id, &id, location);
            accounts.push(account);
            locks.push(lock);
            settings.push(setting);
        }
    }
    json!({"devices": devices, "vaults": vaults, "locks": locks, "secrets": secrets,
           "storageAccounts": accounts, "diagnosticSettings": settings})
}

/// Seeds devices `range` of fleet `prefix` in resource group `rg`, in chunks: the benchmark's mix ([`kind`]).
pub fn seed(la: &LocalAzure, rg: &str, prefix: &str, range: std::ops::Range<usize>) -> anyhow::Result<()> {
    seed_with(la, rg, prefix, range, kind)
}

/// Seeds devices `range` of fleet `prefix` in resource group `rg`, in chunks, device `i` of kind `kind(i)`.
pub fn seed_with(
    la: &LocalAzure,
    rg: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
    kind: impl Fn(usize) -> Kind + Copy,
) -> anyhow::Result<()> {
    let mut from = range.start;
    while from < range.end {
        let to = (from + SEED_CHUNK).min(range.end);
        la.admin_post("/admin/seed", seed_body(la, rg, prefix, from..to, kind))
            .with_context(|| format!("seeding {prefix} {from}..{to}"))?;
        from = to;
    }
    Ok(())
}
