//! The Key Vault lifecycle of a Stack Edge device, as reconcilers: each function observes Azure and makes it match
//! what the device should have, so a duplicate, replayed or concurrent message changes nothing.
//!
//! - [`provision`]: identity → vault → access policies → lock → CIK → extended information.
//! - [`recovery`]: a deleted vault is recovered from soft delete and re-provisioned.
//! - [`sweep`]: the periodic inspection of every device in scope.
//! - [`status`]: what the activation-key API reports for a device.
//!
//! What edgevault owns is marked in Azure, not in a database: the vault's `edgevault-device` tag names its device,
//! the lock has a fixed name, and the device's extended information links the vault and the CIK.

pub mod provision;
pub mod recovery;
pub mod status;
pub mod sweep;

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::azure::models::{AccessPolicy, Device, ExtendedInfo, Sku, Vault, VaultProperties};
use crate::config::Settings;
use crate::resource_id::{ResourceId, VAULT_TYPE};
use crate::vault_name::VaultName;

/// Tag on a vault naming the device (resource id) it belongs to.
pub const OWNER_TAG: &str = "edgevault-device";
/// Tag on a device holding the reason of its last failed synchronisation, shown by the status API.
pub const ERROR_TAG: &str = "edgevault-sync-error";
/// The name of the `CanNotDelete` lock edgevault puts on each vault.
pub const LOCK_NAME: &str = "edgevault-do-not-delete";
pub const LOCK_NOTES: &str = "Holds the Channel Integrity Key of an Azure Stack Edge device; managed by edgevault.";
/// Soft-delete retention of every vault edgevault creates (the maximum Key Vault allows).
pub const RETENTION_DAYS: u32 = 90;
/// Secret permissions of the device's identity: read its CIK, nothing else.
pub const DEVICE_SECRET_PERMISSIONS: &[&str] = &["get"];
/// Secret permissions of edgevault's identity: read and write CIKs and recover a deleted one. Never `purge`.
pub const EDGEVAULT_SECRET_PERMISSIONS: &[&str] = &["get", "set", "recover"];

/// Whether the device predates the integration: no vault linked and created before the cut-over. Such a device is
/// reported as legacy and never changed. A device whose creation time is unknown counts as legacy when a cut-over
/// is configured: not touching a device is the safe mistake.
pub fn is_legacy(device: &Device, info: &ExtendedInfo, cutover: Option<time::OffsetDateTime>) -> bool {
    let Some(cutover) = cutover else { return false };
    if info.properties.link.client_secret_store_id.is_some() {
        return false;
    }
    match device
        .created_at()
        .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
    {
        Some(created) => created < cutover,
        None => true,
    }
}

/// The vault id for `name` in the device's subscription and resource group.
pub fn vault_id(device: &ResourceId, name: &VaultName) -> ResourceId {
    ResourceId::new(device.subscription(), device.resource_group().unwrap_or_default(), VAULT_TYPE, name.as_str())
}

/// The CIK's secret name: `ase-cik-<guid>`, the GUID derived from device and vault so a retried provisioning finds
/// the secret it may already have written instead of minting a second CIK.
pub fn cik_secret_name(device: &ResourceId, vault: &ResourceId) -> String {
    let digest = Sha256::digest(format!("{}|{}", device, vault).to_ascii_lowercase().as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}{}-{}-{}-{}-{}",
        crate::activation_key::CIK_SECRET_PREFIX,
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The access policies every device vault must have.
pub fn required_policies(settings: &Settings, device_principal: &str) -> Vec<AccessPolicy> {
    vec![
        AccessPolicy::secrets(&settings.tenant_id, device_principal, DEVICE_SECRET_PERMISSIONS),
        AccessPolicy::secrets(&settings.tenant_id, &settings.principal_id, EDGEVAULT_SECRET_PERMISSIONS),
    ]
}

/// The vault edgevault creates for a device.
pub fn desired_vault(settings: &Settings, device: &Device, device_principal: &str) -> Vault {
    Vault {
        location: device.location.clone(),
        tags: BTreeMap::from([(OWNER_TAG.to_string(), device.id.clone())]),
        properties: VaultProperties {
            tenant_id: settings.tenant_id.clone(),
            sku: Sku::standard(),
            access_policies: required_policies(settings, device_principal),
            enable_soft_delete: Some(true),
            soft_delete_retention_in_days: Some(RETENTION_DAYS),
            enable_purge_protection: Some(true),
            enable_rbac_authorization: Some(false),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Whether `tags` name `device` as the owner (ARM ids compare case-insensitively).
pub fn owned_by(tags: &BTreeMap<String, String>, device: &ResourceId) -> bool {
    tags.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(OWNER_TAG))
        .and_then(|(_, v)| v.parse::<ResourceId>().ok())
        .is_some_and(|owner| &owner == device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::models::{ExtendedInfoProperties, SystemData, VaultLink};

    fn device(created: Option<&str>) -> Device {
        Device {
            id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d".into(),
            name: "d".into(),
            system_data: created.map(|c| SystemData { created_at: Some(c.into()) }),
            ..Default::default()
        }
    }

    #[test]
    fn legacy_means_unlinked_and_created_before_the_cutover() {
        let cutover = Some(time::macros::datetime!(2026-06-01 0:00 UTC));
        let unlinked = ExtendedInfo::default();
        let linked = ExtendedInfo {
            properties: ExtendedInfoProperties {
                link: VaultLink { client_secret_store_id: Some("/v".into()), ..Default::default() },
                ..Default::default()
            },
        };
        assert!(is_legacy(&device(Some("2025-01-01T00:00:00Z")), &unlinked, cutover));
        assert!(!is_legacy(&device(Some("2026-07-01T00:00:00Z")), &unlinked, cutover));
        assert!(!is_legacy(&device(Some("2025-01-01T00:00:00Z")), &linked, cutover));
        assert!(is_legacy(&device(None), &unlinked, cutover), "unknown age is left alone");
        assert!(!is_legacy(&device(Some("2025-01-01T00:00:00Z")), &unlinked, None), "no cut-over, no legacy");
    }

    #[test]
    fn cik_names_are_guids_stable_per_device_and_vault() {
        let d: ResourceId = device(None).id.parse().unwrap();
        let v1 = vault_id(&d, &VaultName::parse("one").unwrap());
        let v2 = vault_id(&d, &VaultName::parse("two").unwrap());
        let name = cik_secret_name(&d, &v1);
        assert_eq!(name, cik_secret_name(&d, &v1));
        assert_ne!(name, cik_secret_name(&d, &v2));
        let guid = name.strip_prefix("ase-cik-").unwrap();
        assert_eq!(guid.split('-').map(str::len).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
    }

    #[test]
    fn ownership_is_read_from_the_tag_case_insensitively() {
        let d: ResourceId = device(None).id.parse().unwrap();
        let tags = BTreeMap::from([(
            "Edgevault-Device".to_string(),
            d.to_string().to_uppercase().replace("SUBSCRIPTIONS", "subscriptions"),
        )]);
        assert!(owned_by(&tags, &d));
        assert!(!owned_by(&BTreeMap::new(), &d));
    }
}
