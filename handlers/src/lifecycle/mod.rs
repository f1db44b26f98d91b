//! The Key Vault lifecycle of a Stack Edge device, as reconcilers: each observes Azure and makes it match what the
//! device should have, so a duplicate, replayed or concurrent message changes nothing.
//!
//! - [`audit`]: the vault's audit logging (a locked storage account and a diagnostic setting), made and checked.
//! - [`desired`]: the one desired state. [`observe`] reads a device and its vault once, [`assess`] compares what
//!   it saw with what should be and returns the [`Finding`]s — the only place the rules live. The sweep reports
//!   findings; the workers fix exactly the findings.
//! - [`device`]: what is done to a device (identity, extended information, failure marks, legacy).
//! - [`vault`]: what is done to a vault (its name and id, ownership, creation, recovery, lock, policies, CIK).
//! - [`prerequisites`]: what a subscription needs first (`Microsoft.KeyVault` registered).
//! - [`provision`]: observe → assess → fix, for an activation or a sweep's repair.
//! - [`recovery`]: a deleted vault is recovered from soft delete and re-provisioned.
//! - [`reconfigure`]: a device whose vault is gone for good (purged, past retention, moved away) gets a new one.
//! - [`refresh`]: one device re-checked now: findings reported, alerts raised or resolved, fixes queued.
//! - [`retirement`]: a deleted device's vault ends with it (with the operator's consent).
//! - [`secrets_sync`]: a device's request to sync its secrets, verified and marked synced or failed.
//! - [`sweep`]: the periodic inspection of every device in scope.
//! - [`status`]: what the activation-key API reports for a device.
//! - [`fleet`]: the fleet as operators look at it (the fleet page, `edgevault-cli status`), read off `assess`.
//! - [`history`]: what the fleet view shows that Azure does not keep (recoveries, open alerts, sweep progress).
//! - [`error`]: the lifecycle's error: an Azure failure, or a typed refusal.
//!
//! What edgevault owns is marked in Azure, not in a database: the vault's `edgevault-device` tag names its device,
//! the lock has a fixed name, and the device's extended information links the vault and the CIK.

pub mod audit;
pub mod desired;
pub mod device;
pub mod error;
pub mod finding;
pub mod fleet;
pub mod fleet_index;
pub mod history;
pub mod prerequisites;
pub mod provision;
pub mod reconfigure;
pub mod recovery;
pub mod refresh;
pub mod retirement;
pub mod secrets_sync;
pub mod status;
pub mod sweep;
pub mod sweep_progress;
pub mod vault;
pub mod vault_brief;
pub mod vault_facts;

pub use desired::{Desired, Observed, assess, observe};
pub use error::{Error, Refusal, Refused};
pub use finding::Finding;

/// Tag on a vault naming the device (resource id) it belongs to.
pub const OWNER_TAG: &str = "edgevault-device";
/// Tag on a vault naming the device principal edgevault granted its policy to, so that when the device's identity
/// is replaced (removed and enabled again: a new principal) the old principal's policy is known to be stale.
pub const PRINCIPAL_TAG: &str = "edgevault-device-principal";
/// Tag on a device holding the reason of its last failed synchronisation, shown by the status API.
pub const ERROR_TAG: &str = "edgevault-sync-error";
/// Tag on a device naming who last requested its activation key: `<display name> (<object id>)`.
pub const REQUESTED_BY_TAG: &str = "edgevault-requested-by";
/// The name of the lock edgevault puts on each vault.
pub const LOCK_NAME: &str = "edgevault-do-not-delete";
/// Its level: the vault can be read and changed, not deleted.
pub const LOCK_LEVEL: &str = "CanNotDelete";
pub const LOCK_NOTES: &str = "Holds the Channel Integrity Key of an Azure Stack Edge device; managed by edgevault.";
/// Soft-delete retention of every vault edgevault creates (the maximum Key Vault allows).
pub const RETENTION_DAYS: u32 = 90;
/// Secret permissions of the device's identity: read its CIK and push its own secrets ("Sync device secrets"),
/// nothing else, nothing on keys or certificates (learn.microsoft.com/azure/databox-online/
/// azure-stack-edge-gpu-activation-key-vault: the identity's access policy is secrets Get and Set).
pub const DEVICE_SECRET_PERMISSIONS: &[&str] = &["get", "set"];
/// Secret permissions of edgevault's identity: read and write CIKs, recover a deleted one, and list the secrets'
/// names to check the device's are there (a list returns names and attributes, never values: edgevault never
/// reads a BitLocker key or a BMC password). Never `purge`.
pub const EDGEVAULT_SECRET_PERMISSIONS: &[&str] = &["get", "set", "list", "recover"];
/// The secrets a device pushes to its vault, under the names of the DataBoxEdge extended-information model
/// (`deviceSecrets` in `DataBoxEdgeDeviceExtendedInfoProperties`, example `GetUpdateExtendedInfo.json`: the ones
/// that carry a `keyVaultId`) plus the BMC user password the Stack Edge docs name. A synced device has them all.
pub const DEVICE_SECRET_NAMES: &[&str] = &[
    "BMCDefaultUserPassword",
    "SystemVolumeBitLockerRecoveryKey",
    "HcsDataVolumeBitLockerExternalKey",
    "HcsInternalVolumeBitLockerExternalKey",
];
/// Device secrets only devices with self-encrypting drives have: pushed when present, never required.
pub const OPTIONAL_DEVICE_SECRET_NAMES: &[&str] = &["SEDEncryptionExternalKeyId", "SEDEncryptionExternalKey"];
/// Tag on a device listing its open alerts (`<kind>@<unix seconds raised>`, comma-separated), so a check raises
/// an alert once and resolves it with the same id, and a fleet view reads them from the device list.
pub const ALERTS_TAG: &str = "edgevault-alerts";
