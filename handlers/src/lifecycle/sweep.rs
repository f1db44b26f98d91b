//! The recovery sweep: inspect every Stack Edge device in the configured subscriptions (paged, with bounded
//! concurrency, never holding the fleet in memory) and turn each finding into a command for the worker that fixes
//! it. It writes nothing itself.
//!
//! Pages are streamed: the next page is listed while the last devices of the previous one are still being
//! inspected, so a page boundary never drains the inspections in flight (under a rate-limited ARM an idle slot is
//! rate lost for good).

use std::collections::BTreeMap;
use std::future::Future;

use futures::{Stream, StreamExt};

use crate::azure::models::{Device, KeyVaultSyncStatus};
use crate::deps::Deps;
use crate::error::FunctionError;
use crate::messages::Command;
use crate::resource_id::{DEVICE_TYPE, ResourceId};

use super::{LOCK_NAME, cik_secret_name, is_legacy, owned_by, required_policies};

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

/// What the sweep can find wrong with a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Finding {
    Healthy,
    Legacy,
    NotActivated,
    IdentityMissing,
    VaultMissing,
    VaultSoftDeleted,
    VaultNotOwned,
    SoftDeleteOff,
    PurgeProtectionOff,
    LockMissing,
    AccessPolicyMissing,
    CikMissing,
    CikDisabled,
    ExtendedInfoOutOfSync,
}

/// Inspects one device; returns its findings (never empty) and the commands that fix them.
pub async fn inspect(
    deps: &Deps,
    device: &Device,
    sweep_id: &str,
) -> Result<(Vec<Finding>, Vec<Command>), FunctionError> {
    let id: ResourceId =
        device.id.parse().map_err(|e| FunctionError::Permanent { code: "BadDeviceId", message: format!("{e}") })?;
    let info = deps.devices.get_extended_info(&id).await?;
    if is_legacy(device, &info, deps.settings.cutover) {
        return Ok((vec![Finding::Legacy], vec![]));
    }
    let mut findings = Vec::new();
    let mut commands = Vec::new();
    let Some(principal) = device.principal_id() else {
        findings.push(Finding::IdentityMissing);
        commands.push(Command::ResourceCreated { device: id, cause: format!("sweep:{sweep_id}") });
        return Ok((findings, commands));
    };
    let props = &info.properties;
    let Some(vault_id) = props.link.vault_id() else {
        return Ok((vec![Finding::NotActivated], vec![]));
    };
    match deps.vaults.get_vault(&vault_id).await? {
        None => {
            let name = vault_id.name().unwrap_or_default();
            match deps.vaults.get_deleted_vault(vault_id.subscription(), &device.location, name).await? {
                Some(deleted) => {
                    findings.push(Finding::VaultSoftDeleted);
                    let deletion = deleted.properties.deletion_date.unwrap_or_default();
                    commands.push(Command::VaultDeleted { vault: vault_id, cause: format!("sweep:{deletion}") });
                }
                None => findings.push(Finding::VaultMissing),
            }
        }
        Some(vault) if !owned_by(&vault.tags, &id) => findings.push(Finding::VaultNotOwned),
        Some(vault) => {
            let p = &vault.properties;
            if p.enable_soft_delete == Some(false) {
                findings.push(Finding::SoftDeleteOff);
            }
            if p.enable_purge_protection != Some(true) {
                findings.push(Finding::PurgeProtectionOff);
            }
            let wanted = required_policies(&deps.settings, principal);
            if !wanted.iter().all(|w| p.access_policies.iter().any(|h| h.covers(w))) {
                findings.push(Finding::AccessPolicyMissing);
            }
            if deps.locks.get_lock(&vault_id, LOCK_NAME).await?.is_none() {
                findings.push(Finding::LockMissing);
            }
            let uri = p.vault_uri.clone().unwrap_or_else(|| format!("https://{}.vault.azure.net/", vault.name));
            let name = props.link.channel_integrity_key_name.clone().unwrap_or_else(|| cik_secret_name(&id, &vault_id));
            match deps.secrets.get_cik(&uri, &name, props.link.channel_integrity_key_version.as_deref()).await? {
                None => findings.push(Finding::CikMissing),
                Some(stored) if !stored.enabled => findings.push(Finding::CikDisabled),
                Some(_) => {}
            }
            if props.key_vault_sync_status != Some(KeyVaultSyncStatus::KeyVaultSynced) {
                findings.push(Finding::ExtendedInfoOutOfSync);
            }
        }
    }
    let repairable: Vec<String> = findings
        .iter()
        .filter(|f| !matches!(f, Finding::VaultSoftDeleted | Finding::VaultNotOwned))
        .map(|f| format!("{f:?}"))
        .collect();
    if !repairable.is_empty() {
        commands.push(Command::ReconcileVault { device: id, findings: repairable, sweep_id: sweep_id.to_string() });
    }
    if findings.is_empty() {
        findings.push(Finding::Healthy);
    }
    Ok((findings, commands))
}

/// Counts per finding, and how many commands were sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub devices: usize,
    pub findings: BTreeMap<Finding, usize>,
    pub commands: usize,
    pub errors: usize,
}

/// The devices of every subscription, one page at a time: a page is listed only when the previous one has been
/// handed out. A listing failure is the last item.
fn device_pages<'a, L, F>(
    subscriptions: &'a [String],
    list: L,
) -> impl Stream<Item = Result<Vec<Device>, FunctionError>> + 'a
where
    L: Fn(String, Option<String>) -> F + 'a,
    F: Future<Output = Result<(Vec<Device>, Option<String>), FunctionError>> + 'a,
{
    futures::stream::unfold(Some((0usize, None::<String>)), move |state| {
        // The listing starts here, outside the returned future, which must not borrow `list`.
        let call = state.and_then(|(i, next)| subscriptions.get(i).map(|s| (i, list(s.clone(), next))));
        async move {
            let (i, listing) = call?;
            match listing.await {
                Ok((devices, Some(link))) => Some((Ok(devices), Some((i, Some(link))))),
                Ok((devices, None)) => Some((Ok(devices), Some((i + 1, None)))),
                Err(err) => Some((Err(err), None)),
            }
        }
    })
}

