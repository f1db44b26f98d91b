//! The recovery sweep: inspect every Stack Edge device in the configured subscriptions (paged, with bounded
//! concurrency, never holding the fleet in memory) and turn each finding into a command for the worker that fixes
//! it. It writes nothing itself.
//!
//! Pages are streamed: the next page is listed while the last devices of the previous one are still being
//! inspected, so a page boundary never drains the inspections in flight (under a rate-limited ARM an idle slot is
//! rate lost for good).

use std::collections::BTreeMap;

use futures::{Stream, StreamExt};

use super::desired::{Desired, Observed, VaultState, assess, observe_listed};
use super::error::{Error, Refused};
use super::finding::Finding;
use crate::azure::models::Device;
use crate::azure::pages;
use crate::deps::Deps;
use crate::messages::{Command, ReconcileVault, ResourceCreated, VaultDeleted};
use crate::resource_id::{DEVICE_TYPE, ResourceId};

/// Devices inspected at once. ARM throttles by rate, not by concurrency, and the HTTP stack paces every request to
/// what ARM reports left (`azure::pacing`), so this only has to keep enough calls ready to use the rate when the
/// bucket refills, and memory flat whatever the fleet size. Measured against local-azure's rate limit at 300/s
/// (docs/BENCHMARKS.md §4): with pacing, 32 swept 10,000 devices in 0.997 × the rate's bound (96: 1.003) with a
/// 39.5 MiB peak (96: 50.0) and a third of the refusals. Before pacing, refused calls idled their slot for 1.6 s or
/// more, and 96 were needed to reach 1.105.
pub const CONCURRENCY: usize = 32;

/// Commands sent as they accumulate, at most this many at a time (one Service Bus batch per queue), so neither the
/// findings nor the commands of the fleet are ever held.
const ENQUEUE_BATCH: usize = 100;

/// Inspects one device: what `assess` finds (`Healthy` when nothing) and the commands that fix it — the identity
/// by the creation worker, a soft-deleted vault by the recovery worker, everything else by one repair. Terminal
/// findings (legacy, never activated, another's vault) send nothing.
pub async fn inspect(deps: &Deps, device: &Device, sweep_id: &str) -> Result<(Vec<Finding>, Vec<Command>), Error> {
    let id: ResourceId = device.id.parse().map_err(|e| {
        Error::refused(Refused::InvalidResourceId, format!("ARM listed a device id that does not parse: {e}"))
    })?;
    let observed = observe_listed(deps, &id, device.clone()).await?;
    let findings = assess(&observed, &Desired::new(&deps.settings));
    let commands = fixes(&observed, &findings, sweep_id);
    if findings.is_empty() {
        return Ok((vec![Finding::Healthy], commands));
    }
    Ok((findings, commands))
}

/// The commands that fix `findings` — the identity by the creation worker, a soft-deleted vault by the recovery
/// worker, everything else by one repair; `check_id` names the check (a sweep, a refresh) for the messages' ids.
/// Terminal findings send nothing.
pub fn fixes(observed: &Observed, findings: &[Finding], check_id: &str) -> Vec<Command> {
    let id = observed.id.clone();
    let mut commands = Vec::new();
    let mut repairs = Vec::new();
    for finding in findings {
        match finding {
            Finding::IdentityMissing => {
                commands.push(ResourceCreated { device: id.clone(), cause: format!("sweep:{check_id}") }.into())
            }
            Finding::VaultSoftDeleted => {
                let (VaultState::SoftDeleted(deleted), Some(vault)) = (&observed.vault, &observed.target) else {
                    continue;
                };
                let deletion = deleted.properties.deletion_date.clone().unwrap_or_default();
                commands.push(VaultDeleted { vault: vault.clone(), cause: format!("sweep:{deletion}") }.into());
            }
            // Missing device secrets are the device's to push (and a sweep never reads them). Network rules that
            // deny do go to the worker, which changes nothing about them but raises their alert once.
            left if left.is_terminal() || *left == Finding::DeviceSecretsMissing => {}
            repair => repairs.push(*repair),
        }
    }
    if !repairs.is_empty() {
        commands.push(ReconcileVault { device: id, findings: repairs, sweep_id: check_id.to_string() }.into());
    }
    commands
}

