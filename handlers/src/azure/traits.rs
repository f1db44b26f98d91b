//! What the handlers need from Azure, as small traits: the lifecycle code depends on these, not on the clients, so
//! it can be unit-tested against in-memory fakes (`azure::fake`) beside the end-to-end suite against local-azure.
//! The real implementations are [`ArmClient`](super::arm::ArmClient) (devices, vaults, locks),
//! [`VaultSecrets`](super::secrets::VaultSecrets) (CIKs), [`QueueSender`](super::service_bus::QueueSender) and
//! [`TableRecords`](super::records::TableRecords) (edgevault's own records).

use std::collections::BTreeMap;

use super::AzureError;
use super::models::{
    AccessPolicy, BearerToken, DeletedVault, Device, DiagnosticSetting, ExtendedInfo, ExtendedInfoPatch, Lock,
    NameAvailability, OutgoingMessage, Page, Permission, Provider, Record, StorageAccount, StoredCik, Vault,
};
use crate::activation_key::Cik;
use crate::resource_id::ResourceId;

/// Stack Edge devices and their extended information (the link to the vault).
#[async_trait::async_trait]
pub trait Devices: std::fmt::Debug + Send + Sync {
    async fn get_device(&self, id: &ResourceId) -> Result<Option<Device>, AzureError>;
    /// Turns on the device's system-assigned identity (idempotent: ARM keeps the existing principal).
    async fn enable_identity(&self, id: &ResourceId) -> Result<Device, AzureError>;
    /// One page of the devices in a subscription; pass the previous page's `next_link` to continue.
    async fn list_devices(&self, subscription: &str, next_link: Option<&str>) -> Result<Page<Device>, AzureError>;
    /// Replaces the device's tags (the map given is the new set).
    async fn set_device_tags(&self, id: &ResourceId, tags: &BTreeMap<String, String>) -> Result<Device, AzureError>;
    async fn get_extended_info(&self, id: &ResourceId) -> Result<ExtendedInfo, AzureError>;
    async fn update_extended_info(
        &self,
        id: &ResourceId,
        patch: &ExtendedInfoPatch,
    ) -> Result<ExtendedInfo, AzureError>;
}

/// Key Vault vaults, live and soft-deleted.
#[async_trait::async_trait]
pub trait Vaults: std::fmt::Debug + Send + Sync {
    async fn check_vault_name(&self, subscription: &str, name: &str) -> Result<NameAvailability, AzureError>;
    async fn get_vault(&self, id: &ResourceId) -> Result<Option<Vault>, AzureError>;
    /// Creates or updates a vault and waits until it is provisioned.
    async fn put_vault(&self, id: &ResourceId, vault: &Vault) -> Result<Vault, AzureError>;
    /// Recovers a soft-deleted vault, with its secrets and access policies.
    async fn recover_vault(&self, id: &ResourceId, location: &str, tenant_id: &str) -> Result<Vault, AzureError>;
    /// One page of the vaults in a resource group.
    async fn list_vaults(
        &self,
        subscription: &str,
        resource_group: &str,
        next_link: Option<&str>,
    ) -> Result<Page<Vault>, AzureError>;
    /// One page of the vaults in a subscription, whole (properties, tags): the sweep reads them by list instead of
    /// one by one.
    async fn list_subscription_vaults(
        &self,
        subscription: &str,
        next_link: Option<&str>,
    ) -> Result<Page<Vault>, AzureError>;
    /// Adds access policies to a vault, leaving the others alone.
    async fn add_access_policies(&self, id: &ResourceId, policies: &[AccessPolicy]) -> Result<(), AzureError>;
    /// Removes the given principals' access policies (`accessPolicies/remove`), leaving the others alone.
    async fn remove_access_policies(&self, id: &ResourceId, policies: &[AccessPolicy]) -> Result<(), AzureError>;
    /// Replaces the vault's tags (PATCH: the map given is the new set).
    async fn set_vault_tags(&self, id: &ResourceId, tags: &BTreeMap<String, String>) -> Result<Vault, AzureError>;
    async fn delete_vault(&self, id: &ResourceId) -> Result<(), AzureError>;
    async fn get_deleted_vault(
        &self,
        subscription: &str,
        location: &str,
        name: &str,
    ) -> Result<Option<DeletedVault>, AzureError>;
    /// The vaults in a subscription that carry tag `name` with `value` (ARM Resources – List with a tag
    /// `$filter`): where a device's vault went when it was moved to another resource group or subscription.
    async fn find_tagged_vaults(
        &self,
        subscription: &str,
        name: &str,
        value: &str,
    ) -> Result<Vec<ResourceId>, AzureError>;
    /// One page of the soft-deleted vaults in a subscription.
    async fn list_deleted_vaults(
        &self,
        subscription: &str,
        next_link: Option<&str>,
    ) -> Result<Page<DeletedVault>, AzureError>;
}

