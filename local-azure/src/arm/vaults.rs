//! `Microsoft.KeyVault/vaults` and `deletedVaults`: name rules, global uniqueness, soft delete,
//! recovery, purge protection, retention, access policies and the purge long-running operation.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::{ArmCtx, ArmError, ResourceId, locks};
use crate::App;
use crate::clock::{arm_time_seconds, parse_time};
use crate::http::Resp;
use crate::store::{StoreError, Tx};

pub const VAULT: &str = "vault";
const OPERATION: &str = "operation";
pub const TYPE: &str = "Microsoft.KeyVault/vaults";
const DEFAULT_RETENTION_DAYS: i64 = 90;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub deletion_date: String,
    pub scheduled_purge_date: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vault {
    pub name: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub location: String,
    #[serde(default)]
    pub tags: Map<String, Value>,
    pub properties: Map<String, Value>,
    pub system_data: Value,
    #[serde(default)]
    pub deleted: Option<Deleted>,
}

impl Vault {
    pub fn id(&self) -> ResourceId {
        ResourceId::resource(&self.subscription_id, &self.resource_group, "Microsoft.KeyVault", "vaults", &self.name)
    }

    pub fn tenant_id(&self) -> &str {
        self.properties.get("tenantId").and_then(Value::as_str).unwrap_or_default()
    }

    pub fn purge_protection(&self) -> bool {
        self.properties.get("enablePurgeProtection").and_then(Value::as_bool).unwrap_or(false)
    }

    pub fn retention_days(&self) -> i64 {
        self.properties.get("softDeleteRetentionInDays").and_then(Value::as_i64).unwrap_or(DEFAULT_RETENTION_DAYS)
    }

    pub fn access_policies(&self) -> Vec<Value> {
        self.properties.get("accessPolicies").and_then(Value::as_array).cloned().unwrap_or_default()
    }

    pub fn uri(&self) -> String {
        format!("https://{}.vault.azure.net/", self.name.to_ascii_lowercase())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id().to_string(),
            "name": self.name,
            "type": TYPE,
            "location": self.location,
            "tags": self.tags,
            "systemData": self.system_data,
            "properties": self.properties,
        })
    }

    pub fn deleted_id(&self) -> String {
        format!(
            "/subscriptions/{}/providers/Microsoft.KeyVault/locations/{}/deletedVaults/{}",
            self.subscription_id, self.location, self.name
        )
    }

    pub fn to_deleted_json(&self) -> Value {
        let d = self
            .deleted
            .clone()
            .unwrap_or(Deleted { deletion_date: String::new(), scheduled_purge_date: String::new() });
        json!({
            "id": self.deleted_id(),
            "name": self.name,
            "type": "Microsoft.KeyVault/deletedVaults",
            "properties": {
                "vaultId": self.id().to_string(),
                "location": self.location,
                "tags": self.tags,
                "deletionDate": d.deletion_date,
                "scheduledPurgeDate": d.scheduled_purge_date,
                "purgeProtectionEnabled": self.purge_protection(),
            }
        })
    }
}

/// Why a vault name is unusable, in the words Azure uses.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let starts = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    let ends = name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if (3..=24).contains(&name.len()) && ok_chars && starts && ends && !name.contains("--") {
        Ok(())
    } else {
        Err(format!(
            "The vault name '{name}' is invalid. A vault's name must be between 3-24 alphanumeric characters. The name must begin with a letter, end with a letter or digit, and not contain consecutive hyphens. Follow this link for more information: https://go.microsoft.com/fwlink/?linkid=2147742"
        ))
    }
}

pub(crate) fn name_in_use(name: &str) -> String {
    format!(
        "The vault name '{name}' is already in use. Vault names are globally unique so it is possible that the name is already taken. If you are sure that the vault name was not taken then it is possible that a vault with the same name was recently deleted but not purged after being placed in a recoverable state. If the vault is in a recoverable state then the vault will need to be purged before reusing the name. For more information on soft delete and purging a vault follow this link https://go.microsoft.com/fwlink/?linkid=2147740."
    )
}

pub(crate) fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// The index of soft-deleted vaults by scheduled purge date (`<unix seconds, 20 digits>/<name>` → name), so that
/// expiry, which every vault request runs first, reads only the vaults that are due instead of every vault.
pub const PURGE_DUE: &str = "vault-purge-due";

