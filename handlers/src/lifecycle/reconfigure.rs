//! Reconfigure: a device whose vault is gone for good gets a new vault under a new name, a new CIK and a new link,
//! and its activation key flow runs again (a key sealed with the old CIK no longer opens: the device reads the new
//! CIK). Stack Edge does this on the operator's request (learn.microsoft.com/azure/databox-online/
//! azure-stack-edge-gpu-activation-key-vault, "Reconfigure"): after a deletion within retention the vault is
//! recovered under the same name (that is [`recovery`](super::recovery)'s job, never this); past retention or
//! purged, a new vault under a new name; a vault moved to another resource group or subscription is treated as
//! deleted.
//!
//! - [`judge`]: whether the device's linked vault is gone for good, and how ([`Gone`]), or why not ([`NotGone`]).
//!   A moved vault is recognised by its owner tag (`edgevault-device`, the device's resource id), found with ARM's
//!   Resources – List `$filter` on that tag ([`moved_to`]).
//! - [`request`]: what the API and the CLI do: judge, choose the new name ([`new_name`]), mark the device pending
//!   and queue [`ReconfigureRequested`] on the provisioning queue.
//! - [`reconfigure`]: what the provisioning worker does with it: create the new vault (tagged with its device),
//!   point the link at it, then provision as for an activation (lock, policies, CIK, link; the old vault's alerts
//!   are resolved by that check, which finds the device healthy).
//!
//! Idempotent under retries and duplicates: the name is a function of the device and its old vault (the first free
//! one of `VaultName::default_for` after the old name's attempt), a name the device already owns counts as free, and
//! the worker runs in the device's session; a request that finds the new vault already linked provisions it again
//! (which writes nothing when it is healthy). Two requests never make two vaults.

use serde::Serialize;

use super::desired::{Desired, Observed, VaultState, assess, observe};
use super::device::{enable_identity, mark_requested};
use super::error::Error;
use super::finding::Finding;
use super::provision::{self, provision};
use super::vault::{cik_secret_name, create, owned_by, vault_id, vault_uri};
use super::{OWNER_TAG, RETENTION_DAYS};
use crate::azure::models::{ExtendedInfoPatch, KeyVaultSyncStatus, VaultLink};
use crate::deps::Deps;
use crate::messages::{Command, ReconfigureRequested};
use crate::resource_id::ResourceId;
use crate::vault_name::VaultName;

/// How many default-name attempts after the old one are tried for the new vault.
const NAME_ATTEMPTS: u32 = 8;
/// How far back the old vault's default-name attempt is looked for.
const OLD_ATTEMPTS: u32 = 64;

/// How a device's vault is gone for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all_fields = "camelCase")]
pub enum Gone {
    /// Neither live nor soft-deleted, and no vault tagged with the device exists anywhere in scope.
    Purged,
    /// Soft-deleted, but its scheduled purge date has passed: recovery is impossible.
    PastRetention { scheduled_purge_date: String },
    /// The vault lives on under another resource group or subscription (found by its owner tag).
    Moved { to: String },
}

impl Gone {
    /// A sentence for alerts and answers.
    pub fn describe(&self, vault: &str) -> String {
        match self {
            Gone::Purged => format!("vault {vault} was purged (neither live nor soft-deleted, and not moved)"),
            Gone::PastRetention { scheduled_purge_date } => {
                format!("vault {vault} is past its soft-delete retention (purge scheduled {scheduled_purge_date})")
            }
            Gone::Moved { to } => format!("vault {vault} was moved to {to}; a vault moved away is treated as deleted"),
        }
    }
}

/// Why a device cannot be reconfigured: the answer's `409` code and the reason, which says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotGone {
    pub code: &'static str,
    pub message: String,
}

/// The verdict on a device's vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The linked vault `old` is gone for good: reconfigure.
    Gone {
        old: ResourceId,
        how: Gone,
    },
    NotGone(NotGone),
}

fn not_gone(code: &'static str, message: String) -> Verdict {
    Verdict::NotGone(NotGone { code, message })
}

