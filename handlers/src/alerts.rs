//! Alerts: what happened to a device's vault and what edgevault did about it.
//!
//! An alert is written as a structured log event (target `edgevault::alert`, so a Log Analytics query or an alert
//! rule can select it) and sent to the `alerts` queue for whatever pages the operator. Raising and resolving share
//! one id, derived from the incident, so a resolution correlates with its alert and a retried worker does not raise
//! the same alert twice (the queue's duplicate detection drops the repeat).
//!
//! [`AlertKind`] names the conditions a check can find on a device, worded as the Stack Edge documentation words
//! its Key Vault alerts (learn.microsoft.com/azure/databox-online/azure-stack-edge-gpu-alerts, "Key Vault alerts"),
//! plus edgevault's own. A device's open kinds are kept on the device (`lifecycle::device::open_alerts`), so each
//! is raised once and resolved, with the same id, when a check finds the condition gone.

use serde::{Deserialize, Serialize};

use crate::azure::models::{BrokerProperties, OutgoingMessage};
use crate::messages::short_hash;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Severity {
    Informational,
    Warning,
    Critical,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum AlertState {
    Raised,
    Resolved,
}

/// What a check found wrong with a device, as an alert the operator recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AlertKind {
    /// The device's vault link or its CIK is gone ("Key Vault is not configured.").
    KeyVaultNotConfigured,
    /// The vault is soft-deleted or gone ("Key Vault is deleted.").
    KeyVaultDeleted,
    /// The device's secrets are not all in the vault ("Couldn't retrieve secret(s) from the Key Vault.").
    SecretsNotRetrieved,
    /// The device cannot reach the vault: network rules deny by default, or access policies no longer apply
    /// because the vault uses Azure RBAC ("Couldn't access the Key Vault").
    KeyVaultNotAccessible,
    /// The device's managed identity, or its access policy on the vault, was removed or replaced.
    IdentityOrAccessPolicyLost,
    /// A CIK version edgevault did not write became the vault's current one; it is not linked.
    UnknownCikVersion,
    /// edgevault's own: the vault's audit logs go nowhere (no storage account or diagnostic setting), most often
    /// because the subscription has not registered Microsoft.Storage or Microsoft.Insights. Activation succeeds.
    AuditLoggingNotConfigured,
    /// edgevault's own: the deleted vault was recovered (informational; never left open).
    KeyVaultRecovered,
    /// edgevault's own: the vault cannot be recovered (purged, past retention, moved away); reconfigure.
    RecoveryImpossible,
}

impl AlertKind {
    pub const ALL: &[AlertKind] = &[
        AlertKind::KeyVaultNotConfigured,
        AlertKind::KeyVaultDeleted,
        AlertKind::SecretsNotRetrieved,
        AlertKind::KeyVaultNotAccessible,
        AlertKind::IdentityOrAccessPolicyLost,
        AlertKind::UnknownCikVersion,
        AlertKind::AuditLoggingNotConfigured,
        AlertKind::KeyVaultRecovered,
        AlertKind::RecoveryImpossible,
    ];

