//! Audit logging of a device's vault, as Stack Edge does it (MicrosoftDocs/azure-docs,
//! `articles/databox-online/azure-stack-edge-gpu-activation-key-vault.md`): a zone-redundant storage account,
//! locked and tagged with the vault's name, and a diagnostic setting that sends the vault's audit events there. When
//! the subscription has not registered the storage (or monitoring) provider, activation still succeeds: the
//! audit setting is left missing and a warning alert says what to register.
//!
//! - [`account_names`]: the account's name, derived from the vault's, and a fallback when it is taken elsewhere.
//! - [`observe`]: whether the vault's audit setting is there and sends audit logs to a storage account that exists.
//! - [`ensure`]: makes the account, its lock and the setting — after checking both providers are registered, so a
//!   missing registration leaves nothing half-made.
//! - [`due`]: which vaults a sweep checks: one in [`AUDIT_CHECK_EVERY`], by device, so each is checked every
//!   [`AUDIT_CHECK_EVERY`] sweeps at a fraction of a call per device (docs/BENCHMARKS.md §4).

use std::collections::BTreeMap;

use super::error::Error;
use super::{LOCK_NAME, OWNER_TAG};
use crate::azure::models::{
    DiagnosticSetting, DiagnosticSettingProperties, LogSettings, StorageAccount, StorageSku, Vault,
};
use crate::deps::Deps;
use crate::messages::short_hash;
use crate::resource_id::ResourceId;

/// The name of edgevault's diagnostic setting on each vault.
pub const AUDIT_SETTING_NAME: &str = "edgevault-audit";
/// Tag on the audit storage account naming the vault it serves (Stack Edge tags it with the vault's name).
pub const VAULT_TAG: &str = "edgevault-vault";
/// Zone-redundant, as Stack Edge's audit account is (storage.json `SkuName`).
pub const AUDIT_SKU: &str = "Standard_ZRS";
pub const AUDIT_KIND: &str = "StorageV2";
pub const AUDIT_LOCK_NOTES: &str =
    "Holds the audit logs of an Azure Stack Edge device's Key Vault; managed by edgevault.";
/// The log category group sent: every audit event of the vault (Key Vault's `audit` group holds `AuditEvent`).
pub const AUDIT_CATEGORY_GROUP: &str = "audit";
pub const STORAGE_NAMESPACE: &str = "Microsoft.Storage";
pub const INSIGHTS_NAMESPACE: &str = "Microsoft.Insights";
/// A sweep checks the audit setting of one vault in this many (a prime, so that any sweep interval in minutes that
/// is not a multiple of it walks every residue: each vault is checked once every this many sweeps). A check is two
/// reads on a healthy vault (the setting, then the account it sends to), so 13 keeps a healthy device at about
/// 1.019 + 2/13 = 1.17 ARM calls a sweep, under the 1.2 the sweep is held to (docs/BENCHMARKS.md §4).
pub const AUDIT_CHECK_EVERY: u64 = 13;

/// The audit account's name for vault `vault_name`, then the fallback: storage account names are 3–24 lower-case
/// letters and digits, unique in all of Azure. The first is the vault's name without its hyphens; the second, for
/// when someone else holds the first, the first 16 of those and 8 hex digits of the vault's id.
pub fn account_names(vault: &ResourceId) -> [String; 2] {
    let base: String = vault
        .name()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut first = base.clone();
    first.truncate(24);
    while first.len() < 3 {
        first.push('0');
    }
    let mut prefix = base;
    prefix.truncate(16);
    let hashed = format!("{prefix}{}", &short_hash(&vault.to_string().to_ascii_lowercase())[..8]);
    [first, hashed]
}

/// The account `name` beside the vault (same subscription and resource group).
pub fn account_id(vault: &ResourceId, name: &str) -> ResourceId {
    ResourceId::new(
        vault.subscription(),
        vault.resource_group().unwrap_or_default(),
        ("Microsoft.Storage", "storageAccounts"),
        name,
    )
}

/// The audit account edgevault creates for `vault` of `device`.
pub fn desired_account(vault: &Vault, vault_id: &ResourceId, device: &ResourceId) -> StorageAccount {
    StorageAccount {
        location: vault.location.clone(),
        sku: StorageSku { name: AUDIT_SKU.into() },
        kind: AUDIT_KIND.into(),
        tags: BTreeMap::from([
            (VAULT_TAG.to_string(), vault_id.name().unwrap_or_default().to_string()),
            (OWNER_TAG.to_string(), device.to_string()),
        ]),
        properties: serde_json::json!({ "minimumTlsVersion": "TLS1_2", "allowBlobPublicAccess": false }),
        ..Default::default()
    }
}