/// Judges whether `observed`'s linked vault is gone for good. Healthy, repairable, recoverable (soft-deleted within
/// retention) and someone else's vaults are not; neither is a device never activated or a pre-integration one.
pub async fn judge(deps: &Deps, observed: &Observed) -> Result<Verdict, Error> {
    let id = &observed.id;
    let findings = assess(observed, &Desired::new(&deps.settings));
    match findings.first() {
        Some(Finding::Legacy) => {
            return Ok(not_gone(
                "PreIntegrationResource",
                format!("{id} predates the Key Vault integration; edgevault leaves it unchanged"),
            ));
        }
        Some(Finding::NotActivated) => {
            return Ok(not_gone(
                "NotActivated",
                format!("{id} has no vault yet; request its activation key instead of reconfiguring"),
            ));
        }
        _ => {}
    }
    let Some(old) = observed.target.clone() else {
        return Ok(not_gone("NotActivated", format!("{id} has no vault linked")));
    };
    let name = old.name().unwrap_or_default().to_string();
    Ok(match &observed.vault {
        VaultState::Present(vault) if !owned_by(&vault.tags, id) => not_gone(
            "VaultNotOwned",
            format!("vault {name} exists but is not tagged as {id}'s; restore its {OWNER_TAG} tag or ask its owner"),
        ),
        VaultState::Present(_) if findings.is_empty() => {
            not_gone("VaultHealthy", format!("vault {name} is present and healthy; there is nothing to reconfigure"))
        }
        VaultState::Present(_) => not_gone(
            "VaultRepairable",
            format!(
                "vault {name} is present ({}); edgevault repairs it: refresh the device to queue the repair",
                findings.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ")
            ),
        ),
        VaultState::SoftDeleted(deleted) => {
            let purge = deleted.properties.scheduled_purge_date.clone().unwrap_or_default();
            let past = time::OffsetDateTime::parse(&purge, &time::format_description::well_known::Rfc3339)
                .is_ok_and(|at| at <= deps.now());
            if past {
                Verdict::Gone { old, how: Gone::PastRetention { scheduled_purge_date: purge } }
            } else {
                not_gone(
                    "VaultRecoverable",
                    format!(
                        "vault {name} is soft-deleted and recoverable until {purge} (retention {RETENTION_DAYS} \
                         days): the recovery worker recovers it under the same name; refresh the device to queue it"
                    ),
                )
            }
        }
        VaultState::Missing => match moved_to(deps, observed).await? {
            Some(to) => Verdict::Gone { old, how: Gone::Moved { to: to.to_string() } },
            None => Verdict::Gone { old, how: Gone::Purged },
        },
    })
}

/// Where the device's missing vault went, if it was moved: see [`find_moved`].
pub async fn moved_to(deps: &Deps, observed: &Observed) -> Result<Option<ResourceId>, Error> {
    let Some(linked) = observed.info.properties.link.vault_id() else { return Ok(None) };
    let tag = if observed.device.id.is_empty() { observed.id.to_string() } else { observed.device.id.clone() };
    find_moved(deps, &observed.id, &tag, &linked).await
}

/// The vault `linked` under another resource group or subscription: a vault tagged with the device (`tag`, the
/// owner tag's value, which a move keeps) of the same name (names are global, so it is that vault), in the device's
/// subscription or another one in scope.
pub async fn find_moved(
    deps: &Deps,
    device: &ResourceId,
    tag: &str,
    linked: &ResourceId,
) -> Result<Option<ResourceId>, Error> {
    let own = device.subscription().to_string();
    let mut subscriptions = vec![own.clone()];
    subscriptions.extend(deps.settings.subscriptions.iter().filter(|s| !s.eq_ignore_ascii_case(&own)).cloned());
    let linked_name = linked.name().unwrap_or_default();
    for subscription in subscriptions {
        let found = deps.vaults.find_tagged_vaults(&subscription, OWNER_TAG, tag).await?;
        if let Some(moved) =
            found.into_iter().find(|v| v != linked && v.name().unwrap_or_default().eq_ignore_ascii_case(linked_name))
        {
            return Ok(Some(moved));
        }
    }
    Ok(None)
}

