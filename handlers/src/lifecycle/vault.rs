//! What is done to a vault: which vault a device uses ([`choose_vault`], shared by the API and the worker), its id
//! and CIK name, who owns it, and the fixes for what `assess` finds wrong with it.

use futures::TryStreamExt;
use sha2::{Digest, Sha256};

use super::error::{Error, Refused};
use super::{LOCK_NAME, LOCK_NOTES, PRINCIPAL_TAG, RETENTION_DAYS};
use crate::activation_key::Cik;
use crate::azure::models::{AccessPolicy, DeletedVault, Device, Lock, StoredCik, Vault, VaultLink};
use crate::azure::pages;
use crate::deps::Deps;
use crate::resource_id::{ResourceId, VAULT_TYPE};
use crate::vault_name::VaultName;

pub use super::vault_facts::{owned_by, owner, vault_uri};

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

/// Which vault a device uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The vault its extended information links: a device keeps one vault for life.
    Linked(ResourceId),
    /// A new vault under the name asked for.
    Named(VaultName),
    /// None linked and none asked for: the API picks a default name, a worker has nothing to do.
    Unnamed,
}

/// The vault for a device that links `link` and asks for `requested`. Asking for another name than the linked
/// vault's is refused rather than silently given a second vault.
pub fn choose_vault(id: &ResourceId, link: &VaultLink, requested: Option<&VaultName>) -> Result<Choice, Error> {
    let linked = link.client_secret_store_id.as_deref().map(str::parse::<ResourceId>).transpose().map_err(|e| {
        Error::refused(Refused::LinkedVaultInvalid, format!("the vault {id} links is not a resource id: {e}"))
    })?;
    match (linked, requested) {
        (Some(linked), Some(name)) if !linked.name().unwrap_or_default().eq_ignore_ascii_case(name.as_str()) => {
            Err(Error::refused(
                Refused::VaultAlreadyLinked,
                format!(
                    "{id} already uses vault {}; a device keeps one vault for life",
                    linked.name().unwrap_or_default()
                ),
            ))
        }
        (Some(linked), _) => Ok(Choice::Linked(linked)),
        (None, Some(name)) => Ok(Choice::Named(name.clone())),
        (None, None) => Ok(Choice::Unnamed),
    }
}

/// Creates the vault (the fix for `VaultMissing`). Created without first looking for a soft-deleted vault of that
/// name: Azure refuses the create with a 409 when one holds the name, and only then is it worth a read, so a first
/// activation saves a round trip. The device's own soft-deleted vault is recovered; another's is refused. The
/// `bool` says whether the vault is new (and so has no lock and no secret yet). `wanted` is the desired vault.
pub async fn create(
    deps: &Deps,
    id: &ResourceId,
    device: &Device,
    vault_id: &ResourceId,
    wanted: &Vault,
) -> Result<(Vault, bool), Error> {
    let err = match deps.vaults.put_vault(vault_id, wanted).await {
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
        Some(_) => Err(Error::refused(
            Refused::VaultNameReserved,
            format!("a soft-deleted vault named {name} that is not this device's reserves the name"),
        )),
        None => {
            Err(Error::refused(Refused::VaultNameUnavailable, format!("vault name {name} is taken: {}", err.message)))
        }
    }
}

