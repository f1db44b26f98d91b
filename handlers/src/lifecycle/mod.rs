//! The Key Vault lifecycle of a Stack Edge device, as reconcilers: each observes Azure and makes it match what the
//! device should have, so a duplicate, replayed or concurrent message changes nothing.
//!
//! - [`desired`]: the one desired state. [`observe`] reads a device and its vault once, [`assess`] compares what
//!   it saw with what should be and returns the [`Finding`]s — the only place the rules live. The sweep reports
//!   findings; the workers fix exactly the findings.
//! - [`device`]: what is done to a device (identity, extended information, failure marks, legacy).
//! - [`vault`]: what is done to a vault (its name and id, ownership, creation, recovery, lock, policies, CIK).
//! - [`provision`]: observe → assess → fix, for an activation or a sweep's repair.
//! - [`recovery`]: a deleted vault is recovered from soft delete and re-provisioned.
//! - [`retirement`]: a deleted device's vault ends with it (with the operator's consent).
//! - [`sweep`]: the periodic inspection of every device in scope.
//! - [`status`]: what the activation-key API reports for a device.
//! - [`fleet`]: the fleet as operators look at it (the fleet page, `edgevault-cli status`), read off `assess`.
//! - [`history`]: what the fleet view shows that Azure does not keep (recoveries, open alerts, sweep progress).
//! - [`error`]: the lifecycle's error: an Azure failure, or a typed refusal.
//!
//! What edgevault owns is marked in Azure, not in a database: the vault's `edgevault-device` tag names its device,
//! the lock has a fixed name, and the device's extended information links the vault and the CIK.

pub mod desired;
pub mod device;
pub mod error;
pub mod finding;
pub mod fleet;
pub mod history;
pub mod provision;
pub mod recovery;
pub mod retirement;
pub mod status;
pub mod sweep;
pub mod vault;

pub use desired::{Desired, Observed, assess, observe};
pub use error::{Error, Refusal, Refused};
pub use finding::Finding;

/// Tag on a vault naming the device (resource id) it belongs to.
pub const OWNER_TAG: &str = "edgevault-device";
/// Tag on a device holding the reason of its last failed synchronisation, shown by the status API.
pub const ERROR_TAG: &str = "edgevault-sync-error";
/// The name of the lock edgevault puts on each vault.
pub const LOCK_NAME: &str = "edgevault-do-not-delete";
/// Its level: the vault can be read and changed, not deleted.
pub const LOCK_LEVEL: &str = "CanNotDelete";
pub const LOCK_NOTES: &str = "Holds the Channel Integrity Key of an Azure Stack Edge device; managed by edgevault.";
/// Soft-delete retention of every vault edgevault creates (the maximum Key Vault allows).
pub const RETENTION_DAYS: u32 = 90;
/// Secret permissions of the device's identity: read its CIK, nothing else.
pub const DEVICE_SECRET_PERMISSIONS: &[&str] = &["get"];
/// Secret permissions of edgevault's identity: read and write CIKs and recover a deleted one. Never `purge`.
pub const EDGEVAULT_SECRET_PERMISSIONS: &[&str] = &["get", "set", "recover"];
