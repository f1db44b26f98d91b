//! The commands the functions send each other over Service Bus: one struct per command, typed and versioned JSON.
//!
//! Each command type names its wire `kind` and its queue ([`Kind`]); the function table takes its queue names from
//! these types, and a worker receives its own type ([`Inbound`]), already decoded. Every command has a
//! deterministic `MessageId` (so the queue's duplicate detection drops a replayed event or a retried send) and a
//! session id per subject (so one device's work on a queue runs one message at a time, in order). Workers
//! re-derive what to do from what they observe in Azure, so a command says *what happened*, not what to change.
//!
//! A saved example of every kind is in `tests/fixtures/messages/` and round-trips through these types.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::azure::models::{BrokerProperties, OutgoingMessage};
use crate::error::FunctionError;
use crate::lifecycle::finding::Finding;
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
    /// The recovery sweep's work items: one page of one subscription's devices each.
    pub const SWEEP_PAGES: &str = "sweep-pages";
    /// Alerts leave edgevault on their own queue (and in the logs); nothing in edgevault consumes it.
    pub const ALERTS: &str = "alerts";
}

/// One kind of command: its name on the wire (`kind`), its queue, the resource it is about and what caused it
/// (the event, request or sweep its `MessageId` derives from).
pub trait Kind: Serialize + DeserializeOwned + Clone + Into<Command> {
    const KIND: &'static str;
    const QUEUE: &'static str;
    fn subject(&self) -> &ResourceId;
    fn cause(&self) -> std::borrow::Cow<'_, str>;
    /// What the session is keyed on: the subject, so one subject's messages on a queue run one at a time, in order.
    fn session_key(&self) -> String {
        self.subject().to_string().to_ascii_lowercase()
    }
}

/// A Stack Edge resource was written: make sure its managed identity exists.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceCreated {
    pub device: ResourceId,
    pub cause: String,
}

/// The portal asked for an activation key; `vault_name` is the vault the API chose (custom or default).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ActivationKeyRequested {
    pub device: ResourceId,
    pub operation_id: String,
    pub vault_name: Option<VaultName>,
}

/// The sweep found drift in a device's vault set-up; the activation-key worker repairs it without issuing a key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileVault {
    pub device: ResourceId,
    /// What the sweep saw. The worker observes again and fixes what it finds then; these are for the record.
    pub findings: Vec<Finding>,
    pub sweep_id: String,
}

/// The device asked for its Key Vault details to be synced again ("Sync device secrets": its own
/// `updateExtendedInformation` with `syncStatus: KeyVaultSyncPending`, seen as ARM's action event). The
/// provisioning worker checks the linked CIK and the device's secrets and marks the device synced or failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretsSyncRequested {
    pub device: ResourceId,
    pub cause: String,
}

/// An operator asked for a device whose vault is gone for good (purged, past retention, moved away) to be
/// reconfigured: a new vault under `vault_name` (the name the API chose), a new CIK, a new link. It runs on the
/// provisioning queue, in the device's session, so it never runs beside the device's activation or repairs, and a
/// second request for the same device finds the new vault already linked and changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReconfigureRequested {
    pub device: ResourceId,
    pub operation_id: String,
    pub vault_name: VaultName,
}

/// A vault was deleted (it may belong to a device or not; the worker finds out).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultDeleted {
    pub vault: ResourceId,
    pub cause: String,
}

/// A Stack Edge resource was deleted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDeleted {
    pub device: ResourceId,
    pub cause: String,
}

/// One page of the recovery sweep over one subscription. The timer starts a sweep with page 0 of every subscription
/// in scope; the page's worker inspects the devices of that page and sends the next one (ARM's `nextLink`), so no
/// invocation does more than one page, whatever the fleet size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SweepPage {
    /// The sweep: its schedule slot (`sweep-<UTC instant>`), so a second start for the same slot is a duplicate.
    pub sweep_id: String,
    /// `/subscriptions/{id}`.
    pub subscription: ResourceId,
    /// 0 for the first page; the `MessageId` derives from sweep, subscription and page, so a replayed or
    /// duplicated page is dropped by the queue, and one redone after a crash sends the same messages again.
    pub page: u32,
    /// ARM's link to this page (absent for the first). Only links on the ARM endpoint are followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

impl SweepPage {
    /// The page after this one, at `next_link`.
    pub fn next(&self, next_link: String) -> SweepPage {
        SweepPage { page: self.page + 1, next_link: Some(next_link), ..self.clone() }
    }
}

