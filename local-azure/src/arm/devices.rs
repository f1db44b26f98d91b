//! `Microsoft.DataBoxEdge/dataBoxEdgeDevices`: PUT/PATCH/GET/DELETE/list, the system-assigned
//! identity, and the extended information edgevault links its vault through.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ArmCtx, ArmError, ResourceId, locks};
use crate::App;
use crate::http::Resp;
use crate::identity::{Principal, delete_principal, put_principal};
use crate::store::{StoreError, Tx};

pub const DEVICE: &str = "device";
pub const TYPE: &str = "Microsoft.DataBoxEdge/dataBoxEdgeDevices";

pub const SYNC_STATUSES: &[&str] = &[
    "KeyVaultSynced",
    "KeyVaultSyncFailed",
    "KeyVaultNotConfigured",
    "KeyVaultSyncPending",
    "KeyVaultSyncing",
    "KeyVaultNotSynced",
];

const DEVICE_SECRET_NAMES: &[&str] = &[
    "HcsDataVolumeBitLockerExternalKey",
    "HcsInternalVolumeBitLockerExternalKey",
    "SystemVolumeBitLockerRecoveryKey",
    "SEDEncryptionExternalKeyId",
    "SEDEncryptionExternalKey",
    "BMCDefaultUserPassword",
    "RotateKeyForDataVolumeBitlocker",
    "RotateKeysForSedDrivesSerialized",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub id: String,
    pub name: String,
    pub location: String,
    #[serde(default)]
    pub tags: Map<String, Value>,
    #[serde(default)]
    pub sku: Option<Value>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub identity: Option<Value>,
    pub properties: Map<String, Value>,
    pub extended: Map<String, Value>,
    pub system_data: Value,
    pub etag: String,
}

impl Device {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "location": self.location,
            "tags": self.tags,
            "etag": self.etag,
            "kind": self.kind.clone().unwrap_or_else(|| "AzureStackEdge".into()),
            "properties": self.properties,
            "systemData": self.system_data,
            "id": self.id,
            "name": self.name,
            "type": TYPE,
        });
        if let Some(sku) = &self.sku {
            v["sku"] = sku.clone();
        }
        v["identity"] = self.identity.clone().unwrap_or_else(|| json!({ "type": "None" }));
        v
    }

    fn extended_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "type": TYPE,
            "properties": self.extended,
        })
    }
}

pub fn find(app: &App, id: &ResourceId) -> Result<Option<Device>, StoreError> {
    app.store.get(DEVICE, &id.key())
}

fn etag(ctx: &ArmCtx<'_>) -> String {
    etag_at(ctx.now)
}

pub(crate) fn etag_at(now: time::OffsetDateTime) -> String {
    let t = crate::clock::arm_time(now).replace(':', "%3A");
    format!("W/\"datetime'{t}'\"")
}

fn not_found(id: &ResourceId) -> ArmError {
    ArmError::resource_not_found(TYPE, id.name(), id.resource_group.as_deref().unwrap_or_default())
}

fn random_digits(n: usize) -> String {
    uuid::Uuid::new_v4().as_u128().to_string().chars().take(n).collect()
}

