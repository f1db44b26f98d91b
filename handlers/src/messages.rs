//! The commands the functions send each other over Service Bus: typed, versioned JSON.
//!
//! Every command knows its queue, a deterministic `MessageId` (so the queue's duplicate detection drops a replayed
//! event or a retried send) and a session id per device (so one device's work on a queue runs one message at a
//! time, in order). Workers re-derive what to do from what they observe in Azure, so a command says *what
//! happened*, not what to change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::azure::models::{BrokerProperties, OutgoingMessage};
use crate::error::FunctionError;
use crate::resource_id::ResourceId;
use crate::vault_name::VaultName;

/// The schema version this build writes and reads. A message of another version is refused (and so dead-lettered
/// after its retries) instead of being misread.
pub const SCHEMA_VERSION: u32 = 1;

/// How many deliveries a queue allows before dead-lettering (the Service Bus default, set on every queue in
/// `infra/`); the workers treat the last one as final.
pub const MAX_DELIVERY_COUNT: u32 = 10;

/// The queues, one per worker.
pub mod queues {
    pub const RESOURCE_CREATED: &str = "resource-created";
    pub const ACTIVATION_KEY_REQUESTED: &str = "activation-key-requested";
    pub const VAULT_DELETED: &str = "vault-deleted";
    pub const RESOURCE_DELETED: &str = "resource-deleted";
    /// Alerts leave edgevault on their own queue (and in the logs); nothing in edgevault consumes it.
    pub const ALERTS: &str = "alerts";
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all_fields = "camelCase")]
pub enum Command {
    /// A Stack Edge resource was written: make sure its managed identity exists.
    ResourceCreated { device: ResourceId, cause: String },
    /// The portal asked for an activation key; `vault_name` is the custom name, if one was given.
    ActivationKeyRequested { device: ResourceId, operation_id: String, vault_name: Option<VaultName> },
    /// The sweep found drift in a device's vault set-up; the activation-key worker repairs it without issuing a key.
    ReconcileVault { device: ResourceId, findings: Vec<String>, sweep_id: String },
    /// A vault was deleted (it may belong to a device or not; the worker finds out).
    VaultDeleted { vault: ResourceId, cause: String },
    /// A Stack Edge resource was deleted.
    ResourceDeleted { device: ResourceId, cause: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    schema_version: u32,
    #[serde(flatten)]
    command: Command,
}

impl Command {
    pub fn kind(&self) -> &'static str {
        match self {
            Command::ResourceCreated { .. } => "ResourceCreated",
            Command::ActivationKeyRequested { .. } => "ActivationKeyRequested",
            Command::ReconcileVault { .. } => "ReconcileVault",
            Command::VaultDeleted { .. } => "VaultDeleted",
            Command::ResourceDeleted { .. } => "ResourceDeleted",
        }
    }

    pub fn queue(&self) -> &'static str {
        match self {
            Command::ResourceCreated { .. } => queues::RESOURCE_CREATED,
            Command::ActivationKeyRequested { .. } | Command::ReconcileVault { .. } => queues::ACTIVATION_KEY_REQUESTED,
            Command::VaultDeleted { .. } => queues::VAULT_DELETED,
            Command::ResourceDeleted { .. } => queues::RESOURCE_DELETED,
        }
    }

    /// The resource the command is about: the device, or for a vault deletion the vault.
    pub fn subject(&self) -> &ResourceId {
        match self {
            Command::ResourceCreated { device, .. }
            | Command::ActivationKeyRequested { device, .. }
            | Command::ReconcileVault { device, .. }
            | Command::ResourceDeleted { device, .. } => device,
            Command::VaultDeleted { vault, .. } => vault,
        }
    }

    /// The session: one per subject, so a device's messages on a queue are handled one at a time in order.
    pub fn session_id(&self) -> String {
        short_hash(&self.subject().to_string().to_ascii_lowercase())
    }

    /// Deterministic per cause: the same event, request or sweep finding always yields the same id, which the
    /// queue's duplicate detection uses to drop replays.
    pub fn message_id(&self) -> String {
        let cause = match self {
            Command::ResourceCreated { cause, .. }
            | Command::VaultDeleted { cause, .. }
            | Command::ResourceDeleted { cause, .. } => cause.as_str(),
            Command::ActivationKeyRequested { operation_id, .. } => operation_id.as_str(),
            Command::ReconcileVault { sweep_id, .. } => sweep_id.as_str(),
        };
        format!(
            "{}-{}",
            self.kind(),
            short_hash(&format!("{}|{cause}", self.subject().to_string().to_ascii_lowercase()))
        )
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&Envelope { schema_version: SCHEMA_VERSION, command: self.clone() })
            .expect("serializable")
    }

    /// Reads a command from a message body, refusing other schema versions with a clear error.
    pub fn from_json(body: &serde_json::Map<String, serde_json::Value>) -> Result<Self, FunctionError> {
        match body.get("schemaVersion").and_then(|v| v.as_u64()) {
            Some(v) if v == SCHEMA_VERSION as u64 => {}
            Some(v) => {
                return Err(FunctionError::invalid(
                    "Data.message.schemaVersion",
                    format!("schema version {v} is not understood by this build (it reads {SCHEMA_VERSION})"),
                ));
            }
            None => return Err(FunctionError::invalid("Data.message.schemaVersion", "missing")),
        }
        let envelope: Envelope = crate::protocol::decode(serde_json::Value::Object(body.clone()), "Data.message")?;
        Ok(envelope.command)
    }

    pub fn to_outgoing(&self, correlation_id: Option<&str>) -> OutgoingMessage {
        OutgoingMessage {
            body: self.to_json(),
            broker: BrokerProperties {
                message_id: self.message_id(),
                session_id: Some(self.session_id()),
                correlation_id: correlation_id.map(str::to_string),
                label: Some(self.kind().to_string()),
                scheduled_enqueue_time_utc: None,
            },
            properties: BTreeMap::from([("schemaVersion".to_string(), SCHEMA_VERSION.to_string())]),
        }
    }
}

