//! `Microsoft.Insights/diagnosticSettings` on a resource: where its resource logs go. local-azure records the
//! setting (nothing is shipped) on Key Vault vaults, Stack Edge devices and storage accounts, and checks what Azure
//! Monitor checks when one is written.
//!
//! Source: Azure/azure-rest-api-specs, `specification/monitor/resource-manager/Microsoft.Insights/preview/
//! 2021-05-01-preview/diagnosticsSettings_API.json`: `DiagnosticSettings_Get` / `_CreateOrUpdate` (`200`) /
//! `_Delete` (`200`, `204`) at `{resourceUri}/providers/Microsoft.Insights/diagnosticSettings/{name}` and
//! `DiagnosticSettings_List` (`{"value": [...]}`, no `nextLink`); `DiagnosticSettings` has `storageAccountId`,
//! `eventHubAuthorizationRuleId`, `eventHubName`, `workspaceId`, `marketplacePartnerId`, `logs[]` (`category` or
//! `categoryGroup`, `enabled`, `retentionPolicy`), `metrics[]`, `logAnalyticsDestinationType`. Key Vault's log
//! categories (`AuditEvent`, `AzurePolicyEvaluationDetails`) and category groups (`audit`, `allLogs`) are those Azure
//! Monitor lists for `Microsoft.KeyVault/vaults` (MicrosoftDocs/azure-docs `articles/azure-monitor/reference/
//! supported-logs/microsoft-keyvault-vaults-logs.md`); at most five settings per resource, a destination in the
//! resource's region (`articles/azure-monitor/essentials/diagnostic-settings.md`, "Destinations").
//!
//! A setting outlives its resource: Azure keeps it when the resource is deleted and it applies again to a resource
//! re-created (or recovered) under the same id (same article, "Resource deleted"). So a deleted vault's setting is
//! kept but not served (its scope answers `404`), and comes back with the recovered vault.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ArmCtx, ArmError, ResourceId, devices, storage, vaults};
use crate::http::Resp;
use crate::store::Tx;

