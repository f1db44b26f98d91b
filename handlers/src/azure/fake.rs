//! An in-memory Azure behind the client traits, for unit tests of the lifecycle logic. It keeps state the way ARM
//! and Key Vault would for the calls edgevault makes (case-insensitive ids, `None` for what does not exist) and
//! records every call, so a test can assert what was read and that nothing was written. What it does not model
//! (long-running operations, throttling, permissions, soft delete on delete) is covered end to end against
//! local-azure under `tests/`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::AzureError;
use super::models::{
    AccessPolicy, BearerToken, DeletedVault, Device, DiagnosticSetting, ExtendedInfo, ExtendedInfoPatch, Identity,
    KeyVaultSyncStatus, Lock, LockProperties, NameAvailability, OutgoingMessage, Page, Permission, Provider, Record,
    StorageAccount, StoredCik, Vault, VaultLink,
};
use super::traits::{AuditLogs, CallerPermissions, CikStore, Devices, Locks, Queue, Records, Vaults};
use crate::activation_key::Cik;
use crate::config::Settings;
use crate::deps::Deps;
use crate::lifecycle::vault::cik_secret_name;
use crate::lifecycle::{Desired, LOCK_LEVEL, LOCK_NAME, LOCK_NOTES};
use crate::resource_id::{DEVICE_TYPE, ResourceId, VAULT_TYPE};

#[derive(Debug, Default)]
pub struct State {
    pub devices: BTreeMap<String, Device>,
    pub infos: BTreeMap<String, ExtendedInfo>,
    pub vaults: BTreeMap<String, Vault>,
    /// Soft-deleted vaults by name (names are global in Key Vault), with what a recovery brings back.
    pub deleted: BTreeMap<String, (DeletedVault, Vault)>,
    /// `<scope>/<lock name>`.
    pub locks: BTreeMap<String, Lock>,
    /// `<vault uri>|<secret name>` → versions, oldest first.
    pub ciks: BTreeMap<String, Vec<StoredCik>>,
    pub sent: Vec<(String, OutgoingMessage)>,
    /// edgevault's own records: `(table, partition, row)` → value, in key order like Table Storage.
    pub records: BTreeMap<(String, String, String), serde_json::Value>,
    /// Secret versions ever written: Key Vault never reuses a version id, even after the secret is gone.
    pub versions_written: u64,
    /// Every call, as `<operation> <target>`.
    pub calls: Vec<String>,
    /// The secrets' names as written (the store keys them lowercased).
    pub secret_names: BTreeMap<String, String>,
    /// Role assignments as ARM's permissions API reports them: the caller's token, the scope, the entry.
    pub grants: Vec<(BearerToken, String, Permission)>,
    /// Storage accounts by id (lower case); names are global, as in Azure.
    pub storage_accounts: BTreeMap<String, StorageAccount>,
    /// Diagnostic settings: `<scope>/<name>` (lower case).
    pub diagnostic_settings: BTreeMap<String, DiagnosticSetting>,
    /// `<subscription>/<namespace>` (lower case) of the providers not registered; every other one is.
    pub unregistered: std::collections::BTreeSet<String>,
}

/// Settings for unit tests: tenant `tenant`, edgevault's principal `edgevault`, subscription `s`.
pub fn settings() -> Settings {
    Settings {
        tenant_id: "tenant".into(),
        principal_id: "edgevault".into(),
        service_bus_namespace: "edgevault.servicebus.windows.net".into(),
        subscriptions: vec!["s".into()],
        cutover: None,
        delete_vault_with_device: false,
        activation_key_ttl: time::Duration::hours(72),
        arm_endpoint: super::ARM_ENDPOINT.into(),
        retry: Default::default(),
        api_client_id: Some("api-client".into()),
        authority_host: super::AUTHORITY_HOST.into(),
        sweep_arm_reserve_percent: crate::config::DEFAULT_SWEEP_ARM_RESERVE_PERCENT,
        records_table_uri: "https://edgevault.table.core.windows.net".into(),
    }
}

#[derive(Debug, Default)]
pub struct FakeAzure {
    state: Mutex<State>,
}

