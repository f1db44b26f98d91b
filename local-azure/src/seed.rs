//! `POST /admin/seed`: a fleet written directly into the store, in one transaction per request.
//!
//! Creating a device with an identity, its vault, lock and secret through the service APIs costs six requests and
//! five committed transactions per device (and a vault's audit storage account and diagnostic setting two more); a benchmark fleet of 100,000 devices needs seconds, not hours. The seed
//! writes the same documents the APIs would (a device as `PUT` + `updateExtendedInformation` leave it, a vault as
//! `PUT` (+ `DELETE`) leave it), checked by the same rules, but records no activity: seeding is the starting state,
//! not operations, so no Event Grid event follows. Storage accounts and diagnostic settings are written by the same
//! functions as their `PUT`s (`arm::storage::write`, `arm::diagnostics::write`), after the same checks.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::App;
use crate::arm::devices::{self, DEVICE, Device, ExtendedPatch};
use crate::arm::error::ArmError;
use crate::arm::locks::{LOCK, Lock};
use crate::arm::tenancy::{RESOURCE_GROUP, ResourceGroup, SUBSCRIPTION, Subscription};
use crate::arm::vaults::{self, Deleted, VAULT, Vault};
use crate::arm::{ResourceId, system_data};
use crate::arm::{diagnostics, storage};
use crate::http::{AdminError, bad};
use crate::identity::{Principal, put_principal};
use crate::keyvault::{SECRET, SecretDoc, SecretVersion, secret_key};
use crate::store::Tx;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub devices: Vec<SeedDevice>,
    #[serde(default)]
    pub vaults: Vec<SeedVault>,
    #[serde(default)]
    pub locks: Vec<SeedLock>,
    #[serde(default)]
    pub secrets: Vec<SeedSecret>,
    /// Written after the vaults and before the locks and settings, which may name them.
    #[serde(default)]
    pub storage_accounts: Vec<SeedStorageAccount>,
    /// On vaults (seeded in the same request or before): a vault's audit logging, as edgevault makes it.
    #[serde(default)]
    pub diagnostic_settings: Vec<SeedDiagnosticSetting>,
}

/// A storage account as its `PUT` body, with its id.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedStorageAccount {
    pub id: String,
    pub location: String,
    pub sku: SeedSku,
    pub kind: String,
    #[serde(default)]
    pub tags: Map<String, Value>,
    #[serde(default)]
    pub properties: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedSku {
    pub name: String,
}

