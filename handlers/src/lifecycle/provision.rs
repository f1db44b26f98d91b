//! Provisioning as a reconciler: make the device's identity, vault, access policies, lock, CIK and extended
//! information what they should be, writing only what differs. Running it twice, or after a crash between any two
//! steps, converges on the same vault and the same CIK.

use crate::activation_key::Cik;
use crate::azure::models::{Device, ExtendedInfo, ExtendedInfoPatch, KeyVaultSyncStatus, Vault, VaultLink};
use crate::deps::Deps;
use crate::error::FunctionError;
use crate::resource_id::ResourceId;
use crate::vault_name::VaultName;

use super::{
    ERROR_TAG, LOCK_NAME, LOCK_NOTES, RETENTION_DAYS, cik_secret_name, desired_vault, owned_by, required_policies,
    vault_id,
};

/// What a device ends up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub vault_id: ResourceId,
    pub vault_uri: String,
    pub cik_name: String,
    pub cik_version: String,
    /// A new CIK version was written (first activation, or the linked one was lost).
    pub cik_created: bool,
}

/// Makes sure the device has its system-assigned identity; returns its principal id.
pub async fn ensure_identity(deps: &Deps, id: &ResourceId, device: &Device) -> Result<String, FunctionError> {
    if let Some(principal) = device.principal_id() {
        return Ok(principal.to_string());
    }
    let updated = deps.devices.enable_identity(id).await?;
    tracing::info!(device = %id, "enabled the system-assigned identity");
    updated.principal_id().map(str::to_string).ok_or_else(|| FunctionError::Permanent {
        code: "IdentityNotCreated",
        message: format!("enabling the identity of {id} returned no principal id"),
    })
}

/// The device and its extended information, read concurrently (they are independent). `None` if the device no
/// longer exists.
pub async fn device_and_info(deps: &Deps, id: &ResourceId) -> Result<Option<(Device, ExtendedInfo)>, FunctionError> {
    let (device, info) = tokio::join!(deps.devices.get_device(id), deps.devices.get_extended_info(id));
    match (device?, info) {
        (None, _) => Ok(None),
        (Some(_), Err(err)) if err.is_not_found() => Ok(None),
        (Some(device), info) => Ok(Some((device, info?))),
    }
}

/// Provisions `id`'s vault. `requested` is the vault name from the activation request (custom or default); without
/// it the name linked in the extended information is used. With `mark_syncing` the device is marked
/// `KeyVaultSyncing` while the work goes on. `None` if the device no longer exists.
///
/// Calls that do not depend on each other run concurrently — the device reads with the requested vault's read, the
/// syncing mark beside everything up to the final link write, the lock beside the access policies and the CIK — so
/// an activation costs about the sum of the calls that must follow one another (see docs/BENCHMARKS.md).
pub async fn provision(
    deps: &Deps,
    id: &ResourceId,
    requested: Option<&VaultName>,
    mark_syncing: bool,
) -> Result<Option<Provisioned>, FunctionError> {
    let mark =
        async { if mark_syncing { mark_status(deps, id, KeyVaultSyncStatus::KeyVaultSyncing).await } else { Ok(()) } };
    let (marked, prepared) = tokio::join!(mark, prepare(deps, id, requested));
    let Some((device, info, provisioned)) = prepared? else {
        tracing::info!(device = %id, "device no longer exists; nothing to provision");
        return Ok(None);
    };
    // The link is published only after the syncing mark has landed, so the mark can never overwrite it.
    marked?;
    // A syncing mark changed the status after `info` was read, so the final write is due whatever `info` says.
    sync_extended_info(deps, id, &info, &provisioned, mark_syncing).await?;
    clear_error(deps, id, &device).await?;
    Ok(Some(provisioned))
}