/// How the fake keys what it stores: ARM ids compare case-insensitively.
pub fn key(id: &impl std::fmt::Display) -> String {
    id.to_string().to_ascii_lowercase()
}

impl State {
    fn store_cik(&mut self, vault_uri: &str, name: &str, cik: Cik, enabled: bool) -> String {
        self.versions_written += 1;
        let version = format!("{:032x}", self.versions_written);
        let stored = StoredCik { cik, version: version.clone(), enabled };
        self.secret_names.insert(cik_key(vault_uri, name), name.to_string());
        self.ciks.entry(cik_key(vault_uri, name)).or_default().push(stored);
        version
    }
}

impl State {
    /// A new version of secret `name` (a CIK someone else wrote); the key parts as the store keeps them.
    pub fn store_cik_for_test(&mut self, vault_uri: &str, name: &str) -> String {
        self.store_cik(vault_uri, name, Cik::generate(), true)
    }
}

fn cik_key(vault_uri: &str, name: &str) -> String {
    format!("{}|{}", vault_uri.trim_end_matches('/').to_ascii_lowercase(), name.to_ascii_lowercase())
}

impl FakeAzure {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeAzure::default())
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("no test panics while holding it")
    }

    /// Records the call and returns the state.
    fn call(&self, operation: &str, target: impl std::fmt::Display) -> MutexGuard<'_, State> {
        let mut state = self.state();
        state.calls.push(format!("{operation} {target}"));
        state
    }

    /// The calls made so far that change something (every operation not named `get…`, `list…` or `check…`).
    pub fn writes(&self) -> Vec<String> {
        let reads = ["get", "list", "check"];
        self.state().calls.iter().filter(|c| !reads.iter().any(|r| c.starts_with(r))).cloned().collect()
    }

    /// Moves the vault to `to` (another resource group or subscription, same name), as Resources – Move Resources
    /// does: the vault keeps its properties and tags under its new id.
    pub fn move_vault(&self, from: &ResourceId, to: &ResourceId) {
        let mut state = self.state();
        let mut vault = state.vaults.remove(&key(from)).expect("the vault exists");
        vault.id = to.to_string();
        state.vaults.insert(key(to), vault);
    }

    /// Deletes the vault the way Key Vault does with soft delete on: its name stays held until it is purged, and a
    /// recovery brings it back with its secrets and policies, but not its locks (ARM deletes those with it).
    pub fn soft_delete(&self, vault_id: &ResourceId) {
        let mut state = self.state();
        let vault = state.vaults.remove(&key(vault_id)).expect("the vault exists");
        let scope = key(vault_id) + "/";
        state.locks.retain(|lock, _| !lock.starts_with(&scope));
        let mut deleted = DeletedVault { id: vault.id.clone(), name: vault.name.clone(), ..Default::default() };
        deleted.properties.vault_id = vault.id.clone();
        deleted.properties.location = vault.location.clone();
        deleted.properties.tags = vault.tags.clone();
        deleted.properties.deletion_date = Some("2026-11-01T00:00:00Z".into());
        state.deleted.insert(vault.name.to_ascii_lowercase(), (deleted, vault));
    }

    /// The bodies of the alerts sent so far.
    pub fn alerts(&self) -> Vec<String> {
        let alerts = crate::messages::queues::ALERTS;
        self.state().sent.iter().filter(|(q, _)| q == alerts).map(|(_, m)| m.body.clone()).collect()
    }

    pub fn put_cik(&self, vault_uri: &str, name: &str, enabled: bool) {
        self.state().store_cik(vault_uri, name, Cik::generate(), enabled);
    }

    /// Writes the device's secrets into its vault `kv-<name>`, as `device sync-secrets` does.
    pub fn put_device_secrets(&self, name: &str) {
        let uri = format!("https://kv-{name}.vault.azure.net/");
        for secret in crate::lifecycle::DEVICE_SECRET_NAMES {
            self.put_cik(&uri, secret, true);
        }
    }

    /// Adds device `name` (subscription `s`, resource group `rg`), with a system-assigned identity whose principal
    /// is `principal-<name>` when `with_identity`.
    pub fn add_device(&self, name: &str, with_identity: bool) -> ResourceId {
        let id = ResourceId::new("s", "rg", DEVICE_TYPE, name);
        let identity = with_identity.then(|| Identity {
            kind: "SystemAssigned".into(),
            principal_id: Some(format!("principal-{name}")),
            tenant_id: None,
        });
        let device =
            Device { id: id.to_string(), name: name.into(), location: "westus".into(), identity, ..Default::default() };
        self.state().devices.insert(key(&id), device);
        id
    }

    /// Adds device `name` provisioned the way activation leaves it: identity, vault `kv-<name>` owned by it with
    /// soft delete, purge protection and both access policies, the lock, an enabled CIK, the link in sync. Returns
    /// the device's and the vault's ids.
    pub fn add_healthy(&self, name: &str) -> (ResourceId, ResourceId) {
        let id = self.add_device(name, true);
        let device = self.state().devices[&key(&id)].clone();
        let principal = device.principal_id().expect("an identity").to_string();
        let vault_id = ResourceId::new("s", "rg", VAULT_TYPE, &format!("kv-{name}"));
        let uri = format!("https://kv-{name}.vault.azure.net/");
        let mut vault = Desired::new(&settings()).vault(&device, &principal);
        vault.id = vault_id.to_string();
        vault.name = format!("kv-{name}");
        vault.properties.vault_uri = Some(uri.clone());
        let cik_name = cik_secret_name(&id, &vault_id);
        self.put_cik(&uri, &cik_name, true);
        let mut state = self.state();
        let version = state.ciks[&cik_key(&uri, &cik_name)][0].version.clone();
        let lock = Lock {
            id: format!("{vault_id}/providers/Microsoft.Authorization/locks/{LOCK_NAME}"),
            name: LOCK_NAME.into(),
            properties: LockProperties { level: LOCK_LEVEL.into(), notes: Some(LOCK_NOTES.into()) },
        };
        state.locks.insert(key(&format!("{vault_id}/{LOCK_NAME}")), lock);
        let account =
            crate::lifecycle::audit::account_id(&vault_id, &crate::lifecycle::audit::account_names(&vault_id)[0]);
        let mut stored = crate::lifecycle::audit::desired_account(&vault, &vault_id, &id);
        stored.id = account.to_string();
        state.storage_accounts.insert(key(&account), stored);
        let setting = crate::lifecycle::audit::desired_setting(&account);
        state
            .diagnostic_settings
            .insert(key(&format!("{vault_id}/{}", crate::lifecycle::audit::AUDIT_SETTING_NAME)), setting);
        state.vaults.insert(key(&vault_id), vault);
        let mut info = ExtendedInfo::default();
        info.properties.link = VaultLink {
            client_secret_store_id: Some(vault_id.to_string()),
            client_secret_store_url: Some(uri),
            channel_integrity_key_name: Some(cik_name),
            channel_integrity_key_version: Some(version),
        };
        info.properties.key_vault_sync_status = Some(KeyVaultSyncStatus::KeyVaultSynced);
        state.infos.insert(key(&id), info);
        (id, vault_id)
    }

    /// Deps whose every Azure client is this fake.
    pub fn deps(self: &Arc<Self>, settings: Settings) -> Deps {
        Deps {
            settings,
            devices: self.clone(),
            vaults: self.clone(),
            locks: self.clone(),
            audit: self.clone(),
            secrets: self.clone(),
            queue: self.clone(),
            permissions: self.clone(),
            sweep_indexes: Default::default(),
            records: self.clone(),
        }
    }

    /// Lets the holder of `token` do `actions` but not `not_actions` at `scope` and below.
    pub fn grant(&self, token: &BearerToken, scope: &ResourceId, actions: &[&str], not_actions: &[&str]) {
        let entry = Permission {
            actions: actions.iter().map(|a| a.to_string()).collect(),
            not_actions: not_actions.iter().map(|a| a.to_string()).collect(),
        };
        self.state().grants.push((token.clone(), key(scope), entry));
    }
}

