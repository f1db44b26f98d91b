//! What the fleet view shows beyond what `observe` reads from Azure: each source behind one function, so the work
//! running beside this (the record store, alert tags, sweep progress, the audit setting) replaces one body, not its
//! callers.
//!
//! - [`open_alerts`]: a device's open alerts, as the alerts recorded them on the device.
//! - [`recent_recoveries`] / [`record_recovery`]: one record per deletion incident in the record store's
//!   `recoveries` table (see [`RecoveryRecord`]).
//! - [`last_sweep`]: the current or last sweep's progress, from the rows its pages write (`sweep_progress`).
//! - [`audit_setting`]: whether the vault's audit setting is in place; unknown until it is observed.
//!
//! Why the record store and not the queue or the logs: the `alerts` queue is a hand-off to whatever pages the
//! operator (a consumer takes each message once), and Log Analytics is not reachable from the function with the
//! app's identity alone, nor is it there at all on local-azure. A recovery is an incident with a start (the
//! vault's deletion date, from Key Vault) and an end (recovered, or given up), which Azure keeps nowhere once the
//! vault is back; so the recovery worker writes one record per incident when it ends.

use serde::{Deserialize, Serialize};

use super::device::failure;
use super::error::Error;
use crate::azure::models::Device;
use crate::deps::Deps;
use crate::resource_id::ResourceId;

/// The record-store table of recoveries: partition = the vault's subscription (the fleet page reads the
/// subscriptions in scope, one partition each), row = the incident (vault and deletion date, hashed), so a retried
/// worker rewrites its own row and two incidents never share one.
pub const RECOVERIES_TABLE: &str = "recoveries";

/// How a deletion incident ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecoveryOutcome {
    Recovered,
    Unrecoverable,
}

/// One deletion incident, as the recovery worker ends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryRecord {
    pub device: String,
    pub vault: String,
    /// When Key Vault says the vault was deleted (RFC 3339), when it says so.
    pub deleted_at: Option<String>,
    /// When the worker finished: recovered and re-provisioned, or gave up (RFC 3339).
    pub finished_at: String,
    pub outcome: RecoveryOutcome,
    /// Whether the device's CIK survived (only known for a recovery).
    #[serde(default)]
    pub cik_intact: Option<bool>,
    /// Why a recovery was impossible.
    #[serde(default)]
    pub reason: Option<String>,
}

impl RecoveryRecord {
    /// Seconds from the deletion to the recovery; `None` when either end is unknown or it was not recovered.
    pub fn seconds_to_recover(&self) -> Option<f64> {
        if self.outcome != RecoveryOutcome::Recovered {
            return None;
        }
        let parse = |t: &str| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok();
        let deleted = parse(self.deleted_at.as_deref()?)?;
        let finished = parse(&self.finished_at)?;
        Some((finished - deleted).as_seconds_f64().max(0.0))
    }
}

/// The open alerts of a device in their documented wording (`device::open_alerts`, the device's
/// `edgevault-alerts` tag). A failure recorded with no alert open (`device::failure`) shows as itself.
pub fn open_alerts(device: &Device) -> Vec<String> {
    let open: Vec<String> =
        super::device::open_alerts(device).into_iter().map(|kind| kind.text().to_string()).collect();
    if !open.is_empty() {
        return open;
    }
    failure(device).map(str::to_string).into_iter().collect()
}

/// Records how a deletion incident ended. A failure to record is logged, not raised: the recovery is done and the
/// alerts went out; failing the worker over its history would repeat the work it records.
pub async fn record_recovery(deps: &Deps, vault: &ResourceId, record: &RecoveryRecord) {
    // The log event the Azure Monitor workbook charts recoveries and their time from (infra/modules/workbook.json).
    tracing::info!(target: "edgevault::recovery", device = %record.device, vault = %vault,
        outcome = ?record.outcome, deleted_at = record.deleted_at.as_deref().unwrap_or("-"),
        seconds_to_recover = record.seconds_to_recover().unwrap_or(-1.0), "deletion incident ended");
    let value = serde_json::to_value(record).expect("a record serializes");
    if let Err(err) =
        deps.records.put(RECOVERIES_TABLE, vault.subscription(), &incident_row(vault, record), &value).await
    {
        tracing::warn!(vault = %vault, "could not record the recovery in the `{RECOVERIES_TABLE}` table: {err}");
    }
}

/// The row of an incident: the vault and Key Vault's deletion date (stable across a worker's retries), hashed so
/// the key has none of the characters Table Storage refuses.
fn incident_row(vault: &ResourceId, record: &RecoveryRecord) -> String {
    let vault = vault.to_string().to_ascii_lowercase();
    crate::messages::short_hash(&format!("{vault}|{}", record.deleted_at.as_deref().unwrap_or("purged")))
}

