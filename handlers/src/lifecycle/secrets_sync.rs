//! "Sync device secrets": the device writes its secrets (BitLocker keys, BMC password) into its vault with its own
//! identity and asks for a re-sync with `updateExtendedInformation` and `syncStatus: KeyVaultSyncPending`
//! (DataBoxEdge `DataBoxEdgeDeviceExtendedInfoPatch`: "to initiate the resync to key-vault set the status to
//! KeyVaultSyncPending"). edgevault sees that call as ARM's action event, checks that the CIK it linked is still the
//! current version and that the device's secrets are there, and marks the device `KeyVaultSynced`, or
//! `KeyVaultSyncFailed` with the reason and an alert. It repairs nothing here: what it can fix, the sweep's repair
//! fixes; what it cannot (missing secrets, someone else's CIK version), only an operator or the device can.

use super::desired::{Desired, alerts, assess, missing_device_secrets, observe, observe_secrets};
use super::device::{clear_failure, mark_failed, settle_alerts, write_link};
use super::error::Error;
use super::finding::Finding;
use crate::azure::models::KeyVaultSyncStatus;
use crate::deps::Deps;
use crate::resource_id::ResourceId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The linked CIK is current and every device secret is there: `KeyVaultSynced`.
    Synced,
    /// `KeyVaultSyncFailed`, for this reason (also in the device's failure tag and an alert).
    Failed { reason: String },
    /// The device is not waiting for a sync (already handled, or the status was changed since).
    NotPending,
    /// The device no longer exists.
    Gone,
}

/// Findings that stop a sync: the device could not get its CIK or keep its secrets in the vault. The rest (a
/// missing lock, soft delete off) are the sweep's to repair and do not make the device's secrets any less synced.
fn blocks_sync(finding: Finding) -> bool {
    !matches!(
        finding,
        Finding::Healthy
            | Finding::SoftDeleteOff
            | Finding::PurgeProtectionOff
            | Finding::LockMissing
            | Finding::LockNotCanNotDelete
            | Finding::ExtendedInfoOutOfSync
    )
}

/// Checks device `id` after its sync request.
pub async fn verify(deps: &Deps, id: &ResourceId) -> Result<Outcome, Error> {
    let Some(mut observed) = observe(deps, id, None).await? else { return Ok(Outcome::Gone) };
    if observed.info.properties.key_vault_sync_status != Some(KeyVaultSyncStatus::KeyVaultSyncPending) {
        return Ok(Outcome::NotPending);
    }
    observe_secrets(deps, &mut observed).await?;
    let findings = assess(&observed, &Desired::new(&deps.settings));
    let found = alerts(&observed, &findings);
    let vault = observed.target.as_ref().map(ToString::to_string);
    let blocking: Vec<Finding> = findings.iter().copied().filter(|f| blocks_sync(*f)).collect();
    if let Some(link) = observed.expected_link().filter(|_| blocking.is_empty()) {
        observed.info = write_link(deps, id, link).await?;
        clear_failure(deps, id, &mut observed.device).await?;
        settle_alerts(deps, id, &mut observed.device, vault.as_deref(), &found, Some(&[])).await?;
        tracing::info!(device = %id, "device secrets verified; KeyVaultSynced");
        return Ok(Outcome::Synced);
    }
    let reason = reason(&observed, &blocking);
    mark_failed(deps, id, &reason).await?;
    let mut device = deps.devices.get_device(id).await?.unwrap_or(observed.device);
    settle_alerts(deps, id, &mut device, vault.as_deref(), &found, None).await?;
    tracing::warn!(device = %id, "device secrets sync failed: {reason}");
    Ok(Outcome::Failed { reason })
}