#[async_trait::async_trait]
impl CallerPermissions for FakeAzure {
    async fn permissions_at(&self, token: &BearerToken, scope: &ResourceId) -> Result<Vec<Permission>, AzureError> {
        let state = self.call("get permissions", scope);
        let scope = key(scope);
        Ok(state
            .grants
            .iter()
            .filter(|(t, at, _)| t == token && (scope == *at || scope.starts_with(&format!("{at}/"))))
            .map(|(_, _, entry)| entry.clone())
            .collect())
    }
}

fn not_found(operation: &'static str) -> AzureError {
    AzureError::new(operation, Some(404), Some("ResourceNotFound".into()), "not found")
}

fn one_page<T: Clone>(items: impl Iterator<Item = T>) -> Page<T> {
    Page { value: items.collect(), next_link: None }
}

/// Pages of [`FAKE_PAGE`] items, the link being the offset of the next, so paging is exercised.
const FAKE_PAGE: usize = 3;

fn paged<T: Clone>(items: impl Iterator<Item = T>, next_link: Option<&str>) -> Page<T> {
    let from: usize = next_link.and_then(|l| l.parse().ok()).unwrap_or(0);
    let all: Vec<T> = items.collect();
    let value: Vec<T> = all.iter().skip(from).take(FAKE_PAGE).cloned().collect();
    let next_link = (from + FAKE_PAGE < all.len()).then(|| (from + FAKE_PAGE).to_string());
    Page { value, next_link }
}