/// The most recent recoveries in the given subscriptions (one partition each), newest first, at most `limit`.
/// A record that does not read as one is skipped (and logged): history must not take the page down.
pub async fn recent_recoveries(
    deps: &Deps,
    subscriptions: &[String],
    limit: usize,
) -> Result<Vec<RecoveryRecord>, Error> {
    let mut records = Vec::new();
    for subscription in subscriptions {
        for stored in deps.records.list(RECOVERIES_TABLE, Some(subscription)).await? {
            match serde_json::from_value::<RecoveryRecord>(stored.value) {
                Ok(record) => records.push(record),
                Err(err) => tracing::warn!(row = %stored.row, "a `{RECOVERIES_TABLE}` record does not read: {err}"),
            }
        }
    }
    records.sort_by(|a, b| b.finished_at.cmp(&a.finished_at));
    records.truncate(limit);
    Ok(records)
}

pub use super::sweep_progress::SweepProgress;

/// The current or last sweep, added up from the rows its pages wrote (`sweep_progress`); `None` before any.
pub async fn last_sweep(deps: &Deps) -> Result<Option<SweepProgress>, Error> {
    super::sweep_progress::current(deps).await
}

/// Whether the device's vault has its audit setting; `None` while that is not observed (`Observed::audit_setting`,
/// read by `lifecycle::audit::observe`).
pub fn audit_setting(observed: &super::desired::Observed) -> Option<bool> {
    observed.audit_setting
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(deleted: Option<&str>, finished: &str, outcome: RecoveryOutcome) -> RecoveryRecord {
        RecoveryRecord {
            device: "/d".into(),
            vault: "/v".into(),
            deleted_at: deleted.map(str::to_string),
            finished_at: finished.into(),
            outcome,
            cik_intact: Some(true),
            reason: None,
        }
    }

    #[test]
    fn time_to_recover_is_from_the_deletion_to_the_end_of_a_recovery() {
        let r = record(Some("2026-12-03T10:00:00Z"), "2026-12-03T10:00:02.5Z", RecoveryOutcome::Recovered);
        assert_eq!(r.seconds_to_recover(), Some(2.5));
        assert_eq!(record(None, "2026-12-03T10:00:02Z", RecoveryOutcome::Recovered).seconds_to_recover(), None);
        let given_up = record(Some("2026-12-03T10:00:00Z"), "2026-12-03T10:00:02Z", RecoveryOutcome::Unrecoverable);
        assert_eq!(given_up.seconds_to_recover(), None);
    }

    #[tokio::test]
    async fn recoveries_are_recorded_once_per_incident_and_read_newest_first() {
        use crate::azure::fake::{FakeAzure, settings};
        let azure = FakeAzure::new();
        let deps = azure.deps(settings());
        let vault: ResourceId =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v".parse().unwrap();
        let first = record(Some("2026-12-01T10:00:00Z"), "2026-12-01T10:00:01Z", RecoveryOutcome::Recovered);
        let second = record(Some("2026-12-02T10:00:00Z"), "2026-12-02T10:00:03Z", RecoveryOutcome::Recovered);
        record_recovery(&deps, &vault, &first).await;
        record_recovery(&deps, &vault, &second).await;
        record_recovery(&deps, &vault, &second).await; // a retried worker rewrites its own row
        assert_eq!(azure.state().records.len(), 2);
        let read = recent_recoveries(&deps, &["s".to_string()], 10).await.unwrap();
        assert_eq!(read, [second.clone(), first]);
        assert_eq!(recent_recoveries(&deps, &["s".to_string()], 1).await.unwrap(), [second]);
        assert!(recent_recoveries(&deps, &["other".to_string()], 10).await.unwrap().is_empty());
    }

    #[test]
    fn a_devices_open_alerts_read_in_their_wording_and_a_bare_failure_as_itself() {
        let mut device = Device::default();
        assert!(open_alerts(&device).is_empty());
        device.tags.insert(super::super::ERROR_TAG.into(), "vault v cannot be recovered: purged".into());
        assert_eq!(open_alerts(&device), ["vault v cannot be recovered: purged"]);
        device.tags.insert(super::super::ALERTS_TAG.into(), "KeyVaultDeleted@1,RecoveryImpossible@2".into());
        let open = open_alerts(&device);
        assert_eq!(open.len(), 2, "{open:?}");
        assert_eq!(open[0], crate::alerts::AlertKind::KeyVaultDeleted.text());
    }
}
