//! The Resource Manager payloads edgevault reads and writes, in the REST APIs' own field names (DataBoxEdge
//! 2023-12-01, KeyVault 2024-11-01, Authorization locks 2020-05-01). Unknown fields are kept where edgevault writes a
//! resource back, so it never drops what another tool set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `Microsoft.DataBoxEdge/dataBoxEdgeDevices`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub properties: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_data: Option<SystemData>,
}

impl Device {
    /// The principal of the device's system-assigned identity, once it exists.
    pub fn principal_id(&self) -> Option<&str> {
        self.identity
            .as_ref()
            .filter(|i| i.kind.split(',').any(|k| k.trim().eq_ignore_ascii_case("SystemAssigned")))
            .and_then(|i| i.principal_id.as_deref())
    }

    /// When the device was created, from `systemData` (top level, or under `properties` as DataBoxEdge puts it).
    pub fn created_at(&self) -> Option<&str> {
        self.system_data
            .as_ref()
            .and_then(|s| s.created_at.as_deref())
            .or_else(|| self.properties.pointer("/systemData/createdAt").and_then(Value::as_str))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SystemData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// `keyVaultSyncStatus` values of the DataBoxEdge API.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum KeyVaultSyncStatus {
    KeyVaultSynced,
    KeyVaultSyncFailed,
    KeyVaultNotConfigured,
    KeyVaultSyncPending,
    KeyVaultSyncing,
    KeyVaultNotSynced,
}

/// The answer of `getExtendedInformation` / `updateExtendedInformation`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExtendedInfo {
    #[serde(default)]
    pub properties: ExtendedInfoProperties,
}

/// How the device finds its vault and CIK: the part of the extended information edgevault writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultLink {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_store_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_store_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_integrity_key_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_integrity_key_version: Option<String>,
}

impl VaultLink {
    /// The linked vault, when one is linked and its id parses.
    pub fn vault_id(&self) -> Option<crate::resource_id::ResourceId> {
        self.client_secret_store_id.as_deref().and_then(|v| v.parse().ok())
    }

    /// Equality as Azure sees it: ids case-insensitive, URLs with or without the trailing slash.
    pub fn same_as(&self, other: &VaultLink) -> bool {
        let url = |l: &VaultLink| l.client_secret_store_url.as_deref().map(|u| u.trim_end_matches('/').to_string());
        self.vault_id() == other.vault_id()
            && url(self) == url(other)
            && self.channel_integrity_key_name == other.channel_integrity_key_name
            && self.channel_integrity_key_version == other.channel_integrity_key_version
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtendedInfoProperties {
    #[serde(flatten)]
    pub link: VaultLink,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault_sync_status: Option<KeyVaultSyncStatus>,
}

/// The body of `updateExtendedInformation` (`DataBoxEdgeDeviceExtendedInfoPatch`): the same link, but the status
/// field is called `syncStatus` on the way in.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtendedInfoPatch {
    #[serde(flatten)]
    pub link: VaultLink,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_status: Option<KeyVaultSyncStatus>,
}

/// `Microsoft.KeyVault/vaults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Vault {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub location: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub properties: VaultProperties,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultProperties {
    pub tenant_id: String,
    pub sku: Sku,
    #[serde(default)]
    pub access_policies: Vec<AccessPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_soft_delete: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_delete_retention_in_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_purge_protection: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_rbac_authorization: Option<bool>,
    /// `networkAcls` (`NetworkRuleSet`: `defaultAction`, `bypass`, `ipRules`, `virtualNetworkRules`), kept as the
    /// vault has it so a write of the vault never drops the owner's rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_acls: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sku {
    pub family: String,
    pub name: String,
}

impl VaultProperties {
    /// Access policies no longer apply: the vault authorises data-plane calls with Azure RBAC.
    pub fn uses_rbac(&self) -> bool {
        self.enable_rbac_authorization == Some(true)
    }