    /// The alert's text, in the documentation's words where it has them.
    pub fn text(self) -> &'static str {
        match self {
            AlertKind::KeyVaultNotConfigured => "Key Vault is not configured.",
            AlertKind::KeyVaultDeleted => "Key Vault is deleted.",
            AlertKind::SecretsNotRetrieved => "Couldn't retrieve secret(s) from the Key Vault.",
            AlertKind::KeyVaultNotAccessible => "Couldn't access the Key Vault.",
            AlertKind::IdentityOrAccessPolicyLost => {
                "The device's managed identity or its access policy on the Key Vault was lost."
            }
            AlertKind::UnknownCikVersion => "A Channel Integrity Key version edgevault did not issue is current.",
            AlertKind::AuditLoggingNotConfigured => "Key Vault audit logging is not configured.",
            AlertKind::KeyVaultRecovered => "Key Vault was recovered.",
            AlertKind::RecoveryImpossible => "Key Vault cannot be recovered.",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            AlertKind::KeyVaultRecovered => Severity::Informational,
            AlertKind::UnknownCikVersion | AlertKind::AuditLoggingNotConfigured => Severity::Warning,
            _ => Severity::Critical,
        }
    }

    /// What the operator does about it (the documentation's recommended action, shortened), ending, as there,
    /// with the refresh that clears the alert.
    pub fn action(self) -> &'static str {
        match self {
            AlertKind::KeyVaultNotConfigured => {
                "edgevault re-links the vault and writes a new CIK if it was lost (re-activate the device then); \
                 refresh the device to clear the alert"
            }
            AlertKind::KeyVaultDeleted => {
                "edgevault recovers the vault from soft delete; past retention, reconfigure the device; refresh to clear"
            }
            AlertKind::SecretsNotRetrieved => {
                "sync the device's secrets again from the device (Sync device secrets), then refresh the device"
            }
            AlertKind::KeyVaultNotAccessible => {
                "let the device in: network rules that allow it, access-policy authorisation (not Azure RBAC); \
                 then refresh the device"
            }
            AlertKind::IdentityOrAccessPolicyLost => {
                "edgevault enables the identity again and grants its principal secrets get and set; refresh to clear"
            }
            AlertKind::UnknownCikVersion => {
                "edgevault wrote its own CIK over the unknown version and links that; find out who wrote the other one"
            }
            AlertKind::AuditLoggingNotConfigured => {
                "register Microsoft.Storage and Microsoft.Insights in the subscription (az provider register \
                 --namespace …); edgevault then creates the storage account and the diagnostic setting; refresh to clear"
            }
            AlertKind::KeyVaultRecovered => "none: lock, access policies and extended information were re-applied",
            AlertKind::RecoveryImpossible => {
                "reconfigure the device (a new vault, a new CIK) and activate it again with the new activation key"
            }
        }
    }

    /// Whether the alert stays open until a check finds its condition gone (everything but the informational).
    pub fn stays_open(self) -> bool {
        self != AlertKind::KeyVaultRecovered
    }

    pub fn name(self) -> &'static str {
        match self {
            AlertKind::KeyVaultNotConfigured => "KeyVaultNotConfigured",
            AlertKind::KeyVaultDeleted => "KeyVaultDeleted",
            AlertKind::SecretsNotRetrieved => "SecretsNotRetrieved",
            AlertKind::KeyVaultNotAccessible => "KeyVaultNotAccessible",
            AlertKind::IdentityOrAccessPolicyLost => "IdentityOrAccessPolicyLost",
            AlertKind::UnknownCikVersion => "UnknownCikVersion",
            AlertKind::AuditLoggingNotConfigured => "AuditLoggingNotConfigured",
            AlertKind::KeyVaultRecovered => "KeyVaultRecovered",
            AlertKind::RecoveryImpossible => "RecoveryImpossible",
        }
    }

    pub fn from_name(name: &str) -> Option<AlertKind> {
        AlertKind::ALL.iter().copied().find(|k| k.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The alert for this kind on `device`, first raised at `raised` (unix seconds): the id is derived from all
    /// three, so the resolution of this occurrence carries the same id and a later occurrence another.
    pub fn alert(self, device: &str, vault: Option<&str>, raised: i64, detail: &str) -> Alert {
        let what = if detail.is_empty() { self.text().to_string() } else { format!("{} {detail}", self.text()) };
        let mut alert =
            Alert::raise(&format!("{device}|{}|{raised}", self.name()), self.severity(), what, self.action())
                .about(Some(device), vault);
        alert.kind = Some(self);
        alert
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub id: String,
    /// The condition, for alerts about one ([`AlertKind`]); absent for one-off incidents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AlertKind>,
    pub severity: Severity,
    pub state: AlertState,
    pub device: Option<String>,
    pub vault: Option<String>,
    /// What happened, in a sentence.
    pub what: String,
    /// What edgevault did, or what the operator must do.
    pub action: String,
    /// Who requested the work the alert is about (`<name> (<object id>)`), when a caller did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

impl Alert {
    /// An alert for one incident; `incident` is whatever identifies it uniquely (e.g. vault id + deletion date).
    pub fn raise(incident: &str, severity: Severity, what: impl Into<String>, action: impl Into<String>) -> Self {
        Alert {
            id: format!("alert-{}", short_hash(incident)),
            kind: None,
            severity,
            state: AlertState::Raised,
            device: None,
            vault: None,
            what: what.into(),
            action: action.into(),
            requested_by: None,
        }
    }

    pub fn requested_by(mut self, caller: Option<&str>) -> Self {
        self.requested_by = caller.map(str::to_string);
        self
    }

    pub fn about(mut self, device: Option<&str>, vault: Option<&str>) -> Self {
        self.device = device.map(str::to_string);
        self.vault = vault.map(str::to_string);
        self
    }

    /// The resolution of this alert: same id, same subject.
    pub fn resolved(&self, action: impl Into<String>) -> Self {
        Alert { state: AlertState::Resolved, action: action.into(), ..self.clone() }
    }

    pub fn log(&self) {
        let state = format!("{:?}", self.state);
        let severity = format!("{:?}", self.severity);
        let (device, vault) = (self.device.as_deref().unwrap_or("-"), self.vault.as_deref().unwrap_or("-"));
        let requested_by = self.requested_by.as_deref().unwrap_or("-");
        match self.severity {
            Severity::Critical => tracing::error!(target: "edgevault::alert", alert_id = %self.id, %state, %severity,
                device, vault, requested_by, action = %self.action, "{}", self.what),
            Severity::Warning => tracing::warn!(target: "edgevault::alert", alert_id = %self.id, %state, %severity,
                device, vault, requested_by, action = %self.action, "{}", self.what),
            Severity::Informational => tracing::info!(target: "edgevault::alert", alert_id = %self.id, %state,
                %severity, device, vault, requested_by, action = %self.action, "{}", self.what),
        }
    }

    pub fn to_outgoing(&self) -> OutgoingMessage {
        OutgoingMessage {
            body: serde_json::to_string(self).expect("serializable"),
            broker: BrokerProperties {
                message_id: format!("{}-{:?}", self.id, self.state),
                label: Some(format!("{:?}", self.severity)),
                correlation_id: Some(self.id.clone()),
                ..Default::default()
            },
            properties: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_and_resolve_correlate_by_id() {
        let raised = Alert::raise("vault-x|2026-11-28", Severity::Warning, "vault deleted", "recovering")
            .about(Some("/d"), Some("/v"));
        let resolved = raised.resolved("recovered");
        assert_eq!(raised.id, resolved.id);
        assert_eq!(resolved.state, AlertState::Resolved);
        assert_eq!(resolved.device.as_deref(), Some("/d"));
        assert_ne!(raised.to_outgoing().broker.message_id, resolved.to_outgoing().broker.message_id);
        assert_eq!(raised.to_outgoing().broker.correlation_id, resolved.to_outgoing().broker.correlation_id);
        assert_eq!(Alert::raise("vault-x|2026-11-28", Severity::Warning, "a", "b").id, raised.id, "deterministic");
    }

    #[test]
    fn kinds_have_stable_names_and_ids_per_occurrence() {
        for kind in AlertKind::ALL {
            assert_eq!(AlertKind::from_name(kind.name()), Some(*kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name());
        }
        let a = AlertKind::KeyVaultDeleted.alert("/d", None, 10, "");
        assert_eq!(a.id, AlertKind::KeyVaultDeleted.alert("/d", None, 10, "again").id);
        assert_ne!(a.id, AlertKind::KeyVaultDeleted.alert("/d", None, 11, "").id, "a later occurrence");
        assert_eq!(a.what, "Key Vault is deleted.");
        let body: serde_json::Value = serde_json::from_str(&a.to_outgoing().body).unwrap();
        assert_eq!(body["kind"], "KeyVaultDeleted");
    }

    #[test]
    fn alert_body_is_json_with_the_documented_fields() {
        let alert = Alert::raise("i", Severity::Critical, "vault purged", "re-activate the device");
        let body: serde_json::Value = serde_json::from_str(&alert.to_outgoing().body).unwrap();
        for field in ["id", "severity", "state", "device", "vault", "what", "action"] {
            assert!(body.get(field).is_some(), "{field}");
        }
        assert_eq!(body["severity"], "Critical");
    }
}
