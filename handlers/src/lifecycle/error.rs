//! The lifecycle's error: an Azure call failed (retryable or not, as Azure says), or the work was refused because
//! it cannot succeed as asked. The host protocol's mapping (statuses, codes) is `functions::policy`'s business.

use crate::azure::AzureError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Azure(#[from] AzureError),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl Error {
    pub fn refused(kind: Refused, message: impl Into<String>) -> Self {
        Error::Refused(Refusal { kind, message: message.into() })
    }

    /// Whether trying the same work again could succeed.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Azure(err) => err.retryable(),
            Error::Refused(refusal) => refusal.kind == Refused::NotConverged,
        }
    }
}

/// Why the lifecycle will not do what was asked; retrying changes nothing until someone changes Azure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.code())]
pub struct Refusal {
    pub kind: Refused,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The vault of that name exists and belongs to another device (or none).
    VaultNotOwned,
    /// A soft-deleted vault that is not this device's holds the name.
    VaultNameReserved,
    /// The name is taken outside this subscription's view (Key Vault names are global).
    VaultNameUnavailable,
    /// The device already uses another vault; a device has one vault for life.
    VaultAlreadyLinked,
    /// The device's extended information links something that is not a vault id.
    LinkedVaultInvalid,
    /// ARM enabled the identity but returned no principal.
    IdentityNotCreated,
    /// A resource id from Azure did not parse.
    InvalidResourceId,
    /// The fixes were made and Azure still does not show the result (another writer raced them); the next
    /// delivery or sweep starts again from what it observes.
    NotConverged,
}

impl Refused {
    pub fn code(self) -> &'static str {
        match self {
            Refused::VaultNotOwned => "VaultNotOwned",
            Refused::VaultNameReserved => "VaultNameReserved",
            Refused::VaultNameUnavailable => "VaultNameUnavailable",
            Refused::VaultAlreadyLinked => "VaultAlreadyLinked",
            Refused::LinkedVaultInvalid => "LinkedVaultInvalid",
            Refused::IdentityNotCreated => "IdentityNotCreated",
            Refused::InvalidResourceId => "InvalidResourceId",
            Refused::NotConverged => "NotConverged",
        }
    }
}
