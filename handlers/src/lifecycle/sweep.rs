//! The recovery sweep: inspect every Stack Edge device in the configured subscriptions (paged, with bounded
//! concurrency, never holding the fleet in memory) and turn each finding into a command for the worker that fixes
//! it. It writes nothing itself.

use std::collections::BTreeMap;

use futures::StreamExt;

use crate::azure::models::{Device, KeyVaultSyncStatus};
use crate::deps::Deps;
use crate::error::FunctionError;
use crate::messages::Command;
use crate::resource_id::{DEVICE_TYPE, ResourceId};

use super::{LOCK_NAME, cik_secret_name, is_legacy, owned_by, required_policies};

/// Devices inspected at once: enough to hide ARM latency, few enough to stay inside ARM's read throttling.
pub const CONCURRENCY: usize = 8;

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
    let info = deps.arm.get_extended_info(&id).await?;
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
    match deps.arm.get_vault(&vault_id).await? {
        None => {
            let name = vault_id.name().unwrap_or_default();
            match deps.arm.get_deleted_vault(vault_id.subscription(), &device.location, name).await? {
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
            if deps.arm.get_lock(&vault_id, LOCK_NAME).await?.is_none() {
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

/// Sweeps every subscription in scope. A device that cannot be inspected is counted and skipped (the next sweep
/// retries it); a failure to list or to enqueue fails the run.
pub async fn run(deps: &Deps, sweep_id: &str) -> Result<Summary, FunctionError> {
    let mut summary = Summary::default();
    for subscription in &deps.settings.subscriptions {
        let mut next: Option<String> = None;
        loop {
            let page = deps.arm.list_devices(subscription, next.as_deref()).await?;
            let devices: Vec<Device> = page
                .value
                .into_iter()
                .filter(|d| d.id.parse::<ResourceId>().is_ok_and(|id| id.is_type(DEVICE_TYPE)))
                .collect();
            let results: Vec<(Device, _)> = futures::stream::iter(devices.into_iter().map(|device| async move {
                let result = inspect(deps, &device, sweep_id).await;
                (device, result)
            }))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
            let mut commands = Vec::new();
            for (device, result) in results {
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
            summary.commands += commands.len();
            deps.enqueue(&commands, Some(sweep_id)).await?;
            match page.next_link {
                Some(link) => next = Some(link),
                None => break,
            }
        }
    }
    Ok(summary)
}