fn due_key(deleted: &Deleted, name: &str) -> String {
    let at = parse_time(&deleted.scheduled_purge_date).map(|t| t.unix_timestamp().max(0)).unwrap_or(0);
    format!("{at:020}/{}", key(name))
}

/// Writes a vault and keeps [`PURGE_DUE`] in step with its deletion state. Every vault write goes through here.
pub fn save(tx: &mut Tx<'_>, vault: &Vault) -> Result<(), StoreError> {
    if let Some(previous) = tx.get::<Vault>(VAULT, &key(&vault.name))?
        && let Some(d) = &previous.deleted
    {
        tx.delete(PURGE_DUE, &due_key(d, &previous.name))?;
    }
    tx.put(VAULT, &key(&vault.name), vault)?;
    if let Some(d) = &vault.deleted {
        tx.put(PURGE_DUE, &due_key(d, &vault.name), &vault.name)?;
    }
    Ok(())
}

/// Builds [`PURGE_DUE`] from the vaults, for a data directory written before the index existed.
pub fn build_purge_index(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    tx.delete_prefix(PURGE_DUE, "")?;
    for (_, vault) in tx.list_keys::<Vault>(VAULT, "")? {
        if let Some(d) = &vault.deleted {
            tx.put(PURGE_DUE, &due_key(d, &vault.name), &vault.name)?;
        }
    }
    Ok(())
}

/// Purges soft-deleted vaults whose scheduled purge date has passed, as Key Vault does.
pub fn expire(app: &App, now: OffsetDateTime) -> Result<(), StoreError> {
    let until = format!("{:020}", now.unix_timestamp().max(0) + 1);
    let due: Vec<(String, String)> = app.store.range(PURGE_DUE, "", &until)?;
    if due.is_empty() {
        return Ok(());
    }
    app.store.write(|tx| -> Result<(), StoreError> {
        for (_, name) in due {
            // Still due inside the transaction: a concurrent recovery may have taken it out of the index.
            if tx.get::<Vault>(VAULT, &key(&name))?.is_some_and(|v| v.deleted.is_some()) {
                purge_now(tx, &name)?;
            }
        }
        Ok(())
    })
}

fn purge_now(tx: &mut Tx<'_>, name: &str) -> Result<(), StoreError> {
    if let Some(vault) = tx.get::<Vault>(VAULT, &key(name))?
        && let Some(d) = &vault.deleted
    {
        tx.delete(PURGE_DUE, &due_key(d, &vault.name))?;
    }
    tx.delete(VAULT, &key(name))?;
    crate::keyvault::purge_vault_data(tx, name)?;
    Ok(())
}

/// The live (not soft-deleted) vault at `id`.
pub fn find_active(app: &App, id: &ResourceId) -> Result<Option<Vault>, StoreError> {
    let v: Option<Vault> = app.store.get(VAULT, &key(id.name()))?;
    Ok(v.filter(|v| v.deleted.is_none() && v.id().key() == id.key()))
}

/// The vault behind a data-plane host name, live or not.
pub fn by_name(app: &App, name: &str) -> Result<Option<Vault>, StoreError> {
    app.store.get(VAULT, &key(name))
}

fn not_found(id: &ResourceId) -> ArmError {
    ArmError::resource_not_found(TYPE, id.name(), id.resource_group.as_deref().unwrap_or_default())
}

pub fn get(ctx: &ArmCtx<'_>, id: &ResourceId) -> Result<Resp, ArmError> {
    expire(ctx.app, ctx.now)?;
    let vault = find_active(ctx.app, id)?.ok_or_else(|| not_found(id))?;
    Ok(Resp::json(StatusCode::OK, &vault.to_json()))
}

