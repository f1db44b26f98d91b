//! `Microsoft.Storage/storageAccounts`: the control plane only (no blobs), which is what an audit destination needs —
//! create as a long-running PUT, get, delete (under the locks), lists by subscription and resource group, and
//! `checkNameAvailability` with the naming rules and global uniqueness.
//!
//! Source: Azure/azure-rest-api-specs, `specification/storage/resource-manager/Microsoft.Storage/stable/2023-05-01/
//! storage.json`: `StorageAccounts_Create` (`x-ms-long-running-operation`, `200` and `202`; the `202` carries a
//! `Location` the client polls until it answers `200` with the account, as recorded in Azure/oav's
//! `test/swaggers/arm-storage/2016-01-01/wire-format/storageAccountCreate.md`), `StorageAccounts_GetProperties`,
//! `StorageAccounts_Delete` (`200`, `204`), `StorageAccounts_List` / `_ListByResourceGroup` (`nextLink`),
//! `StorageAccounts_CheckNameAvailability` (`nameAvailable`, `reason` `AccountNameInvalid` | `AlreadyExists`,
//! `message`). The name is the `accountName` parameter's pattern `^[a-z0-9]+$`, 3–24 long, and unique in all of
//! Azure (the DNS name `{name}.blob.core.windows.net`); `Sku.name` is the spec's `SkuName` enum (`Standard_ZRS` is
//! zone-redundant).
//!
//! An update (a PUT on an existing account) answers `200` at once; a create answers `202` and the account exists from
//! then on (provisioning is instant here), the operation answering `200` with the account on its first poll.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ArmCtx, ArmError, ResourceId, locks};
use crate::App;
use crate::http::Resp;
use crate::store::{StoreError, Tx};

/// Storage accounts by their global name (lower case) → [`Account`].
pub const ACCOUNT: &str = "storage-account";
const OPERATION: &str = "storage-operation";
pub const TYPE: &str = "Microsoft.Storage/storageAccounts";

/// The spec's `SkuName` enum.
const SKUS: &[&str] = &[
    "Standard_LRS",
    "Standard_GRS",
    "Standard_RAGRS",
    "Standard_ZRS",
    "Premium_LRS",
    "Premium_ZRS",
    "Standard_GZRS",
    "Standard_RAGZRS",
];
/// The spec's `Kind` enum.
const KINDS: &[&str] = &["Storage", "StorageV2", "BlobStorage", "FileStorage", "BlockBlobStorage"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub name: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub location: String,
    pub sku: String,
    pub kind: String,
    #[serde(default)]
    pub tags: Map<String, Value>,
    pub properties: Map<String, Value>,
    pub system_data: Value,
}

impl Account {
    pub fn id(&self) -> ResourceId {
        ResourceId::resource(
            &self.subscription_id,
            &self.resource_group,
            "Microsoft.Storage",
            "storageAccounts",
            &self.name,
        )
    }

    pub fn to_json(&self) -> Value {
        let tier = if self.sku.starts_with("Premium") { "Premium" } else { "Standard" };
        json!({
            "id": self.id().to_string(),
            "name": self.name,
            "type": TYPE,
            "location": self.location,
            "tags": self.tags,
            "sku": { "name": self.sku, "tier": tier },
            "kind": self.kind,
            "systemData": self.system_data,
            "properties": self.properties,
        })
    }
}

/// Why a storage account name is unusable, in the words Azure uses.
pub fn validate_name(name: &str) -> Result<(), String> {
    if (3..=24).contains(&name.len()) && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!(
            "{name} is not a valid storage account name. Storage account name must be between 3 and 24 characters in length and use numbers and lower-case letters only."
        ))
    }
}