#[async_trait::async_trait]
impl Devices for FakeAzure {
    async fn get_device(&self, id: &ResourceId) -> Result<Option<Device>, AzureError> {
        Ok(self.call("get device", id).devices.get(&key(id)).cloned())
    }

    async fn enable_identity(&self, id: &ResourceId) -> Result<Device, AzureError> {
        let mut state = self.call("enable identity", id);
        let device = state.devices.get_mut(&key(id)).ok_or_else(|| not_found("enable device identity"))?;
        if device.principal_id().is_none() {
            let principal = format!("principal-of-{}", device.name);
            device.identity =
                Some(Identity { kind: "SystemAssigned".into(), principal_id: Some(principal), tenant_id: None });
        }
        Ok(device.clone())
    }

    async fn list_devices(&self, subscription: &str, next: Option<&str>) -> Result<Page<Device>, AzureError> {
        let prefix = format!("/subscriptions/{}/", subscription.to_ascii_lowercase());
        let state = self.call("list devices", subscription);
        Ok(paged(state.devices.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, d)| d.clone()), next))
    }

    async fn set_device_tags(&self, id: &ResourceId, tags: &BTreeMap<String, String>) -> Result<Device, AzureError> {
        let mut state = self.call("set device tags", id);
        let device = state.devices.get_mut(&key(id)).ok_or_else(|| not_found("update device tags"))?;
        device.tags = tags.clone();
        Ok(device.clone())
    }

    async fn get_extended_info(&self, id: &ResourceId) -> Result<ExtendedInfo, AzureError> {
        let state = self.call("get extended information", id);
        if !state.devices.contains_key(&key(id)) {
            return Err(not_found("get extended information"));
        }
        Ok(state.infos.get(&key(id)).cloned().unwrap_or_default())
    }

    async fn update_extended_info(
        &self,
        id: &ResourceId,
        patch: &ExtendedInfoPatch,
    ) -> Result<ExtendedInfo, AzureError> {
        let mut state = self.call("update extended information", id);
        let info = state.infos.entry(key(id)).or_default();
        // A field the patch leaves out keeps its value, as with ARM.
        let (link, new) = (&mut info.properties.link, &patch.link);
        for (field, value) in [
            (&mut link.client_secret_store_id, &new.client_secret_store_id),
            (&mut link.client_secret_store_url, &new.client_secret_store_url),
            (&mut link.channel_integrity_key_name, &new.channel_integrity_key_name),
            (&mut link.channel_integrity_key_version, &new.channel_integrity_key_version),
        ] {
            if value.is_some() {
                field.clone_from(value);
            }
        }
        if patch.sync_status.is_some() {
            info.properties.key_vault_sync_status = patch.sync_status;
        }
        Ok(info.clone())
    }
}