impl Kind for SweepPage {
    const KIND: &'static str = "SweepPage";
    const QUEUE: &'static str = queues::SWEEP_PAGES;
    fn subject(&self) -> &ResourceId {
        &self.subscription
    }
    fn cause(&self) -> std::borrow::Cow<'_, str> {
        format!("{}|{}", self.sweep_id, self.page).into()
    }
    /// Two sessions per subscription and sweep, alternating by page: the next page starts while the last devices of
    /// this one are still being inspected (an idle moment at a page boundary is ARM rate lost for good), yet at most
    /// two pages of a subscription are ever in flight, so a page's share of the rate, and its duration, stay bounded.
    fn session_key(&self) -> String {
        format!("{}|{}|{}", self.subscription.to_string().to_ascii_lowercase(), self.sweep_id, self.page % 2)
    }
}

impl From<SweepPage> for Command {
    fn from(command: SweepPage) -> Command {
        Command::SweepPage(command)
    }
}

/// Implements [`Kind`] for a command struct and its conversion into [`Command`].
macro_rules! kind {
    ($name:ident, $queue:expr, $subject:ident, $cause:ident) => {
        impl Kind for $name {
            const KIND: &'static str = stringify!($name);
            const QUEUE: &'static str = $queue;
            fn subject(&self) -> &ResourceId {
                &self.$subject
            }
            fn cause(&self) -> std::borrow::Cow<'_, str> {
                self.$cause.as_str().into()
            }
        }
        impl From<$name> for Command {
            fn from(command: $name) -> Command {
                Command::$name(command)
            }
        }
    };
}

kind!(ResourceCreated, queues::RESOURCE_CREATED, device, cause);
kind!(ActivationKeyRequested, queues::ACTIVATION_KEY_REQUESTED, device, operation_id);
kind!(ReconcileVault, queues::ACTIVATION_KEY_REQUESTED, device, sweep_id);
kind!(SecretsSyncRequested, queues::ACTIVATION_KEY_REQUESTED, device, cause);
kind!(ReconfigureRequested, queues::ACTIVATION_KEY_REQUESTED, device, operation_id);
kind!(VaultDeleted, queues::VAULT_DELETED, vault, cause);
kind!(ResourceDeleted, queues::RESOURCE_DELETED, device, cause);

/// Any command, for sending: the sweep and the event handler send several kinds at once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind")]
pub enum Command {
    ResourceCreated(ResourceCreated),
    ActivationKeyRequested(ActivationKeyRequested),
    ReconcileVault(ReconcileVault),
    SecretsSyncRequested(SecretsSyncRequested),
    ReconfigureRequested(ReconfigureRequested),
    VaultDeleted(VaultDeleted),
    ResourceDeleted(ResourceDeleted),
    SweepPage(SweepPage),
}

/// Calls `$f` on the command inside, whatever its kind.
macro_rules! each {
    ($command:expr, $inner:ident => $body:expr) => {
        match $command {
            Command::ResourceCreated($inner) => $body,
            Command::ActivationKeyRequested($inner) => $body,
            Command::ReconcileVault($inner) => $body,
            Command::SecretsSyncRequested($inner) => $body,
            Command::ReconfigureRequested($inner) => $body,
            Command::VaultDeleted($inner) => $body,
            Command::ResourceDeleted($inner) => $body,
            Command::SweepPage($inner) => $body,
        }
    };
}

fn kind_of<K: Kind>(_: &K) -> &'static str {
    K::KIND
}

fn queue_of<K: Kind>(_: &K) -> &'static str {
    K::QUEUE
}

impl Command {
    pub fn kind(&self) -> &'static str {
        each!(self, c => kind_of(c))
    }

    pub fn queue(&self) -> &'static str {
        each!(self, c => queue_of(c))
    }

    /// The resource the command is about: the device, or for a vault deletion the vault.
    pub fn subject(&self) -> &ResourceId {
        each!(self, c => c.subject())
    }

    /// The session: one per subject, so a device's messages on a queue are handled one at a time in order.
    pub fn session_id(&self) -> String {
        short_hash(&each!(self, c => c.session_key()))
    }

    /// Deterministic per cause: the same event, request or sweep finding always yields the same id, which the
    /// queue's duplicate detection uses to drop replays.
    pub fn message_id(&self) -> String {
        let cause = each!(self, c => c.cause());
        format!(
            "{}-{}",
            self.kind(),
            short_hash(&format!("{}|{cause}", self.subject().to_string().to_ascii_lowercase()))
        )
    }

    /// The message body: the command with its `kind` and the schema version.
    pub fn to_json(&self) -> String {
        let mut body = serde_json::to_value(self).expect("commands serialize");
        body.as_object_mut()
            .expect("a command is an object")
            .insert("schemaVersion".into(), Value::from(SCHEMA_VERSION));
        body.to_string()
    }

    /// Reads a command of any kind from a message body, its schema version checked as a worker checks it.
    pub fn from_json(body: &Map<String, Value>) -> Result<Self, FunctionError> {
        check_version(body)?;
        crate::protocol::decode(Value::Object(body.clone()), "Data.message")
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

/// What a worker receives: one command kind, or (for a worker that serves two) an enum of them. Its queue and
/// kinds come from the command types.
pub trait Inbound: DeserializeOwned {
    const QUEUE: &'static str;
    const KINDS: &'static [&'static str];
    /// The device the work is about, when it is about one (the error policy records failures on it).
    fn device(&self) -> Option<&ResourceId>;
}