/// 32 hex characters of SHA-256: short enough for ids, long enough never to collide by accident.
pub fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> ResourceId {
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d".parse().unwrap()
    }

    fn all() -> Vec<Command> {
        vec![
            Command::ResourceCreated { device: device(), cause: "event-1".into() },
            Command::ActivationKeyRequested {
                device: device(),
                operation_id: "op-1".into(),
                vault_name: Some(VaultName::parse("my-vault").unwrap()),
            },
            Command::ReconcileVault { device: device(), findings: vec!["LockMissing".into()], sweep_id: "sw".into() },
            Command::VaultDeleted {
                vault: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v".parse().unwrap(),
                cause: "event-2".into(),
            },
            Command::ResourceDeleted { device: device(), cause: "event-3".into() },
        ]
    }

    #[test]
    fn every_command_round_trips_through_its_message_body() {
        for command in all() {
            let body: serde_json::Map<_, _> = serde_json::from_str(&command.to_json()).unwrap();
            assert_eq!(body["schemaVersion"], 1);
            assert_eq!(body["kind"], command.kind());
            assert_eq!(Command::from_json(&body).unwrap(), command);
        }
    }

    #[test]
    fn fixture_message_reads() {
        let text = include_str!("../../tests/fixtures/messages/activation-key-requested.json");
        let body: serde_json::Map<_, _> = serde_json::from_str(text).unwrap();
        let command = Command::from_json(&body).unwrap();
        assert_eq!(command.queue(), queues::ACTIVATION_KEY_REQUESTED);
        assert_eq!(
            serde_json::to_value(Envelope { schema_version: 1, command }).unwrap(),
            serde_json::Value::Object(body)
        );
    }

    #[test]
    fn ids_are_deterministic_per_cause_and_sessions_per_device() {
        let a = Command::ResourceCreated { device: device(), cause: "event-1".into() };
        let same = Command::ResourceCreated {
            device: device().to_string().to_uppercase().replace("SUBSCRIPTIONS", "subscriptions").parse().unwrap(),
            cause: "event-1".into(),
        };
        let other = Command::ResourceCreated { device: device(), cause: "event-2".into() };
        assert_eq!(a.message_id(), same.message_id());
        assert_ne!(a.message_id(), other.message_id());
        assert_eq!(a.session_id(), other.session_id());
        assert!(a.message_id().len() <= 128 && a.session_id().len() <= 128);
    }

    #[test]
    fn other_schema_versions_and_unknown_kinds_are_refused() {
        let mut body: serde_json::Map<_, _> = serde_json::from_str(&all()[0].to_json()).unwrap();
        body.insert("schemaVersion".into(), 2.into());
        assert_eq!(Command::from_json(&body).unwrap_err().field(), Some("Data.message.schemaVersion"));
        body.insert("schemaVersion".into(), 1.into());
        body.insert("kind".into(), "Bogus".into());
        assert!(Command::from_json(&body).is_err());
    }

    #[test]
    fn no_body_field_shadows_a_broker_property_in_the_hosts_metadata() {
        for command in all() {
            let body: serde_json::Map<_, _> = serde_json::from_str(&command.to_json()).unwrap();
            for field in body.keys() {
                let clash = crate::triggers::SERVICE_BUS_BINDING_DATA.iter().find(|n| n.eq_ignore_ascii_case(field));
                assert!(clash.is_none(), "{}: body field `{field}` would overwrite Metadata.{clash:?}", command.kind());
            }
        }
    }

    #[test]
    fn outgoing_message_carries_id_session_and_label() {
        let command = &all()[1];
        let outgoing = command.to_outgoing(Some("corr"));
        assert_eq!(outgoing.broker.message_id, command.message_id());
        assert_eq!(outgoing.broker.session_id.as_deref(), Some(command.session_id().as_str()));
        assert_eq!(outgoing.broker.label.as_deref(), Some("ActivationKeyRequested"));
        assert_eq!(outgoing.broker.correlation_id.as_deref(), Some("corr"));
    }
}