/// Sweeps every subscription in scope. A device that cannot be inspected is counted and skipped (the next sweep
/// retries it); a failure to list or to enqueue fails the run.
pub async fn run(deps: &Deps, sweep_id: &str) -> Result<Summary, FunctionError> {
    let mut summary = Summary::default();
    let list = |subscription: String, next: Option<String>| async move {
        let page = deps.devices.list_devices(&subscription, next.as_deref()).await?;
        let devices: Vec<Device> = page
            .value
            .into_iter()
            .filter(|d| d.id.parse::<ResourceId>().is_ok_and(|id| id.is_type(DEVICE_TYPE)))
            .collect();
        Ok::<_, FunctionError>((devices, page.next_link))
    };
    let inspected = device_pages(&deps.settings.subscriptions, list)
        .flat_map(|page| match page {
            Ok(devices) => futures::stream::iter(devices.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(err) => futures::stream::iter(vec![Err(err)]),
        })
        .map(|device| async move {
            let device = device?;
            let result = inspect(deps, &device, sweep_id).await;
            Ok::<_, FunctionError>((device, result))
        })
        .buffer_unordered(CONCURRENCY);
    let mut inspected = std::pin::pin!(inspected);
    let mut commands = Vec::new();
    // A batch is sent while the inspections go on, both polled here: awaiting the send alone would leave the
    // in-flight inspections unpolled, and one of them may hold the credential's token-cache lock the send needs
    // (that deadlocked the sweep at its first batch).
    let mut sending: Option<futures::future::BoxFuture<'_, Result<usize, FunctionError>>> = None;
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
    use std::cell::RefCell;

    use super::*;

    fn device(name: &str) -> Device {
        serde_json::from_value(serde_json::json!({
            "id": format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}"),
            "name": name,
            "location": "westus",
            "properties": {}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn pages_follow_next_links_then_the_next_subscription_one_listing_at_a_time() {
        let subscriptions = vec!["a".to_string(), "b".to_string()];
        let calls = RefCell::new(Vec::new());
        let list = |subscription: String, next: Option<String>| {
            calls.borrow_mut().push(format!("{subscription}:{}", next.clone().unwrap_or_default()));
            let page = match (subscription.as_str(), next.as_deref()) {
                ("a", None) => (vec![device("a1"), device("a2")], Some("a-2".to_string())),
                ("a", Some("a-2")) => (vec![device("a3")], None),
                _ => (vec![device("b1")], None),
            };
            async move { Ok(page) }
        };
        let mut pages = Box::pin(device_pages(&subscriptions, list));
        let first = pages.next().await.unwrap().unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(*calls.borrow(), ["a:"], "the next page is listed only when asked for");
        let rest: Vec<usize> = pages.map(|p| p.unwrap().len()).collect().await;
        assert_eq!(rest, [1, 1]);
        assert_eq!(*calls.borrow(), ["a:", "a:a-2", "b:"]);
    }

    mod inspection {
        //! `inspect` and `run` against the in-memory Azure: each finding from the Azure state that causes it, the
        //! command that fixes it, and nothing written by the sweep itself.

        use std::sync::Arc;

        use super::*;
        use crate::azure::fake::{FakeAzure, settings};
        use crate::azure::models::VaultLink;

        async fn inspect_one(azure: &Arc<FakeAzure>, id: &ResourceId) -> (Vec<Finding>, Vec<Command>) {
            let deps = azure.deps(settings());
            let device = azure.state().devices[&id.to_string().to_ascii_lowercase()].clone();
            inspect(&deps, &device, "sweep-1").await.unwrap()
        }

        fn repairs(commands: &[Command]) -> Vec<String> {
            match commands {
                [Command::ReconcileVault { findings, .. }] => findings.clone(),
                other => panic!("expected one ReconcileVault, got {other:?}"),
            }
        }

        #[tokio::test]
        async fn a_provisioned_device_is_healthy_and_costs_four_reads() {
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
                Finding::AccessPolicyMissing,
                Finding::LockMissing,
                Finding::CikDisabled,
                Finding::ExtendedInfoOutOfSync,
            ];
            assert_eq!(findings, expected);
            assert_eq!(repairs(&commands), expected.map(|f| format!("{f:?}")));
            assert!(azure.writes().is_empty(), "the sweep writes nothing itself: {:?}", azure.writes());
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
            assert_eq!(findings, [Finding::SoftDeleteOff, Finding::CikMissing]);
            assert_eq!(repairs(&commands), ["SoftDeleteOff", "CikMissing"]);
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
            assert!(matches!(&commands[..], [Command::VaultDeleted { vault, .. }] if *vault == deleted_vault));
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
            assert!(matches!(&commands[..], [Command::ResourceCreated { device, .. }] if *device == no_identity));
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

    #[tokio::test]
    async fn a_listing_failure_is_the_last_page() {
        let subscriptions = vec!["a".to_string(), "b".to_string()];
        let list = |_: String, _: Option<String>| async {
            Err::<(Vec<Device>, Option<String>), _>(FunctionError::Permanent {
                code: "ListFailed",
                message: "no".into(),
            })
        };
        let pages: Vec<_> = device_pages(&subscriptions, list).collect().await;
        assert_eq!(pages.len(), 1);
        assert!(pages[0].is_err());
    }
}
