//! A deleted device: its vault's life ends with it. With the operator's consent
//! (`EDGEVAULT_DELETE_VAULT_WITH_DEVICE=true`) the lock is removed and the vault deleted — it stays soft-deleted and
//! purge-protected for its retention period; without it the vault is kept and reported orphaned. Either way an
//! alert says which.

use futures::TryStreamExt;

use super::LOCK_NAME;
use super::error::{Error, Refused};
use super::vault::owned_by;
use crate::alerts::{Alert, Severity};
use crate::azure::pages;
use crate::deps::Deps;
use crate::resource_id::ResourceId;

/// What became of a deleted device's vaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The device exists again (re-created under the same id): its vaults stay.
    DeviceExists,
    /// Each vault of the device, and whether it was deleted (`true`) or kept as an orphan.
    Vaults(Vec<(ResourceId, bool)>),
}

pub async fn on_device_deleted(deps: &Deps, device: &ResourceId) -> Result<Outcome, Error> {
    if deps.devices.get_device(device).await?.is_some() {
        return Ok(Outcome::DeviceExists);
    }
    let (subscription, group) = (device.subscription(), device.resource_group().unwrap_or_default());
    let listing = pages(|next| async move { deps.vaults.list_vaults(subscription, group, next.as_deref()).await });
    let mut listing = std::pin::pin!(listing);
    let mut retired = Vec::new();
    while let Some(page) = listing.try_next().await? {
        for vault in page.iter().filter(|v| owned_by(&v.tags, device)) {
            let vault_id: ResourceId = vault.id.parse().map_err(|e| {
                Error::refused(Refused::InvalidResourceId, format!("ARM listed a vault id that does not parse: {e}"))
            })?;
            let delete = deps.settings.delete_vault_with_device;
            let alert = if delete {
                deps.locks.delete_lock(&vault_id, LOCK_NAME).await?;
                deps.vaults.delete_vault(&vault_id).await?;
                Alert::raise(
                    &format!("{vault_id}|device-deleted"),
                    Severity::Informational,
                    format!("{device} was deleted, and its vault with it"),
                    "the vault stays soft-deleted and purge-protected for its retention period",
                )
            } else {
                Alert::raise(
                    &format!("{vault_id}|orphaned"),
                    Severity::Warning,
                    format!("{device} was deleted; its vault {vault_id} is kept and now orphaned"),
                    "delete the vault by hand when its secrets are no longer needed, or set EDGEVAULT_DELETE_VAULT_WITH_DEVICE=true",
                )
            };
            deps.alert(&alert.about(Some(&device.to_string()), Some(&vault_id.to_string()))).await;
            retired.push((vault_id, delete));
        }
    }
    Ok(Outcome::Vaults(retired))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::fake::{FakeAzure, key, settings};

    #[tokio::test]
    async fn with_consent_the_lock_goes_and_the_vault_is_deleted() {
        let azure = FakeAzure::new();
        let (device, vault) = azure.add_healthy("d1");
        let (_, other) = azure.add_healthy("d2");
        azure.state().devices.remove(&key(&device));
        let deps = azure.deps(crate::config::Settings { delete_vault_with_device: true, ..settings() });
        assert_eq!(on_device_deleted(&deps, &device).await.unwrap(), Outcome::Vaults(vec![(vault.clone(), true)]));
        let state = azure.state();
        assert!(!state.vaults.contains_key(&key(&vault)) && state.vaults.contains_key(&key(&other)));
        assert!(!state.locks.keys().any(|l| l.starts_with(&key(&vault))), "its lock was removed first");
        drop(state);
        assert!(azure.alerts()[0].contains("Informational"), "{:?}", azure.alerts());
    }

    #[tokio::test]
    async fn without_consent_the_vault_is_kept_and_reported_orphaned() {
        let azure = FakeAzure::new();
        let (device, vault) = azure.add_healthy("d1");
        azure.state().devices.remove(&key(&device));
        azure.state().calls.clear();
        let outcome = on_device_deleted(&azure.deps(settings()), &device).await.unwrap();
        assert_eq!(outcome, Outcome::Vaults(vec![(vault, false)]));
        assert!(azure.writes().iter().all(|w| w.starts_with("send")), "only the alert: {:?}", azure.writes());
        assert!(azure.alerts()[0].contains("orphaned"));
    }

    #[tokio::test]
    async fn a_device_that_exists_again_keeps_its_vault() {
        let azure = FakeAzure::new();
        let (device, _) = azure.add_healthy("d1");
        azure.state().calls.clear();
        let deps = azure.deps(crate::config::Settings { delete_vault_with_device: true, ..settings() });
        assert_eq!(on_device_deleted(&deps, &device).await.unwrap(), Outcome::DeviceExists);
        assert!(azure.writes().is_empty());
    }
}
