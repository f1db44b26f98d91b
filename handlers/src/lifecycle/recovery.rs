//! A deleted vault: Key Vault has no "vault deleted" event, so edgevault reacts to ARM's `ResourceDeleteSuccess`
//! for `Microsoft.KeyVault/vaults/delete` and to what the sweep finds. A device's vault is recovered from soft delete
//! and re-provisioned (recovery does not bring back everything edgevault owns); a vault past recovery raises a
//! critical alert and marks the device `KeyVaultSyncFailed`; a vault of no device is left alone.

use futures::TryStreamExt;

use super::device::{mark_failed, settle_alerts};
use super::error::Error;
use super::history::{RecoveryOutcome, RecoveryRecord, record_recovery};
use super::provision::{self, provision};
use super::vault::{find_deleted, owner, recover_or_find};
use crate::alerts::{Alert, AlertKind, Severity};
use crate::azure::pages;
use crate::deps::Deps;
use crate::resource_id::ResourceId;

/// What became of a deleted vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Recovered and re-provisioned; `cik_intact` says whether the device's CIK survived.
    Recovered { device: ResourceId, cik_intact: bool },
    /// The vault is back already (recovered earlier, or never gone); provisioning re-checked it.
    AlreadyPresent { device: ResourceId },
    /// Purged or past retention: the device needs a new vault and a new activation.
    Unrecoverable { device: ResourceId },
    /// Not a device's vault, or its device is gone: nothing to do.
    NotOurs,
}

pub async fn on_vault_deleted(deps: &Deps, vault_id: &ResourceId) -> Result<Outcome, Error> {
    if let Some(vault) = deps.vaults.get_vault(vault_id).await? {
        let Some(device) = owner(&vault.tags) else { return Ok(Outcome::NotOurs) };
        return match provision(deps, &device, None, false).await? {
            provision::Outcome::Provisioned(_) => Ok(Outcome::AlreadyPresent { device }),
            _ => Ok(Outcome::NotOurs),
        };
    }
    let Some(deleted) = find_deleted(deps, vault_id).await? else {
        return purged(deps, vault_id).await;
    };
    let Some(device) = owner(&deleted.properties.tags) else {
        tracing::info!(vault = %vault_id, "deleted vault belongs to no device; ignored");
        return Ok(Outcome::NotOurs);
    };
    let Some(mut found) = deps.devices.get_device(&device).await? else {
        tracing::info!(vault = %vault_id, device = %device, "the vault's device is gone; its deletion is expected");
        return Ok(Outcome::NotOurs);
    };
    let deletion = deleted.properties.deletion_date.clone().unwrap_or_default();
    // "Key Vault is deleted.", open until a check finds the vault back (provisioning's, after the recovery).
    let vault = vault_id.to_string();
    let detail = format!(
        "Vault {} was deleted at {deletion}; recovering it from soft delete.",
        vault_id.name().unwrap_or_default()
    );
    settle_alerts(deps, &device, &mut found, Some(&vault), &[(AlertKind::KeyVaultDeleted, detail)], None).await?;

    let past_retention = deleted
        .properties
        .scheduled_purge_date
        .as_deref()
        .and_then(|d| time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc3339).ok())
        .is_some_and(|purge| purge <= deps.now());
    let deleted_at = deleted.properties.deletion_date.clone();
    if past_retention {
        let why = "the vault is past its soft-delete retention";
        return unrecoverable(deps, &device, vault_id, deleted_at, why).await;
    }
    let location = deleted.properties.location.clone();
    match recover_or_find(deps, vault_id, &location).await {
        Ok(_) => {}
        Err(Error::Azure(err)) if !err.retryable() => {
            let why = format!("recovery was refused: {}", err.message);
            return unrecoverable(deps, &device, vault_id, deleted_at, &why).await;
        }
        Err(err) => return Err(err),
    }
    let provision::Outcome::Provisioned(provisioned) = provision(deps, &device, None, false).await? else {
        return Ok(Outcome::NotOurs);
    };
    if provisioned.cik_created {
        deps.alert(
            &Alert::raise(
                &format!("{vault_id}|{deletion}|cik"),
                Severity::Critical,
                format!("the CIK of {device} did not survive the vault's deletion; a new one was written"),
                "generate a new activation key for the device and re-activate it",
            )
            .about(Some(&device.to_string()), Some(&vault_id.to_string()))
            .requested_by(super::device::requested_by(&found)),
        )
        .await;
    }
    let now = deps.now().unix_timestamp();
    let recovered = AlertKind::KeyVaultRecovered.alert(&device.to_string(), Some(&vault), now, &deletion);
    deps.alert(&recovered.requested_by(super::device::requested_by(&found))).await;
    let record = RecoveryRecord {
        device: device.to_string(),
        vault: vault_id.to_string(),
        deleted_at,
        finished_at: rfc3339(deps.now()),
        outcome: RecoveryOutcome::Recovered,
        cik_intact: Some(!provisioned.cik_created),
        reason: None,
    };
    record_recovery(deps, vault_id, &record).await;
    Ok(Outcome::Recovered { device, cik_intact: !provisioned.cik_created })
}