/// Recovers a soft-deleted vault (the fix for `VaultSoftDeleted`). When the recovery is refused because the vault
/// is no longer soft-deleted — another worker recovered it first — the recovered vault is what was wanted.
pub async fn recover_or_find(deps: &Deps, vault_id: &ResourceId, location: &str) -> Result<Vault, Error> {
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

/// Turns soft delete and purge protection on and access-policy authorisation back on (the fix for
/// `SoftDeleteOff` / `PurgeProtectionOff` / `RbacAuthorization`). Purge protection can only be turned on; the
/// desired vault (`wanted`) is put again, keeping the vault's policies, its retention, its tags and its network
/// rules (those are the owner's: a PUT without them would drop them).
pub async fn protect(deps: &Deps, vault_id: &ResourceId, vault: &Vault, wanted: &Vault) -> Result<Vault, Error> {
    let mut update = wanted.clone();
    update.properties.access_policies = vault.properties.access_policies.clone();
    update.properties.soft_delete_retention_in_days =
        vault.properties.soft_delete_retention_in_days.or(Some(RETENTION_DAYS));
    update.properties.network_acls = vault.properties.network_acls.clone();
    // The vault's own tags, as they are: the principal record is changed only with the stale policy's removal.
    update.tags = vault.tags.clone();
    tracing::warn!(vault = %vault_id, "vault lacked soft delete, purge protection or access-policy authorisation; fixing");
    Ok(deps.vaults.put_vault(vault_id, &update).await?)
}

/// Adds those of the `wanted` access policies the vault lacks (the fix for `AccessPolicyMissing`); returns them.
pub async fn add_policies(
    deps: &Deps,
    vault_id: &ResourceId,
    vault: &Vault,
    wanted: Vec<AccessPolicy>,
) -> Result<Vec<AccessPolicy>, Error> {
    let missing: Vec<_> = wanted
        .into_iter()
        .filter(|want| !vault.properties.access_policies.iter().any(|have| have.covers(want)))
        .collect();
    if !missing.is_empty() {
        deps.vaults.add_access_policies(vault_id, &missing).await?;
        tracing::info!(vault = %vault_id, added = missing.len(), "added access policies");
    }
    Ok(missing)
}

/// Removes the access policy of the device principal the vault's tag records, when that is no longer the device's
/// principal (its identity was replaced), and records the current one (the fix for `DevicePolicyStale`). Returns
/// the vault as ARM now has it.
pub async fn retire_stale_policy(
    deps: &Deps,
    vault_id: &ResourceId,
    vault: &Vault,
    principal: &str,
) -> Result<Vault, Error> {
    let recorded = vault.tags.iter().find(|(k, _)| k.eq_ignore_ascii_case(PRINCIPAL_TAG)).map(|(_, v)| v.clone());
    if let Some(old) = recorded.filter(|old| !old.eq_ignore_ascii_case(principal)) {
        let stale: Vec<AccessPolicy> = vault
            .properties
            .access_policies
            .iter()
            .filter(|p| p.object_id.eq_ignore_ascii_case(&old))
            .cloned()
            .collect();
        if !stale.is_empty() {
            deps.vaults.remove_access_policies(vault_id, &stale).await?;
            tracing::info!(vault = %vault_id, "removed the access policy of the device's replaced identity");
        }
    }
    let mut tags = vault.tags.clone();
    tags.retain(|k, _| !k.eq_ignore_ascii_case(PRINCIPAL_TAG));
    tags.insert(PRINCIPAL_TAG.to_string(), principal.to_string());
    Ok(deps.vaults.set_vault_tags(vault_id, &tags).await?)
}

/// Puts edgevault's `CanNotDelete` lock on the vault (the fix for `LockMissing` / `LockNotCanNotDelete`: a lock
/// of the same name is replaced).
pub async fn lock(deps: &Deps, vault_id: &ResourceId) -> Result<Lock, Error> {
    let lock = deps.locks.put_lock(vault_id, LOCK_NAME, LOCK_NOTES).await?;
    tracing::info!(vault = %vault_id, "locked the vault against deletion");
    Ok(lock)
}

/// Writes a new CIK (the fix for `CikMissing` / `CikDisabled`): 32 bytes from the OS CSPRNG as a new version of the
/// device's CIK secret. In a vault that was just `created`, the secret is read first: the Key Vault client learns
/// a vault's authentication challenge from its first request, sent without a body, and were that request the
/// write, a retried attempt could go out with a `null` body and be refused as a 400 (seen under fault injection).
/// The read costs nothing on the critical path: the lock's write runs beside it. The `bool` says whether a new
/// version was written (it was not when the read found one).
pub async fn write_cik(
    deps: &Deps,
    id: &ResourceId,
    vault_uri: &str,
    name: &str,
    created: bool,
) -> Result<(StoredCik, bool), Error> {
    if created && let Some(found) = deps.secrets.get_cik(vault_uri, name, None).await?.filter(|c| c.enabled) {
        return Ok((found, false));
    }
    let cik = Cik::generate();
    let version = deps.secrets.set_cik(vault_uri, name, &cik).await?;
    tracing::info!(device = %id, secret = %name, "stored a new CIK version");
    Ok((StoredCik { cik, version, enabled: true }, true))
}

/// Writes the linked CIK's value again as a new version of edgevault's (the fix for `CikNotCurrent`): the device's
/// CIK does not change, so its activation keys keep opening, and the version someone else wrote is no longer the
/// current one. Returns the new version.
pub async fn rewrite_cik(deps: &Deps, vault_uri: &str, name: &str, linked: &StoredCik) -> Result<StoredCik, Error> {
    let version = deps.secrets.set_cik(vault_uri, name, &linked.cik).await?;
    tracing::info!(secret = %name, "wrote edgevault's CIK over a version it did not write");
    Ok(StoredCik { cik: linked.cik.clone(), version, enabled: true })
}

/// Finds a soft-deleted vault by id in its subscription's deleted-vault listing (an event does not carry the
/// location the direct lookup needs).
pub async fn find_deleted(deps: &Deps, vault_id: &ResourceId) -> Result<Option<DeletedVault>, Error> {
    let listing =
        pages(|next| async move { deps.vaults.list_deleted_vaults(vault_id.subscription(), next.as_deref()).await });
    let mut listing = std::pin::pin!(listing);
    while let Some(page) = listing.try_next().await? {
        if let Some(found) =
            page.into_iter().find(|d| d.properties.vault_id.parse::<ResourceId>().is_ok_and(|id| &id == vault_id))
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::fake::{FakeAzure, settings};

    fn device() -> ResourceId {
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d".parse().unwrap()
    }

    #[test]
    fn cik_names_are_guids_stable_per_device_and_vault() {
        let d = device();
        let v1 = vault_id(&d, &VaultName::parse("one").unwrap());
        let v2 = vault_id(&d, &VaultName::parse("two").unwrap());
        let name = cik_secret_name(&d, &v1);
        assert_eq!(name, cik_secret_name(&d, &v1));
        assert_ne!(name, cik_secret_name(&d, &v2));
        let guid = name.strip_prefix("ase-cik-").unwrap();
        assert_eq!(guid.split('-').map(str::len).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
    }

    #[test]
    fn the_linked_vault_wins_and_another_name_is_refused() {
        let d = device();
        let name = |n| VaultName::parse(n).unwrap();
        let linked =
            VaultLink { client_secret_store_id: Some(vault_id(&d, &name("kv-a")).to_string()), ..Default::default() };
        assert_eq!(choose_vault(&d, &linked, None).unwrap(), Choice::Linked(vault_id(&d, &name("kv-a"))));
        assert_eq!(
            choose_vault(&d, &linked, Some(&name("KV-A"))).unwrap(),
            Choice::Linked(vault_id(&d, &name("kv-a")))
        );
        match choose_vault(&d, &linked, Some(&name("kv-b"))) {
            Err(Error::Refused(r)) => assert_eq!(r.kind, Refused::VaultAlreadyLinked),
            other => panic!("{other:?}"),
        }
        let none = VaultLink::default();
        assert_eq!(choose_vault(&d, &none, Some(&name("kv-b"))).unwrap(), Choice::Named(name("kv-b")));
        assert_eq!(choose_vault(&d, &none, None).unwrap(), Choice::Unnamed);
        let bad = VaultLink { client_secret_store_id: Some("not an id".into()), ..Default::default() };
        assert!(matches!(
            choose_vault(&d, &bad, None),
            Err(Error::Refused(Refusal { kind: Refused::LinkedVaultInvalid, .. }))
        ));
    }

    #[tokio::test]
    async fn a_deleted_vault_is_found_across_pages() {
        let azure = FakeAzure::new();
        let (_, vault) = azure.add_healthy("d1");
        azure.soft_delete(&vault);
        let deps = azure.deps(settings());
        assert_eq!(find_deleted(&deps, &vault).await.unwrap().unwrap().properties.vault_id, vault.to_string());
        let other = ResourceId::new("s", "rg", VAULT_TYPE, "other");
        assert!(find_deleted(&deps, &other).await.unwrap().is_none());
    }

    use super::super::error::Refusal;
}