macro_rules! inbound {
    ($name:ident, $device:expr) => {
        impl Inbound for $name {
            const QUEUE: &'static str = <$name as Kind>::QUEUE;
            const KINDS: &'static [&'static str] = &[<$name as Kind>::KIND];
            fn device(&self) -> Option<&ResourceId> {
                let device: fn(&$name) -> Option<&ResourceId> = $device;
                device(self)
            }
        }
    };
}

// Failures of the identity, vault-deleted and resource-deleted workers are not recorded on a device: the first
// does not provision, the others are about a vault or a device that is gone.
inbound!(ResourceCreated, |_| None);
inbound!(VaultDeleted, |_| None);
inbound!(ResourceDeleted, |_| None);
inbound!(SweepPage, |_| None);

/// The provisioning worker's input: an activation request, a sweep's repair, a device's sync request or an
/// operator's reconfigure, on one queue, so one device's work of all four runs one message at a time (the queue's
/// session is the device).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind")]
pub enum Provisioning {
    ActivationKeyRequested(ActivationKeyRequested),
    ReconcileVault(ReconcileVault),
    SecretsSyncRequested(SecretsSyncRequested),
    ReconfigureRequested(ReconfigureRequested),
}

impl Inbound for Provisioning {
    const QUEUE: &'static str = queues::ACTIVATION_KEY_REQUESTED;
    const KINDS: &'static [&'static str] =
        &[ActivationKeyRequested::KIND, ReconcileVault::KIND, SecretsSyncRequested::KIND, ReconfigureRequested::KIND];
    fn device(&self) -> Option<&ResourceId> {
        Some(match self {
            Provisioning::ActivationKeyRequested(c) => &c.device,
            Provisioning::ReconcileVault(c) => &c.device,
            Provisioning::SecretsSyncRequested(c) => &c.device,
            Provisioning::ReconfigureRequested(c) => &c.device,
        })
    }
}

/// Reads a worker's command from a message body: the schema version first, then a kind the worker handles, then
/// the fields, each refusal naming the field and what was expected.
pub fn read<T: Inbound>(body: &Map<String, Value>) -> Result<T, FunctionError> {
    check_version(body)?;
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
    if !T::KINDS.contains(&kind) {
        return Err(FunctionError::invalid(
            "Data.message.kind",
            format!("`{kind}` is not handled on queue {} (it takes {})", T::QUEUE, T::KINDS.join(", ")),
        ));
    }
    crate::protocol::decode(Value::Object(body.clone()), "Data.message")
}