/// A diagnostic setting on a vault, as its `PUT` body, with its scope and name.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedDiagnosticSetting {
    pub scope: String,
    pub name: String,
    pub properties: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedDevice {
    pub id: String,
    pub location: String,
    #[serde(default)]
    pub tags: Map<String, Value>,
    #[serde(default)]
    pub sku: Option<Value>,
    /// A system-assigned identity; its object id may be chosen by the caller (so the same request can name it in
    /// a vault's access policies).
    #[serde(default)]
    pub identity: Option<SeedIdentity>,
    #[serde(default)]
    pub extended_information: Option<ExtendedPatch>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedIdentity {
    #[serde(default)]
    pub principal_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedVault {
    pub id: String,
    pub location: String,
    #[serde(default)]
    pub tags: Map<String, Value>,
    pub properties: Map<String, Value>,
    /// Soft-deleted now, purge scheduled after the vault's retention.
    #[serde(default)]
    pub soft_deleted: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedLock {
    pub scope: String,
    pub name: String,
    pub level: String,
    #[serde(default)]
    pub notes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeedSecret {
    pub vault: String,
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub content_type: Option<String>,
    /// 32 hex digits, as Key Vault's; generated when absent.
    #[serde(default)]
    pub version: Option<String>,
}

/// The caller named in `systemData` of seeded resources.
const SEEDER: &str = "local-azure-seed";

fn resource_id(id: &str, kind: &str) -> Result<ResourceId, AdminError> {
    let parsed: ResourceId = id.parse().map_err(|e| bad(format!("{id}: {e}")))?;
    if !parsed.resource_type().eq_ignore_ascii_case(kind) || parsed.resource_group.is_none() {
        return Err(bad(format!("{id} is not a {kind} id")));
    }
    Ok(parsed)
}

/// What ARM would have refused, as the seed's `400` (its store's failure stays a `500`).
fn refused(err: ArmError) -> AdminError {
    match err {
        ArmError::Api { message, .. } => bad(message),
        ArmError::Store(e) => AdminError::Store(e),
    }
}

/// The resource group must exist, as for `PUT`; returns the subscription's tenant.
fn tenant_of(tx: &Tx<'_>, id: &ResourceId) -> Result<String, AdminError> {
    let rg = id.resource_group.as_deref().unwrap_or_default();
    tx.get::<ResourceGroup>(RESOURCE_GROUP, &ResourceGroup::key(&id.subscription, rg))?
        .ok_or_else(|| AdminError::NotFound(format!("resource group {rg} in {} not found", id.subscription)))?;
    let sub: Subscription = tx
        .get(SUBSCRIPTION, &id.subscription.to_ascii_lowercase())?
        .ok_or_else(|| AdminError::NotFound(format!("subscription {} not found", id.subscription)))?;
    Ok(sub.tenant_id)
}

/// Writes everything in `seed` in one transaction (nothing when any item is refused); answers the counts and the
/// device principals.
pub fn seed(app: &App, seed: &Seed) -> Result<Value, AdminError> {
    let now = app.clock.now();
    let sd = system_data(now, SEEDER, None);
    app.store.write(|tx| -> Result<Value, AdminError> {
        let mut principals = Vec::with_capacity(seed.devices.len());
        for d in &seed.devices {
            let id = resource_id(&d.id, devices::TYPE)?;
            let tenant = tenant_of(tx, &id)?;
            let mut device = Device {
                id: id.to_string(),
                name: id.name().to_string(),
                location: d.location.clone(),
                tags: d.tags.clone(),
                sku: d.sku.clone(),
                kind: None,
                identity: None,
                properties: devices::default_properties(id.name()),
                extended: devices::default_extended(),
                system_data: sd.clone(),
                etag: devices::etag_at(now),
            };
            if let Some(identity) = &d.identity {
                let object_id = identity.principal_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                uuid::Uuid::parse_str(&object_id).map_err(|e| bad(format!("principalId {object_id}: {e}")))?;
                let principal = Principal {
                    object_id: object_id.to_ascii_lowercase(),
                    client_id: uuid::Uuid::new_v4().to_string(),
                    tenant_id: tenant.clone(),
                    display_name: device.name.clone(),
                    resource_id: Some(device.id.clone()),
                    user_principal_name: None,
                };
                put_principal(tx, &principal)?;
                device.identity =
                    Some(json!({ "type": "SystemAssigned", "principalId": principal.object_id, "tenantId": tenant }));
                principals.push(json!({ "id": device.id, "principalId": principal.object_id }));
            }
            if let Some(ext) = &d.extended_information {
                ext.validate().map_err(bad)?;
                ext.apply(&mut device.extended);
            }
            tx.put(DEVICE, &id.key(), &device)?;
        }
        for v in &seed.vaults {
            let id = resource_id(&v.id, "Microsoft.KeyVault/vaults")?;
            tenant_of(tx, &id)?;
            let name = id.name().to_string();
            vaults::validate_name(&name).map_err(bad)?;
            if let Some(existing) = tx.get::<Vault>(VAULT, &vaults::key(&name))?
                && existing.id().key() != id.key()
            {
                return Err(bad(vaults::name_in_use(&name)));
            }
            let mut props = v.properties.clone();
            vaults::validate_properties(&props, None).map_err(bad)?;
            vaults::complete_properties(&mut props, &name);
            let mut vault = Vault {
                name: name.clone(),
                subscription_id: id.subscription.clone(),
                resource_group: id.resource_group.clone().unwrap_or_default(),
                location: v.location.clone(),
                tags: v.tags.clone(),
                properties: props,
                system_data: sd.clone(),
                deleted: None,
            };
            if v.soft_deleted {
                vault.deleted = Some(Deleted {
                    deletion_date: crate::clock::arm_time_seconds(now),
                    scheduled_purge_date: crate::clock::arm_time_seconds(
                        now + time::Duration::days(vault.retention_days()),
                    ),
                });
            }
            vaults::save(tx, &vault)?;
        }
        let now_text = crate::clock::arm_time(now);
        for a in &seed.storage_accounts {
            let id = resource_id(&a.id, storage::TYPE)?;
            tenant_of(tx, &id)?;
            let requested = storage::Requested::new(
                Some(&a.sku.name),
                Some(&a.kind),
                a.location.clone(),
                a.tags.clone(),
                a.properties.clone(),
            )
            .map_err(refused)?;
            storage::write(tx, &id, &requested, |_| sd.clone(), &now_text).map_err(refused)?;
        }
        for l in &seed.locks {
            let scope: ResourceId = l.scope.parse().map_err(|e| bad(format!("{}: {e}", l.scope)))?;
            let level = match l.level.to_ascii_lowercase().as_str() {
                "cannotdelete" => "CanNotDelete",
                "readonly" => "ReadOnly",
                _ => return Err(bad(format!("lock level {} is not CanNotDelete or ReadOnly", l.level))),
            };
            let lock = Lock {
                scope: scope.to_string(),
                name: l.name.clone(),
                level: level.to_string(),
                notes: l.notes.clone(),
                owners: None,
            };
            tx.put(LOCK, &Lock::key(&lock.scope, &lock.name), &lock)?;
        }
        for s in &seed.secrets {
            let valid_name =
                (1..=127).contains(&s.name.len()) && s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !valid_name {
                return Err(bad(format!("invalid secret name {}", s.name)));
            }
            if tx.get::<Vault>(VAULT, &vaults::key(&s.vault))?.is_none() {
                return Err(AdminError::NotFound(format!(
                    "vault {} not found (seed vaults before their secrets)",
                    s.vault
                )));
            }
            let version = s.version.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
            if version.len() != 32 || !version.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad(format!("secret version {version} is not 32 hex digits")));
            }
            let key = secret_key(&s.vault, &s.name);
            let mut doc = tx.get::<SecretDoc>(SECRET, &key)?.unwrap_or(SecretDoc {
                name: s.name.clone(),
                versions: vec![],
                deleted: None,
            });
            let at = now.unix_timestamp();
            doc.versions.push(SecretVersion {
                version,
                value: s.value.clone(),
                content_type: s.content_type.clone(),
                tags: None,
                enabled: true,
                exp: None,
                nbf: None,
                created: at,
                updated: at,
            });
            tx.put(SECRET, &key, &doc)?;
        }
        for d in &seed.diagnostic_settings {
            let scope = resource_id(&d.scope, vaults::TYPE)?;
            let vault = tx
                .get::<Vault>(VAULT, &vaults::key(scope.name()))?
                .filter(|v| v.deleted.is_none() && v.id().key() == scope.key())
                .ok_or_else(|| {
                    AdminError::NotFound(format!(
                        "vault {} not found or soft-deleted (seed vaults before their settings)",
                        d.scope
                    ))
                })?;
            diagnostics::write(tx, &scope, &vault.location, &d.name, d.properties.clone()).map_err(refused)?;
        }
        Ok(json!({
            "devices": seed.devices.len(),
            "vaults": seed.vaults.len(),
            "locks": seed.locks.len(),
            "secrets": seed.secrets.len(),
            "storageAccounts": seed.storage_accounts.len(),
            "diagnosticSettings": seed.diagnostic_settings.len(),
            "principals": principals,
        }))
    })
}