#[async_trait::async_trait]
impl Vaults for FakeAzure {
    async fn check_vault_name(&self, _: &str, name: &str) -> Result<NameAvailability, AzureError> {
        let state = self.call("check vault name", name);
        let taken = state.vaults.values().any(|v| v.name.eq_ignore_ascii_case(name))
            || state.deleted.contains_key(&name.to_ascii_lowercase());
        Ok(NameAvailability { name_available: !taken, ..Default::default() })
    }

    async fn get_vault(&self, id: &ResourceId) -> Result<Option<Vault>, AzureError> {
        Ok(self.call("get vault", id).vaults.get(&key(id)).cloned())
    }

    async fn put_vault(&self, id: &ResourceId, vault: &Vault) -> Result<Vault, AzureError> {
        let mut state = self.call("put vault", id);
        let name = id.name().unwrap_or_default().to_ascii_lowercase();
        if state.deleted.contains_key(&name) {
            return Err(AzureError::new(
                "create vault",
                Some(409),
                Some("ConflictError".into()),
                "a soft-deleted vault holds the name",
            ));
        }
        let mut stored = vault.clone();
        stored.id = id.to_string();
        stored.name = id.name().unwrap_or_default().to_string();
        state.vaults.insert(key(id), stored.clone());
        Ok(stored)
    }

    async fn recover_vault(&self, id: &ResourceId, _: &str, _: &str) -> Result<Vault, AzureError> {
        let mut state = self.call("recover vault", id);
        let name = id.name().unwrap_or_default().to_ascii_lowercase();
        let (_, vault) = state.deleted.remove(&name).ok_or_else(|| not_found("recover vault"))?;
        state.vaults.insert(key(id), vault.clone());
        Ok(vault)
    }

    async fn list_vaults(&self, subscription: &str, group: &str, _: Option<&str>) -> Result<Page<Vault>, AzureError> {
        let prefix = format!("/subscriptions/{subscription}/resourcegroups/{group}/").to_ascii_lowercase();
        let state = self.call("list vaults", group);
        Ok(one_page(state.vaults.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, v)| v.clone())))
    }

    async fn list_subscription_vaults(
        &self,
        subscription: &str,
        next: Option<&str>,
    ) -> Result<Page<Vault>, AzureError> {
        let prefix = format!("/subscriptions/{subscription}/").to_ascii_lowercase();
        let state = self.call("list vaults", subscription);
        Ok(paged(state.vaults.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, v)| v.clone()), next))
    }

    async fn find_tagged_vaults(
        &self,
        subscription: &str,
        name: &str,
        value: &str,
    ) -> Result<Vec<ResourceId>, AzureError> {
        let prefix = format!("/subscriptions/{subscription}/").to_ascii_lowercase();
        let state = self.call("list tagged vaults", subscription);
        Ok(state
            .vaults
            .iter()
            .filter(|(k, v)| {
                k.starts_with(&prefix) && v.tags.iter().any(|(n, t)| n.eq_ignore_ascii_case(name) && t == value)
            })
            .filter_map(|(_, v)| v.id.parse().ok())
            .collect())
    }

    async fn add_access_policies(&self, id: &ResourceId, policies: &[AccessPolicy]) -> Result<(), AzureError> {
        let mut state = self.call("add access policies", id);
        let vault = state.vaults.get_mut(&key(id)).ok_or_else(|| not_found("add access policies"))?;
        vault.properties.access_policies.extend(policies.iter().cloned());
        Ok(())
    }

    async fn remove_access_policies(&self, id: &ResourceId, policies: &[AccessPolicy]) -> Result<(), AzureError> {
        let mut state = self.call("remove access policies", id);
        let vault = state.vaults.get_mut(&key(id)).ok_or_else(|| not_found("remove access policies"))?;
        vault
            .properties
            .access_policies
            .retain(|p| !policies.iter().any(|r| r.object_id.eq_ignore_ascii_case(&p.object_id)));
        Ok(())
    }

    async fn set_vault_tags(&self, id: &ResourceId, tags: &BTreeMap<String, String>) -> Result<Vault, AzureError> {
        let mut state = self.call("set vault tags", id);
        let vault = state.vaults.get_mut(&key(id)).ok_or_else(|| not_found("update vault tags"))?;
        vault.tags = tags.clone();
        Ok(vault.clone())
    }

    async fn delete_vault(&self, id: &ResourceId) -> Result<(), AzureError> {
        self.call("delete vault", id).vaults.remove(&key(id));
        Ok(())
    }

    async fn get_deleted_vault(&self, _: &str, _: &str, name: &str) -> Result<Option<DeletedVault>, AzureError> {
        Ok(self.call("get deleted vault", name).deleted.get(&name.to_ascii_lowercase()).map(|(d, _)| d.clone()))
    }

    async fn list_deleted_vaults(&self, subscription: &str, _: Option<&str>) -> Result<Page<DeletedVault>, AzureError> {
        Ok(one_page(self.call("list deleted vaults", subscription).deleted.values().map(|(d, _)| d.clone())))
    }
}