    /// The network rules deny what they do not list (`defaultAction: Deny`), so a device is kept out unless an
    /// owner listed it.
    pub fn denies_by_default(&self) -> bool {
        self.network_acls
            .as_ref()
            .and_then(|acls| acls.get("defaultAction"))
            .and_then(Value::as_str)
            .is_some_and(|action| action.eq_ignore_ascii_case("Deny"))
    }
}

impl Sku {
    pub fn standard() -> Self {
        Sku { family: "A".into(), name: "standard".into() }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicy {
    pub tenant_id: String,
    pub object_id: String,
    pub permissions: Permissions,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub certificates: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<String>,
}

impl AccessPolicy {
    pub fn secrets(tenant_id: &str, object_id: &str, secrets: &[&str]) -> Self {
        AccessPolicy {
            tenant_id: tenant_id.to_string(),
            object_id: object_id.to_string(),
            permissions: Permissions { secrets: secrets.iter().map(|s| s.to_string()).collect(), ..Default::default() },
        }
    }

    /// Whether this policy grants at least `secrets` to the same principal (case-insensitive, as Key Vault compares).
    pub fn covers(&self, other: &AccessPolicy) -> bool {
        self.object_id.eq_ignore_ascii_case(&other.object_id)
            && other
                .permissions
                .secrets
                .iter()
                .all(|p| self.permissions.secrets.iter().any(|q| q.eq_ignore_ascii_case(p)))
    }
}

/// A soft-deleted vault (`.../locations/{location}/deletedVaults/{name}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeletedVault {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub properties: DeletedVaultProperties,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeletedVaultProperties {
    #[serde(default)]
    pub vault_id: String,
    #[serde(default)]
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_purge_date: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_protection_enabled: Option<bool>,
}

/// A management lock.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Lock {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub properties: LockProperties,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LockProperties {
    pub level: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// The answer of `checkNameAvailability`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NameAvailability {
    pub name_available: bool,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// One page of an ARM list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(default)]
    pub next_link: Option<String>,
}

/// One of edgevault's own records (`azure::records`): a JSON value under a partition and a row key.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub partition: String,
    pub row: String,
    pub value: serde_json::Value,
}

// Values the client traits pass that are not ARM payloads: here rather than beside the clients, so the traits, the
// fakes, the messages and the alerts depend on this module and not on one another.

use crate::activation_key::Cik;

/// A CIK read back from a vault. `Debug` shows no key material (`Cik` redacts itself).
#[derive(Debug, Clone)]
pub struct StoredCik {
    pub cik: Cik,
    pub version: String,
    pub enabled: bool,
}

/// What the broker needs to know about a message besides its body.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BrokerProperties {
    #[serde(rename = "MessageId")]
    pub message_id: String,
    #[serde(rename = "SessionId", skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(rename = "CorrelationId", skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(rename = "Label", skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// RFC 1123 time, as the REST protocol wants it.
    #[serde(rename = "ScheduledEnqueueTimeUtc", skip_serializing_if = "Option::is_none")]
    pub scheduled_enqueue_time_utc: Option<String>,
}