/// Everything up to the link: identity, vault, access policies, lock and CIK.
async fn prepare(
    deps: &Deps,
    id: &ResourceId,
    requested: Option<&VaultName>,
) -> Result<Option<(Device, ExtendedInfo, Provisioned)>, FunctionError> {
    // A requested name names the vault before the device is read, so its read joins the device reads. (A device
    // already linked to that name gets the same id; one linked elsewhere is refused below, and the read is unused.)
    let early_id = requested.map(|name| vault_id(id, name));
    let early_read = async {
        match &early_id {
            Some(vault) => deps.vaults.get_vault(vault).await.map(Some),
            None => Ok(None),
        }
    };
    let (read, early_vault) = tokio::join!(device_and_info(deps, id), early_read);
    let Some((device, info)) = read? else { return Ok(None) };
    let principal = ensure_identity(deps, id, &device).await?;
    let vault_id = target_vault(id, &info, requested)?;
    let known = match early_vault? {
        Some(vault) if early_id.as_ref() == Some(&vault_id) => Some(vault),
        _ => None,
    };
    let (vault, created) = ensure_vault(deps, id, &device, &principal, &vault_id, known).await?;
    let vault_uri =
        vault.properties.vault_uri.clone().unwrap_or_else(|| format!("https://{}.vault.azure.net/", vault.name));
    // The CIK write needs edgevault's access policy in place; the lock needs only the vault.
    let cik = async {
        ensure_policies(deps, &vault_id, &vault, &principal).await?;
        ensure_cik(deps, id, &vault_id, &vault_uri, &info).await
    };
    let (locked, cik) = tokio::join!(ensure_lock(deps, &vault_id, created), cik);
    locked?;
    let (cik_name, cik_version, cik_created) = cik?;
    Ok(Some((device, info, Provisioned { vault_id, vault_uri, cik_name, cik_version, cik_created })))
}

/// The vault the device should use: the one already linked, or the requested name. A request for a different name
/// than the linked vault is refused rather than silently given a second vault.
fn target_vault(
    id: &ResourceId,
    info: &ExtendedInfo,
    requested: Option<&VaultName>,
) -> Result<ResourceId, FunctionError> {
    let linked =
        info.properties.link.client_secret_store_id.as_deref().map(str::parse::<ResourceId>).transpose().map_err(
            |e| FunctionError::Permanent {
                code: "LinkedVaultInvalid",
                message: format!("the linked vault id is invalid: {e}"),
            },
        )?;
    match (linked, requested) {
        (Some(linked), Some(name)) if !linked.name().unwrap_or_default().eq_ignore_ascii_case(name.as_str()) => {
            Err(FunctionError::Permanent {
                code: "VaultAlreadyLinked",
                message: format!("{id} already uses vault {linked}; a device has one vault for life"),
            })
        }
        (Some(linked), _) => Ok(linked),
        (None, Some(name)) => Ok(vault_id(id, name)),
        (None, None) => Ok(vault_id(id, &VaultName::default_for(id, 0))),
    }
}

/// Finds, recovers or creates the vault. `known` is the vault's read when it was already made (`Some(None)`: it
/// does not exist).
async fn ensure_vault(
    deps: &Deps,
    id: &ResourceId,
    device: &Device,
    principal: &str,
    vault_id: &ResourceId,
    known: Option<Option<Vault>>,
) -> Result<(Vault, bool), FunctionError> {
    let desired = desired_vault(&deps.settings, device, principal);
    let existing = match known {
        Some(read) => read,
        None => deps.vaults.get_vault(vault_id).await?,
    };
    if let Some(vault) = existing {
        if !owned_by(&vault.tags, id) {
            return Err(FunctionError::Permanent {
                code: "VaultNotOwned",
                message: format!("vault {vault_id} exists and does not belong to {id}; choose another name"),
            });
        }
        let protected = vault.properties.enable_soft_delete != Some(false)
            && vault.properties.enable_purge_protection == Some(true);
        if protected {
            return Ok((vault, false));
        }
        // Purge protection can only be turned on; re-PUT the vault with it (and keep its other policies).
        let mut update = desired;
        update.properties.access_policies = vault.properties.access_policies.clone();
        update.properties.soft_delete_retention_in_days =
            vault.properties.soft_delete_retention_in_days.or(Some(RETENTION_DAYS));
        tracing::warn!(vault = %vault_id, "vault lacked soft delete or purge protection; turning them on");
        return Ok((deps.vaults.put_vault(vault_id, &update).await?, false));
    }
    // Created without first looking for a soft-deleted vault of that name: Azure refuses the create with a 409
    // when one holds the name, and only then is it worth a read. A first activation saves a round trip.
    let err = match deps.vaults.put_vault(vault_id, &desired).await {
        Ok(vault) => {
            tracing::info!(vault = %vault_id, "created the vault");
            return Ok((vault, true));
        }
        Err(err) if err.status == Some(409) => err,
        Err(err) => return Err(err.into()),
    };
    let name = vault_id.name().unwrap_or_default();
    match deps.vaults.get_deleted_vault(vault_id.subscription(), &device.location, name).await? {
        Some(deleted) if owned_by(&deleted.properties.tags, id) => {
            tracing::info!(vault = %vault_id, "recovering the device's soft-deleted vault");
            recover_or_find(deps, vault_id, &device.location).await.map(|vault| (vault, false))
        }
        Some(_) => Err(FunctionError::Permanent {
            code: "VaultNameReserved",
            message: format!("a soft-deleted vault named {name} that is not this device's reserves the name"),
        }),
        None => Err(FunctionError::Permanent {
            code: "VaultNameUnavailable",
            message: format!("vault name {name} is taken: {}", err.message),
        }),
    }
}

