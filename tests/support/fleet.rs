//! A fleet written straight into local-azure with its bulk seed (`POST /admin/seed`, one transaction per chunk), as
//! activation would have left it: per device an identity, a vault owned by it (soft delete, purge protection, both
//! access policies), the lock, the CIK and the link in sync — except the drift asked for. Benchmarks and the
//! sweep's tests through the host use it.

use anyhow::Context;
use serde_json::{Value, json};

use edgevault::lifecycle::{
    DEVICE_SECRET_PERMISSIONS, EDGEVAULT_SECRET_PERMISSIONS, LOCK_LEVEL, LOCK_NAME, LOCK_NOTES, OWNER_TAG,
    PRINCIPAL_TAG,
};

use crate::local_azure::LocalAzure;

/// Devices per seed request: each is one transaction, and its body must stay under local-azure's 8 MiB.
pub const SEED_CHUNK: usize = 2000;

/// What a seeded device looks like to the sweep.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Healthy,
    LockMissing,
    SoftDeleted,
}

/// 80 % healthy, 10 % lock missing, 10 % soft-deleted vaults.
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

/// The seed request for devices `range` of the fleet `prefix` in resource group `rg`.
pub fn seed_body(la: &LocalAzure, rg: &str, prefix: &str, range: std::ops::Range<usize>) -> Value {
    let location = la.var("AZURE_LOCATION");
    let tenant = la.var("AZURE_TENANT_ID");
    let edgevault = la.var("EDGEVAULT_PRINCIPAL_ID");
    let policy =
        |oid: &str, perms: &[&str]| json!({"tenantId": tenant, "objectId": oid, "permissions": {"secrets": perms}});
    let (mut devices, mut vaults, mut locks, mut secrets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
    }
    json!({"devices": devices, "vaults": vaults, "locks": locks, "secrets": secrets})
}

/// Seeds devices `range` of fleet `prefix` in resource group `rg`, in chunks.
pub fn seed(la: &LocalAzure, rg: &str, prefix: &str, range: std::ops::Range<usize>) -> anyhow::Result<()> {
    let mut from = range.start;
    while from < range.end {
        let to = (from + SEED_CHUNK).min(range.end);
        la.admin_post("/admin/seed", seed_body(la, rg, prefix, from..to))
            .with_context(|| format!("seeding {prefix} {from}..{to}"))?;
        from = to;
    }
    Ok(())
}
