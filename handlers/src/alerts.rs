//! Alerts: what happened to a device's vault and what edgevault did about it.
//!
//! An alert is written as a structured log event (target `edgevault::alert`, so a Log Analytics query or an alert
//! rule can select it) and sent to the `alerts` queue for whatever pages the operator. Raising and resolving share
//! one id, derived from the incident, so a resolution correlates with its alert and a retried worker does not raise
//! the same alert twice (the queue's duplicate detection drops the repeat).

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub id: String,
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
    fn alert_body_is_json_with_the_documented_fields() {
        let alert = Alert::raise("i", Severity::Critical, "vault purged", "re-activate the device");
        let body: serde_json::Value = serde_json::from_str(&alert.to_outgoing().body).unwrap();
        for field in ["id", "severity", "state", "device", "vault", "what", "action"] {
            assert!(body.get(field).is_some(), "{field}");
        }
        assert_eq!(body["severity"], "Critical");
    }
}