/// `Vaults_ListBySubscription` / `Vaults_ListByResourceGroup` (keyvault.json, 2024-11-01: `$top`, `nextLink`).
/// Keyset pages: vaults are stored by their global name, so a page scans names from the `$skiptoken` (the last
/// name served) and keeps the subscription's (and group's) live ones until `$top` are found; a sweep listing a
/// large subscription reads each vault once in all, not once per page.
pub fn list(ctx: &ArmCtx<'_>, subscription: &str, group: Option<&str>) -> Result<Resp, ArmError> {
    expire(ctx.app, ctx.now)?;
    let top = ctx.page_size();
    let mut after = ctx.req.query("$skiptoken").filter(|t| !t.is_empty()).map(str::to_string);
    let mut items = Vec::new();
    let mut next = None;
    'scan: loop {
        let (chunk, more) = ctx.app.store.page::<Vault>(VAULT, "", after.as_deref(), top.max(100))?;
        for (key, vault) in &chunk {
            let wanted = vault.deleted.is_none()
                && vault.subscription_id.eq_ignore_ascii_case(subscription)
                && group.is_none_or(|g| vault.resource_group.eq_ignore_ascii_case(g));
            if wanted && items.len() == top {
                // Another page only when another vault follows: no empty last page.
                next = after.clone();
                break 'scan;
            }
            after = Some(key.clone());
            if wanted {
                items.push(vault.to_json());
            }
        }
        if !more {
            break;
        }
    }
    Ok(Resp::json(StatusCode::OK, &ctx.page_after(items, next.as_deref())))
}

