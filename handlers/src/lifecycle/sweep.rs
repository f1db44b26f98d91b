//! The recovery sweep: inspect every Stack Edge device in the configured subscriptions and turn each finding into a
//! command for the worker that fixes it. It writes nothing itself.
//!
//! It runs as work items, never as one long invocation (the host restarts the handler past `functionTimeout`,
//! failing everything in flight):
//! - [`begin`] (the timer) starts the slot's sweep unless an earlier one is still running (its progress rows say so,
//!   `sweep_progress`), so two sweeps never inspect the fleet at once; [`start`] sends page 0 of every
//!   subscription, under a sweep id taken from the schedule slot ([`sweep_id`]), so a second start for the same
//!   slot is a duplicate the queue drops;
//! - [`page`] (a `SweepPage` message) lists one page of devices, inspects them, sends the next page (ARM's
//!   `nextLink`) as soon as its last devices are in flight, and then the fixes it found. Every message id derives
//!   from the sweep and the page (or the device), so a page redone after a crash or delivered twice sends nothing
//!   new. A page is ARM's page size (100 devices), so an invocation lasts seconds whatever the fleet size. A page
//!   done records its row of progress (`sweep_progress`).
//!
//! Vaults and locks are read by subscription-wide list once per sweep (`fleet_index`) and joined with each page's
//! devices in memory: per device only its extended information (no list form) and its CIK (Key Vault's data plane,
//! whose limits are per vault) are read.

use std::collections::BTreeMap;

use futures::StreamExt;

use super::desired::{Desired, Observed, VaultState, assess, observe_listed};
use super::error::{Error, Refused};
use super::finding::Finding;
use super::fleet_index::FleetIndex;
use super::sweep_progress::{self, PageDone};
use crate::azure::models::Device;
use crate::deps::Deps;
use crate::messages::{Command, ReconcileVault, ResourceCreated, SweepPage, VaultDeleted};
use crate::resource_id::{DEVICE_TYPE, ResourceId};

/// Devices of a page inspected at once. ARM throttles by rate, not by concurrency, and the HTTP stack paces every
/// request to what ARM reports left (`azure::pacing`), so this only has to keep enough calls ready to use the rate
/// when the bucket refills. Measured against local-azure's rate limit at 300/s (docs/BENCHMARKS.md §4): with
/// pacing, 32 swept 10,000 devices in 0.997 × the rate's bound (96: 1.003) with a 39.5 MiB peak (96: 50.0).
pub const CONCURRENCY: usize = 32;

/// Commands sent at most this many at a time (one Service Bus batch per queue).
const ENQUEUE_BATCH: usize = 100;

/// The sweep id of a schedule slot: `sweep-2026-11-28T13:00:00Z`. Every start for the same slot (a host restart, a
/// past-due run, a second instance) has the same id, so its first pages are duplicates the queue drops.
pub fn sweep_id(slot: time::OffsetDateTime) -> String {
    let utc = slot.to_offset(time::UtcOffset::UTC).replace_nanosecond(0).unwrap_or(slot);
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    format!("sweep-{}", utc.format(&format).unwrap_or_default())
}

/// What the timer did with its slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Begun {
    /// The sweep started: page 0 of each subscription was sent.
    Started(Vec<SweepPage>),
    /// Another sweep (this id) is still running: this slot is skipped, so the fleet is not inspected twice at once.
    /// A sweep counts as running until every subscription's last page is recorded, or nothing moved for
    /// `sweep_progress::STALE_AFTER` (a sweep that died does not block the next one for long).
    Skipped { running: String },
}