/// Settings by `<scope lower case>|<name lower case>` → [`Setting`].
pub const SETTING: &str = "diagnostic-setting";
const TYPE: &str = "Microsoft.Insights/diagnosticSettings";
const MAX_PER_RESOURCE: usize = 5;
const KEYVAULT_CATEGORIES: &[&str] = &["AuditEvent", "AzurePolicyEvaluationDetails"];
const KEYVAULT_GROUPS: &[&str] = &["audit", "allLogs"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Setting {
    pub scope: String,
    pub name: String,
    pub properties: Map<String, Value>,
}

impl Setting {
    pub fn id(&self) -> String {
        format!("{}/providers/{TYPE}/{}", self.scope, self.name)
    }

    fn key(scope: &str, name: &str) -> String {
        format!("{}|{}", scope.trim_end_matches('/').to_ascii_lowercase(), name.to_ascii_lowercase())
    }

    pub fn to_json(&self) -> Value {
        json!({ "id": self.id(), "name": self.name, "type": TYPE, "properties": self.properties })
    }
}

/// The live resource at `scope`, with its location; a `404` as ARM answers for a missing resource otherwise.
fn resource_location(ctx: &ArmCtx<'_>, scope: &str) -> Result<(ResourceId, String), ArmError> {
    let id: ResourceId =
        scope.parse().map_err(|_| ArmError::bad_request("InvalidScope", format!("'{scope}' is not a valid scope.")))?;
    let missing = || {
        ArmError::resource_not_found(&id.resource_type(), id.name(), id.resource_group.as_deref().unwrap_or_default())
    };
    let location = match id.resource_type().to_ascii_lowercase().as_str() {
        "microsoft.keyvault/vaults" => {
            vaults::expire(ctx.app, ctx.now)?;
            vaults::find_active(ctx.app, &id)?.map(|v| v.location)
        }
        "microsoft.databoxedge/databoxedgedevices" => devices::find(ctx.app, &id)?.map(|d| d.location),
        "microsoft.storage/storageaccounts" => storage::find(ctx.app, &id)?.map(|a| a.location),
        _ => {
            return Err(ArmError::bad_request(
                "ResourceTypeNotSupported",
                format!(
                    "local-azure keeps diagnostic settings for Key Vault vaults, Stack Edge devices and storage accounts, not '{}'.",
                    id.resource_type()
                ),
            ));
        }
    };
    Ok((id.clone(), location.ok_or_else(missing)?))
}

fn not_found(name: &str) -> ArmError {
    ArmError::not_found("ResourceNotFound", format!("The diagnostic setting '{name}' doesn't exist."))
}

pub fn get(ctx: &ArmCtx<'_>, scope: &str, name: &str) -> Result<Resp, ArmError> {
    resource_location(ctx, scope)?;
    let s: Setting = ctx.app.store.get(SETTING, &Setting::key(scope, name))?.ok_or_else(|| not_found(name))?;
    Ok(Resp::json(StatusCode::OK, &s.to_json()))
}

pub fn list(ctx: &ArmCtx<'_>, scope: &str) -> Result<Resp, ArmError> {
    resource_location(ctx, scope)?;
    let all: Vec<Setting> = ctx.app.store.list(SETTING, &Setting::key(scope, ""))?;
    Ok(Resp::json(StatusCode::OK, &json!({ "value": all.iter().map(Setting::to_json).collect::<Vec<_>>() })))
}

#[derive(Debug, Deserialize)]
struct PutBody {
    properties: Map<String, Value>,
}

fn bad(message: impl Into<String>) -> ArmError {
    ArmError::bad_request("BadRequest", message)
}

/// Checks the `logs` entries: each names a `category` or a `categoryGroup` (not both) the resource type has.
fn validate_logs(props: &Map<String, Value>, resource_type: &str) -> Result<(), ArmError> {
    let logs = props.get("logs").and_then(Value::as_array).cloned().unwrap_or_default();
    let is_vault = resource_type.eq_ignore_ascii_case(vaults::TYPE);
    for log in &logs {
        let category = log.get("category").and_then(Value::as_str).filter(|s| !s.is_empty());
        let group = log.get("categoryGroup").and_then(Value::as_str).filter(|s| !s.is_empty());
        match (category, group) {
            (Some(_), Some(_)) => return Err(bad("A log entry can set 'category' or 'categoryGroup', not both.")),
            (None, None) => return Err(bad("Each log entry needs a 'category' or a 'categoryGroup'.")),
            (Some(c), None) if is_vault && !KEYVAULT_CATEGORIES.iter().any(|k| k.eq_ignore_ascii_case(c)) => {
                return Err(bad(format!(
                    "Category '{c}' is not supported. Supported categories: {}.",
                    KEYVAULT_CATEGORIES.join(", ")
                )));
            }
            (None, Some(g)) if is_vault && !KEYVAULT_GROUPS.iter().any(|k| k.eq_ignore_ascii_case(g)) => {
                return Err(bad(format!(
                    "Category group '{g}' is not supported. Supported category groups: {}.",
                    KEYVAULT_GROUPS.join(", ")
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `DiagnosticSettings_CreateOrUpdate`: the resource must exist, then what [`write`] checks.
pub fn put(ctx: &ArmCtx<'_>, scope: &str, name: &str) -> Result<Resp, ArmError> {
    let (resource, location) = resource_location(ctx, scope)?;
    let body: PutBody = ctx.body()?;
    let setting = ctx.app.store.write(|tx| -> Result<Setting, ArmError> {
        let setting = write(tx, &resource, &location, name, body.properties)?;
        ctx.record(tx, &setting.id(), StatusCode::OK)?;
        Ok(setting)
    })?;
    Ok(Resp::json(StatusCode::OK, &setting.to_json()))
}

/// Writes setting `name` of `resource` (live, in `location`) in `tx` — the create and the bulk seed
/// (`crate::seed`) write the same document after the same checks: at least one destination, log categories the
/// resource type has, a `storageAccountId` naming an existing account in the resource's region, at most five
/// settings per resource.
pub(crate) fn write(
    tx: &mut Tx<'_>,
    resource: &ResourceId,
    location: &str,
    name: &str,
    props: Map<String, Value>,
) -> Result<Setting, ArmError> {
    let destination = |k: &str| props.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    if ["storageAccountId", "workspaceId", "eventHubAuthorizationRuleId", "marketplacePartnerId"]
        .iter()
        .all(|k| destination(k).is_none())
    {
        return Err(bad(
            "At least one destination is required: storageAccountId, workspaceId, eventHubAuthorizationRuleId or marketplacePartnerId.",
        ));
    }
    validate_logs(&props, &resource.resource_type())?;
    if let Some(account) = destination("storageAccountId") {
        let id: ResourceId = account
            .parse()
            .ok()
            .filter(|id: &ResourceId| id.resource_type().eq_ignore_ascii_case(storage::TYPE))
            .ok_or_else(|| bad(format!("'{account}' is not a storage account id.")))?;
        let found = storage::find_in(tx, &id)?.ok_or_else(|| {
            ArmError::resource_not_found(storage::TYPE, id.name(), id.resource_group.as_deref().unwrap_or_default())
        })?;
        if !found.location.eq_ignore_ascii_case(location) {
            return Err(bad(format!(
                "Storage account '{}' is in '{}'; the resource is in '{location}'. A diagnostic setting's storage account must be in the resource's region.",
                found.name, found.location
            )));
        }
    }
    let scope = resource.to_string();
    let k = Setting::key(&scope, name);
    if tx.get::<Setting>(SETTING, &k)?.is_none()
        && tx.list::<Setting>(SETTING, &Setting::key(&scope, ""))?.len() >= MAX_PER_RESOURCE
    {
        return Err(bad(format!("A resource can have at most {MAX_PER_RESOURCE} diagnostic settings.")));
    }
    let setting = Setting { scope, name: name.to_string(), properties: props };
    tx.put(SETTING, &k, &setting)?;
    Ok(setting)
}

pub fn delete(ctx: &ArmCtx<'_>, scope: &str, name: &str) -> Result<Resp, ArmError> {
    resource_location(ctx, scope)?;
    let existed = ctx.app.store.write(|tx| -> Result<bool, ArmError> {
        let k = Setting::key(scope, name);
        let Some(s) = tx.get::<Setting>(SETTING, &k)? else { return Ok(false) };
        tx.delete(SETTING, &k)?;
        ctx.record(tx, &s.id(), StatusCode::OK)?;
        Ok(true)
    })?;
    Ok(Resp::empty(if existed { StatusCode::OK } else { StatusCode::NO_CONTENT }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_vault_log_categories() {
        let props = |logs: Value| json!({ "logs": logs }).as_object().cloned().unwrap();
        let ok = props(
            json!([{ "categoryGroup": "audit", "enabled": true }, { "category": "AuditEvent", "enabled": true }]),
        );
        assert!(validate_logs(&ok, vaults::TYPE).is_ok());
        for bad in [
            json!([{ "category": "NoSuch", "enabled": true }]),
            json!([{ "categoryGroup": "everything", "enabled": true }]),
            json!([{ "category": "AuditEvent", "categoryGroup": "audit" }]),
            json!([{ "enabled": true }]),
        ] {
            assert!(validate_logs(&props(bad.clone()), vaults::TYPE).is_err(), "{bad}");
        }
    }
}
