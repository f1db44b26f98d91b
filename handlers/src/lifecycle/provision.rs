//! Provisioning as a reconciler: observe the device and its vault, [`assess`] them, fix exactly what was found,
//! writing nothing else. Running it twice, or after a crash between any two fixes, converges on the same vault and
//! the same CIK.
//!
//! Fixes run in stages, because some can only be judged once others are made (a vault's policies need the
//! device's principal; a lock needs the vault): identity, then the vault itself, then — at once — its lock and its
//! access policies followed by its CIK, and last the link in the device's extended information. After each stage
//! the observation is updated with what the writes returned and assessed again, so `assess` stays the only place
//! that decides what is wrong.

use super::audit::{self, Ensured};
use super::desired::{
    Desired, Observed, VaultState, alerts, assess, observe, observe_contents, observe_secrets, unjudged,
};
use super::device::{clear_failure, enable_identity, mark_status, open_alerts, settle_alerts, write_link};
use super::error::{Error, Refused};
use super::finding::Finding;
use super::vault::{
    add_policies, create, lock, protect, recover_or_find, retire_stale_policy, rewrite_cik, vault_uri, write_cik,
};
use crate::alerts::AlertKind;
use crate::azure::models::KeyVaultSyncStatus;
use crate::deps::Deps;
use crate::resource_id::ResourceId;
use crate::vault_name::VaultName;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Provisioned(Provisioned),
    /// Nothing to do: the device is legacy or was never activated.
    Untouched(Finding),
    /// The device no longer exists.
    Gone,
}

/// Provisions device `id`. `requested` is the vault name from the activation request; without it the linked vault
/// is repaired. With `mark_syncing` the device is marked `KeyVaultSyncing` while the work goes on.
///
/// Calls that do not depend on each other run concurrently — the device reads with the requested vault's read, the
/// syncing mark beside everything up to the final link write, the lock beside the access policies and the CIK — so
/// an activation costs about the sum of the calls that must follow one another (see docs/BENCHMARKS.md).
pub async fn provision(
    deps: &Deps,
    id: &ResourceId,
    requested: Option<&VaultName>,
    mark_syncing: bool,
) -> Result<Outcome, Error> {
    let desired = Desired::new(&deps.settings);
    let mark =
        async { if mark_syncing { mark_status(deps, id, KeyVaultSyncStatus::KeyVaultSyncing).await } else { Ok(()) } };
    let prepare = async {
        let Some(mut observed) = observe(deps, id, requested).await? else { return Ok(None) };
        // While the device's secrets are known missing, a repair checks them again before it links anything, so
        // a sweep never marks a device synced over its missing secrets. An activation request does not: the key
        // needs the CIK only, and the device pushes its secrets once activated.
        if !mark_syncing && open_alerts(&observed.device).contains(&AlertKind::SecretsNotRetrieved) {
            observe_secrets(deps, &mut observed).await?;
        }
        let cik_created = repair(deps, &desired, &mut observed).await?;
        Ok::<_, Error>(Some((observed, cik_created)))
    };
    let (marked, prepared) = tokio::join!(mark, prepare);
    let Some((mut observed, cik_created)) = prepared? else {
        tracing::info!(device = %id, "device no longer exists; nothing to provision");
        return Ok(Outcome::Gone);
    };
    // The link is published only after the syncing mark has landed, so the mark can never overwrite it.
    marked?;
    if let Some(finding) = assess(&observed, &desired).first().copied().filter(|f| f.is_terminal()) {
        return Ok(Outcome::Untouched(finding));
    }
    if mark_syncing {
        observed.info.properties.key_vault_sync_status = Some(KeyVaultSyncStatus::KeyVaultSyncing);
    }
    let findings = assess(&observed, &desired);
    let vault = observed.target.as_ref().map(ToString::to_string);
    if findings.contains(&Finding::DeviceSecretsMissing) {
        // Only the device can bring its secrets back: the device stays as it is marked, its alert open. Its audit
        // logging does not wait for them.
        if findings.contains(&Finding::AuditSettingMissing) {
            configure_audit(deps, &mut observed).await;
        }
        let findings = assess(&observed, &desired);
        let found = alerts(&observed, &findings);
        // Nothing else was judged through to the end, so nothing else is resolved; the audit setting was.
        let keep: Vec<AlertKind> = AlertKind::ALL
            .iter()
            .copied()
            .filter(|k| observed.audit_setting.is_none() || *k != AlertKind::AuditLoggingNotConfigured)
            .collect();
        settle_alerts(deps, id, &mut observed.device, vault.as_deref(), &found, Some(&keep)).await?;
        return Ok(Outcome::Untouched(Finding::DeviceSecretsMissing));
    }
    if findings.contains(&Finding::ExtendedInfoOutOfSync)
        && let Some(link) = observed.expected_link()
    {
        observed.info = write_link(deps, id, link).await?;
    }
    // Audit logging last, once the device has its link (the key does not wait for it): whatever stops it leaves
    // a warning alert, never a failed activation.
    if findings.contains(&Finding::AuditSettingMissing) {
        configure_audit(deps, &mut observed).await;
    }
    clear_failure(deps, id, &mut observed.device).await?;
    // A check that found the device healthy resolves its open alerts (those it could not judge stay open).
    let left = assess(&observed, &desired);
    let keep = unjudged(&observed);
    let found = alerts(&observed, &left);
    settle_alerts(deps, id, &mut observed.device, vault.as_deref(), &found, Some(&keep)).await?;
    let (Some(link), Some(vault_id)) = (observed.expected_link(), observed.target.clone()) else {
        let left = assess(&observed, &desired);
        return Err(Error::refused(Refused::NotConverged, format!("after the fixes {id} still has {left:?}")));
    };
    Ok(Outcome::Provisioned(Provisioned {
        vault_id,
        vault_uri: link.client_secret_store_url.map(|u| format!("{u}/")).unwrap_or_default(),
        cik_name: observed.cik_name,
        cik_version: link.channel_integrity_key_version.unwrap_or_default(),
        cik_created,
    }))
}

