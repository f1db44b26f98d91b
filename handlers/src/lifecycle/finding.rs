//! What `assess` can find: a leaf of its own, because the sweep's repair command carries findings and the
//! messages module must not import the lifecycle that sends it.

use serde::{Deserialize, Serialize};

/// What can be wrong with a device, or why nothing is to be done. Ordered roughly by the order of the fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Finding {
    /// Nothing is wrong (the sweep's count of healthy devices; `assess` returns no finding for them).
    Healthy,
    /// A pre-integration device: reported, never touched.
    Legacy,
    /// No vault linked and none asked for: the device was never activated.
    NotActivated,
    IdentityMissing,
    /// The vault is neither live nor soft-deleted (purged, or never created).
    VaultMissing,
    VaultSoftDeleted,
    /// The vault of that name belongs to someone else: never changed.
    VaultNotOwned,
    SoftDeleteOff,
    PurgeProtectionOff,
    LockMissing,
    /// edgevault's lock is there at another level (`ReadOnly` would block the CIK's writes; only `CanNotDelete`
    /// is wanted).
    LockNotCanNotDelete,
    AccessPolicyMissing,
    CikMissing,
    CikDisabled,
    ExtendedInfoOutOfSync,
}

impl Finding {
    /// Findings that no worker acts on: the state is as it should be, or not edgevault's to change.
    pub fn is_terminal(self) -> bool {
        matches!(self, Finding::Healthy | Finding::Legacy | Finding::NotActivated | Finding::VaultNotOwned)
    }
}
