//! What the activation-key API reports for a device, derived from Azure on every call: the extended information's
//! sync status, the failure reason tag, and — once synced — a fresh activation key sealed with the device's CIK.

use super::device::{device_and_info, failure, is_legacy};
use super::error::Error;
use crate::activation_key::{ActivationKey, CikLocation, Claims};
use crate::azure::models::KeyVaultSyncStatus;
use crate::deps::Deps;
use crate::resource_id::ResourceId;

#[derive(Debug, Clone)]
pub enum KeyStatus {
    /// The request is queued.
    Pending,
    /// A worker is provisioning.
    Syncing,
    Succeeded {
        key: ActivationKey,
        expires_at: i64,
        vault_uri: String,
    },
    Failed {
        reason: String,
    },
    /// No activation key was ever requested for this device.
    NotRequested,
    /// A pre-integration device: edgevault does not manage it.
    Legacy,
}

/// `None` when the device does not exist.
pub async fn key_status(deps: &Deps, id: &ResourceId) -> Result<Option<KeyStatus>, Error> {
    let Some((device, info)) = device_and_info(deps, id).await? else { return Ok(None) };
    if is_legacy(&device, &info, deps.settings.cutover) {
        return Ok(Some(KeyStatus::Legacy));
    }
    let props = &info.properties;
    let status = match props.key_vault_sync_status {
        Some(KeyVaultSyncStatus::KeyVaultSyncPending) => KeyStatus::Pending,
        Some(KeyVaultSyncStatus::KeyVaultSyncing) => KeyStatus::Syncing,
        Some(KeyVaultSyncStatus::KeyVaultSyncFailed) => KeyStatus::Failed {
            reason: failure(&device).unwrap_or("synchronisation with the vault failed").to_string(),
        },
        Some(KeyVaultSyncStatus::KeyVaultSynced) => {
            let (Some(url), Some(name), Some(version)) = (
                props.link.client_secret_store_url.as_deref(),
                props.link.channel_integrity_key_name.as_deref(),
                props.link.channel_integrity_key_version.as_deref(),
            ) else {
                return Ok(Some(KeyStatus::Syncing));
            };
            let vault_uri = format!("{}/", url.trim_end_matches('/'));
            let Some(stored) = deps.secrets.get_cik(&vault_uri, name, Some(version)).await? else {
                return Ok(Some(KeyStatus::Failed { reason: "the CIK is missing from the vault".into() }));
            };
            let now = deps.now().unix_timestamp();
            let expires_at = now + deps.settings.activation_key_ttl.whole_seconds();
            let claims = Claims {
                resource_id: id.clone(),
                cik: CikLocation {
                    vault_uri: vault_uri.clone(),
                    secret_name: name.into(),
                    secret_version: version.into(),
                },
                issued_at: now,
                expires_at,
            };
            KeyStatus::Succeeded { key: ActivationKey::seal(&claims, &stored.cik), expires_at, vault_uri }
        }
        _ => KeyStatus::NotRequested,
    };
    Ok(Some(status))
}