/// Makes the vault's audit logging ([`audit::ensure`]) and records the outcome in `observed`: configured, or why
/// not (for the alert). An Azure failure here is reported the same way and retried by the next check: audit
/// logging never fails the device's activation or repair.
async fn configure_audit(deps: &Deps, observed: &mut Observed) {
    let (VaultState::Present(vault), Some(target)) = (&observed.vault, &observed.target) else { return };
    match audit::ensure(deps, &observed.id, vault, target).await {
        Ok(Ensured::Configured(_)) => {
            observed.audit_setting = Some(true);
            observed.audit_blocked = None;
        }
        Ok(Ensured::NotPossible(reason)) => observed.audit_blocked = Some(reason),
        Err(err) => {
            tracing::warn!(device = %observed.id, error = %err, "audit logging could not be configured");
            observed.audit_blocked = Some(format!("configuring it failed ({err}); the next check tries again"));
        }
    }
}

/// Fixes everything [`assess`] finds about the device's identity and vault (all but the link), stage by stage,
/// keeping `observed` up to date with what each write returned. A vault that is someone else's is refused.
/// Returns whether a new CIK version was written.
pub async fn repair(deps: &Deps, desired: &Desired, observed: &mut Observed) -> Result<bool, Error> {
    let mut findings = assess(observed, desired);
    if findings.contains(&Finding::IdentityMissing) {
        observed.device = enable_identity(deps, &observed.id).await?;
        findings = assess(observed, desired);
    }
    match findings.first() {
        Some(Finding::VaultNotOwned) => {
            let target = observed.target.as_ref().map(ToString::to_string).unwrap_or_default();
            return Err(Error::refused(
                Refused::VaultNotOwned,
                format!("vault {target} exists and does not belong to {}; choose another name", observed.id),
            ));
        }
        Some(finding) if finding.is_terminal() => return Ok(false),
        _ => {}
    }
    let (Some(principal), Some(target)) = (observed.device.principal_id().map(str::to_string), observed.target.clone())
    else {
        return Ok(false);
    };

    // The vault itself.
    let mut created = false;
    if findings.contains(&Finding::VaultMissing) {
        let wanted = desired.vault(&observed.device, &principal);
        let (vault, new) = create(deps, &observed.id, &observed.device, &target, &wanted).await?;
        created = new;
        observed.vault = VaultState::Present(vault);
        if new {
            // A new vault has no audit setting yet (known without a read).
            observed.audit_setting = Some(false);
        } else {
            // The device's own soft-deleted vault came back: read what it came back with.
            observe_contents(deps, observed).await?;
        }
    } else if let VaultState::SoftDeleted(deleted) = &observed.vault {
        let vault = recover_or_find(deps, &target, &deleted.properties.location.clone()).await?;
        observed.vault = VaultState::Present(vault);
        observe_contents(deps, observed).await?;
    }
    findings = assess(observed, desired);
    if findings
        .iter()
        .any(|f| matches!(f, Finding::SoftDeleteOff | Finding::PurgeProtectionOff | Finding::RbacAuthorization))
        && let VaultState::Present(vault) = &observed.vault
    {
        let was_rbac = vault.properties.uses_rbac();
        let vault = protect(deps, &target, vault, &desired.vault(&observed.device, &principal)).await?;
        observed.vault = VaultState::Present(vault);
        if was_rbac {
            // The access policies apply again: the CIK can be read, and is judged now.
            observe_contents(deps, observed).await?;
        }
        findings = assess(observed, desired);
    }
    let VaultState::Present(vault) = observed.vault.clone() else { return Ok(false) };

    // Its contents: the lock needs only the vault; the CIK's write needs edgevault's access policy.
    let wants = |wanted: &[Finding]| findings.iter().any(|f| wanted.contains(f));
    let uri = vault_uri(&vault);
    let locking = async {
        match wants(&[Finding::LockMissing, Finding::LockNotCanNotDelete]) {
            true => lock(deps, &target).await.map(Some),
            false => Ok(None),
        }
    };
    let keying = async {
        let added = match wants(&[Finding::AccessPolicyMissing]) {
            true => add_policies(deps, &target, &vault, desired.policies(&principal)).await?,
            false => Vec::new(),
        };
        let cik = if wants(&[Finding::CikMissing, Finding::CikDisabled]) {
            Some(write_cik(deps, &observed.id, &uri, &observed.cik_name, created).await?)
        } else if wants(&[Finding::CikNotCurrent])
            && let Some(linked) = &observed.cik
        {
            // Someone else's version is current: it is reported, never linked; edgevault's CIK goes on top.
            let found = alerts(observed, &[Finding::CikNotCurrent]);
            let id = observed.id.clone();
            settle_alerts(deps, &id, &mut observed.device, Some(&target.to_string()), &found, None).await?;
            tracing::warn!(device = %observed.id, "a CIK version edgevault did not write was current; writing edgevault's");
            Some((rewrite_cik(deps, &uri, &observed.cik_name, linked).await?, false))
        } else {
            None
        };
        Ok::<_, Error>((added, cik))
    };
    let (locked, keyed) = tokio::join!(locking, keying);
    let (added, cik) = keyed?;
    if let Some(lock) = locked? {
        observed.lock = Some(lock);
    }
    if let VaultState::Present(vault) = &mut observed.vault {
        vault.properties.access_policies.extend(added);
    }
    // A replaced identity: the new principal is granted (above) before the old one's policy goes.
    if findings.contains(&Finding::DevicePolicyStale)
        && let VaultState::Present(vault) = &observed.vault
    {
        // The tag write answers with the vault as it now is: the new policy in, the stale one out.
        let updated = retire_stale_policy(deps, &target, vault, &principal).await?;
        observed.vault = VaultState::Present(updated);
    }
    let cik_written = cik.as_ref().is_some_and(|(_, written)| *written);
    if let Some((cik, _)) = cik {
        observed.cik = Some(cik);
        observed.cik_latest = None;
    }
    Ok(cik_written)
}