/// Recovers a soft-deleted vault. When the recovery is refused because the vault is no longer soft-deleted — another
/// worker (the `VaultDeleted` one, say) recovered it first — the recovered vault is what was wanted.
pub async fn recover_or_find(deps: &Deps, vault_id: &ResourceId, location: &str) -> Result<Vault, FunctionError> {
    match deps.vaults.recover_vault(vault_id, location, &deps.settings.tenant_id).await {
        Ok(vault) => Ok(vault),
        Err(err) if !err.retryable() => match deps.vaults.get_vault(vault_id).await? {
            Some(vault) => {
                tracing::info!(vault = %vault_id, "the vault was recovered meanwhile");
                Ok(vault)
            }
            None => Err(err.into()),
        },
        Err(err) => Err(err.into()),
    }
}

async fn ensure_policies(
    deps: &Deps,
    vault_id: &ResourceId,
    vault: &Vault,
    principal: &str,
) -> Result<(), FunctionError> {
    let missing: Vec<_> = required_policies(&deps.settings, principal)
        .into_iter()
        .filter(|want| !vault.properties.access_policies.iter().any(|have| have.covers(want)))
        .collect();
    if !missing.is_empty() {
        deps.vaults.add_access_policies(vault_id, &missing).await?;
        tracing::info!(vault = %vault_id, added = missing.len(), "added access policies");
    }
    Ok(())
}

/// Makes sure the vault has its lock; a vault this call just `created` cannot have one, so it is not looked up.
async fn ensure_lock(deps: &Deps, vault_id: &ResourceId, created: bool) -> Result<(), FunctionError> {
    let present = !created
        && deps.locks.get_lock(vault_id, LOCK_NAME).await?.is_some_and(|l| l.properties.level == "CanNotDelete");
    if !present {
        deps.locks.put_lock(vault_id, LOCK_NAME, LOCK_NOTES).await?;
        tracing::info!(vault = %vault_id, "locked the vault against deletion");
    }
    Ok(())
}

/// Finds the device's CIK in the vault, or writes one. The linked version is kept when it is intact and enabled.
async fn ensure_cik(
    deps: &Deps,
    id: &ResourceId,
    vault_id: &ResourceId,
    vault_uri: &str,
    info: &ExtendedInfo,
) -> Result<(String, String, bool), FunctionError> {
    let props = &info.properties;
    let linked_here = props.link.vault_id().as_ref() == Some(vault_id);
    let name = match (&props.link.channel_integrity_key_name, linked_here) {
        (Some(name), true) => name.clone(),
        _ => cik_secret_name(id, vault_id),
    };
    let version = if linked_here { props.link.channel_integrity_key_version.as_deref() } else { None };
    // Read first even in a vault this call just created: it costs nothing on the critical path (the lock PUT runs
    // beside it), and it lets the Key Vault client learn the vault's authentication challenge on a read. The SDK
    // discovers a challenge by sending the first request without its body; were that first request the write, a
    // retried attempt could go out with a `null` body and be refused as a 400 (seen under fault injection).
    if let Some(stored) = deps.secrets.get_cik(vault_uri, &name, version).await?
        && stored.enabled
    {
        return Ok((name, stored.version, false));
    }
    let cik = Cik::generate();
    let version = deps.secrets.set_cik(vault_uri, &name, &cik).await?;
    tracing::info!(device = %id, secret = %name, "stored a new CIK version");
    Ok((name, version, true))
}