#[async_trait::async_trait]
impl Locks for FakeAzure {
    async fn get_lock(&self, scope: &ResourceId, name: &str) -> Result<Option<Lock>, AzureError> {
        Ok(self.call("get lock", scope).locks.get(&key(&format!("{scope}/{name}"))).cloned())
    }

    async fn put_lock(&self, scope: &ResourceId, name: &str, notes: &str) -> Result<Lock, AzureError> {
        let lock = Lock {
            id: format!("{scope}/providers/Microsoft.Authorization/locks/{name}"),
            name: name.to_string(),
            properties: LockProperties { level: LOCK_LEVEL.into(), notes: Some(notes.to_string()) },
        };
        self.call("put lock", scope).locks.insert(key(&format!("{scope}/{name}")), lock.clone());
        Ok(lock)
    }

    async fn list_locks(&self, subscription: &str, next: Option<&str>) -> Result<Page<Lock>, AzureError> {
        let prefix = format!("/subscriptions/{subscription}/").to_ascii_lowercase();
        let state = self.call("list locks", subscription);
        Ok(paged(state.locks.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, l)| l.clone()), next))
    }

    async fn delete_lock(&self, scope: &ResourceId, name: &str) -> Result<(), AzureError> {
        self.call("delete lock", scope).locks.remove(&key(&format!("{scope}/{name}")));
        Ok(())
    }
}

#[async_trait::async_trait]
impl AuditLogs for FakeAzure {
    async fn get_provider(&self, subscription: &str, namespace: &str) -> Result<Option<Provider>, AzureError> {
        let state = self.call("get provider", format!("{subscription}/{namespace}"));
        let registered = !state.unregistered.contains(&key(&format!("{subscription}/{namespace}")));
        let registration_state = if registered { "Registered" } else { "NotRegistered" };
        Ok(Some(Provider { namespace: namespace.into(), registration_state: registration_state.into() }))
    }

    async fn check_storage_name(&self, subscription: &str, name: &str) -> Result<NameAvailability, AzureError> {
        let state = self.call("check storage account name", format!("{subscription}/{name}"));
        let taken = state.storage_accounts.keys().any(|k| k.ends_with(&format!("/{}", name.to_ascii_lowercase())));
        Ok(NameAvailability { name_available: !taken, ..Default::default() })
    }

    async fn get_storage_account(&self, id: &ResourceId) -> Result<Option<StorageAccount>, AzureError> {
        Ok(self.call("get storage account", id).storage_accounts.get(&key(id)).cloned())
    }

    async fn put_storage_account(
        &self,
        id: &ResourceId,
        account: &StorageAccount,
    ) -> Result<StorageAccount, AzureError> {
        let mut stored = account.clone();
        stored.id = id.to_string();
        stored.name = id.name().unwrap_or_default().to_string();
        self.call("put storage account", id).storage_accounts.insert(key(id), stored.clone());
        Ok(stored)
    }

    async fn get_diagnostic_setting(
        &self,
        scope: &ResourceId,
        name: &str,
    ) -> Result<Option<DiagnosticSetting>, AzureError> {
        Ok(self
            .call("get diagnostic setting", scope)
            .diagnostic_settings
            .get(&key(&format!("{scope}/{name}")))
            .cloned())
    }