pub fn check_name(ctx: &ArmCtx<'_>) -> Result<Resp, ArmError> {
    #[derive(Deserialize)]
    struct Body {
        name: String,
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    expire(ctx.app, ctx.now)?;
    let body: Body = ctx.body()?;
    if let Some(kind) = &body.kind
        && !kind.eq_ignore_ascii_case(TYPE)
    {
        return Err(ArmError::bad_request(
            "InvalidResourceType",
            format!("The resource type '{kind}' is not supported; use '{TYPE}'."),
        ));
    }
    let answer = if let Err(message) = validate_name(&body.name) {
        json!({ "nameAvailable": false, "reason": "AccountNameInvalid", "message": message })
    } else if by_name(ctx.app, &body.name)?.is_some() {
        json!({ "nameAvailable": false, "reason": "AlreadyExists", "message": name_in_use(&body.name) })
    } else {
        json!({ "nameAvailable": true })
    };
    Ok(Resp::json(StatusCode::OK, &answer))
}

#[derive(Debug, Deserialize)]
struct PutBody {
    location: Option<String>,
    #[serde(default)]
    tags: Map<String, Value>,
    #[serde(default)]
    properties: Map<String, Value>,
}

fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

/// Checks the rules that hold for every write of vault properties, `previous` being the stored
/// properties on update.
pub(crate) fn validate_properties(
    props: &Map<String, Value>,
    previous: Option<&Map<String, Value>>,
) -> Result<(), ArmError> {
    match props.get("tenantId").and_then(Value::as_str) {
        Some(t) if is_guid(t) => {}
        _ => {
            return Err(ArmError::bad_request("BadRequest", "The property 'tenantId' is required and must be a GUID."));
        }
    }
    let sku_name = props.get("sku").and_then(|s| s.get("name")).and_then(Value::as_str).unwrap_or_default();
    if !matches!(sku_name.to_ascii_lowercase().as_str(), "standard" | "premium") {
        return Err(ArmError::bad_request(
            "BadRequest",
            "The property 'sku' is required: {\"family\":\"A\",\"name\":\"standard\"|\"premium\"}.",
        ));
    }
    if props.get("enableSoftDelete").and_then(Value::as_bool) == Some(false) {
        return Err(ArmError::bad_request(
            "BadRequest",
            "The property \"enableSoftDelete\" cannot be set to false. Soft delete is always on for new and existing vaults.",
        ));
    }
    if props.get("enablePurgeProtection").and_then(Value::as_bool) == Some(false) {
        return Err(ArmError::bad_request(
            "BadRequest",
            "The property \"enablePurgeProtection\" cannot be set to false. Enabling the purge protection for a vault is an irreversible action.",
        ));
    }
    if let Some(days) = props.get("softDeleteRetentionInDays") {
        let days = days.as_i64().unwrap_or(-1);
        if !(7..=90).contains(&days) {
            return Err(ArmError::bad_request(
                "BadRequest",
                "The property \"softDeleteRetentionInDays\" must be between 7 and 90.",
            ));
        }
        if let Some(prev) = previous.and_then(|p| p.get("softDeleteRetentionInDays"))
            && prev.as_i64() != Some(days)
        {
            return Err(ArmError::bad_request(
                "BadRequest",
                "The property \"softDeleteRetentionInDays\" has been set already and it can't be modified.",
            ));
        }
    }
    Ok(())
}

/// Properties a vault always reports, filled in where the request left them out.
pub(crate) fn complete_properties(props: &mut Map<String, Value>, name: &str) {
    let defaults = json!({
        "accessPolicies": [],
        "enabledForDeployment": false,
        "enabledForDiskEncryption": false,
        "enabledForTemplateDeployment": false,
        "enableSoftDelete": true,
        "softDeleteRetentionInDays": DEFAULT_RETENTION_DAYS,
        "enableRbacAuthorization": false,
        "publicNetworkAccess": "Enabled",
    });
    if let Some(d) = defaults.as_object() {
        for (k, v) in d {
            props.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    props.remove("createMode");
    props.insert("vaultUri".into(), json!(format!("https://{}.vault.azure.net/", name.to_ascii_lowercase())));
    props.insert("provisioningState".into(), json!("Succeeded"));
}

/// Keeps what can't be undone: retention once set, purge protection once on.
fn carry_irreversible(props: &mut Map<String, Value>, previous: &Map<String, Value>) {
    if previous.get("enablePurgeProtection").and_then(Value::as_bool) == Some(true) {
        props.insert("enablePurgeProtection".into(), json!(true));
    }
    if let Some(days) = previous.get("softDeleteRetentionInDays") {
        props.entry("softDeleteRetentionInDays").or_insert_with(|| days.clone());
    }
}

pub fn put(ctx: &ArmCtx<'_>, id: &ResourceId) -> Result<Resp, ArmError> {
    expire(ctx.app, ctx.now)?;
    let name = id.name().to_string();
    validate_name(&name).map_err(|m| ArmError::bad_request("VaultNameNotValid", m))?;
    let rg_name = id.resource_group.clone().unwrap_or_default();
    let rg = ctx.resource_group(&id.subscription, &rg_name)?;
    let body: PutBody = ctx.body()?;
    let create_mode =
        body.properties.get("createMode").and_then(Value::as_str).unwrap_or("default").to_ascii_lowercase();
    let location = body.location.clone().unwrap_or_else(|| rg.location.clone());
    let (vault, status) = ctx.app.store.write(|tx| -> Result<(Vault, StatusCode), ArmError> {
        let existing: Option<Vault> = tx.get(VAULT, &key(&name))?;
        if create_mode == "recover" {
            let Some(mut vault) = existing.filter(|v| v.deleted.is_some()) else {
                return Err(ArmError::bad_request(
                    "SoftDeletedVaultDoesNotExist",
                    format!(
                        "A soft deleted vault with the given name '{name}' does not exist. Ensure that the name for the vault that is being attempted to recover is in a recoverable state. For more information on soft delete please follow this link https://go.microsoft.com/fwlink/?linkid=2149745"
                    ),
                ));
            };
            if !vault.subscription_id.eq_ignore_ascii_case(&id.subscription) {
                return Err(ArmError::bad_request(
                    "SoftDeletedVaultDoesNotExist",
                    format!("A soft deleted vault with the given name '{name}' does not exist in subscription '{}'.", id.subscription),
                ));
            }
            locks::check(tx, id, false)?;
            // Recovery brings back the vault with its properties, access policies and secrets.
            vault.deleted = None;
            vault.resource_group = rg_name.clone();
            if !body.tags.is_empty() {
                vault.tags = body.tags.clone();
            }
            vault.system_data = ctx.system_data(Some(&vault.system_data));
            save(tx, &vault)?;
            ctx.record(tx, &vault.id().to_string(), StatusCode::OK)?;
            return Ok((vault, StatusCode::OK));
        }
        let mut props = body.properties.clone();
        match &existing {
            Some(v) if v.deleted.is_some() => {
                return Err(ArmError::conflict(
                    "ConflictError",
                    "A vault with the same name already exists in deleted state. You need to either recover or purge existing key vault. Follow this link https://go.microsoft.com/fwlink/?linkid=2149745 for more information on soft delete.",
                ));
            }
            Some(v) if v.id().key() != id.key() => {
                return Err(ArmError::conflict("VaultAlreadyExists", name_in_use(&name)));
            }
            Some(v) => {
                validate_properties(&props, Some(&v.properties))?;
                carry_irreversible(&mut props, &v.properties);
                locks::check(tx, id, false)?;
            }
            None => validate_properties(&props, None)?,
        }
        complete_properties(&mut props, &name);
        let vault = Vault {
            name: existing.as_ref().map(|v| v.name.clone()).unwrap_or(name.clone()),
            subscription_id: id.subscription.clone(),
            resource_group: rg_name.clone(),
            location: location.clone(),
            tags: body.tags.clone(),
            properties: props,
            system_data: ctx.system_data(existing.as_ref().map(|v| &v.system_data)),
            deleted: None,
        };
        save(tx, &vault)?;
        let status = if existing.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        ctx.record(tx, &vault.id().to_string(), status)?;
        Ok((vault, status))
    })?;
    Ok(Resp::json(status, &vault.to_json()))
}

pub fn patch(ctx: &ArmCtx<'_>, id: &ResourceId) -> Result<Resp, ArmError> {
    expire(ctx.app, ctx.now)?;
    let body: Value = ctx.body()?;
    let vault = ctx.app.store.write(|tx| -> Result<Vault, ArmError> {
        let mut vault: Vault = tx
            .get::<Vault>(VAULT, &key(id.name()))?
            .filter(|v| v.deleted.is_none() && v.id().key() == id.key())
            .ok_or_else(|| not_found(id))?;
        locks::check(tx, id, false)?;
        let mut props = vault.properties.clone();
        if let Some(patch) = body.get("properties").and_then(Value::as_object) {
            for (k, v) in patch {
                if !v.is_null() {
                    props.insert(k.clone(), v.clone());
                }
            }
        }
        validate_properties(&props, Some(&vault.properties))?;
        carry_irreversible(&mut props, &vault.properties);
        complete_properties(&mut props, &vault.name);
        vault.properties = props;
        if let Some(tags) = body.get("tags").and_then(Value::as_object) {
            vault.tags = tags.clone();
        }
        vault.system_data = ctx.system_data(Some(&vault.system_data));
        save(tx, &vault)?;
        ctx.record(tx, &vault.id().to_string(), StatusCode::OK)?;
        Ok(vault)
    })?;
    Ok(Resp::json(StatusCode::OK, &vault.to_json()))
}

pub fn delete(ctx: &ArmCtx<'_>, id: &ResourceId) -> Result<Resp, ArmError> {
    expire(ctx.app, ctx.now)?;
    let existed = ctx.app.store.write(|tx| -> Result<bool, ArmError> {
        let Some(mut vault) =
            tx.get::<Vault>(VAULT, &key(id.name()))?.filter(|v| v.deleted.is_none() && v.id().key() == id.key())
        else {
            return Ok(false);
        };
        locks::check(tx, id, true)?;
        let scheduled = ctx.now + time::Duration::days(vault.retention_days());
        vault.deleted = Some(Deleted {
            deletion_date: arm_time_seconds(ctx.now),
            scheduled_purge_date: arm_time_seconds(scheduled),
        });
        save(tx, &vault)?;
        locks::remove_under(tx, id)?;
        ctx.record(tx, &vault.id().to_string(), StatusCode::OK)?;
        Ok(true)
    })?;
    Ok(Resp::empty(if existed { StatusCode::OK } else { StatusCode::NO_CONTENT }))
}

fn deleted_not_found(name: &str) -> ArmError {
    ArmError::not_found(
        "ResourceNotFound",
        format!("The Resource 'Microsoft.KeyVault/deletedVaults/{name}' was not found."),
    )
}

fn find_deleted(app: &App, subscription: &str, location: &str, name: &str) -> Result<Option<Vault>, StoreError> {
    Ok(by_name(app, name)?.filter(|v| {
        v.deleted.is_some()
            && v.subscription_id.eq_ignore_ascii_case(subscription)
            && v.location.eq_ignore_ascii_case(location)
    }))
}

/// `Vaults_ListDeleted`: the subscription's soft-deleted vaults, in name order. Read through [`PURGE_DUE`], which
/// names every soft-deleted vault, rather than every vault: a recovery lists them before it recovers, and with a
/// fleet of 100,000 live vaults reading all of them cost seconds per list (`busy-sweep`, docs/BENCHMARKS.md §4).
pub fn list_deleted(ctx: &ArmCtx<'_>, subscription: &str) -> Result<Resp, ArmError> {
    expire(ctx.app, ctx.now)?;
    let mut deleted = Vec::new();
    for name in ctx.app.store.list::<String>(PURGE_DUE, "")? {
        if let Some(vault) = ctx.app.store.get::<Vault>(VAULT, &key(&name))?
            && vault.deleted.is_some()
            && vault.subscription_id.eq_ignore_ascii_case(subscription)
        {
            deleted.push(vault);
        }
    }
    deleted.sort_by_key(|v| key(&v.name));
    let items = deleted.iter().map(Vault::to_deleted_json).collect();
    Ok(Resp::json(StatusCode::OK, &ctx.page(items)))
}

pub fn get_deleted(ctx: &ArmCtx<'_>, subscription: &str, location: &str, name: &str) -> Result<Resp, ArmError> {
    expire(ctx.app, ctx.now)?;
    let vault = find_deleted(ctx.app, subscription, location, name)?.ok_or_else(|| deleted_not_found(name))?;
    Ok(Resp::json(StatusCode::OK, &vault.to_deleted_json()))
}

#[derive(Debug, Serialize, Deserialize)]
struct PurgeOperation {
    id: String,
    subscription_id: String,
    location: String,
    vault: String,
    status: String,
}

/// `POST …/deletedVaults/{name}/purge`: refused under purge protection before the scheduled
/// purge date; otherwise purges and answers `202` with a `Location` that then reports `200`.
pub fn purge(ctx: &ArmCtx<'_>, subscription: &str, location: &str, name: &str) -> Result<Resp, ArmError> {
    expire(ctx.app, ctx.now)?;
    let op_id = uuid::Uuid::new_v4().to_string();
    ctx.app.store.write(|tx| -> Result<(), ArmError> {
        let vault = tx
            .get::<Vault>(VAULT, &key(name))?
            .filter(|v| {
                v.deleted.is_some()
                    && v.subscription_id.eq_ignore_ascii_case(subscription)
                    && v.location.eq_ignore_ascii_case(location)
            })
            .ok_or_else(|| deleted_not_found(name))?;
        if vault.purge_protection() {
            return Err(ArmError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "Operation 'DeletedVaultPurge' is not allowed.",
            ));
        }
        purge_now(tx, &vault.name)?;
        tx.put(
            OPERATION,
            &op_id,
            &PurgeOperation {
                id: op_id.clone(),
                subscription_id: subscription.to_string(),
                location: location.to_string(),
                vault: vault.name.clone(),
                status: "Succeeded".into(),
            },
        )?;
        ctx.record(tx, &vault.deleted_id(), StatusCode::ACCEPTED)?;
        Ok(())
    })?;
    let api = ctx.req.query("api-version").unwrap_or_default();
    let location_url = format!(
        "https://management.azure.com/subscriptions/{subscription}/providers/Microsoft.KeyVault/locations/{location}/operationResults/{op_id}?api-version={api}"
    );
    Ok(super::accepted(location_url))
}

pub fn operation_result(ctx: &ArmCtx<'_>, id: &str) -> Result<Resp, ArmError> {
    let op: PurgeOperation = super::operation_record(ctx, OPERATION, id)?;
    tracing::debug!(operation = %op.id, vault = %op.vault, status = %op.status, "operation polled");
    Ok(Resp::empty(StatusCode::OK))
}

/// `PUT …/vaults/{name}/accessPolicies/{add|replace|remove}`.
pub fn update_access_policies(ctx: &ArmCtx<'_>, id: &ResourceId, kind: &str) -> Result<Resp, ArmError> {
    let kind = kind.to_ascii_lowercase();
    if !matches!(kind.as_str(), "add" | "replace" | "remove") {
        return Err(ArmError::bad_request(
            "InvalidOperationKind",
            format!("The operation kind '{kind}' is not valid; use add, replace or remove."),
        ));
    }
    let body: Value = ctx.body()?;
    let requested =
        body.pointer("/properties/accessPolicies").and_then(Value::as_array).cloned().ok_or_else(|| {
            ArmError::bad_request("BadRequest", "The property 'properties.accessPolicies' is required.")
        })?;
    for p in &requested {
        if p.get("objectId").and_then(Value::as_str).is_none() || p.get("tenantId").and_then(Value::as_str).is_none() {
            return Err(ArmError::bad_request(
                "BadRequest",
                "Each access policy needs 'tenantId', 'objectId' and 'permissions'.",
            ));
        }
    }
    let vault = ctx.app.store.write(|tx| -> Result<Vault, ArmError> {
        let mut vault: Vault = tx
            .get::<Vault>(VAULT, &key(id.name()))?
            .filter(|v| v.deleted.is_none() && v.id().key() == id.key())
            .ok_or_else(|| not_found(id))?;
        locks::check(tx, id, false)?;
        let mut policies = vault.access_policies();
        for req in &requested {
            apply_policy(&mut policies, req, &kind);
        }
        vault.properties.insert("accessPolicies".into(), json!(policies));
        save(tx, &vault)?;
        ctx.record(tx, &vault.id().to_string(), StatusCode::OK)?;
        Ok(vault)
    })?;
    Ok(Resp::json(
        StatusCode::OK,
        &json!({
            "id": format!("{}/accessPolicies/", vault.id()),
            "type": "Microsoft.KeyVault/vaults/accessPolicies",
            "properties": { "accessPolicies": requested },
        }),
    ))
}

fn same_principal(a: &Value, b: &Value) -> bool {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
    s(a, "objectId") == s(b, "objectId")
        && s(a, "tenantId") == s(b, "tenantId")
        && s(a, "applicationId") == s(b, "applicationId")
}

const PERMISSION_KINDS: &[&str] = &["keys", "secrets", "certificates", "storage"];

fn perms(v: &Value, kind: &str) -> Vec<String> {
    v.pointer(&format!("/permissions/{kind}"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

fn apply_policy(policies: &mut Vec<Value>, req: &Value, kind: &str) {
    let pos = policies.iter().position(|p| same_principal(p, req));
    match (kind, pos) {
        ("add", Some(i)) => {
            for k in PERMISSION_KINDS {
                let mut merged = perms(&policies[i], k);
                for p in perms(req, k) {
                    if !merged.iter().any(|m| m.eq_ignore_ascii_case(&p)) {
                        merged.push(p);
                    }
                }
                if !merged.is_empty() {
                    policies[i]["permissions"][*k] = json!(merged);
                }
            }
        }
        ("add" | "replace", None) => policies.push(req.clone()),
        ("replace", Some(i)) => policies[i] = req.clone(),
        ("remove", Some(i)) => {
            let mut empty = true;
            for k in PERMISSION_KINDS {
                let removing = perms(req, k);
                let kept: Vec<String> = perms(&policies[i], k)
                    .into_iter()
                    .filter(|p| !removing.iter().any(|r| r.eq_ignore_ascii_case(p)))
                    .collect();
                empty &= kept.is_empty();
                if policies[i].pointer(&format!("/permissions/{k}")).is_some() {
                    policies[i]["permissions"][*k] = json!(kept);
                }
            }
            if empty {
                policies.remove(i);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_names() {
        for ok in ["abc", "a-b-c", "Vault1", "a23456789012345678901234"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "1abc", "abc-", "a--b", "a_b", "a234567890123456789012345", "ab.c"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn access_policy_kinds() {
        let p = |secrets: &[&str]| json!({ "tenantId": "t", "objectId": "o", "permissions": { "secrets": secrets } });
        let mut policies = vec![];
        apply_policy(&mut policies, &p(&["get"]), "add");
        apply_policy(&mut policies, &p(&["list", "GET"]), "add");
        assert_eq!(perms(&policies[0], "secrets"), ["get", "list"]);
        apply_policy(&mut policies, &p(&["set"]), "replace");
        assert_eq!(perms(&policies[0], "secrets"), ["set"]);
        apply_policy(&mut policies, &p(&["set"]), "remove");
        assert!(policies.is_empty());
    }
}