/// The timer's start of slot `slot`'s sweep `sweep_id`: skipped while an earlier sweep runs, else recorded and
/// started. When the progress cannot be read, the sweep starts: a sweep twice costs ARM reads, a sweep never
/// leaves drift unrepaired.
pub async fn begin(deps: &Deps, sweep_id: &str, slot: time::OffsetDateTime) -> Result<Begun, Error> {
    let now = deps.now();
    // Whether to record this start: not for the same slot again (a host restart, a second instance: its start row
    // stands, its pages are duplicates), nor when the store just failed to answer.
    let record = match sweep_progress::latest(deps).await {
        Ok(Some(status)) if status.progress.id == sweep_id => false,
        Ok(Some(status)) if status.is_running(now) => return Ok(Begun::Skipped { running: status.progress.id }),
        Ok(_) => true,
        Err(err) => {
            tracing::warn!(sweep_id, "could not read the sweeps' progress; starting anyway: {err}");
            false
        }
    };
    if record {
        sweep_progress::prune(deps, now).await;
        sweep_progress::record_start(deps, sweep_id, slot, &deps.settings.subscriptions).await;
    }
    Ok(Begun::Started(start(deps, sweep_id).await?))
}

/// Starts sweep `sweep_id`: page 0 of every subscription in scope, in one send. Returns the pages sent.
pub async fn start(deps: &Deps, sweep_id: &str) -> Result<Vec<SweepPage>, Error> {
    let pages = deps
        .settings
        .subscriptions
        .iter()
        .map(|s| {
            let subscription = format!("/subscriptions/{s}").parse().map_err(|e| {
                Error::refused(Refused::InvalidResourceId, format!("subscription `{s}` in scope is not valid: {e}"))
            })?;
            Ok(SweepPage { sweep_id: sweep_id.to_string(), subscription, page: 0, next_link: None })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let commands: Vec<Command> = pages.iter().cloned().map(Command::from).collect();
    for batch in commands.chunks(ENQUEUE_BATCH) {
        deps.enqueue(batch, Some(sweep_id)).await?;
    }
    Ok(pages)
}

/// Inspects one device on its own (every read its own): what `assess` finds (`Healthy` when nothing) and the
/// commands that fix it. `edgevault-cli status` and the tests' reference use this.
pub async fn inspect(deps: &Deps, device: &Device, sweep_id: &str) -> Result<(Vec<Finding>, Vec<Command>), Error> {
    inspect_listed(deps, device, sweep_id, None).await
}

/// Inspects one device, its vault and lock taken from `index` when it holds them: the identity is fixed by the
/// creation worker, a soft-deleted vault by the recovery worker, everything else by one repair. Terminal findings
/// (legacy, never activated, another's vault) send nothing.
pub async fn inspect_listed(
    deps: &Deps,
    device: &Device,
    sweep_id: &str,
    index: Option<&FleetIndex>,
) -> Result<(Vec<Finding>, Vec<Command>), Error> {
    let id: ResourceId = device.id.parse().map_err(|e| {
        Error::refused(Refused::InvalidResourceId, format!("ARM listed a device id that does not parse: {e}"))
    })?;
    // The audit setting is a read per vault with no list form: each sweep checks the devices whose turn it is.
    let check_audit = super::audit::due(&id, sweep_id);
    let observed =
        observe_listed(deps, &id, device.clone(), |vault| index.and_then(|i| i.listed(vault, &id)), check_audit)
            .await?;
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
    // A linked vault that is neither live nor soft-deleted is gone for good (purged, or moved away): recreating it
    // under its old name would hide that (and fails for a moved vault, which keeps its name). It goes to the
    // recovery worker as a deletion, which raises RecoveryImpossible (saying where a moved vault went) and marks the
    // device; the operator reconfigures it (`lifecycle::reconfigure`).
    let gone = findings.contains(&Finding::VaultMissing) && observed.linked_here();
    for finding in findings {
        match finding {
            Finding::VaultMissing if gone => {
                let Some(vault) = &observed.target else { continue };
                commands.push(VaultDeleted { vault: vault.clone(), cause: "sweep:gone".into() }.into());
            }
            _ if gone && *finding != Finding::IdentityMissing => {}
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

/// What one page found: counts per finding, and how many commands were sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub devices: usize,
    pub findings: BTreeMap<Finding, usize>,
    pub commands: usize,
    pub errors: usize,
    /// Whether a next page was sent (`false`: the subscription is done).
    pub next: bool,
}

/// Sweeps one page, as background work: its ARM reads keep out of the reserve of each bucket
/// (`EDGEVAULT_SWEEP_ARM_RESERVE_PERCENT`), which activations, recoveries and the customer's other tools may use.
/// A device that cannot be inspected is counted and skipped (the next sweep retries it); a failure to list, to read
/// the index or to enqueue fails the page, and Service Bus delivers it again.
pub async fn page(deps: &Deps, work: &SweepPage) -> Result<Summary, Error> {
    crate::azure::pacing::in_background(deps.settings.sweep_arm_reserve_percent, sweep_page(deps, work)).await
}

async fn sweep_page(deps: &Deps, work: &SweepPage) -> Result<Summary, Error> {
    let subscription = work.subscription.subscription();
    let listing =
        async { deps.devices.list_devices(subscription, work.next_link.as_deref()).await.map_err(Error::from) };
    let index = async {
        deps.sweep_indexes
            .get(deps.vaults.as_ref(), deps.locks.as_ref(), &work.sweep_id, subscription)
            .await
            .map_err(Error::from)
    };
    let (listing, index) = tokio::try_join!(listing, index)?;
    let devices: Vec<Device> = listing
        .value
        .into_iter()
        .filter(|d| d.id.parse::<ResourceId>().is_ok_and(|id| id.is_type(DEVICE_TYPE)))
        .collect();
    let total = devices.len();
    let mut next = listing.next_link.map(|link| work.next(link));
    let mut summary = Summary { next: next.is_some(), ..Default::default() };
    let index = &index;
    let mut inspected = std::pin::pin!(
        futures::stream::iter(devices)
            .map(|device| async move {
                let result = inspect_listed(deps, &device, &work.sweep_id, Some(index)).await;
                (device, result)
            })
            .buffer_unordered(CONCURRENCY)
    );
    let mut commands = Vec::new();
    // The next page is sent while this one's last devices are inspected, both polled here (awaiting the send alone
    // would leave the inspections unpolled, and one of them may hold the credential's token-cache lock the send
    // needs).
    let mut sending: Option<futures::future::BoxFuture<'_, Result<(), Error>>> = None;
    let mut done = 0;
    loop {
        if done + CONCURRENCY >= total
            && let Some(continuation) = next.take()
        {
            sending = Some(Box::pin(async move {
                deps.enqueue(&[continuation.into()], Some(&work.sweep_id)).await.map_err(Error::from)
            }));
        }
        tokio::select! {
            item = inspected.next() => {
                let Some((device, result)) = item else { break };
                done += 1;
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
            }
            sent = async { sending.as_mut().expect("guarded by the branch condition").await }, if sending.is_some() => {
                sent?;
                sending = None;
            }
        }
    }
    if let Some(pending) = sending {
        pending.await?;
    }
    for batch in commands.chunks(ENQUEUE_BATCH) {
        deps.enqueue(batch, Some(&work.sweep_id)).await?;
    }
    summary.commands = commands.len();
    let done =
        PageDone { devices: summary.devices, findings: &summary.findings, errors: summary.errors, last: !summary.next };
    sweep_progress::record_page(deps, work, done).await;
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
        use crate::azure::AzureError;
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

        /// The sweep pages sent so far, decoded.
        fn pages_sent(azure: &FakeAzure) -> Vec<SweepPage> {
            let sent = azure.state().sent.clone();
            sent.iter()
                .filter(|(q, _)| q == crate::messages::queues::SWEEP_PAGES)
                .map(|(_, m)| match Command::from_json(&serde_json::from_str(&m.body).unwrap()).unwrap() {
                    Command::SweepPage(page) => page,
                    other => panic!("{other:?} on the sweep queue"),
                })
                .collect()
        }

        /// Sweep `sweep_id` as the queue runs it: started, then every page sent, in order, until no page is left.
        async fn sweep(azure: &Arc<FakeAzure>, deps: &Deps, sweep_id: &str) -> Vec<Summary> {
            start(deps, sweep_id).await.unwrap();
            let mut summaries = Vec::new();
            while let Some(work) = pages_sent(azure).get(summaries.len()).cloned() {
                summaries.push(page(deps, &work).await.unwrap());
            }
            summaries
        }

        #[tokio::test]
        async fn a_sweep_runs_page_by_page_counts_every_finding_and_sends_only_the_fixes() {
            let azure = FakeAzure::new();
            for i in 0..6 {
                azure.add_healthy(&format!("h{i}"));
            }
            let (drifted, _) = azure.add_healthy("x");
            azure.state().locks.retain(|k, _| !k.contains("kv-x/"));
            let deps = azure.deps(settings());
            let summaries = sweep(&azure, &deps, "sweep-1").await;
            assert_eq!(summaries.len(), 3, "7 devices in pages of 3: {summaries:?}");
            assert_eq!(summaries.iter().map(|s| s.next).collect::<Vec<_>>(), [true, true, false]);
            assert_eq!(summaries.iter().map(|s| s.devices).sum::<usize>(), 7);
            let healthy: usize = summaries.iter().filter_map(|s| s.findings.get(&Finding::Healthy)).sum();
            let lock: usize = summaries.iter().filter_map(|s| s.findings.get(&Finding::LockMissing)).sum();
            assert_eq!((healthy, lock), (6, 1));
            assert_eq!(
                summaries.iter().map(|s| (s.commands, s.errors)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
                (1, 0)
            );
            let sent = azure.state().sent.clone();
            let fixes: Vec<_> = sent.iter().filter(|(q, _)| q != crate::messages::queues::SWEEP_PAGES).collect();
            assert_eq!(fixes.len(), 1);
            assert!(fixes[0].1.body.contains(&drifted.to_string()), "{:?}", fixes[0].1.body);
            let pages: Vec<u32> = pages_sent(&azure).iter().map(|p| p.page).collect();
            assert_eq!(pages, [0, 1, 2]);
            let writes = azure.writes();
            assert!(
                writes.iter().all(|w| w.starts_with("send") || w.starts_with("put record sweeps/sweep-1/")),
                "only messages and the pages' progress were written: {writes:?}"
            );
            let progress = sweep_progress::current(&deps).await.unwrap();
            assert_eq!(progress, None, "started without the timer's `begin`: no start row, no current sweep");
        }

        #[tokio::test]
        async fn progress_says_done_with_every_page_device_and_finding_once_even_when_a_page_is_redone() {
            let azure = FakeAzure::new();
            for i in 0..6 {
                azure.add_healthy(&format!("h{i}"));
            }
            azure.add_healthy("x");
            azure.state().locks.retain(|k, _| !k.contains("kv-x/"));
            let deps = azure.deps(settings());
            let slot = time::macros::datetime!(2026-11-28 13:00 UTC);
            let id = sweep_id(slot);
            assert!(matches!(begin(&deps, &id, slot).await.unwrap(), Begun::Started(pages) if pages.len() == 1));
            let first = pages_sent(&azure)[0].clone();
            page(&deps, &first).await.unwrap();
            let partial = sweep_progress::current(&deps).await.unwrap().unwrap();
            assert_eq!((partial.done, partial.pages, partial.devices), (false, 1, 3));
            page(&deps, &first).await.unwrap();
            let mut n = 1;
            while let Some(work) = pages_sent(&azure).get(n).cloned() {
                page(&deps, &work).await.unwrap();
                n += 1;
            }
            let progress = sweep_progress::current(&deps).await.unwrap().unwrap();
            let expected = sweep_progress::SweepProgress {
                id: id.clone(),
                started_at: progress.started_at.clone(),
                done: true,
                pages: 3,
                devices: 7,
                findings: [("Healthy".to_string(), 6), ("LockMissing".to_string(), 1)].into(),
            };
            assert_eq!(progress, expected);
            assert!(progress.started_at.is_some());
        }

        fn down() -> AzureError {
            AzureError::new("records", Some(503), Some("ServiceUnavailable".into()), "the table service is down")
        }

        /// A record store that refuses every call.
        #[derive(Debug)]
        struct Unavailable;

        #[async_trait::async_trait]
        impl crate::azure::traits::Records for Unavailable {
            async fn put(&self, _: &str, _: &str, _: &str, _: &serde_json::Value) -> Result<(), AzureError> {
                Err(down())
            }
            async fn get(&self, _: &str, _: &str, _: &str) -> Result<Option<serde_json::Value>, AzureError> {
                Err(down())
            }
            async fn list(&self, _: &str, _: Option<&str>) -> Result<Vec<crate::azure::models::Record>, AzureError> {
                Err(down())
            }
            async fn delete(&self, _: &str, _: &str, _: &str) -> Result<(), AzureError> {
                Err(down())
            }
        }

        #[tokio::test]
        async fn a_record_store_that_fails_neither_fails_nor_stops_a_sweep() {
            let azure = FakeAzure::new();
            for i in 0..4 {
                azure.add_healthy(&format!("h{i}"));
            }
            let mut deps = azure.deps(settings());
            deps.records = Arc::new(Unavailable);
            let slot = time::macros::datetime!(2026-11-28 13:00 UTC);
            assert!(matches!(begin(&deps, &sweep_id(slot), slot).await.unwrap(), Begun::Started(_)));
            let mut n = 0;
            while let Some(work) = pages_sent(&azure).get(n).cloned() {
                let summary = page(&deps, &work).await.expect("the page stands without its progress row");
                assert_eq!(summary.errors, 0);
                n += 1;
            }
            assert_eq!(n, 2, "4 devices in pages of 3");
        }

        #[tokio::test]
        async fn a_slot_is_skipped_while_the_last_sweep_runs_and_started_once_it_is_done() {
            let azure = FakeAzure::new();
            for i in 0..4 {
                azure.add_healthy(&format!("h{i}"));
            }
            let deps = azure.deps(settings());
            let first_slot = time::macros::datetime!(2026-11-28 13:00 UTC);
            let next_slot = time::macros::datetime!(2026-11-28 13:05 UTC);
            let (first, next) = (sweep_id(first_slot), sweep_id(next_slot));
            assert!(matches!(begin(&deps, &first, first_slot).await.unwrap(), Begun::Started(_)));
            page(&deps, &pages_sent(&azure)[0]).await.unwrap();
            assert_eq!(begin(&deps, &next, next_slot).await.unwrap(), Begun::Skipped { running: first.clone() });
            assert_eq!(pages_sent(&azure).len(), 2, "the skipped slot sent nothing");
            assert!(
                matches!(begin(&deps, &first, first_slot).await.unwrap(), Begun::Started(_)),
                "the same slot again is a duplicate start, not an overlap"
            );
            page(&deps, &pages_sent(&azure)[1]).await.unwrap();
            assert!(matches!(begin(&deps, &next, next_slot).await.unwrap(), Begun::Started(_)), "the first is done");
            assert_eq!(sweep_progress::current(&deps).await.unwrap().unwrap().id, next);
        }

        #[tokio::test]
        async fn a_sweep_that_died_blocks_the_next_slots_only_until_it_is_stale() {
            use crate::azure::traits::Records;
            let azure = FakeAzure::new();
            azure.add_healthy("h0");
            let deps = azure.deps(settings());
            let now = deps.now();
            // A sweep whose pages died: started, never a page recorded.
            let died = |minutes: i64| {
                let started = now - time::Duration::minutes(minutes);
                serde_json::json!({"id": "sweep-dead", "slot": started.format(&time::format_description::well_known::Rfc3339).unwrap(),
                    "startedAt": started.format(&time::format_description::well_known::Rfc3339).unwrap(), "subscriptions": ["s"]})
            };
            azure.put(sweep_progress::TABLE, sweep_progress::STARTS, "sweep-dead", &died(5)).await.unwrap();
            let slot = now.replace_second(0).unwrap();
            let id = sweep_id(slot);
            assert!(matches!(begin(&deps, &id, slot).await.unwrap(), Begun::Skipped { .. }));
            azure.put(sweep_progress::TABLE, sweep_progress::STARTS, "sweep-dead", &died(16)).await.unwrap();
            assert!(matches!(begin(&deps, &id, slot).await.unwrap(), Begun::Started(_)), "stale after 15 minutes");
        }

        #[tokio::test]
        async fn a_page_done_twice_sends_the_same_messages_again_which_the_queue_drops_as_duplicates() {
            let azure = FakeAzure::new();
            for i in 0..5 {
                azure.add_healthy(&format!("h{i}"));
            }
            azure.state().locks.clear();
            let deps = azure.deps(settings());
            start(&deps, "sweep-1").await.unwrap();
            let first = pages_sent(&azure)[0].clone();
            let ids = |azure: &FakeAzure| {
                azure.state().sent.iter().map(|(_, m)| m.broker.message_id.clone()).collect::<Vec<_>>()
            };
            let before = ids(&azure).len();
            page(&deps, &first).await.unwrap();
            let once: Vec<String> = ids(&azure)[before..].to_vec();
            page(&deps, &first).await.unwrap();
            let twice: Vec<String> = ids(&azure)[before + once.len()..].to_vec();
            assert_eq!(once.len(), 4, "the next page and three repairs: {once:?}");
            let (mut once, mut twice) = (once, twice);
            once.sort();
            twice.sort();
            assert_eq!(once, twice, "a redone page sends only messages the queue has seen");
            start(&deps, "sweep-1").await.unwrap();
            assert_eq!(pages_sent(&azure)[0], pages_sent(&azure).last().unwrap().clone());
            assert_eq!(ids(&azure)[0], ids(&azure).last().unwrap().clone(), "a second start of a slot is a duplicate");
        }

        #[tokio::test]
        async fn a_healthy_device_costs_one_arm_read_once_the_lists_are_read() {
            let azure = FakeAzure::new();
            for i in 0..3 {
                azure.add_healthy(&format!("h{i}"));
            }
            let deps = azure.deps(settings());
            start(&deps, "sweep-1").await.unwrap();
            let summary = page(&deps, &pages_sent(&azure)[0]).await.unwrap();
            assert_eq!(summary.findings[&Finding::Healthy], 3);
            let calls = azure.state().calls.clone();
            let per_device: Vec<_> = calls
                .iter()
                .filter(|c| !c.starts_with("list") && !c.starts_with("send") && !c.starts_with("put record"))
                .map(|c| c.split(' ').take(2).collect::<Vec<_>>().join(" "))
                .collect();
            assert_eq!(per_device.iter().filter(|c| *c == "get extended").count(), 3);
            assert_eq!(per_device.iter().filter(|c| *c == "get CIK").count(), 3, "the CIK on Key Vault's data plane");
            assert_eq!(per_device.len(), 6, "nothing else per device: {per_device:?}");
        }

        /// A change to a healthy device's state, given the fake's state and the vault's key.
        type Drift = dyn Fn(&mut crate::azure::fake::State, &str);

        #[tokio::test]
        async fn the_joined_inspection_finds_exactly_what_the_per_device_inspection_finds() {
            use crate::lifecycle::{LOCK_NAME, OWNER_TAG, PRINCIPAL_TAG};
            let azure = FakeAzure::new();
            let drifts: Vec<(&str, Box<Drift>)> = vec![
                ("healthy", Box::new(|_, _| {})),
                ("lock-missing", Box::new(|s, v| s.locks.retain(|k, _| !k.starts_with(&format!("{v}/"))))),
                (
                    "lock-read-only",
                    Box::new(|s, v| {
                        s.locks.get_mut(&format!("{v}/{LOCK_NAME}")).unwrap().properties.level = "ReadOnly".into()
                    }),
                ),
                ("purge-off", Box::new(|s, v| s.vaults.get_mut(v).unwrap().properties.enable_purge_protection = None)),
                (
                    "soft-delete-off",
                    Box::new(|s, v| s.vaults.get_mut(v).unwrap().properties.enable_soft_delete = Some(false)),
                ),
                (
                    "policy-missing",
                    Box::new(|s, v| drop(s.vaults.get_mut(v).unwrap().properties.access_policies.pop())),
                ),
                (
                    "rbac",
                    Box::new(|s, v| s.vaults.get_mut(v).unwrap().properties.enable_rbac_authorization = Some(true)),
                ),
                (
                    "network-denied",
                    Box::new(|s, v| {
                        s.vaults.get_mut(v).unwrap().properties.network_acls =
                            Some(serde_json::json!({"defaultAction": "Deny", "bypass": "AzureServices"}))
                    }),
                ),
                (
                    "identity-replaced",
                    Box::new(|s, v| {
                        let tags = &mut s.vaults.get_mut(v).unwrap().tags;
                        tags.insert(PRINCIPAL_TAG.into(), "7f000000-0000-4000-8000-000000000001".into());
                    }),
                ),
                (
                    "cik-missing",
                    Box::new(|s, v| s.ciks.retain(|k, _| !k.contains(&format!("{}.", v.rsplit('/').next().unwrap())))),
                ),
                (
                    "cik-disabled",
                    Box::new(|s, v| {
                        s.ciks
                            .iter_mut()
                            .filter(|(k, _)| k.contains(&format!("{}.", v.rsplit('/').next().unwrap())))
                            .for_each(|(_, c)| c[0].enabled = false)
                    }),
                ),
                (
                    "out-of-sync",
                    Box::new(|s, v| {
                        s.infos
                            .iter_mut()
                            .filter(|(_, i)| {
                                i.properties
                                    .link
                                    .client_secret_store_id
                                    .as_deref()
                                    .is_some_and(|l| l.eq_ignore_ascii_case(v))
                            })
                            .for_each(|(_, i)| i.properties.key_vault_sync_status = None)
                    }),
                ),
                ("vault-missing", Box::new(|s, v| drop(s.vaults.remove(v)))),
                (
                    "vault-not-owned",
                    Box::new(|s, v| {
                        drop(s.vaults.get_mut(v).unwrap().tags.insert(OWNER_TAG.into(), "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/other".into()))
                    }),
                ),
                ("vault-untagged", Box::new(|s, v| s.vaults.get_mut(v).unwrap().tags.clear())),
                (
                    "identity-missing",
                    Box::new(|s, v| {
                        let device = s.vaults[v].tags[OWNER_TAG].to_ascii_lowercase();
                        s.devices.get_mut(&device).unwrap().identity = None;
                    }),
                ),
                (
                    "not-activated",
                    Box::new(|s, v| {
                        let device = s.vaults[v].tags[OWNER_TAG].to_ascii_lowercase();
                        s.infos.get_mut(&device).unwrap().properties.link = Default::default();
                    }),
                ),
            ];
            let mut soft_deleted = Vec::new();
            for (name, drift) in &drifts {
                let (_, vault) = azure.add_healthy(name);
                drift(&mut azure.state(), &crate::azure::fake::key(&vault));
            }
            for name in ["soft-deleted", "soft-deleted-2"] {
                let (_, vault) = azure.add_healthy(name);
                soft_deleted.push(vault.clone());
                azure.soft_delete(&vault);
            }
            let deps = azure.deps(settings());
            let index = FleetIndex::read(azure.as_ref(), azure.as_ref(), "s").await.unwrap();
            let devices: Vec<Device> = azure.state().devices.values().cloned().collect();
            let mut seen = std::collections::BTreeSet::new();
            for device in &devices {
                let alone = inspect(&deps, device, "sweep-1").await.unwrap();
                let joined = inspect_listed(&deps, device, "sweep-1", Some(&index)).await.unwrap();
                assert_eq!(joined, alone, "{}", device.name);
                seen.extend(alone.0);
            }
            for kind in [
                Finding::Healthy,
                Finding::LockMissing,
                Finding::LockNotCanNotDelete,
                Finding::PurgeProtectionOff,
                Finding::SoftDeleteOff,
                Finding::AccessPolicyMissing,
                Finding::RbacAuthorization,
                Finding::NetworkDenied,
                Finding::DevicePolicyStale,
                Finding::CikMissing,
                Finding::CikDisabled,
                Finding::ExtendedInfoOutOfSync,
                Finding::VaultMissing,
                Finding::VaultNotOwned,
                Finding::IdentityMissing,
                Finding::NotActivated,
                Finding::VaultSoftDeleted,
            ] {
                assert!(seen.contains(&kind), "the fleet has no {kind:?}: {seen:?}");
            }
        }
    }
}