/// Counts per finding, and how many commands were sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub devices: usize,
    pub findings: BTreeMap<Finding, usize>,
    pub commands: usize,
    pub errors: usize,
}

/// The Stack Edge devices of every subscription, one page at a time: a page is listed only when the previous one
/// has been handed out. A listing failure is the last item.
fn device_pages<'a>(deps: &'a Deps) -> impl Stream<Item = Result<Vec<Device>, Error>> + 'a {
    futures::stream::iter(&deps.settings.subscriptions)
        .flat_map(move |subscription| {
            pages(move |next| async move { deps.devices.list_devices(subscription, next.as_deref()).await })
        })
        .map(|page| {
            let devices = page?;
            Ok(devices
                .into_iter()
                .filter(|d| d.id.parse::<ResourceId>().is_ok_and(|id| id.is_type(DEVICE_TYPE)))
                .collect())
        })
        .scan(false, |failed, page: Result<Vec<Device>, Error>| {
            // Stop after the first failure: the next subscription's pages would be a sweep with a hole in it.
            let item = (!*failed).then_some(page);
            *failed |= item.as_ref().is_some_and(Result::is_err);
            futures::future::ready(item)
        })
}

/// Sweeps every subscription in scope. A device that cannot be inspected is counted and skipped (the next sweep
/// retries it); a failure to list or to enqueue fails the run.
pub async fn run(deps: &Deps, sweep_id: &str) -> Result<Summary, Error> {
    let mut summary = Summary::default();
    let inspected = device_pages(deps)
        .flat_map(|page| match page {
            Ok(devices) => futures::stream::iter(devices.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(err) => futures::stream::iter(vec![Err(err)]),
        })
        .map(|device| async move {
            let device = device?;
            let result = inspect(deps, &device, sweep_id).await;
            Ok::<_, Error>((device, result))
        })
        .buffer_unordered(CONCURRENCY);
    let mut inspected = std::pin::pin!(inspected);
    let mut commands = Vec::new();
    // A batch is sent while the inspections go on, both polled here: awaiting the send alone would leave the
    // in-flight inspections unpolled, and one of them may hold the credential's token-cache lock the send needs
    // (that deadlocked the sweep at its first batch).
    let mut sending: Option<futures::future::BoxFuture<'_, Result<usize, Error>>> = None;
    loop {
        tokio::select! {
            item = inspected.next() => {
                let Some(item) = item else { break };
                let (device, result) = item?;
                summary.devices += 1;
                match result {
                    Ok((findings, fixes)) => {
                        for finding in findings {
                            *summary.findings.entry(finding).or_default() += 1;
                        }
                        commands.extend(fixes);
                    }
                    Err(err) => {
                        summary.errors += 1;
                        tracing::warn!(device = %device.id, "could not inspect the device: {err}");
                    }
                }
                if commands.len() >= ENQUEUE_BATCH && sending.is_none() {
                    let batch = std::mem::take(&mut commands);
                    sending = Some(Box::pin(async move {
                        deps.enqueue(&batch, Some(sweep_id)).await?;
                        Ok(batch.len())
                    }));
                }
            }
            sent = async { sending.as_mut().expect("guarded by the branch condition").await }, if sending.is_some() => {
                summary.commands += sent?;
                sending = None;
            }
        }
    }
    // The inspections are done: nothing else can hold what the sends need.
    if let Some(pending) = sending {
        summary.commands += pending.await?;
    }
    if !commands.is_empty() {
        deps.enqueue(&commands, Some(sweep_id)).await?;
        summary.commands += commands.len();
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    mod inspection {
        //! `inspect` and `run` against the in-memory Azure: each finding from the Azure state that causes it, the
        //! command that fixes it, and nothing written by the sweep itself.

        use std::sync::Arc;

        use super::*;
        use crate::azure::fake::{FakeAzure, settings};
        use crate::azure::models::VaultLink;
        use crate::lifecycle::vault::cik_secret_name;

        async fn inspect_one(azure: &Arc<FakeAzure>, id: &ResourceId) -> (Vec<Finding>, Vec<Command>) {
            let deps = azure.deps(settings());
            let device = azure.state().devices[&id.to_string().to_ascii_lowercase()].clone();
            inspect(&deps, &device, "sweep-1").await.unwrap()
        }

        fn repairs(commands: &[Command]) -> Vec<Finding> {
            match commands {
                [Command::ReconcileVault(repair)] => repair.findings.clone(),
                other => panic!("expected one ReconcileVault, got {other:?}"),
            }
        }

        #[tokio::test]
        async fn a_provisioned_device_is_healthy_and_costs_four_reads_in_three_rounds() {
            let azure = FakeAzure::new();
            let (id, vault_id) = azure.add_healthy("d1");
            let (findings, commands) = inspect_one(&azure, &id).await;
            assert_eq!(findings, [Finding::Healthy]);
            assert!(commands.is_empty());
            let calls = azure.state().calls.clone();
            assert_eq!(
                calls,
                [
                    format!("get extended information {id}"),
                    format!("get vault {vault_id}"),
                    format!("get lock {vault_id}"),
                    format!("get CIK {}", cik_secret_name(&id, &vault_id)),
                ]
            );
            assert!(azure.writes().is_empty());
        }

        #[tokio::test]
        async fn each_drift_is_found_and_handed_to_the_worker_in_one_command() {
            let azure = FakeAzure::new();
            let (id, vault_id) = azure.add_healthy("d1");
            {
                let mut state = azure.state();
                let vault = state.vaults.get_mut(&vault_id.to_string().to_ascii_lowercase()).unwrap();
                vault.properties.enable_purge_protection = None;
                vault.properties.access_policies.pop();
                state.locks.clear();
                state.infos.values_mut().next().unwrap().properties.key_vault_sync_status = None;
                state.ciks.values_mut().next().unwrap()[0].enabled = false;
            }
            let (findings, commands) = inspect_one(&azure, &id).await;
            let expected = [
                Finding::PurgeProtectionOff,
                Finding::LockMissing,
                Finding::AccessPolicyMissing,
                Finding::CikDisabled,
                Finding::ExtendedInfoOutOfSync,
            ];
            assert_eq!(findings, expected);
            assert_eq!(repairs(&commands), expected);
            assert!(azure.writes().is_empty(), "the sweep writes nothing itself: {:?}", azure.writes());
        }

        #[tokio::test]
        async fn rbac_and_deny_by_default_come_from_the_vault_object_at_no_extra_call() {
            let azure = FakeAzure::new();
            let (id, vault_id) = azure.add_healthy("d1");
            {
                let mut state = azure.state();
                let vault = state.vaults.get_mut(&vault_id.to_string().to_ascii_lowercase()).unwrap();
                vault.properties.enable_rbac_authorization = Some(true);
                vault.properties.network_acls = Some(serde_json::json!({"defaultAction": "Deny"}));
            }
            let (findings, commands) = inspect_one(&azure, &id).await;
            let expected = [Finding::RbacAuthorization, Finding::NetworkDenied, Finding::ExtendedInfoOutOfSync];
            assert_eq!(findings, expected);
            assert_eq!(repairs(&commands), expected, "the worker fixes RBAC and raises the network alert");
            let calls = azure.state().calls.clone();
            assert_eq!(calls.len(), 3, "extended information, vault, lock; no CIK read in an RBAC vault: {calls:?}");
        }

        #[tokio::test]
        async fn a_read_only_lock_of_edgevaults_name_is_drift_not_health() {
            let azure = FakeAzure::new();
            let (id, vault_id) = azure.add_healthy("d1");
            let lock = format!("{vault_id}/{}", crate::lifecycle::LOCK_NAME).to_ascii_lowercase();
            azure.state().locks.get_mut(&lock).unwrap().properties.level = "ReadOnly".into();
            let (findings, commands) = inspect_one(&azure, &id).await;
            assert_eq!(findings, [Finding::LockNotCanNotDelete]);
            assert_eq!(repairs(&commands), [Finding::LockNotCanNotDelete]);
        }

        #[tokio::test]
        async fn a_missing_cik_and_a_vault_without_soft_delete_are_found() {
            let azure = FakeAzure::new();
            let (id, vault_id) = azure.add_healthy("d1");
            {
                let mut state = azure.state();
                state.ciks.clear();
                let vault = state.vaults.get_mut(&vault_id.to_string().to_ascii_lowercase()).unwrap();
                vault.properties.enable_soft_delete = Some(false);
            }
            let (findings, commands) = inspect_one(&azure, &id).await;
            let expected = [Finding::SoftDeleteOff, Finding::CikMissing, Finding::ExtendedInfoOutOfSync];
            assert_eq!(findings, expected, "a link to a CIK that is gone is stale too");
            assert_eq!(repairs(&commands), expected);
        }

        #[tokio::test]
        async fn a_soft_deleted_vault_goes_to_recovery_and_a_vault_owned_by_another_is_left_alone() {
            let azure = FakeAzure::new();
            let (deleted, deleted_vault) = azure.add_healthy("d1");
            let (stolen, stolen_vault) = azure.add_healthy("d2");
            azure.soft_delete(&deleted_vault);
            {
                let mut state = azure.state();
                let other = state.vaults.get_mut(&stolen_vault.to_string().to_ascii_lowercase()).unwrap();
                other.tags.insert(crate::lifecycle::OWNER_TAG.into(), deleted.to_string());
            }
            let (findings, commands) = inspect_one(&azure, &deleted).await;
            assert_eq!(findings, [Finding::VaultSoftDeleted]);
            assert!(matches!(&commands[..], [Command::VaultDeleted(c)] if c.vault == deleted_vault));
            let (findings, commands) = inspect_one(&azure, &stolen).await;
            assert_eq!(findings, [Finding::VaultNotOwned]);
            assert!(commands.is_empty(), "another device's vault is never changed: {commands:?}");
        }

        #[tokio::test]
        async fn identity_missing_is_fixed_by_provisioning_and_an_unlinked_device_is_not_activated() {
            let azure = FakeAzure::new();
            let (no_identity, _) = azure.add_healthy("d1");
            let (unlinked, _) = azure.add_healthy("d2");
            {
                let mut state = azure.state();
                state.devices.get_mut(&no_identity.to_string().to_ascii_lowercase()).unwrap().identity = None;
                state.infos.get_mut(&unlinked.to_string().to_ascii_lowercase()).unwrap().properties.link =
                    VaultLink::default();
            }
            let (findings, commands) = inspect_one(&azure, &no_identity).await;
            assert_eq!(findings, [Finding::IdentityMissing]);
            assert!(matches!(&commands[..], [Command::ResourceCreated(c)] if c.device == no_identity));
            let (findings, commands) = inspect_one(&azure, &unlinked).await;
            assert_eq!((findings, commands.len()), (vec![Finding::NotActivated], 0));
        }

        #[tokio::test]
        async fn a_run_counts_every_finding_and_sends_only_the_fixes() {
            let azure = FakeAzure::new();
            for i in 0..5 {
                azure.add_healthy(&format!("h{i}"));
            }
            let (drifted, _) = azure.add_healthy("x");
            azure.state().locks.retain(|k, _| !k.contains("kv-x/"));
            let summary = run(&azure.deps(settings()), "sweep-1").await.unwrap();
            assert_eq!(summary.devices, 6);
            assert_eq!(summary.findings[&Finding::Healthy], 5);
            assert_eq!(summary.findings[&Finding::LockMissing], 1);
            assert_eq!((summary.commands, summary.errors), (1, 0));
            let sent = azure.state().sent.clone();
            assert_eq!(sent.len(), 1);
            assert!(sent[0].1.body.contains(&drifted.to_string()), "{:?}", sent[0].1.body);
            let writes = azure.writes();
            assert!(writes.iter().all(|w| w.starts_with("send")), "only the command was written: {writes:?}");
        }
    }
}