async fn sync_extended_info(
    deps: &Deps,
    id: &ResourceId,
    info: &ExtendedInfo,
    provisioned: &Provisioned,
    force: bool,
) -> Result<(), FunctionError> {
    let patch = ExtendedInfoPatch {
        link: VaultLink {
            client_secret_store_id: Some(provisioned.vault_id.to_string()),
            client_secret_store_url: Some(provisioned.vault_uri.trim_end_matches('/').to_string()),
            channel_integrity_key_name: Some(provisioned.cik_name.clone()),
            channel_integrity_key_version: Some(provisioned.cik_version.clone()),
        },
        sync_status: Some(KeyVaultSyncStatus::KeyVaultSynced),
    };
    let in_sync =
        info.properties.link.same_as(&patch.link) && info.properties.key_vault_sync_status == patch.sync_status;
    if force || !in_sync {
        deps.devices.update_extended_info(id, &patch).await?;
        tracing::info!(device = %id, "extended information synced");
    }
    Ok(())
}

async fn clear_error(deps: &Deps, id: &ResourceId, device: &Device) -> Result<(), FunctionError> {
    if device.tags.keys().any(|k| k.eq_ignore_ascii_case(ERROR_TAG)) {
        let tags = device
            .tags
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(ERROR_TAG))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        deps.devices.set_device_tags(id, &tags).await?;
    }
    Ok(())
}

/// Records a failed synchronisation where the status API and the portal see it: `KeyVaultSyncFailed` in the
/// extended information and the reason in the device's `edgevault-sync-error` tag.
pub async fn mark_failed(deps: &Deps, id: &ResourceId, reason: &str) -> Result<(), FunctionError> {
    let Some(device) = deps.devices.get_device(id).await? else { return Ok(()) };
    let patch = ExtendedInfoPatch { sync_status: Some(KeyVaultSyncStatus::KeyVaultSyncFailed), ..Default::default() };
    deps.devices.update_extended_info(id, &patch).await?;
    let mut tags = device.tags.clone();
    // Tag values are limited to 256 characters.
    tags.insert(ERROR_TAG.to_string(), reason.chars().take(256).collect());
    deps.devices.set_device_tags(id, &tags).await?;
    Ok(())
}