/// The new vault's name: the first of the device's default names after the old vault's own attempt that is free
/// or already the device's (a retried request finds the vault the first one made). The old name is never chosen.
pub async fn new_name(deps: &Deps, id: &ResourceId, old: &ResourceId) -> Result<Option<VaultName>, Error> {
    let old_name = old.name().unwrap_or_default();
    let start = (0..OLD_ATTEMPTS)
        .find(|a| VaultName::default_for(id, *a).as_str().eq_ignore_ascii_case(old_name))
        .map_or(0, |a| a + 1);
    for attempt in start..start + NAME_ATTEMPTS {
        let name = VaultName::default_for(id, attempt);
        if name.as_str().eq_ignore_ascii_case(old_name) {
            continue;
        }
        let check = deps.vaults.check_vault_name(id.subscription(), name.as_str()).await?;
        if check.name_available {
            return Ok(Some(name));
        }
        // Taken: free for this request only when it is the device's live vault (an earlier request's); a
        // soft-deleted holder is never reused here (it reserves the name for its owner's recovery).
        if let Some(vault) = deps.vaults.get_vault(&vault_id(id, &name)).await?
            && owned_by(&vault.tags, id)
        {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// What an accepted reconfigure request says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub resource_id: String,
    pub old_vault: String,
    pub gone: Gone,
    pub vault_name: String,
}

/// The answer to a reconfigure request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    Accepted(Accepted),
    NotGone(NotGone),
    /// The vault is gone, but none of the new names is free.
    NoName(String),
    DeviceNotFound,
}

/// A reconfigure request (the API's and the CLI's): judged now, and when the vault is gone for good the device is
/// marked `KeyVaultSyncPending` (with who asked) and [`ReconfigureRequested`] queued under `operation_id`.
pub async fn request(
    deps: &Deps,
    id: &ResourceId,
    by: &str,
    operation_id: &str,
    correlation: Option<&str>,
) -> Result<Requested, Error> {
    let Some(observed) = observe(deps, id, None).await? else { return Ok(Requested::DeviceNotFound) };
    let (old, how) = match judge(deps, &observed).await? {
        Verdict::Gone { old, how } => (old, how),
        Verdict::NotGone(why) => return Ok(Requested::NotGone(why)),
    };
    let Some(name) = new_name(deps, id, &old).await? else {
        return Ok(Requested::NoName(format!("none of {NAME_ATTEMPTS} derived vault names is free for {id}")));
    };
    mark_requested(deps, id, &observed.device, by).await?;
    let command: Command =
        ReconfigureRequested { device: id.clone(), operation_id: operation_id.to_string(), vault_name: name.clone() }
            .into();
    deps.enqueue(&[command], correlation).await?;
    tracing::info!(device = %id, old = %old, new = %name, gone = ?how, "reconfigure queued");
    Ok(Requested::Accepted(Accepted {
        resource_id: id.to_string(),
        old_vault: old.to_string(),
        gone: how,
        vault_name: name.to_string(),
    }))
}

/// What the worker did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The device now uses the new vault.
    Reconfigured(provision::Provisioned),
    /// The vault is not gone (any more): nothing was changed.
    NotGone(NotGone),
    /// The device no longer exists, or provisioning left it alone (legacy).
    Untouched,
}