#[cfg(test)]
mod tests {
    //! Provisioning against the in-memory Azure: what a device ends up with, that a second run writes nothing, every
    //! combination of drift fixed so that `assess` finds nothing after, and the vault-name cases. Crashes, faults
    //! and the real services are covered end to end under `tests/`.

    use std::sync::Arc;

    use super::*;
    use crate::azure::fake::{FakeAzure, key, settings};
    use crate::lifecycle::vault::owned_by;
    use crate::lifecycle::{LOCK_NAME, OWNER_TAG};
    use crate::resource_id::VAULT_TYPE;

    async fn run(azure: &Arc<FakeAzure>, id: &ResourceId, requested: Option<&str>) -> Result<Provisioned, Error> {
        let name = requested.map(|n| VaultName::parse(n).unwrap());
        match provision(&azure.deps(settings()), id, name.as_ref(), true).await? {
            Outcome::Provisioned(done) => Ok(done),
            other => panic!("expected a provisioned device, got {other:?}"),
        }
    }

    async fn findings_now(azure: &Arc<FakeAzure>, id: &ResourceId) -> Vec<Finding> {
        let observed = observe(&azure.deps(settings()), id, None).await.unwrap().unwrap();
        assess(&observed, &Desired::new(&settings()))
    }

    fn refusal(result: Result<Provisioned, Error>) -> Refused {
        match result {
            Err(Error::Refused(refusal)) => refusal.kind,
            other => panic!("expected a refusal, got {other:?}"),
        }
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
            for want in Desired::new(&settings()).policies(principal) {
                assert!(vault.properties.access_policies.iter().any(|p| p.covers(&want)), "{want:?} missing");
            }
            assert!(state.locks.contains_key(&key(&format!("{}/{LOCK_NAME}", done.vault_id))));
            let link = &state.infos[&key(&id)].properties;
            assert_eq!(link.key_vault_sync_status, Some(KeyVaultSyncStatus::KeyVaultSynced));
            assert_eq!(link.link.vault_id(), Some(done.vault_id.clone()));
            assert_eq!(link.link.channel_integrity_key_version.as_deref(), Some(done.cik_version.as_str()));
        }
        assert_eq!(findings_now(&azure, &id).await, []);
        azure.state().calls.clear();
        let again = provision(&azure.deps(settings()), &id, None, false).await.unwrap();
        assert_eq!(again, Outcome::Provisioned(Provisioned { cik_created: false, ..done }), "same vault, same CIK");
        assert!(azure.writes().is_empty(), "a provisioned device needs no write: {:?}", azure.writes());
    }

    /// Every combination of the drifts the sweep can find on a provisioned device: after one provisioning run,
    /// `assess` — read afresh from Azure — finds nothing.
    #[tokio::test]
    async fn after_a_fix_assess_finds_nothing_whatever_drifted() {
        const DRIFTS: u32 = 13;
        for mask in 0..(1u32 << DRIFTS) {
            let azure = FakeAzure::new();
            let (id, vault) = azure.add_healthy("d1");
            let drift = |bit: u32| mask & (1 << bit) != 0;
            {
                let mut state = azure.state();
                let lock_key = key(&format!("{vault}/{LOCK_NAME}"));
                if drift(0) {
                    state.locks.remove(&lock_key);
                } else if drift(1) {
                    state.locks.get_mut(&lock_key).unwrap().properties.level = "ReadOnly".into();
                }
                if drift(2) {
                    state.ciks.clear();
                } else if drift(3) {
                    state.ciks.values_mut().next().unwrap()[0].enabled = false;
                }
                if drift(9) && !drift(2) {
                    // Someone wrote a CIK version of their own on top of the linked one.
                    let cik = state.ciks.keys().next().unwrap().clone();
                    let (uri, name) = cik.split_once('|').unwrap();
                    let (uri, name) = (uri.to_string(), name.to_string());
                    state.store_cik_for_test(&uri, &name);
                }
                let v = state.vaults.get_mut(&key(&vault)).unwrap();
                if drift(4) {
                    v.properties.access_policies.pop();
                }
                if drift(11) {
                    v.properties.enable_rbac_authorization = Some(true);
                }
                if drift(12) {
                    v.properties.network_acls = Some(serde_json::json!({"defaultAction": "Deny", "bypass": "None"}));
                }
                if drift(10) {
                    // The device's policy as edgevault used to grant it: secrets get only.
                    v.properties.access_policies[0].permissions.secrets = vec!["get".into()];
                }
                if drift(5) {
                    v.properties.enable_purge_protection = None;
                    v.properties.enable_soft_delete = Some(false);
                }
                if drift(6) {
                    state.infos.get_mut(&key(&id)).unwrap().properties.key_vault_sync_status = None;
                }
                if drift(7) {
                    state.devices.get_mut(&key(&id)).unwrap().identity = None;
                }
            }
            if drift(8) && !drift(5) {
                azure.soft_delete(&vault);
            }
            let before = findings_now(&azure, &id).await;
            assert_eq!(before.is_empty(), mask == 0, "mask {mask:013b}: {before:?}");
            provision(&azure.deps(settings()), &id, None, false).await.unwrap_or_else(|e| panic!("{mask:013b}: {e}"));
            let after = findings_now(&azure, &id).await;
            // Network rules are the owner's: reported (and alerted), never changed.
            let left: &[Finding] = if drift(12) { &[Finding::NetworkDenied] } else { &[] };
            assert_eq!(after, left, "mask {mask:013b}: found {before:?}, left {after:?}");
        }
    }

    #[tokio::test]
    async fn a_replaced_identity_gets_the_policy_and_the_old_principals_policy_goes() {
        let azure = FakeAzure::new();
        let (id, vault) = azure.add_healthy("d1");
        // The identity was turned off and on again: a new principal.
        azure.state().devices.get_mut(&key(&id)).unwrap().identity.as_mut().unwrap().principal_id =
            Some("principal-new".into());
        assert_eq!(findings_now(&azure, &id).await, [Finding::AccessPolicyMissing, Finding::DevicePolicyStale]);
        run(&azure, &id, None).await.unwrap();
        let v = azure.state().vaults[&key(&vault)].clone();
        let holders: Vec<&str> = v.properties.access_policies.iter().map(|p| p.object_id.as_str()).collect();
        assert!(holders.contains(&"principal-new") && !holders.contains(&"principal-d1"), "{holders:?}");
        assert_eq!(v.tags[crate::lifecycle::PRINCIPAL_TAG], "principal-new");
        assert_eq!(findings_now(&azure, &id).await, []);
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
        assert_eq!(refusal(run(&azure, &other, Some("kv-d3")).await), Refused::VaultNameReserved);
    }

    #[tokio::test]
    async fn a_live_vault_of_another_device_is_refused_and_left_as_it_was() {
        let azure = FakeAzure::new();
        let (_, theirs) = azure.add_healthy("d1");
        let id = azure.add_device("d2", true);
        let before = azure.state().vaults[&key(&theirs)].clone();
        assert_eq!(refusal(run(&azure, &id, Some("kv-d1")).await), Refused::VaultNotOwned);
        let state = azure.state();
        assert_eq!(state.vaults[&key(&theirs)], before);
        assert_eq!(state.vaults.len(), 1, "no second vault");
        assert_eq!(ResourceId::new("s", "rg", VAULT_TYPE, "kv-d1").to_string(), before.id);
        assert!(before.tags[OWNER_TAG].ends_with("/d1"));
    }

    #[tokio::test]
    async fn a_device_that_was_never_activated_is_left_untouched() {
        let azure = FakeAzure::new();
        let id = azure.add_device("d1", true);
        let outcome = provision(&azure.deps(settings()), &id, None, false).await.unwrap();
        assert_eq!(outcome, Outcome::Untouched(Finding::NotActivated));
        assert!(azure.writes().is_empty(), "{:?}", azure.writes());
    }
}