fn check_version(body: &Map<String, Value>) -> Result<(), FunctionError> {
    match body.get("schemaVersion").and_then(Value::as_u64) {
        Some(v) if v == SCHEMA_VERSION as u64 => {}
        Some(v) => {
            return Err(FunctionError::invalid(
                "Data.message.schemaVersion",
                format!("schema version {v} is not understood by this build (it reads {SCHEMA_VERSION})"),
            ));
        }
        None => return Err(FunctionError::invalid("Data.message.schemaVersion", "missing")),
    }
    Ok(())
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
            ResourceCreated { device: device(), cause: "event-1".into() }.into(),
            ActivationKeyRequested {
                device: device(),
                operation_id: "op-1".into(),
                vault_name: Some(VaultName::parse("my-vault").unwrap()),
            }
            .into(),
            ReconcileVault { device: device(), findings: vec![Finding::LockMissing], sweep_id: "sw".into() }.into(),
            SecretsSyncRequested { device: device(), cause: "event-4".into() }.into(),
            ReconfigureRequested {
                device: device(),
                operation_id: "op-2".into(),
                vault_name: VaultName::parse("ase-d-0a1b2c").unwrap(),
            }
            .into(),
            VaultDeleted {
                vault: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v".parse().unwrap(),
                cause: "event-2".into(),
            }
            .into(),
            ResourceDeleted { device: device(), cause: "event-3".into() }.into(),
            SweepPage {
                sweep_id: "sweep-2026-11-28T13:00:00Z".into(),
                subscription: "/subscriptions/s".parse().unwrap(),
                page: 1,
                next_link: Some("https://management.azure.com/subscriptions/s/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices?api-version=2023-12-01&$skiptoken=x".into()),
            }
            .into(),
        ]
    }

    fn body(command: &Command) -> Map<String, Value> {
        serde_json::from_str(&command.to_json()).unwrap()
    }

    #[test]
    fn every_command_round_trips_through_its_message_body() {
        for command in all() {
            let body = body(&command);
            assert_eq!(body["schemaVersion"], 1);
            assert_eq!(body["kind"], command.kind());
            let back: Command = crate::protocol::decode(Value::Object(body), "m").unwrap();
            assert_eq!(back, command);
        }
    }

    #[test]
    fn every_kind_has_a_saved_example_that_its_worker_reads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/messages");
        let mut seen = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let saved: Map<String, Value> = serde_json::from_str(&text).unwrap();
            let command = Command::from_json(&saved).unwrap();
            assert_eq!(Value::Object(body(&command)), Value::Object(saved.clone()), "{}", path.display());
            match &command {
                Command::ResourceCreated(_) => drop(read::<ResourceCreated>(&saved).unwrap()),
                Command::ActivationKeyRequested(_)
                | Command::ReconcileVault(_)
                | Command::SecretsSyncRequested(_)
                | Command::ReconfigureRequested(_) => drop(read::<Provisioning>(&saved).unwrap()),
                Command::VaultDeleted(_) => drop(read::<VaultDeleted>(&saved).unwrap()),
                Command::ResourceDeleted(_) => drop(read::<ResourceDeleted>(&saved).unwrap()),
                Command::SweepPage(_) => drop(read::<SweepPage>(&saved).unwrap()),
            }
            seen.push(command.kind());
        }
        seen.sort();
        let mut kinds: Vec<_> = all().iter().map(Command::kind).collect();
        kinds.sort();
        assert_eq!(seen, kinds, "one example per kind in {}", dir.display());
    }

    #[test]
    fn ids_are_deterministic_per_cause_and_sessions_per_device() {
        let a: Command = ResourceCreated { device: device(), cause: "event-1".into() }.into();
        let same: Command = ResourceCreated {
            device: device().to_string().to_uppercase().replace("SUBSCRIPTIONS", "subscriptions").parse().unwrap(),
            cause: "event-1".into(),
        }
        .into();
        let other: Command = ResourceCreated { device: device(), cause: "event-2".into() }.into();
        assert_eq!(a.message_id(), same.message_id());
        assert_ne!(a.message_id(), other.message_id());
        assert_eq!(a.session_id(), other.session_id());
        assert!(a.message_id().len() <= 128 && a.session_id().len() <= 128);
    }

    #[test]
    fn a_sweep_page_id_is_its_sweep_and_page_and_pages_alternate_between_two_sessions() {
        let page = |sweep: &str, n: u32| -> Command {
            SweepPage {
                sweep_id: sweep.into(),
                subscription: "/subscriptions/s".parse().unwrap(),
                page: n,
                next_link: None,
            }
            .into()
        };
        assert_eq!(page("a", 1).message_id(), page("a", 1).message_id(), "a replayed page is a duplicate");
        assert_ne!(page("a", 1).message_id(), page("a", 2).message_id());
        assert_ne!(page("a", 1).message_id(), page("b", 1).message_id(), "another sweep's page is new work");
        assert_eq!(page("a", 1).session_id(), page("a", 3).session_id());
        assert_ne!(page("a", 1).session_id(), page("a", 2).session_id());
    }

    #[test]
    fn a_worker_refuses_other_schema_versions_and_kinds_it_does_not_handle() {
        let mut body = body(&all()[0]);
        body.insert("schemaVersion".into(), 2.into());
        assert_eq!(read::<ResourceCreated>(&body).unwrap_err().field(), Some("Data.message.schemaVersion"));
        body.insert("schemaVersion".into(), 1.into());
        let err = read::<VaultDeleted>(&body).unwrap_err();
        assert_eq!(err.field(), Some("Data.message.kind"));
        assert!(err.to_string().contains("VaultDeleted"), "{err}");
        body.insert("kind".into(), "Bogus".into());
        assert!(read::<ResourceCreated>(&body).is_err());
        let provisioning = read::<Provisioning>(&self::body(&all()[2])).unwrap();
        assert_eq!(provisioning.device(), Some(&device()));
    }

    #[test]
    fn queues_come_from_the_types() {
        let queues: Vec<_> = all().iter().map(Command::queue).collect();
        assert_eq!(
            queues,
            [
                queues::RESOURCE_CREATED,
                queues::ACTIVATION_KEY_REQUESTED,
                queues::ACTIVATION_KEY_REQUESTED,
                queues::ACTIVATION_KEY_REQUESTED,
                queues::ACTIVATION_KEY_REQUESTED,
                queues::VAULT_DELETED,
                queues::RESOURCE_DELETED,
                queues::SWEEP_PAGES
            ]
        );
        assert_eq!(<Provisioning as Inbound>::QUEUE, ActivationKeyRequested::QUEUE);
    }

    #[test]
    fn no_body_field_shadows_a_broker_property_in_the_hosts_metadata() {
        for command in all() {
            for field in body(&command).keys() {
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
