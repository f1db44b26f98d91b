//! Refresh: re-check one device now, as the Stack Edge portal's "refresh the Key Vault details" does at the end of
//! every documented fix. Everything [`assess`] judges is read (the device's secrets too, which the sweep does not
//! read), the device's alerts are settled — raised once when found, resolved when no longer found — and the fixes
//! are queued for the same workers the sweep feeds. It reports what it found.

use serde::Serialize;

use super::desired::{Desired, alerts, assess, observe, observe_secrets, unjudged};
use super::device::{AlertChanges, settle_alerts};
use super::error::Error;
use super::finding::Finding;
use super::reconfigure::{Gone, moved_to};
use super::sweep::fixes;
use crate::alerts::AlertKind;
use crate::azure::models::KeyVaultSyncStatus;
use crate::deps::Deps;
use crate::resource_id::ResourceId;

/// What a refresh found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub resource_id: String,
    /// Nothing is wrong.
    pub healthy: bool,
    pub findings: Vec<Finding>,
    pub sync_status: Option<KeyVaultSyncStatus>,
    pub alerts: AlertChanges,
    /// The commands queued to fix what was found (their kinds).
    pub repairs: Vec<&'static str>,
    /// Where the device's vault went when it was moved to another resource group or subscription (recognised by
    /// its owner tag): treated as deleted; reconfigure the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<String>,
}

/// Re-checks device `id`; `None` when it does not exist.
pub async fn refresh(deps: &Deps, id: &ResourceId) -> Result<Option<Report>, Error> {
    let Some(mut observed) = observe(deps, id, None).await? else { return Ok(None) };
    observe_secrets(deps, &mut observed).await?;
    let findings = assess(&observed, &Desired::new(&deps.settings));
    let mut found = alerts(&observed, &findings);
    let moved_to = match findings.contains(&Finding::VaultMissing) && observed.linked_here() {
        true => moved_to(deps, &observed).await?,
        false => None,
    };
    if let Some(to) = &moved_to {
        let name = observed.target.as_ref().and_then(|t| t.name()).unwrap_or_default();
        let detail = Gone::Moved { to: to.to_string() }.describe(name);
        for (kind, text) in &mut found {
            if *kind == AlertKind::KeyVaultDeleted {
                *text = format!("{detail}: reconfigure the device.");
            }
        }
    }
    let keep = unjudged(&observed);
    let vault = observed.target.as_ref().map(ToString::to_string);
    let changes = settle_alerts(deps, id, &mut observed.device, vault.as_deref(), &found, Some(&keep)).await?;
    let check = format!("refresh:{}", deps.now().unix_timestamp());
    let commands = fixes(&observed, &findings, &check);
    deps.enqueue(&commands, Some(&check)).await?;
    Ok(Some(Report {
        resource_id: id.to_string(),
        healthy: findings.is_empty(),
        sync_status: observed.info.properties.key_vault_sync_status,
        repairs: commands.iter().map(|c| c.kind()).collect(),
        findings,
        alerts: changes,
        moved_to: moved_to.map(|m| m.to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::fake::{FakeAzure, key, settings};
    use crate::lifecycle::device::open_alerts;

    #[tokio::test]
    async fn a_refresh_raises_what_it_finds_once_queues_the_fix_and_a_later_refresh_resolves_it() {
        let azure = FakeAzure::new();
        let (id, vault) = azure.add_healthy("d1");
        azure.put_device_secrets("d1");
        let deps = azure.deps(settings());
        let healthy = refresh(&deps, &id).await.unwrap().unwrap();
        assert!(healthy.healthy && healthy.repairs.is_empty() && healthy.alerts == AlertChanges::default());

        // The device's access policy is lost: found, alerted, the repair queued.
        azure.state().vaults.get_mut(&key(&vault)).unwrap().properties.access_policies.remove(0);
        let report = refresh(&deps, &id).await.unwrap().unwrap();
        assert_eq!(report.findings, [Finding::AccessPolicyMissing]);
        assert_eq!(report.alerts.raised, [AlertKind::IdentityOrAccessPolicyLost]);
        assert_eq!(report.repairs, ["ReconcileVault"]);
        let again = refresh(&deps, &id).await.unwrap().unwrap();
        assert!(again.alerts.raised.is_empty(), "raised once");
        assert_eq!(again.alerts.open, [AlertKind::IdentityOrAccessPolicyLost]);

        // Fixed (as the queued repair would): the next refresh resolves the alert with the id it was raised with.
        crate::lifecycle::provision::provision(&deps, &id, None, false).await.unwrap();
        let device = azure.state().devices[&key(&id)].clone();
        assert!(open_alerts(&device).is_empty(), "the repair's own check resolved it");
        let alerts = azure.alerts();
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        let body = |i: usize| serde_json::from_str::<serde_json::Value>(&alerts[i]).unwrap();
        assert_eq!((body(0)["id"].clone(), body(1)["state"].clone()), (body(1)["id"].clone(), "Resolved".into()));
        assert!(refresh(&deps, &id).await.unwrap().unwrap().healthy);
    }

    #[tokio::test]
    async fn a_refresh_of_a_device_without_its_secrets_reports_them_and_queues_no_repair_for_them() {
        let azure = FakeAzure::new();
        let (id, _) = azure.add_healthy("d1");
        let report = refresh(&azure.deps(settings()), &id).await.unwrap().unwrap();
        assert_eq!(report.findings, [Finding::DeviceSecretsMissing]);
        assert_eq!(report.alerts.raised, [AlertKind::SecretsNotRetrieved]);
        assert!(report.repairs.is_empty(), "only the device can push its secrets");
    }

    #[tokio::test]
    async fn a_refresh_reports_where_a_moved_vault_went_in_its_answer_and_alert_and_queues_no_recreation() {
        let azure = FakeAzure::new();
        let (id, old) = azure.add_healthy("d1");
        let moved = ResourceId::new("s2", "elsewhere", crate::resource_id::VAULT_TYPE, old.name().unwrap());
        azure.move_vault(&old, &moved);
        let mut settings = settings();
        settings.subscriptions.push("s2".into());
        let report = refresh(&azure.deps(settings), &id).await.unwrap().unwrap();
        assert_eq!(report.moved_to.as_deref(), Some(moved.to_string().as_str()));
        assert!(report.alerts.raised.contains(&AlertKind::KeyVaultDeleted));
        assert_eq!(report.repairs, ["VaultDeleted"], "to the recovery worker, never a recreation under its name");
        let alert = azure.alerts().into_iter().find(|a| a.contains("KeyVaultDeleted")).unwrap();
        assert!(alert.contains("moved to") && alert.contains("/resourceGroups/elsewhere/"), "{alert}");
    }
}