fn taken(name: &str) -> String {
    format!("The storage account named {name} is already taken.")
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// The live account at `id` (same name, subscription and group).
pub fn find(app: &App, id: &ResourceId) -> Result<Option<Account>, StoreError> {
    let a: Option<Account> = app.store.get(ACCOUNT, &key(id.name()))?;
    Ok(a.filter(|a| a.id().key() == id.key()))
}

/// [`find`] in a transaction.
pub(crate) fn find_in(tx: &Tx<'_>, id: &ResourceId) -> Result<Option<Account>, StoreError> {
    let a: Option<Account> = tx.get(ACCOUNT, &key(id.name()))?;
    Ok(a.filter(|a| a.id().key() == id.key()))
}

fn not_found(id: &ResourceId) -> ArmError {
    ArmError::resource_not_found(TYPE, id.name(), id.resource_group.as_deref().unwrap_or_default())
}

pub fn get(ctx: &ArmCtx<'_>, id: &ResourceId) -> Result<Resp, ArmError> {
    let account = find(ctx.app, id)?.ok_or_else(|| not_found(id))?;
    Ok(Resp::json(StatusCode::OK, &account.to_json()))
}

/// `StorageAccounts_List` / `_ListByResourceGroup`.
pub fn list(ctx: &ArmCtx<'_>, subscription: &str, group: Option<&str>) -> Result<Resp, ArmError> {
    ctx.subscription(subscription)?;
    if let Some(g) = group {
        ctx.resource_group(subscription, g)?;
    }
    let all: Vec<Account> = ctx.app.store.list(ACCOUNT, "")?;
    let items = all
        .iter()
        .filter(|a| a.subscription_id.eq_ignore_ascii_case(subscription))
        .filter(|a| group.is_none_or(|g| a.resource_group.eq_ignore_ascii_case(g)))
        .map(Account::to_json)
        .collect();
    Ok(Resp::json(StatusCode::OK, &ctx.page(items)))
}

/// Every live account in the subscription or group (for `Resources_List`).
pub fn all_in(app: &App, scope: &ResourceId) -> Result<Vec<Account>, StoreError> {
    let all: Vec<Account> = app.store.list(ACCOUNT, "")?;
    Ok(all.into_iter().filter(|a| super::authz::scope_covers(&scope.to_string(), &a.id().to_string())).collect())
}

pub fn check_name(ctx: &ArmCtx<'_>) -> Result<Resp, ArmError> {
    #[derive(Deserialize)]
    struct Body {
        name: String,
        #[serde(rename = "type")]
        kind: String,
    }
    let body: Body = ctx.body()?;
    if !body.kind.eq_ignore_ascii_case(TYPE) {
        return Err(ArmError::bad_request(
            "InvalidResourceType",
            format!("The resource type '{}' is not supported; use '{TYPE}'.", body.kind),
        ));
    }
    let answer = if let Err(message) = validate_name(&body.name) {
        json!({ "nameAvailable": false, "reason": "AccountNameInvalid", "message": message })
    } else if ctx.app.store.get::<Account>(ACCOUNT, &key(&body.name))?.is_some() {
        json!({ "nameAvailable": false, "reason": "AlreadyExists", "message": taken(&body.name) })
    } else {
        json!({ "nameAvailable": true })
    };
    Ok(Resp::json(StatusCode::OK, &answer))
}

#[derive(Debug, Deserialize)]
struct PutBody {
    sku: Option<SkuBody>,
    kind: Option<String>,
    location: Option<String>,
    #[serde(default)]
    tags: Map<String, Value>,
    #[serde(default)]
    properties: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct SkuBody {
    name: String,
}

/// One of `allowed`, in its canonical case, or a `400` naming the property and the allowed values.
fn one_of(value: Option<&str>, allowed: &[&str], property: &str) -> Result<String, ArmError> {
    let Some(v) = value else {
        return Err(ArmError::bad_request(
            "MissingRequiredProperty",
            format!("The property '{property}' is required: one of {}.", allowed.join(", ")),
        ));
    };
    allowed.iter().find(|a| a.eq_ignore_ascii_case(v)).map(|a| a.to_string()).ok_or_else(|| {
        ArmError::bad_request(
            "InvalidValuesForRequestParameters",
            format!(
                "Values for request parameters are invalid: {property}. '{v}' is not one of {}.",
                allowed.join(", ")
            ),
        )
    })
}

/// Properties an account always reports, filled in where the request left them out.
fn complete_properties(props: &mut Map<String, Value>, name: &str, location: &str, created: Option<&Value>, now: &str) {
    let defaults = json!({
        "supportsHttpsTrafficOnly": true,
        "minimumTlsVersion": "TLS1_2",
        "allowBlobPublicAccess": false,
        "accessTier": "Hot",
        "encryption": { "keySource": "Microsoft.Storage", "services": { "blob": { "enabled": true }, "file": { "enabled": true } } },
        "networkAcls": { "bypass": "AzureServices", "defaultAction": "Allow", "ipRules": [], "virtualNetworkRules": [] },
    });
    if let Some(d) = defaults.as_object() {
        for (k, v) in d {
            props.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let endpoint = |service: &str| format!("https://{name}.{service}.core.windows.net/");
    props.insert(
        "primaryEndpoints".into(),
        json!({ "blob": endpoint("blob"), "queue": endpoint("queue"), "table": endpoint("table"), "file": endpoint("file"), "dfs": endpoint("dfs"), "web": format!("https://{name}.z1.web.core.windows.net/") }),
    );
    props.insert("primaryLocation".into(), json!(location));
    props.insert("statusOfPrimary".into(), json!("available"));
    props.insert("creationTime".into(), created.cloned().unwrap_or_else(|| json!(now)));
    props.insert("provisioningState".into(), json!("Succeeded"));
}

#[derive(Debug, Serialize, Deserialize)]
struct Operation {
    account: String,
}

/// What a create or update asks for, checked against the spec's enums.
pub(crate) struct Requested {
    pub sku: String,
    pub kind: String,
    pub location: String,
    pub tags: Map<String, Value>,
    pub properties: Map<String, Value>,
}

impl Requested {
    pub(crate) fn new(
        sku: Option<&str>,
        kind: Option<&str>,
        location: String,
        tags: Map<String, Value>,
        properties: Map<String, Value>,
    ) -> Result<Self, ArmError> {
        Ok(Requested {
            sku: one_of(sku, SKUS, "sku.name")?,
            kind: one_of(kind, KINDS, "kind")?,
            location,
            tags,
            properties,
        })
    }
}

/// Writes account `id` as `requested` in `tx` — the create and the bulk seed (`crate::seed`) write the same
/// document after the same checks: a bad name (`400 AccountNameInvalid`), a name taken anywhere else
/// (`409 StorageAccountAlreadyTaken`), an update under a `ReadOnly` lock. Answers the account and whether it is new.
pub(crate) fn write(
    tx: &mut Tx<'_>,
    id: &ResourceId,
    requested: &Requested,
    system_data: impl FnOnce(Option<&Value>) -> Value,
    now: &str,
) -> Result<(Account, bool), ArmError> {
    let name = id.name().to_string();
    validate_name(&name).map_err(|m| ArmError::bad_request("AccountNameInvalid", m))?;
    let existing: Option<Account> = tx.get(ACCOUNT, &key(&name))?;
    if let Some(e) = &existing {
        if e.id().key() != id.key() {
            return Err(ArmError::conflict("StorageAccountAlreadyTaken", taken(&name)));
        }
        locks::check(tx, id, false)?;
    }
    let mut props = requested.properties.clone();
    let created_at = existing.as_ref().and_then(|e| e.properties.get("creationTime"));
    complete_properties(&mut props, &key(&name), &requested.location, created_at, now);
    let account = Account {
        name: existing.as_ref().map(|e| e.name.clone()).unwrap_or_else(|| name.clone()),
        subscription_id: id.subscription.clone(),
        resource_group: id.resource_group.clone().unwrap_or_default(),
        location: requested.location.clone(),
        sku: requested.sku.clone(),
        kind: requested.kind.clone(),
        tags: requested.tags.clone(),
        properties: props,
        system_data: system_data(existing.as_ref().map(|e| &e.system_data)),
    };
    tx.put(ACCOUNT, &key(&name), &account)?;
    Ok((account, existing.is_none()))
}

/// `StorageAccounts_Create`: `202` and a `Location` to poll for a new account, `200` with the account for an
/// update. Refused: what [`write`] refuses, a missing or unknown `sku` / `kind` / `location`.
pub fn put(ctx: &ArmCtx<'_>, id: &ResourceId) -> Result<Resp, ArmError> {
    validate_name(id.name()).map_err(|m| ArmError::bad_request("AccountNameInvalid", m))?;
    let rg_name = id.resource_group.clone().unwrap_or_default();
    let rg = ctx.resource_group(&id.subscription, &rg_name)?;
    let body: PutBody = ctx.body()?;
    let location = body.location.clone().unwrap_or_else(|| rg.location.clone());
    let requested = Requested::new(
        body.sku.as_ref().map(|s| s.name.as_str()),
        body.kind.as_deref(),
        location,
        body.tags,
        body.properties,
    )?;
    let now = crate::clock::arm_time(ctx.now);
    let op_id = uuid::Uuid::new_v4().to_string();
    let (account, created) = ctx.app.store.write(|tx| -> Result<(Account, bool), ArmError> {
        let (account, created) = write(tx, id, &requested, |previous| ctx.system_data(previous), &now)?;
        if created {
            tx.put(OPERATION, &op_id, &Operation { account: key(&account.name) })?;
        }
        let status = if created { StatusCode::ACCEPTED } else { StatusCode::OK };
        ctx.record(tx, &account.id().to_string(), status)?;
        Ok((account, created))
    })?;
    if !created {
        return Ok(Resp::json(StatusCode::OK, &account.to_json()));
    }
    let api = ctx.req.query("api-version").unwrap_or_default();
    let location_url = format!(
        "https://management.azure.com/subscriptions/{}/providers/Microsoft.Storage/locations/{}/asyncoperations/{op_id}?monitor=true&api-version={api}",
        id.subscription, account.location
    );
    Ok(super::accepted(location_url))
}

/// The create's `Location`: `200` with the account once it is provisioned (at once here); an account deleted
/// meanwhile is the operation's failure.
pub fn operation(ctx: &ArmCtx<'_>, id: &str) -> Result<Resp, ArmError> {
    let op: Operation = super::operation_record(ctx, OPERATION, id)?;
    let account: Account = ctx.app.store.get(ACCOUNT, &op.account)?.ok_or_else(|| {
        ArmError::not_found("StorageAccountNotFound", format!("The storage account {} was not found.", op.account))
    })?;
    Ok(Resp::json(StatusCode::OK, &account.to_json()))
}

/// `StorageAccounts_Delete`: `200`, or `204` when there was none; refused under a `CanNotDelete` or `ReadOnly` lock
/// at or above the account (`409 ScopeLocked`). Its locks go with it.
pub fn delete(ctx: &ArmCtx<'_>, id: &ResourceId) -> Result<Resp, ArmError> {
    let existed = ctx.app.store.write(|tx| -> Result<bool, ArmError> {
        let Some(account) = tx.get::<Account>(ACCOUNT, &key(id.name()))?.filter(|a| a.id().key() == id.key()) else {
            return Ok(false);
        };
        locks::check(tx, id, true)?;
        tx.delete(ACCOUNT, &key(&account.name))?;
        locks::remove_under(tx, id)?;
        ctx.record(tx, &account.id().to_string(), StatusCode::OK)?;
        Ok(true)
    })?;
    Ok(Resp::empty(if existed { StatusCode::OK } else { StatusCode::NO_CONTENT }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        for ok in ["abc", "audit0123", "a23456789012345678901234"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "Abc", "a-bc", "a_bc", "a234567890123456789012345", ""] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sku_and_kind_are_the_specs_enums() {
        assert_eq!(one_of(Some("standard_zrs"), SKUS, "sku.name").unwrap(), "Standard_ZRS");
        assert!(one_of(Some("Standard_XYZ"), SKUS, "sku.name").is_err());
        assert!(one_of(None, KINDS, "kind").is_err());
    }
}