/// The setting that sends the vault's audit logs to `account`.
pub fn desired_setting(account: &ResourceId) -> DiagnosticSetting {
    DiagnosticSetting {
        properties: DiagnosticSettingProperties {
            storage_account_id: Some(account.to_string()),
            logs: vec![LogSettings {
                category: None,
                category_group: Some(AUDIT_CATEGORY_GROUP.into()),
                enabled: true,
            }],
        },
        ..Default::default()
    }
}

/// Whether `setting` sends the vault's audit events to a storage account (the `audit` or `allLogs` group, or the
/// `AuditEvent` category, enabled).
pub fn sends_audit(setting: &DiagnosticSetting) -> bool {
    let p = &setting.properties;
    p.storage_account_id.as_deref().is_some_and(|a| !a.is_empty())
        && p.logs.iter().any(|l| {
            l.enabled
                && (l
                    .category_group
                    .as_deref()
                    .is_some_and(|g| g.eq_ignore_ascii_case(AUDIT_CATEGORY_GROUP) || g.eq_ignore_ascii_case("allLogs"))
                    || l.category.as_deref().is_some_and(|c| c.eq_ignore_ascii_case("AuditEvent")))
        })
}

fn tagged_for(account: &StorageAccount, vault: &ResourceId) -> bool {
    let name = vault.name().unwrap_or_default();
    account.tags.iter().any(|(k, v)| k.eq_ignore_ascii_case(VAULT_TAG) && v.eq_ignore_ascii_case(name))
}

/// Whether the vault's audit setting is there and sends audit logs to a storage account: one ARM read.
pub async fn observe(deps: &Deps, vault: &ResourceId) -> Result<bool, Error> {
    let Some(setting) = deps.audit.get_diagnostic_setting(vault, AUDIT_SETTING_NAME).await? else { return Ok(false) };
    if !sends_audit(&setting) {
        return Ok(false);
    }
    // A setting outlives the account it sends to (a deleted account leaves the setting pointing at nothing), so
    // the account is read as well: a second read, only when the setting is there.
    let Some(account) = setting.properties.storage_account_id.as_deref().and_then(|a| a.parse::<ResourceId>().ok())
    else {
        return Ok(false);
    };
    Ok(deps.audit.get_storage_account(&account).await?.is_some())
}

/// Which vaults sweep `sweep_id` checks: the device's turn comes once in [`AUDIT_CHECK_EVERY`] sweeps, the turn
/// given by the sweep's slot (its id ends with the slot's time, `sweep::sweep_id`) and a hash of the device's id.
/// A check that is not a scheduled sweep (`edgevault-cli status`) reads no audit setting.
pub fn due(device: &ResourceId, sweep_id: &str) -> bool {
    let slot_minutes = sweep_id
        .strip_prefix("sweep-")
        .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        .map(|t| (t.unix_timestamp().max(0) / 60) as u64);
    let Some(slot) = slot_minutes else { return false };
    let hash = u64::from_str_radix(&short_hash(&device.to_string().to_ascii_lowercase())[..12], 16).unwrap_or(0);
    (hash + slot).is_multiple_of(AUDIT_CHECK_EVERY)
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// The account (locked, tagged) and the setting are there.
    Configured(ResourceId),
    /// Nothing was made, for the reason given (a provider not registered, no free name): the audit setting stays
    /// missing and its warning alert says why.
    NotPossible(String),
}

/// Makes vault `vault_id`'s audit logging: both providers registered (checked first, so nothing is half-made), the
/// account (ours if it is there, else created under the first free name), its lock, the setting.
pub async fn ensure(deps: &Deps, device: &ResourceId, vault: &Vault, vault_id: &ResourceId) -> Result<Ensured, Error> {
    let subscription = vault_id.subscription();
    let (storage, insights) = tokio::join!(
        deps.audit.get_provider(subscription, STORAGE_NAMESPACE),
        deps.audit.get_provider(subscription, INSIGHTS_NAMESPACE)
    );
    // Only a registration read as absent stops here; a read that failed (a role without providers/read) lets the
    // writes below say what is wrong.
    for (namespace, provider) in [(STORAGE_NAMESPACE, storage), (INSIGHTS_NAMESPACE, insights)] {
        let provider = match provider {
            Ok(provider) => provider,
            Err(err) => {
                tracing::warn!(namespace, error = %err, "could not read the provider's registration; trying anyway");
                continue;
            }
        };
        if !provider.is_some_and(|p| p.registration_state.eq_ignore_ascii_case("Registered")) {
            tracing::warn!(vault = %vault_id, namespace, "provider not registered; audit logging not configured");
            return Ok(Ensured::NotPossible(format!(
                "the subscription {subscription} has not registered {namespace}: run `az provider register --namespace {namespace} --subscription {subscription}` (it needs `{namespace}/register/action`, e.g. Contributor), then refresh the device"
            )));
        }
    }
    let Some(account) = find_or_create_account(deps, device, vault, vault_id).await? else {
        let [first, second] = account_names(vault_id);
        return Ok(Ensured::NotPossible(format!(
            "the storage account names {first} and {second} are both taken by others; free one, then refresh the device"
        )));
    };
    deps.locks.put_lock(&account, LOCK_NAME, AUDIT_LOCK_NOTES).await?;
    deps.audit.put_diagnostic_setting(vault_id, AUDIT_SETTING_NAME, &desired_setting(&account)).await?;
    tracing::info!(vault = %vault_id, account = %account, "audit logging configured");
    Ok(Ensured::Configured(account))
}