/// The vault is gone for good. If a device still links it, that device has lost its CIK.
async fn purged(deps: &Deps, vault_id: &ResourceId) -> Result<Outcome, Error> {
    let Some(device) = linked_device(deps, vault_id).await? else {
        tracing::info!(vault = %vault_id, "vault is neither present nor soft-deleted and no device links it; ignored");
        return Ok(Outcome::NotOurs);
    };
    unrecoverable(deps, &device, vault_id, None, "the vault was purged").await
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

async fn unrecoverable(
    deps: &Deps,
    device: &ResourceId,
    vault_id: &ResourceId,
    deleted_at: Option<String>,
    why: &str,
) -> Result<Outcome, Error> {
    mark_failed(deps, device, &format!("vault {} cannot be recovered: {why}", vault_id.name().unwrap_or_default()))
        .await?;
    // Open until the device has a vault again (reconfigured); the failure mark above is read back with it.
    if let Some(mut found) = deps.devices.get_device(device).await? {
        let detail =
            format!("Vault {}: {why}; the device is marked KeyVaultSyncFailed.", vault_id.name().unwrap_or_default());
        let raised = [(AlertKind::RecoveryImpossible, detail), (AlertKind::KeyVaultDeleted, String::new())];
        settle_alerts(deps, device, &mut found, Some(&vault_id.to_string()), &raised, None).await?;
    }
    let record = RecoveryRecord {
        device: device.to_string(),
        vault: vault_id.to_string(),
        deleted_at,
        finished_at: rfc3339(deps.now()),
        outcome: RecoveryOutcome::Unrecoverable,
        cik_intact: None,
        reason: Some(why.to_string()),
    };
    record_recovery(deps, vault_id, &record).await;
    Ok(Outcome::Unrecoverable { device: device.clone() })
}

/// The device in the vault's resource group whose extended information links the vault, if any.
async fn linked_device(deps: &Deps, vault_id: &ResourceId) -> Result<Option<ResourceId>, Error> {
    let group = vault_id.resource_group().unwrap_or_default();
    let listing =
        pages(|next| async move { deps.devices.list_devices(vault_id.subscription(), next.as_deref()).await });
    let mut listing = std::pin::pin!(listing);
    while let Some(page) = listing.try_next().await? {
        for device in page {
            let Ok(id) = device.id.parse::<ResourceId>() else { continue };
            if !id.resource_group().unwrap_or_default().eq_ignore_ascii_case(group) {
                continue;
            }
            let info = deps.devices.get_extended_info(&id).await?;
            if info.properties.link.vault_id().as_ref() == Some(vault_id) {
                return Ok(Some(id));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    //! Recovery against the in-memory Azure: what comes back, what is alerted and what is left alone.

    use super::*;
    use crate::azure::fake::{FakeAzure, key, settings};
    use crate::azure::models::KeyVaultSyncStatus;
    use crate::lifecycle::{ERROR_TAG, LOCK_NAME};

    #[tokio::test]
    async fn a_soft_deleted_vault_comes_back_with_its_lock_and_cik_and_the_alert_is_resolved() {
        let azure = FakeAzure::new();
        let (device, vault) = azure.add_healthy("d1");
        let linked = azure.state().infos[&key(&device)].clone();
        azure.soft_delete(&vault);
        assert!(azure.state().locks.is_empty(), "the lock went with the vault");
        let outcome = on_vault_deleted(&azure.deps(settings()), &vault).await.unwrap();
        assert_eq!(outcome, Outcome::Recovered { device: device.clone(), cik_intact: true });
        {
            let state = azure.state();
            assert!(state.vaults.contains_key(&key(&vault)));
            assert!(state.locks.contains_key(&key(&format!("{vault}/{LOCK_NAME}"))), "the lock was put back");
            assert_eq!(state.infos[&key(&device)], linked, "the same CIK version stays linked");
        }
        let alerts = azure.alerts();
        assert_eq!(alerts.len(), 3, "deleted raised, then resolved, then recovered: {alerts:?}");
        assert!(alerts.iter().all(|a| a.contains(&device.to_string())));
        assert!(alerts[0].contains("Key Vault is deleted.") && alerts[1].contains("Resolved"), "{alerts:?}");
        assert!(alerts[2].contains("KeyVaultRecovered"), "{alerts:?}");
        assert!(crate::lifecycle::device::open_alerts(&azure.state().devices[&key(&device)]).is_empty());
        let (deps, scope) = (azure.deps(settings()), ["s".to_string()]);
        let history = crate::lifecycle::history::recent_recoveries(&deps, &scope, 10).await.unwrap();
        assert_eq!(history.len(), 1, "the incident is recorded");
        assert_eq!(history[0].outcome, crate::lifecycle::history::RecoveryOutcome::Recovered);
        assert_eq!(history[0].deleted_at.as_deref(), Some("2026-11-01T00:00:00Z"));
        assert!(history[0].seconds_to_recover().is_some());
    }

    #[tokio::test]
    async fn a_purged_vault_marks_its_device_failed_with_a_critical_alert() {
        let azure = FakeAzure::new();
        let (device, vault) = azure.add_healthy("d1");
        azure.soft_delete(&vault);
        azure.state().deleted.clear();
        let outcome = on_vault_deleted(&azure.deps(settings()), &vault).await.unwrap();
        assert_eq!(outcome, Outcome::Unrecoverable { device: device.clone() });
        {
            let state = azure.state();
            let info = &state.infos[&key(&device)].properties;
            assert_eq!(info.key_vault_sync_status, Some(KeyVaultSyncStatus::KeyVaultSyncFailed));
            assert!(state.devices[&key(&device)].tags[ERROR_TAG].contains("purged"));
        }
        let alerts = azure.alerts();
        assert!(alerts.len() == 2 && alerts.iter().all(|a| a.contains("Critical")), "{alerts:?}");
        let open = crate::lifecycle::device::open_alerts(&azure.state().devices[&key(&device)]);
        assert_eq!(open, [AlertKind::KeyVaultDeleted, AlertKind::RecoveryImpossible]);
        let (deps, scope) = (azure.deps(settings()), ["s".to_string()]);
        let history = crate::lifecycle::history::recent_recoveries(&deps, &scope, 10).await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].outcome, crate::lifecycle::history::RecoveryOutcome::Unrecoverable);
        assert!(history[0].reason.as_deref().unwrap_or_default().contains("purged"), "{history:?}");
    }

    #[tokio::test]
    async fn a_vault_of_no_device_and_a_vault_whose_device_is_gone_are_left_alone() {
        let azure = FakeAzure::new();
        let (device, vault) = azure.add_healthy("d1");
        let (_, unowned) = azure.add_healthy("d2");
        azure.state().vaults.get_mut(&key(&unowned)).unwrap().tags.clear();
        azure.soft_delete(&unowned);
        azure.soft_delete(&vault);
        azure.state().devices.remove(&key(&device));
        azure.state().calls.clear();
        for deleted in [&unowned, &vault] {
            assert_eq!(on_vault_deleted(&azure.deps(settings()), deleted).await.unwrap(), Outcome::NotOurs);
        }
        assert!(azure.writes().is_empty(), "{:?}", azure.writes());
        assert_eq!(azure.state().deleted.len(), 2, "both stay soft-deleted");
    }
}