/// Sets the device's sync status (pending / syncing) without touching the links.
pub async fn mark_status(deps: &Deps, id: &ResourceId, status: KeyVaultSyncStatus) -> Result<(), FunctionError> {
    let patch = ExtendedInfoPatch { sync_status: Some(status), ..Default::default() };
    deps.devices.update_extended_info(id, &patch).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Provisioning against the in-memory Azure: what a device ends up with, that a second run writes nothing, and
    //! the vault-name cases. Crashes, faults and the real services are covered end to end under `tests/`.

    use std::sync::Arc;

    use super::*;
    use crate::azure::fake::{FakeAzure, key, settings};
    use crate::lifecycle::OWNER_TAG;
    use crate::resource_id::VAULT_TYPE;

    async fn run(
        azure: &Arc<FakeAzure>,
        id: &ResourceId,
        requested: Option<&str>,
    ) -> Result<Provisioned, FunctionError> {
        let name = requested.map(|n| VaultName::parse(n).unwrap());
        Ok(provision(&azure.deps(settings()), id, name.as_ref(), true).await?.expect("the device exists"))
    }

    #[tokio::test]
    async fn a_new_device_gets_identity_vault_policies_lock_cik_and_link_and_a_second_run_writes_nothing() {
        let azure = FakeAzure::new();
        let id = azure.add_device("d1", false);
        let done = run(&azure, &id, Some("kv-d1")).await.unwrap();
        assert!(done.cik_created);
        {
            let state = azure.state();
            let device = &state.devices[&key(&id)];
            let principal = device.principal_id().expect("the identity was enabled");
            let vault = &state.vaults[&key(&done.vault_id)];
            assert!(owned_by(&vault.tags, &id));
            assert_eq!(vault.properties.enable_soft_delete, Some(true));
            assert_eq!(vault.properties.enable_purge_protection, Some(true));
            for want in required_policies(&settings(), principal) {
                assert!(vault.properties.access_policies.iter().any(|p| p.covers(&want)), "{want:?} missing");
            }
            assert!(state.locks.contains_key(&key(&format!("{}/{LOCK_NAME}", done.vault_id))));
            let link = &state.infos[&key(&id)].properties;
            assert_eq!(link.key_vault_sync_status, Some(KeyVaultSyncStatus::KeyVaultSynced));
            assert_eq!(link.link.vault_id(), Some(done.vault_id.clone()));
            assert_eq!(link.link.channel_integrity_key_version.as_deref(), Some(done.cik_version.as_str()));
        }
        azure.state().calls.clear();
        let again = provision(&azure.deps(settings()), &id, None, false).await.unwrap().unwrap();
        assert_eq!(again, Provisioned { cik_created: false, ..done }, "same vault, same CIK version");
        assert!(azure.writes().is_empty(), "a provisioned device needs no write: {:?}", azure.writes());
    }

    #[tokio::test]
    async fn a_vault_that_lost_its_lock_and_cik_gets_them_back_and_the_device_the_new_version() {
        let azure = FakeAzure::new();
        let (id, vault_id) = azure.add_healthy("d1");
        let old_version = azure.state().infos[&key(&id)].properties.link.channel_integrity_key_version.clone();
        {
            let mut state = azure.state();
            state.locks.clear();
            state.ciks.clear();
        }
        let done = run(&azure, &id, None).await.unwrap();
        assert_eq!(done.vault_id, vault_id);
        assert!(done.cik_created);
        let state = azure.state();
        assert_eq!(state.locks.len(), 1);
        let linked = state.infos[&key(&id)].properties.link.channel_integrity_key_version.clone();
        assert_eq!(linked.as_deref(), Some(done.cik_version.as_str()));
        assert_ne!(linked, old_version);
    }

    #[tokio::test]
    async fn the_devices_own_soft_deleted_vault_is_recovered_and_a_name_held_by_another_is_refused() {
        let azure = FakeAzure::new();
        let (id, vault_id) = azure.add_healthy("d1");
        azure.soft_delete(&vault_id);
        // The device forgot its link (e.g. re-created): asking for the name again recovers its own vault.
        azure.state().infos.clear();
        let done = run(&azure, &id, Some("kv-d1")).await.unwrap();
        assert_eq!(done.vault_id, vault_id);
        assert!(azure.state().vaults.contains_key(&key(&vault_id)), "recovered, not re-created");
        assert!(azure.writes().iter().any(|w| w.starts_with("recover vault")));

        let other = azure.add_device("d2", true);
        let (_, theirs) = azure.add_healthy("d3");
        azure.soft_delete(&theirs);
        match run(&azure, &other, Some("kv-d3")).await {
            Err(FunctionError::Permanent { code, .. }) => assert_eq!(code, "VaultNameReserved"),
            other => panic!("expected VaultNameReserved, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_live_vault_of_another_device_is_refused_and_left_as_it_was() {
        let azure = FakeAzure::new();
        let (_, theirs) = azure.add_healthy("d1");
        let id = azure.add_device("d2", true);
        let before = azure.state().vaults[&key(&theirs)].clone();
        match run(&azure, &id, Some("kv-d1")).await {
            Err(FunctionError::Permanent { code, .. }) => assert_eq!(code, "VaultNotOwned"),
            other => panic!("expected VaultNotOwned, got {other:?}"),
        }
        let state = azure.state();
        assert_eq!(state.vaults[&key(&theirs)], before);
        assert_eq!(state.vaults.len(), 1, "no second vault");
        assert_eq!(
            ResourceId::new("s", "rg", VAULT_TYPE, "kv-d1").to_string(),
            before.id,
            "the refused name is the other device's vault"
        );
        assert!(before.tags[OWNER_TAG].ends_with("/d1"));
    }
}