/// One message ready to send: a JSON body, its broker properties and custom (application) properties.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    pub body: String,
    pub broker: BrokerProperties,
    pub properties: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    //! The models read Microsoft's REST spec examples, copied into `tests/fixtures/azure-rest-api-specs/` (see its
    //! SOURCE.md) so that a clone of the repository alone runs these tests.
    use super::*;

    fn example(relative: &str) -> Value {
        let path =
            format!("{}/../tests/fixtures/azure-rest-api-specs/specification/{relative}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
    }

    const EDGE: &str = "databoxedge/resource-manager/Microsoft.DataBoxEdge/stable";
    const KV: &str = "keyvault/resource-manager/Microsoft.KeyVault/stable/2024-11-01/examples";

    #[test]
    fn device_fixture() {
        let fixture = example(&format!("{EDGE}/2023-12-01/examples/DataBoxEdgeDevicePatch.json"));
        let device: Device = serde_json::from_value(fixture["responses"]["200"]["body"].clone()).unwrap();
        assert_eq!(device.principal_id(), Some("b3e34fcc-ab02-4ca4-9d22-5de115419091"));
        assert_eq!(device.name, "testedgedevice");
    }

    #[test]
    fn extended_info_fixtures() {
        let fixture = example(&format!("{EDGE}/2022-03-01/examples/GetUpdateExtendedInfo.json"));
        let info: ExtendedInfo = serde_json::from_value(fixture["responses"]["200"]["body"].clone()).unwrap();
        assert_eq!(info.properties.key_vault_sync_status, Some(KeyVaultSyncStatus::KeyVaultSynced));
        assert!(info.properties.link.channel_integrity_key_name.unwrap().starts_with("ase-cik-"));
        let fixture = example(&format!("{EDGE}/2023-12-01/examples/ExtendedInfoPost.json"));
        let info: ExtendedInfo = serde_json::from_value(fixture["responses"]["200"]["body"].clone()).unwrap();
        assert_eq!(info.properties.link.client_secret_store_id, None);
    }

    #[test]
    fn vault_fixtures() {
        let create = example(&format!("{KV}/createVault.json"));
        let request: Vault = serde_json::from_value(create["parameters"]["parameters"].clone()).unwrap();
        assert_eq!(request.properties.sku, Sku { family: "A".into(), name: "standard".into() });
        let response: Vault = serde_json::from_value(create["responses"]["200"]["body"].clone()).unwrap();
        assert!(response.properties.vault_uri.unwrap().starts_with("https://"));
        let deleted = example(&format!("{KV}/getDeletedVault.json"));
        let deleted: DeletedVault = serde_json::from_value(deleted["responses"]["200"]["body"].clone()).unwrap();
        assert!(deleted.properties.scheduled_purge_date.is_some());
        let check = example(&format!("{KV}/checkVaultNameAvailability.json"));
        let check: NameAvailability = serde_json::from_value(check["responses"]["200"]["body"].clone()).unwrap();
        assert!(check.name_available);
    }

    #[test]
    fn access_policy_coverage_is_per_principal_and_permission() {
        let granted = AccessPolicy::secrets("t", "ABC", &["get", "set"]);
        assert!(granted.covers(&AccessPolicy::secrets("t", "abc", &["Get"])));
        assert!(!granted.covers(&AccessPolicy::secrets("t", "abc", &["delete"])));
        assert!(!granted.covers(&AccessPolicy::secrets("t", "other", &["get"])));
    }
}

/// A bearer token: a caller's, or one obtained on a caller's behalf. Never printed, logged or serialized: its
/// `Debug` is redacted and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    pub fn new(token: impl Into<String>) -> Self {
        BearerToken(token.into())
    }

    /// The token itself, for the one place it goes: an `Authorization` header or a token request.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// One entry of ARM's permissions API (`Permissions_ListForResource`, api-version 2022-04-01): what one role
/// assignment allows at the scope. `notActions` subtract from the same entry's `actions` only.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub not_actions: Vec<String>,
}

/// `Microsoft.Storage/storageAccounts` (storage.json 2023-05-01), the fields edgevault writes and reads: an audit
/// destination is a zone-redundant account tagged with the vault it serves.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccount {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub location: String,
    pub sku: StorageSku,
    pub kind: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub properties: Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StorageSku {
    pub name: String,
}

/// `Microsoft.Insights/diagnosticSettings` (diagnosticsSettings_API.json 2021-05-01-preview): where a resource's
/// logs go.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosticSetting {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub properties: DiagnosticSettingProperties,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiagnosticSettingProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account_id: Option<String>,
    #[serde(default)]
    pub logs: Vec<LogSettings>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_group: Option<String>,
    pub enabled: bool,
}

/// `Providers_Get`'s answer, the field edgevault reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Provider {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub registration_state: String,
}
