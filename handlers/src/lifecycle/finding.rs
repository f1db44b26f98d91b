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
    /// The vault authorises with Azure RBAC: the access policies no longer apply and the device (and edgevault) are
    /// shut out ("Couldn't access the Key Vault"). Fixed by switching it back to access policies.
    RbacAuthorization,
    /// The vault's network rules deny by default ("Couldn't access the Key Vault", for example network rules).
    /// edgevault cannot know what the owner meant to let in: alerted, never changed.
    NetworkDenied,
    LockMissing,
    /// edgevault's lock is there at another level (`ReadOnly` would block the CIK's writes; only `CanNotDelete`
    /// is wanted).
    LockNotCanNotDelete,
    AccessPolicyMissing,
    /// The vault's principal tag does not name the device's current principal: its identity was replaced, and the
    /// old principal's policy (if still there) is stale. Fixed by removing that policy and recording the current one.
    DevicePolicyStale,
    CikMissing,
    CikDisabled,
    /// The CIK secret's current version is not the one linked: someone else wrote a version. edgevault writes its
    /// own CIK over it (the linked value again, as a version of its own) and links that, with an alert; the
    /// unknown version is never linked.
    CikNotCurrent,
    ExtendedInfoOutOfSync,
    /// The vault's audit logging is missing: no diagnostic setting sending its audit events to a storage account
    /// (judged when it was read: activation, refresh, repair, and one sweep in `audit::AUDIT_CHECK_EVERY`). Fixed by
    /// creating the account and the setting, unless a provider is not registered (a warning alert then).
    AuditSettingMissing,
    /// Secrets the device pushes are missing from its vault (judged only when the secrets were read: a sync
    /// request, a refresh, or while that alert is open). Only the device can fix it: alerted, never repaired.
    DeviceSecretsMissing,
}

impl Finding {
    /// Findings that no worker acts on: the state is as it should be, or not edgevault's to change.
    pub fn is_terminal(self) -> bool {
        matches!(self, Finding::Healthy | Finding::Legacy | Finding::NotActivated | Finding::VaultNotOwned)
    }

    /// Findings that edgevault reports and alerts on but cannot fix itself (only the device, or the vault's
    /// owner, can): repair leaves them, and they do not stop the other fixes.
    pub fn is_alert_only(self) -> bool {
        matches!(self, Finding::DeviceSecretsMissing | Finding::NetworkDenied)
    }
}