/// The vault's audit account: one already beside the vault and tagged for it, else a new one under the first name
/// free in all of Azure. `None` when every candidate name is someone else's.
async fn find_or_create_account(
    deps: &Deps,
    device: &ResourceId,
    vault: &Vault,
    vault_id: &ResourceId,
) -> Result<Option<ResourceId>, Error> {
    for name in account_names(vault_id) {
        let id = account_id(vault_id, &name);
        if let Some(existing) = deps.audit.get_storage_account(&id).await? {
            if tagged_for(&existing, vault_id) {
                return Ok(Some(id));
            }
            continue;
        }
        if !deps.audit.check_storage_name(vault_id.subscription(), &name).await?.name_available {
            tracing::info!(vault = %vault_id, name, "audit account name taken elsewhere; trying the fallback");
            continue;
        }
        deps.audit.put_storage_account(&id, &desired_account(vault, vault_id, device)).await?;
        return Ok(Some(id));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::alerts::AlertKind;
    use crate::azure::fake::{FakeAzure, key, settings};
    use crate::lifecycle::device::open_alerts;
    use crate::lifecycle::provision::{Outcome, provision};
    use crate::lifecycle::{Desired, Finding, assess};
    use crate::resource_id::VAULT_TYPE;
    use crate::vault_name::VaultName;

    async fn activate(azure: &Arc<FakeAzure>, id: &ResourceId) -> Outcome {
        let name = VaultName::parse(&format!("kv-{}", id.name().unwrap())).unwrap();
        provision(&azure.deps(settings()), id, Some(&name), true).await.unwrap()
    }

    async fn findings(azure: &Arc<FakeAzure>, id: &ResourceId) -> Vec<Finding> {
        let observed = crate::lifecycle::observe(&azure.deps(settings()), id, None).await.unwrap().unwrap();
        assert!(observed.audit_setting.is_some(), "a device's own check reads the audit setting");
        assess(&observed, &Desired::new(&settings()))
    }

    #[tokio::test]
    async fn activation_makes_a_locked_zone_redundant_account_tagged_with_the_vault_and_the_audit_setting() {
        let azure = FakeAzure::new();
        let id = azure.add_device("d1", false);
        let Outcome::Provisioned(done) = activate(&azure, &id).await else { panic!("not provisioned") };
        let account = account_id(&done.vault_id, "kvd1");
        {
            let state = azure.state();
            let stored = &state.storage_accounts[&key(&account)];
            assert_eq!(stored.sku.name, "Standard_ZRS");
            assert_eq!(stored.location, state.vaults[&key(&done.vault_id)].location, "beside the vault");
            assert_eq!(stored.tags[VAULT_TAG], "kv-d1");
            assert_eq!(stored.tags[OWNER_TAG], id.to_string());
            assert_eq!(state.locks[&key(&format!("{account}/{LOCK_NAME}"))].properties.level, "CanNotDelete");
            let setting = &state.diagnostic_settings[&key(&format!("{}/{AUDIT_SETTING_NAME}", done.vault_id))];
            assert_eq!(setting.properties.storage_account_id.as_deref(), Some(account.to_string().as_str()));
            assert!(sends_audit(setting));
        }
        assert_eq!(findings(&azure, &id).await, []);
        assert!(open_alerts(&azure.state().devices[&key(&id)]).is_empty());
    }

    #[tokio::test]
    async fn without_the_monitoring_provider_activation_succeeds_makes_nothing_and_warns_once_until_registered() {
        let azure = FakeAzure::new();
        azure.state().unregistered.insert(key(&"s/Microsoft.Insights"));
        let id = azure.add_device("d1", false);
        assert!(matches!(activate(&azure, &id).await, Outcome::Provisioned(_)), "activation succeeds");
        {
            let state = azure.state();
            assert!(state.storage_accounts.is_empty(), "nothing half-made");
            assert!(state.diagnostic_settings.is_empty());
            assert_eq!(open_alerts(&state.devices[&key(&id)]), [AlertKind::AuditLoggingNotConfigured]);
        }
        let raised = |azure: &FakeAzure| {
            azure
                .state()
                .sent
                .iter()
                .filter(|(q, m)| q == "alerts" && m.body.contains("AuditLoggingNotConfigured"))
                .count()
        };
        assert_eq!(raised(&azure), 1);
        assert_eq!(findings(&azure, &id).await, [Finding::AuditSettingMissing]);
        // A repair while still unregistered raises nothing new.
        provision(&azure.deps(settings()), &id, None, false).await.unwrap();
        assert_eq!(raised(&azure), 1, "raised once");
        // Registered: the next repair makes it and resolves the alert.
        azure.state().unregistered.clear();
        provision(&azure.deps(settings()), &id, None, false).await.unwrap();
        assert_eq!(findings(&azure, &id).await, []);
        assert!(open_alerts(&azure.state().devices[&key(&id)]).is_empty(), "resolved");
        assert_eq!(raised(&azure), 2, "the resolution");
    }

    #[tokio::test]
    async fn a_deleted_audit_account_is_found_though_its_setting_remains_and_the_repair_makes_it_again() {
        let azure = FakeAzure::new();
        let id = azure.add_device("d1", false);
        let Outcome::Provisioned(done) = activate(&azure, &id).await else { panic!("not provisioned") };
        let account = account_id(&done.vault_id, "kvd1");
        azure.state().storage_accounts.remove(&key(&account));
        assert!(!azure.state().diagnostic_settings.is_empty(), "the setting is still there");
        assert_eq!(findings(&azure, &id).await, [Finding::AuditSettingMissing]);
        provision(&azure.deps(settings()), &id, None, false).await.unwrap();
        assert!(azure.state().storage_accounts.contains_key(&key(&account)), "the account is made again");
        assert_eq!(findings(&azure, &id).await, []);
    }

    #[tokio::test]
    async fn a_name_taken_elsewhere_falls_back_to_the_hashed_name() {
        let azure = FakeAzure::new();
        let elsewhere = ResourceId::new("other", "theirs", ("Microsoft.Storage", "storageAccounts"), "kvd1");
        azure.state().storage_accounts.insert(key(&elsewhere), Default::default());
        let id = azure.add_device("d1", false);
        let Outcome::Provisioned(done) = activate(&azure, &id).await else { panic!("not provisioned") };
        let [_, fallback] = account_names(&done.vault_id);
        assert!(azure.state().storage_accounts.contains_key(&key(&account_id(&done.vault_id, &fallback))));
        assert_eq!(findings(&azure, &id).await, []);
    }

    #[tokio::test]
    async fn a_deleted_audit_setting_is_found_and_made_again() {
        let azure = FakeAzure::new();
        let (id, vault) = azure.add_healthy("d1");
        azure.state().diagnostic_settings.clear();
        assert_eq!(findings(&azure, &id).await, [Finding::AuditSettingMissing]);
        provision(&azure.deps(settings()), &id, None, false).await.unwrap();
        assert_eq!(findings(&azure, &id).await, []);
        assert!(azure.state().diagnostic_settings.contains_key(&key(&format!("{vault}/{AUDIT_SETTING_NAME}"))));
    }

    #[test]
    fn account_names_are_valid_storage_names_and_differ() {
        for vault in ["kv-d1", "a", "ASE-Vault-123456789-abcd", "x-y"] {
            let id = ResourceId::new("s", "rg", VAULT_TYPE, vault);
            let [first, second] = account_names(&id);
            for name in [&first, &second] {
                assert!((3..=24).contains(&name.len()), "{name}");
                assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "{name}");
            }
            assert_ne!(first, second);
            assert_eq!(account_names(&id), [first, second], "deterministic");
        }
        assert_eq!(account_names(&ResourceId::new("s", "rg", VAULT_TYPE, "kv-d1"))[0], "kvd1");
    }

    #[test]
    fn every_device_is_due_once_in_so_many_sweeps() {
        let device = ResourceId::new("s", "rg", crate::resource_id::DEVICE_TYPE, "d1");
        let start = time::macros::datetime!(2026-12-01 00:00 UTC);
        for minutes in [5i64, 15, 60, 1440] {
            let due_in: Vec<bool> = (0..AUDIT_CHECK_EVERY as i64)
                .map(|i| due(&device, &super::super::sweep::sweep_id(start + time::Duration::minutes(minutes * i))))
                .collect();
            assert_eq!(due_in.iter().filter(|d| **d).count(), 1, "every {minutes} minutes: {due_in:?}");
        }
    }

    #[test]
    fn a_setting_sends_audit_logs_by_group_or_category() {
        let account = ResourceId::new("s", "rg", ("Microsoft.Storage", "storageAccounts"), "kvd1");
        assert!(sends_audit(&desired_setting(&account)));
        let mut off = desired_setting(&account);
        off.properties.logs[0].enabled = false;
        assert!(!sends_audit(&off));
        let mut nowhere = desired_setting(&account);
        nowhere.properties.storage_account_id = None;
        assert!(!sends_audit(&nowhere));
    }
}