/// The worker's side of a reconfigure request: the new vault `name` replaces the gone one.
pub async fn reconfigure(deps: &Deps, id: &ResourceId, name: &VaultName) -> Result<Outcome, Error> {
    let Some(observed) = observe(deps, id, None).await? else { return Ok(Outcome::Untouched) };
    let new = vault_id(id, name);
    // A duplicate (the new vault is linked already) is a repair: it writes nothing on a healthy device.
    let first = observed.target.as_ref() != Some(&new);
    if first {
        if let Verdict::NotGone(why) = judge(deps, &observed).await? {
            tracing::info!(device = %id, reason = %why.message, "reconfigure not needed; nothing changed");
            return Ok(Outcome::NotGone(why));
        }
        let device = match observed.device.principal_id() {
            Some(_) => observed.device.clone(),
            None => enable_identity(deps, id).await?,
        };
        let Some(principal) = device.principal_id() else {
            return Err(Error::refused(super::Refused::IdentityNotCreated, format!("{id} has no principal")));
        };
        // The new vault first, then the link: until the link moves, a retried request still judges the old vault
        // gone and picks this same name (the device owns it now), so a crash in between never makes a second vault.
        let wanted = Desired::new(&deps.settings).vault(&device, principal);
        let (vault, _) = create(deps, id, &device, &new, &wanted).await?;
        let link = VaultLink {
            client_secret_store_id: Some(new.to_string()),
            client_secret_store_url: Some(vault_uri(&vault).trim_end_matches('/').to_string()),
            channel_integrity_key_name: Some(cik_secret_name(id, &new)),
            channel_integrity_key_version: None,
        };
        let patch = ExtendedInfoPatch { link, sync_status: Some(KeyVaultSyncStatus::KeyVaultSyncPending) };
        deps.devices.update_extended_info(id, &patch).await?;
        tracing::info!(device = %id, vault = %new, "the device now links its new vault");
    }
    Ok(match provision(deps, id, None, first).await? {
        provision::Outcome::Provisioned(done) => Outcome::Reconfigured(done),
        _ => Outcome::Untouched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertKind;
    use crate::azure::fake::{FakeAzure, key, settings};
    use crate::lifecycle::device::open_alerts;
    use crate::lifecycle::recovery::on_vault_deleted;

    fn purge(azure: &FakeAzure, vault: &ResourceId) {
        let mut state = azure.state();
        state.vaults.remove(&key(vault));
        state.locks.retain(|k, _| !k.starts_with(&key(vault)));
    }

    async fn request_now(azure: &std::sync::Arc<FakeAzure>, id: &ResourceId, op: &str) -> Requested {
        request(&azure.deps(settings()), id, "op (oid)", op, None).await.unwrap()
    }

    #[tokio::test]
    async fn a_healthy_or_recoverable_vault_is_refused_with_the_reason_and_nothing_is_written() {
        let azure = FakeAzure::new();
        let (id, vault) = azure.add_healthy("d1");
        azure.state().calls.clear();
        let Requested::NotGone(why) = request_now(&azure, &id, "op1").await else { panic!("healthy") };
        assert_eq!(why.code, "VaultHealthy");
        // Soft-deleted within retention: the recovery worker's job.
        azure.soft_delete(&vault);
        let Requested::NotGone(why) = request_now(&azure, &id, "op1").await else { panic!("recoverable") };
        assert_eq!(why.code, "VaultRecoverable");
        assert!(why.message.contains("recovery worker"), "{}", why.message);
        assert!(azure.writes().is_empty(), "{:?}", azure.writes());
        assert!(azure.state().sent.is_empty());
    }

    #[tokio::test]
    async fn a_soft_deleted_vault_past_its_purge_date_is_gone_for_good_and_its_name_is_not_reused() {
        let azure = FakeAzure::new();
        let (id, old) = azure.add_healthy("d1");
        azure.soft_delete(&old);
        // Still soft-deleted, but its scheduled purge date has passed (Key Vault purges on its own schedule).
        let past = (azure.deps(settings()).now() - time::Duration::days(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        for (deleted, _) in azure.state().deleted.values_mut() {
            deleted.properties.scheduled_purge_date = Some(past.clone());
        }
        let Requested::Accepted(accepted) = request_now(&azure, &id, "op1").await else { panic!("past retention") };
        assert_eq!(accepted.gone, Gone::PastRetention { scheduled_purge_date: past });
        assert_ne!(accepted.vault_name, old.name().unwrap(), "the reserved old name is never reused");
        VaultName::parse(&accepted.vault_name).unwrap();
    }

    #[tokio::test]
    async fn a_purged_vault_is_replaced_under_a_new_name_once_with_a_new_cik_and_its_alerts_resolved() {
        let azure = FakeAzure::new();
        let (id, old) = azure.add_healthy("d1");
        let deps = azure.deps(settings());
        let old_version = azure.state().infos[&key(&id)].properties.link.channel_integrity_key_version.clone();
        purge(&azure, &old);
        // The recovery worker finds it gone: RecoveryImpossible and KeyVaultDeleted open, the device failed.
        on_vault_deleted(&deps, &old).await.unwrap();
        let device = azure.state().devices[&key(&id)].clone();
        assert!(open_alerts(&device).contains(&AlertKind::RecoveryImpossible));

        let Requested::Accepted(first) = request_now(&azure, &id, "op1").await else { panic!("purged") };
        assert_eq!(first.gone, Gone::Purged);
        assert_ne!(first.vault_name, old.name().unwrap());
        VaultName::parse(&first.vault_name).unwrap();
        // A second request before the worker ran: the same name (deterministic), so no second vault.
        let Requested::Accepted(second) = request_now(&azure, &id, "op2").await else { panic!("still gone") };
        assert_eq!(second.vault_name, first.vault_name);

        let name = VaultName::parse(&first.vault_name).unwrap();
        let Outcome::Reconfigured(done) = reconfigure(&deps, &id, &name).await.unwrap() else { panic!("done") };
        assert!(done.cik_created);
        assert_eq!(done.vault_id.name(), Some(name.as_str()));
        // The duplicate: nothing new.
        azure.state().calls.clear();
        let Outcome::Reconfigured(again) = reconfigure(&deps, &id, &name).await.unwrap() else { panic!("again") };
        assert_eq!(again.vault_id, done.vault_id);
        assert!(azure.writes().is_empty(), "{:?}", azure.writes());

        let state = azure.state();
        let owned: Vec<_> = state.vaults.values().filter(|v| owned_by(&v.tags, &id)).collect();
        assert_eq!(owned.len(), 1, "one vault");
        let link = &state.infos[&key(&id)].properties;
        assert_eq!(link.key_vault_sync_status, Some(KeyVaultSyncStatus::KeyVaultSynced));
        assert_eq!(link.link.vault_id(), Some(done.vault_id.clone()));
        assert_ne!(link.link.channel_integrity_key_version, old_version);
        let device = &state.devices[&key(&id)];
        assert!(!open_alerts(device).contains(&AlertKind::RecoveryImpossible), "{:?}", device.tags);
        assert!(!open_alerts(device).contains(&AlertKind::KeyVaultDeleted));
        assert!(crate::lifecycle::device::failure(device).is_none());
    }

    #[tokio::test]
    async fn a_moved_vault_is_found_by_its_tag_reported_and_its_name_never_reused() {
        let azure = FakeAzure::new();
        let (id, old) = azure.add_healthy("d1");
        let moved = ResourceId::new("s", "elsewhere", crate::resource_id::VAULT_TYPE, old.name().unwrap());
        azure.move_vault(&old, &moved);
        let Requested::Accepted(accepted) = request_now(&azure, &id, "op1").await else { panic!("moved") };
        assert_eq!(accepted.gone, Gone::Moved { to: moved.to_string() });
        assert!(accepted.gone.describe(old.name().unwrap()).contains("elsewhere"));
        let deps = azure.deps(settings());
        let name = VaultName::parse(&accepted.vault_name).unwrap();
        assert!(matches!(reconfigure(&deps, &id, &name).await.unwrap(), Outcome::Reconfigured(_)));
        assert!(azure.state().vaults.contains_key(&key(&moved)), "the moved vault is left where it is");
    }

    #[tokio::test]
    async fn a_reconfigure_that_finds_the_vault_back_changes_nothing() {
        let azure = FakeAzure::new();
        let (id, _) = azure.add_healthy("d1");
        azure.state().calls.clear();
        let name = VaultName::default_for(&id, 7);
        let outcome = reconfigure(&azure.deps(settings()), &id, &name).await.unwrap();
        assert!(matches!(outcome, Outcome::NotGone(NotGone { code: "VaultHealthy", .. })), "{outcome:?}");
        assert!(azure.writes().is_empty());
    }
}