/// The failure reason, for the device's tag and the status API: what is wrong, most basic first.
fn reason(observed: &super::desired::Observed, blocking: &[Finding]) -> String {
    let vault = observed.target.as_ref().and_then(|t| t.name()).unwrap_or("-").to_string();
    let Some(first) = blocking.first() else {
        return format!("the device's vault {vault} has no CIK to link");
    };
    match first {
        Finding::DeviceSecretsMissing => format!(
            "device secrets missing from vault {vault}: {}",
            missing_device_secrets(observed).unwrap_or_default().join(", ")
        ),
        Finding::CikNotCurrent => format!(
            "the current version {} of CIK {} in vault {vault} was not issued by edgevault; it is not linked",
            observed.cik_latest.as_deref().unwrap_or("?"),
            observed.cik_name
        ),
        other => format!("cannot sync with vault {vault}: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertKind;
    use crate::azure::fake::{FakeAzure, key, settings};
    use crate::azure::models::ExtendedInfoPatch;
    use crate::lifecycle::device::open_alerts;
    use crate::lifecycle::{DEVICE_SECRET_NAMES, ERROR_TAG};

    async fn request(azure: &std::sync::Arc<FakeAzure>, id: &ResourceId) {
        let patch =
            ExtendedInfoPatch { sync_status: Some(KeyVaultSyncStatus::KeyVaultSyncPending), ..Default::default() };
        crate::azure::traits::Devices::update_extended_info(azure.as_ref(), id, &patch).await.unwrap();
    }

    fn status(azure: &FakeAzure, id: &ResourceId) -> Option<KeyVaultSyncStatus> {
        azure.state().infos[&key(id)].properties.key_vault_sync_status
    }

    #[tokio::test]
    async fn a_device_with_its_secrets_and_the_linked_cik_is_synced() {
        let azure = FakeAzure::new();
        let (id, _) = azure.add_healthy("d1");
        azure.put_device_secrets("d1");
        request(&azure, &id).await;
        assert_eq!(verify(&azure.deps(settings()), &id).await.unwrap(), Outcome::Synced);
        assert_eq!(status(&azure, &id), Some(KeyVaultSyncStatus::KeyVaultSynced));
        assert!(azure.alerts().is_empty(), "{:?}", azure.alerts());
    }

    #[tokio::test]
    async fn missing_secrets_fail_the_sync_with_one_alert_until_the_device_syncs_them() {
        let azure = FakeAzure::new();
        let (id, _) = azure.add_healthy("d1");
        request(&azure, &id).await;
        let deps = azure.deps(settings());
        let Outcome::Failed { reason } = verify(&deps, &id).await.unwrap() else { panic!("expected a failure") };
        for name in DEVICE_SECRET_NAMES {
            assert!(reason.contains(name), "{reason}");
        }
        assert_eq!(status(&azure, &id), Some(KeyVaultSyncStatus::KeyVaultSyncFailed));
        let device = azure.state().devices[&key(&id)].clone();
        assert!(device.tags[ERROR_TAG].contains("missing"));
        assert_eq!(open_alerts(&device), [AlertKind::SecretsNotRetrieved]);
        assert_eq!(azure.alerts().len(), 1);

        // A second request while still missing raises nothing new; a repair does not mark it synced over them.
        request(&azure, &id).await;
        verify(&deps, &id).await.unwrap();
        assert_eq!(azure.alerts().len(), 1, "raised once");
        let outcome = crate::lifecycle::provision::provision(&deps, &id, None, false).await.unwrap();
        assert_eq!(outcome, crate::lifecycle::provision::Outcome::Untouched(Finding::DeviceSecretsMissing));
        assert_eq!(status(&azure, &id), Some(KeyVaultSyncStatus::KeyVaultSyncFailed));

        // The device pushes them and asks again: synced, the alert resolved with the id it was raised with.
        azure.put_device_secrets("d1");
        request(&azure, &id).await;
        assert_eq!(verify(&deps, &id).await.unwrap(), Outcome::Synced);
        let device = azure.state().devices[&key(&id)].clone();
        assert!(open_alerts(&device).is_empty() && !device.tags.contains_key(ERROR_TAG), "{:?}", device.tags);
        let alerts = azure.alerts();
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        let id_of = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap()["id"].clone();
        assert_eq!(id_of(&alerts[0]), id_of(&alerts[1]));
        assert!(alerts[1].contains("Resolved"));
    }

    #[tokio::test]
    async fn a_cik_version_edgevault_did_not_write_is_alerted_and_not_linked() {
        let azure = FakeAzure::new();
        let (id, _) = azure.add_healthy("d1");
        azure.put_device_secrets("d1");
        let linked = azure.state().infos[&key(&id)].properties.link.clone();
        let uri = linked.client_secret_store_url.clone().unwrap();
        azure.put_cik(&uri, linked.channel_integrity_key_name.as_deref().unwrap(), true);
        request(&azure, &id).await;
        let Outcome::Failed { reason } = verify(&azure.deps(settings()), &id).await.unwrap() else { panic!() };
        assert!(reason.contains("not issued by edgevault"), "{reason}");
        assert_eq!(azure.state().infos[&key(&id)].properties.link, linked, "the unknown version is not linked");
        let device = azure.state().devices[&key(&id)].clone();
        assert_eq!(open_alerts(&device), [AlertKind::UnknownCikVersion]);
    }

    #[tokio::test]
    async fn a_device_not_waiting_for_a_sync_is_left_alone() {
        let azure = FakeAzure::new();
        let (id, _) = azure.add_healthy("d1");
        azure.state().calls.clear();
        assert_eq!(verify(&azure.deps(settings()), &id).await.unwrap(), Outcome::NotPending);
        assert!(azure.writes().is_empty());
    }
}