pub(crate) fn default_extended() -> Map<String, Value> {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes());
    let secrets: Map<String, Value> =
        DEVICE_SECRET_NAMES.iter().map(|n| (n.to_string(), json!({ "keyVaultId": "" }))).collect();
    json!({
        "encryptionKey": key,
        "encryptionKeyThumbprint": uuid::Uuid::new_v4().simple().to_string().to_uppercase(),
        "resourceKey": random_digits(19),
        "keyVaultSyncStatus": "KeyVaultNotConfigured",
        "clusterWitnessType": "None",
        "deviceSecrets": secrets,
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

pub(crate) fn default_properties(name: &str) -> Map<String, Value> {
    json!({
        "dataBoxEdgeDeviceStatus": "ReadyToSetup",
        "serialNumber": format!("LA{}", random_digits(6)),
        "deviceType": "DataBoxEdgeDevice",
        "friendlyName": name,
        "deviceModel": "Physical",
        "deviceSoftwareVersion": "Azure Stack Edge 2403",
        "deviceHcsVersion": "3.2.2642.2453",
        "deviceLocalCapacity": 0,
        "timeZone": "Pacific Standard Time",
        "nodeCount": 0,
        "configuredRoleTypes": [],
        "resourceMoveDetails": { "operationInProgress": "None" },
        "kubernetesWorkloadProfile": "",
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// Applies an `identity` body: `SystemAssigned` creates the principal once (it lives as long
/// as the resource); `None` removes it.
fn apply_identity(ctx: &ArmCtx<'_>, tx: &mut Tx<'_>, device: &mut Device, requested: &Value) -> Result<(), ArmError> {
    let ty = requested.get("type").and_then(Value::as_str).unwrap_or("None");
    let current =
        device.identity.as_ref().and_then(|i| i.get("principalId")).and_then(Value::as_str).map(str::to_string);
    match ty.to_ascii_lowercase().as_str() {
        "systemassigned" => {
            if current.is_none() {
                let subscription = device.id.parse::<ResourceId>().map(|id| id.subscription).unwrap_or_default();
                // The identity lives in the tenant of the resource's subscription.
                let tenant = ctx.subscription(&subscription)?.tenant_id;
                let principal = Principal {
                    object_id: uuid::Uuid::new_v4().to_string(),
                    client_id: uuid::Uuid::new_v4().to_string(),
                    tenant_id: tenant.clone(),
                    display_name: device.name.clone(),
                    resource_id: Some(device.id.clone()),
                    user_principal_name: None,
                };
                put_principal(tx, &principal)?;
                device.identity = Some(json!({
                    "type": "SystemAssigned",
                    "principalId": principal.object_id,
                    "tenantId": tenant,
                }));
            }
            Ok(())
        }
        "none" => {
            if let Some(oid) = current {
                delete_principal(tx, &oid)?;
            }
            device.identity = None;
            Ok(())
        }
        other => Err(ArmError::bad_request(
            "InvalidIdentityType",
            format!("The identity type '{other}' is not supported. Supported types: 'SystemAssigned', 'None'."),
        )),
    }
}

pub fn get(ctx: &ArmCtx<'_>, id: &ResourceId) -> Result<Resp, ArmError> {
    let device = find(ctx.app, id)?.ok_or_else(|| not_found(id))?;
    Ok(Resp::json(StatusCode::OK, &device.to_json()))
}

#[derive(Debug, Deserialize)]
struct PutBody {
    location: Option<String>,
    #[serde(default)]
    tags: Map<String, Value>,
    sku: Option<Value>,
    kind: Option<String>,
    identity: Option<Value>,
    #[serde(default)]
    properties: Map<String, Value>,
}

pub fn put(ctx: &ArmCtx<'_>, id: &ResourceId) -> Result<Resp, ArmError> {
    let mut body: PutBody = ctx.body()?;
    // ARM fills in the SKU tier when only the name is given.
    if let Some(sku) = body.sku.as_mut().and_then(Value::as_object_mut) {
        sku.entry("tier").or_insert_with(|| json!("Standard"));
    }
    let rg = id.resource_group.as_deref().unwrap_or_default();
    ctx.resource_group(&id.subscription, rg)?;
    let Some(location) = body.location.filter(|l| !l.is_empty()) else {
        return Err(ArmError::bad_request(
            "LocationRequired",
            "The location property is required for this definition.",
        ));
    };
    let device = ctx.app.store.write(|tx| -> Result<Device, ArmError> {
        locks::check(tx, id, false)?;
        let existing: Option<Device> = tx.get(DEVICE, &id.key())?;
        let mut device = match existing {
            Some(mut d) => {
                d.location = location.clone();
                d.tags = body.tags.clone();
                if body.sku.is_some() {
                    d.sku = body.sku.clone();
                }
                if body.kind.is_some() {
                    d.kind = body.kind.clone();
                }
                if let Some(profile) = body.properties.get("edgeProfile") {
                    d.properties.insert("edgeProfile".into(), profile.clone());
                }
                d.system_data = ctx.system_data(Some(&d.system_data));
                d
            }
            None => {
                let mut properties = default_properties(id.name());
                for (k, v) in &body.properties {
                    if k == "edgeProfile" || k == "dataResidency" || k == "description" {
                        properties.insert(k.clone(), v.clone());
                    }
                }
                Device {
                    id: id.to_string(),
                    name: id.name().to_string(),
                    location: location.clone(),
                    tags: body.tags.clone(),
                    sku: body.sku.clone(),
                    kind: body.kind.clone(),
                    identity: None,
                    properties,
                    extended: default_extended(),
                    system_data: ctx.system_data(None),
                    etag: String::new(),
                }
            }
        };
        if let Some(identity) = &body.identity {
            apply_identity(ctx, tx, &mut device, identity)?;
        }
        device.etag = etag(ctx);
        tx.put(DEVICE, &id.key(), &device)?;
        ctx.record(tx, &device.id, StatusCode::OK)?;
        Ok(device)
    })?;
    Ok(Resp::json(StatusCode::OK, &device.to_json()))
}

pub fn patch(ctx: &ArmCtx<'_>, id: &ResourceId) -> Result<Resp, ArmError> {
    let body: Value = ctx.body()?;
    let device = ctx.app.store.write(|tx| -> Result<Device, ArmError> {
        let mut device: Device = tx.get(DEVICE, &id.key())?.ok_or_else(|| not_found(id))?;
        locks::check(tx, id, false)?;
        if let Some(tags) = body.get("tags").and_then(Value::as_object) {
            device.tags = tags.clone();
        }
        if let Some(identity) = body.get("identity").filter(|v| !v.is_null()) {
            apply_identity(ctx, tx, &mut device, identity)?;
        }
        if let Some(sub_id) = body.pointer("/properties/edgeProfile/subscription/id") {
            let profile = device.properties.entry("edgeProfile").or_insert_with(|| json!({ "subscription": {} }));
            if !profile.get("subscription").is_some_and(Value::is_object) {
                profile["subscription"] = json!({});
            }
            profile["subscription"]["id"] = sub_id.clone();
            profile["subscription"]
                .as_object_mut()
                .map(|s| s.entry("registrationId").or_insert(json!(uuid::Uuid::new_v4().to_string())));
            profile["subscription"].as_object_mut().map(|s| s.entry("state").or_insert(json!("Registered")));
        }
        device.system_data = ctx.system_data(Some(&device.system_data));
        device.etag = etag(ctx);
        tx.put(DEVICE, &id.key(), &device)?;
        ctx.record(tx, &device.id, StatusCode::OK)?;
        Ok(device)
    })?;
    Ok(Resp::json(StatusCode::OK, &device.to_json()))
}

pub fn delete(ctx: &ArmCtx<'_>, id: &ResourceId) -> Result<Resp, ArmError> {
    let existed = ctx.app.store.write(|tx| -> Result<bool, ArmError> {
        let Some(device) = tx.get::<Device>(DEVICE, &id.key())? else {
            return Ok(false);
        };
        locks::check(tx, id, true)?;
        if let Some(oid) = device.identity.as_ref().and_then(|i| i.get("principalId")).and_then(Value::as_str) {
            delete_principal(tx, oid)?;
        }
        locks::remove_under(tx, id)?;
        tx.delete(DEVICE, &id.key())?;
        ctx.record(tx, &device.id, StatusCode::OK)?;
        Ok(true)
    })?;
    Ok(Resp::empty(if existed { StatusCode::OK } else { StatusCode::NO_CONTENT }))
}

pub fn list(ctx: &ArmCtx<'_>, subscription: &str, group: Option<&str>) -> Result<Resp, ArmError> {
    let prefix = match group {
        Some(g) => ResourceId::resource_group(subscription, g).key() + "/",
        None => ResourceId::subscription(subscription).key() + "/",
    };
    // A keyset page: the token is the last key served, so listing a large fleet reads each device once in all.
    let after = ctx.req.query("$skiptoken").filter(|t| !t.is_empty());
    let (devices, more) = ctx.app.store.page::<Device>(DEVICE, &prefix, after, ctx.page_size())?;
    let next = if more { devices.last().map(|(k, _)| k.clone()) } else { None };
    let items = devices.iter().map(|(_, d)| d.to_json()).collect();
    Ok(Resp::json(StatusCode::OK, &ctx.page_after(items, next.as_deref())))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtendedPatch {
    client_secret_store_id: Option<String>,
    client_secret_store_url: Option<String>,
    channel_integrity_key_name: Option<String>,
    channel_integrity_key_version: Option<String>,
    sync_status: Option<String>,
}

impl ExtendedPatch {
    /// Refuses a sync status the service does not know.
    pub(crate) fn validate(&self) -> Result<(), ArmError> {
        match &self.sync_status {
            Some(status) if !SYNC_STATUSES.contains(&status.as_str()) => Err(ArmError::bad_request(
                "InvalidSyncStatus",
                format!(
                    "The value '{status}' is not valid for syncStatus. Allowed values: {}.",
                    SYNC_STATUSES.join(", ")
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Applies the patch to a device's extended information; a secret store also points every device secret at it.
    pub(crate) fn apply(&self, ext: &mut Map<String, Value>) {
        let mut set = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                ext.insert(k.to_string(), json!(v));
            }
        };
        set("clientSecretStoreId", &self.client_secret_store_id);
        set("clientSecretStoreUrl", &self.client_secret_store_url);
        set("channelIntegrityKeyName", &self.channel_integrity_key_name);
        set("channelIntegrityKeyVersion", &self.channel_integrity_key_version);
        set("keyVaultSyncStatus", &self.sync_status);
        if let Some(store_id) = &self.client_secret_store_id
            && let Some(secrets) = ext.get_mut("deviceSecrets").and_then(Value::as_object_mut)
        {
            for (name, secret) in secrets.iter_mut() {
                secret["keyVaultId"] = json!(format!("{store_id}/secrets/{name}"));
            }
        }
    }
}

pub fn action(ctx: &ArmCtx<'_>, id: &ResourceId, action: &str) -> Result<Resp, ArmError> {
    if action == "getExtendedInformation" {
        let device = find(ctx.app, id)?.ok_or_else(|| not_found(id))?;
        return Ok(Resp::json(StatusCode::OK, &device.extended_json()));
    }
    let body: ExtendedPatch = ctx.body()?;
    body.validate()?;
    let device = ctx.app.store.write(|tx| -> Result<Device, ArmError> {
        let mut device: Device = tx.get(DEVICE, &id.key())?.ok_or_else(|| not_found(id))?;
        locks::check(tx, id, false)?;
        body.apply(&mut device.extended);
        tx.put(DEVICE, &id.key(), &device)?;
        ctx.record(tx, &device.id, StatusCode::OK)?;
        Ok(device)
    })?;
    Ok(Resp::json(StatusCode::OK, &device.extended_json()))
}