    async fn put_diagnostic_setting(
        &self,
        scope: &ResourceId,
        name: &str,
        setting: &DiagnosticSetting,
    ) -> Result<DiagnosticSetting, AzureError> {
        let mut state = self.call("put diagnostic setting", scope);
        let registered = !state.unregistered.contains(&key(&format!("{}/Microsoft.Insights", scope.subscription())));
        if !registered {
            return Err(AzureError::new(
                "put diagnostic setting",
                Some(409),
                Some("MissingSubscriptionRegistration".into()),
                "The subscription is not registered to use namespace 'Microsoft.Insights'.",
            ));
        }
        state.diagnostic_settings.insert(key(&format!("{scope}/{name}")), setting.clone());
        Ok(setting.clone())
    }
}

#[async_trait::async_trait]
impl CikStore for FakeAzure {
    async fn set_cik(&self, vault_uri: &str, name: &str, cik: &Cik) -> Result<String, AzureError> {
        Ok(self.call("set CIK", name).store_cik(vault_uri, name, cik.clone(), true))
    }

    async fn get_cik(
        &self,
        vault_uri: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<StoredCik>, AzureError> {
        let state = self.call("get CIK", name);
        let versions = state.ciks.get(&cik_key(vault_uri, name));
        Ok(match version {
            Some(v) => versions.and_then(|all| all.iter().find(|s| s.version == v)).cloned(),
            None => versions.and_then(|all| all.last()).cloned(),
        })
    }

    async fn secret_names(&self, vault_uri: &str) -> Result<Vec<String>, AzureError> {
        let state = self.call("list secrets", vault_uri);
        let prefix = format!("{}|", vault_uri.trim_end_matches('/').to_ascii_lowercase());
        Ok(state
            .ciks
            .iter()
            .filter(|(k, versions)| k.starts_with(&prefix) && versions.last().is_some_and(|v| v.enabled))
            .filter_map(|(k, _)| state.secret_names.get(k).cloned())
            .collect())
    }
}

#[async_trait::async_trait]
impl Queue for FakeAzure {
    async fn send(&self, queue: &str, message: &OutgoingMessage) -> Result<(), AzureError> {
        self.call("send", queue).sent.push((queue.to_string(), message.clone()));
        Ok(())
    }

    async fn send_batch(&self, queue: &str, messages: &[OutgoingMessage]) -> Result<(), AzureError> {
        let mut state = self.call("send batch", queue);
        state.sent.extend(messages.iter().map(|m| (queue.to_string(), m.clone())));
        Ok(())
    }
}

#[async_trait::async_trait]
impl Records for FakeAzure {
    async fn put(&self, table: &str, partition: &str, row: &str, record: &serde_json::Value) -> Result<(), AzureError> {
        let mut state = self.call("put record", format!("{table}/{partition}/{row}"));
        state.records.insert((table.into(), partition.into(), row.into()), record.clone());
        Ok(())
    }

    async fn get(&self, table: &str, partition: &str, row: &str) -> Result<Option<serde_json::Value>, AzureError> {
        let state = self.call("get record", format!("{table}/{partition}/{row}"));
        Ok(state.records.get(&(table.into(), partition.into(), row.into())).cloned())
    }

    async fn list(&self, table: &str, partition: Option<&str>) -> Result<Vec<Record>, AzureError> {
        let state = self.call("list records", format!("{table}/{}", partition.unwrap_or("*")));
        Ok(state
            .records
            .iter()
            .filter(|((t, p, _), _)| t == table && partition.is_none_or(|want| p == want))
            .map(|((_, p, r), value)| Record { partition: p.clone(), row: r.clone(), value: value.clone() })
            .collect())
    }

    async fn delete(&self, table: &str, partition: &str, row: &str) -> Result<(), AzureError> {
        let mut state = self.call("delete record", format!("{table}/{partition}/{row}"));
        state.records.remove(&(table.into(), partition.into(), row.into()));
        Ok(())
    }
}