/// `CanNotDelete` management locks on a scope.
#[async_trait::async_trait]
pub trait Locks: std::fmt::Debug + Send + Sync {
    async fn get_lock(&self, scope: &ResourceId, name: &str) -> Result<Option<Lock>, AzureError>;
    async fn put_lock(&self, scope: &ResourceId, name: &str, notes: &str) -> Result<Lock, AzureError>;
    /// One page of the locks in a subscription (at it and on everything in it).
    async fn list_locks(&self, subscription: &str, next_link: Option<&str>) -> Result<Page<Lock>, AzureError>;
    /// Removes the lock; one that is already gone is not an error.
    async fn delete_lock(&self, scope: &ResourceId, name: &str) -> Result<(), AzureError>;
}

/// Audit logging's resources and the provider registrations they (and the vaults) need: storage accounts, a vault's
/// diagnostic settings, `Providers_Get`.
#[async_trait::async_trait]
pub trait AuditLogs: std::fmt::Debug + Send + Sync {
    /// The provider's registration in the subscription (`None`: ARM does not know the namespace).
    async fn get_provider(&self, subscription: &str, namespace: &str) -> Result<Option<Provider>, AzureError>;
    async fn check_storage_name(&self, subscription: &str, name: &str) -> Result<NameAvailability, AzureError>;
    async fn get_storage_account(&self, id: &ResourceId) -> Result<Option<StorageAccount>, AzureError>;
    /// Creates or updates a storage account and waits for the long-running create to finish.
    async fn put_storage_account(
        &self,
        id: &ResourceId,
        account: &StorageAccount,
    ) -> Result<StorageAccount, AzureError>;
    async fn get_diagnostic_setting(
        &self,
        scope: &ResourceId,
        name: &str,
    ) -> Result<Option<DiagnosticSetting>, AzureError>;
    async fn put_diagnostic_setting(
        &self,
        scope: &ResourceId,
        name: &str,
        setting: &DiagnosticSetting,
    ) -> Result<DiagnosticSetting, AzureError>;
}

/// CIK secrets in a device's vault.
#[async_trait::async_trait]
pub trait CikStore: std::fmt::Debug + Send + Sync {
    /// Stores `cik` as a new version of secret `name`; returns that version.
    async fn set_cik(&self, vault_uri: &str, name: &str, cik: &Cik) -> Result<String, AzureError>;
    /// Reads secret `name` (a given version, or the latest); `None` if it does not exist.
    async fn get_cik(
        &self,
        vault_uri: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<StoredCik>, AzureError>;
    /// The names of the vault's enabled secrets, from a list (names and attributes only, never values).
    async fn secret_names(&self, vault_uri: &str) -> Result<Vec<String>, AzureError>;
}

/// The queues the functions talk to each other over.
#[async_trait::async_trait]
pub trait Queue: std::fmt::Debug + Send + Sync {
    async fn send(&self, queue: &str, message: &OutgoingMessage) -> Result<(), AzureError>;
    /// Sends several messages in one request (the broker takes all or none).
    async fn send_batch(&self, queue: &str, messages: &[OutgoingMessage]) -> Result<(), AzureError>;
}

/// What ARM says a caller may do, asked as the caller: the answer is ARM's own evaluation of every role assignment
/// the caller has at the scope and above (groups included), so edgevault evaluates no role definitions itself.
#[async_trait::async_trait]
pub trait CallerPermissions: std::fmt::Debug + Send + Sync {
    /// The permissions of the holder of `caller_token` (a token for edgevault's API) at `scope`. A token that
    /// cannot be exchanged on the caller's behalf is an error with status 401.
    async fn permissions_at(
        &self,
        caller_token: &BearerToken,
        scope: &ResourceId,
    ) -> Result<Vec<Permission>, AzureError>;
}

/// edgevault's own records: JSON values in tables, under a partition and a row key. Writers that run at the same
/// time never share a row (there is no read-modify-write here): each writes its own row and readers aggregate.
#[async_trait::async_trait]
pub trait Records: std::fmt::Debug + Send + Sync {
    /// Inserts the record, or replaces the one under the same keys.
    async fn put(&self, table: &str, partition: &str, row: &str, record: &serde_json::Value) -> Result<(), AzureError>;
    async fn get(&self, table: &str, partition: &str, row: &str) -> Result<Option<serde_json::Value>, AzureError>;
    /// Every record of the table, or of one partition, in key order (all pages).
    async fn list(&self, table: &str, partition: Option<&str>) -> Result<Vec<Record>, AzureError>;
    /// Removes the record; one that is already gone is not an error.
    async fn delete(&self, table: &str, partition: &str, row: &str) -> Result<(), AzureError>;
}
