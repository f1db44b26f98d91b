//! `ActivationKeyApi` (httpTrigger): the portal's activation-key API, documented in `docs/activation-key-api.openapi.json`.
//!
//! - `POST /api/activation-keys` with `{"resourceId", "vaultName"?}` validates the request, marks the device
//!   `KeyVaultSyncPending`, enqueues the work and answers `202` with `Location` and `Retry-After`.
//! - `GET /api/activation-keys/{operationId}` reports `pending`, `syncing`, `succeeded` (with a fresh activation key
//!   and its expiry), `failed` (with the reason), `notRequested` or `legacy`.
//!
//! The operation id encodes the device id (base64url) plus a nonce, so the status needs no stored state: it is
//! read from the device every time.
//!
//! Who may call: App Service Authentication admits only callers with a valid Entra ID token for the API; each
//! request then needs [`authorization::ACTIVATE`] on its device, asked of ARM as the caller
//! ([`authorization::require_permission`]) before anything is read, created or marked. `401`/`403` otherwise.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::json;

use super::policy::{answered_to, may_act, refusal, unavailable};
use super::{HandlerResult, Invocation};
use crate::authorization::{ACTIVATE, Caller};
use crate::azure::models::NameAvailability;
use crate::deps::Deps;
use crate::error::FunctionError;
use crate::lifecycle::device::{device_and_info, is_legacy, mark_requested};
use crate::lifecycle::prerequisites::keyvault_missing;
use crate::lifecycle::status::{KeyStatus, key_status};
use crate::lifecycle::vault::{Choice, choose_vault, owned_by, vault_id};
use crate::lifecycle::{Error, Refused};
use crate::messages::{ActivationKeyRequested, Command};
use crate::protocol::InvocationResponse;
use crate::resource_id::{DEVICE_TYPE, ResourceId};
use crate::triggers::{HttpRequest, HttpResponse};
use crate::vault_name::VaultName;

/// Bodies are a resource id and a name; anything much larger is not a request of this API.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Seconds the portal should wait before its first status poll: a vault is usually created within a few seconds.
const FIRST_POLL_SECONDS: u32 = 2;
/// Seconds between status polls while the work is under way: the key is ready within a second of the worker
/// finishing, and a poll costs two ARM reads.
const POLL_SECONDS: u32 = 1;
/// Default-name attempts before giving up (a name is global; a clash on the derived name is rare).
const DEFAULT_NAME_ATTEMPTS: u32 = 5;

pub async fn run(invocation: Invocation, deps: Arc<Deps>) -> HandlerResult {
    let request: HttpRequest = invocation.request.binding("req")?;
    let caller = match Caller::from_request(&request) {
        Ok(caller) => caller,
        Err(denied) => {
            tracing::warn!("activation-key API: {denied}");
            return respond(refusal(denied)?, None);
        }
    };
    // Every line this request logs from here on names its caller (the invocation span's fields, `server`), and
    // so does the host's "invocation done" line; never their token.
    let span = tracing::Span::current();
    span.record("caller_id", caller.object_id.as_str());
    span.record("caller_name", caller.name.as_str());
    let response = answer(&deps, &caller, &request, &invocation.invocation_id).await;
    let response = response.or_else(|err| unavailable("activation-key API", err))?;
    respond(response, Some(&caller))
}

/// The answer to an authenticated caller's request: one route serves both shapes, POST on the collection and GET
/// on an operation.
async fn answer(
    deps: &Deps,
    caller: &Caller,
    request: &HttpRequest,
    invocation_id: &str,
) -> Result<HttpResponse, FunctionError> {
    let operation = request.params.get("operationId").filter(|id| !id.is_empty()).cloned();
    match (request.method.to_ascii_uppercase().as_str(), operation) {
        ("POST", None) => post(deps, caller, request, invocation_id).await,
        ("GET", Some(operation_id)) => get(deps, caller, &operation_id).await,
        (_, None) => Ok(method_not_allowed("POST", "/api/activation-keys")),
        (_, Some(_)) => Ok(method_not_allowed("GET", "/api/activation-keys/{operationId}")),
    }
}

fn respond(response: HttpResponse, caller: Option<&Caller>) -> HandlerResult {
    let response = match caller {
        Some(caller) => answered_to(response, caller),
        None => response,
    };
    Ok(InvocationResponse::default().with_output("res", response))
}

/// `Ok(None)` when `caller` may act on `device`, else the answer that says why not.
async fn check(deps: &Deps, caller: &Caller, device: &ResourceId) -> Result<Option<HttpResponse>, FunctionError> {
    may_act(deps, caller, device, ACTIVATE).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyRequest {
    resource_id: String,
    #[serde(default)]
    vault_name: Option<String>,
}

async fn post(
    deps: &Deps,
    caller: &Caller,
    request: &HttpRequest,
    invocation_id: &str,
) -> Result<HttpResponse, FunctionError> {
    if let Some(content_type) = request.header("content-type")
        && !content_type.to_ascii_lowercase().starts_with("application/json")
    {
        return Ok(HttpResponse::error(415, "UnsupportedMediaType", "send the request as application/json"));
    }
    let body = request.body.as_deref().unwrap_or_default();
    if body.len() > MAX_BODY_BYTES {
        return Ok(HttpResponse::error(413, "RequestTooLarge", format!("the body exceeds {MAX_BODY_BYTES} bytes")));
    }
    let key_request: KeyRequest = match serde_json::from_str(body) {
        Ok(parsed) => parsed,
        Err(e) => {
            return Ok(HttpResponse::error(
                400,
                "InvalidRequestBody",
                format!(
                    "expected {{\"resourceId\": \"<Stack Edge resource id>\", \"vaultName\": \"<optional>\"}}: {e}"
                ),
            ));
        }
    };
    let device_id: ResourceId = match key_request.resource_id.parse() {
        Ok(id) => id,
        Err(e) => return Ok(HttpResponse::error(400, "InvalidResourceId", e.to_string())),
    };
    if !device_id.is_type(DEVICE_TYPE) {
        return Ok(HttpResponse::error(
            400,
            "NotAStackEdgeResource",
            format!("{device_id} is not a Microsoft.DataBoxEdge/dataBoxEdgeDevices resource"),
        ));
    }
    let custom = match key_request.vault_name.as_deref().map(VaultName::parse).transpose() {
        Ok(name) => name,
        Err(e) => return Ok(HttpResponse::error(400, e.rule(), e.to_string())),
    };
    if let Some(refused) = check(deps, caller, &device_id).await? {
        return Ok(refused);
    }
    // The name check of the first candidate name runs beside the device reads: it needs neither, and a request
    // for a device that turns out to be linked already wastes one cheap call instead of adding a round trip to
    // every first activation.
    let candidate = custom.clone().unwrap_or_else(|| VaultName::default_for(&device_id, 0));
    let (read, check, prerequisite) = tokio::join!(
        device_and_info(deps, &device_id),
        deps.vaults.check_vault_name(device_id.subscription(), candidate.as_str()),
        keyvault_missing(deps, device_id.subscription())
    );
    let Some((device, info)) = read? else {
        return Ok(HttpResponse::error(404, "DeviceNotFound", format!("{device_id} does not exist")));
    };
    // Before anything is marked or created: without the provider the vault's creation would fail in the worker.
    if let Some(fix) = prerequisite? {
        return Ok(HttpResponse::error(409, "ResourceProviderNotRegistered", fix));
    }
    if is_legacy(&device, &info, deps.settings.cutover) {
        return Ok(HttpResponse::error(
            409,
            "PreIntegrationResource",
            format!("{device_id} predates the Key Vault integration; edgevault leaves it unchanged"),
        ));
    }
    // The same choice the worker makes (`lifecycle::vault::choose_vault`); here a new name is also checked free.
    let vault_name = match choose_vault(&device_id, &info.properties.link, custom.as_ref()) {
        Err(Error::Refused(refusal)) if refusal.kind == Refused::VaultAlreadyLinked => {
            return Ok(HttpResponse::error(409, refusal.kind.code(), refusal.message));
        }
        Err(err) => return Err(err.into()),
        // A repeated request reuses the linked vault.
        Ok(Choice::Linked(linked)) => VaultName::parse(linked.name().unwrap_or_default()).map_err(|e| {
            FunctionError::Permanent { code: Refused::LinkedVaultInvalid.code(), message: e.to_string() }
        })?,
        Ok(Choice::Named(custom)) => {
            match availability(deps, &device_id, &device.location, &custom, Some(check?)).await? {
                Ok(()) => custom,
                Err(reason) => return Ok(HttpResponse::error(409, "VaultNameUnavailable", reason)),
            }
        }
        Ok(Choice::Unnamed) => match default_name(deps, &device_id, &device.location, check?).await? {
            Some(name) => name,
            None => {
                return Ok(HttpResponse::error(
                    409,
                    "VaultNameUnavailable",
                    "no default vault name is free; give a custom vaultName",
                ));
            }
        },
    };
    let operation_id = operation_id(&device_id);
    mark_requested(deps, &device_id, &device, &caller.label()).await?;
    let command: Command = ActivationKeyRequested {
        device: device_id.clone(),
        operation_id: operation_id.clone(),
        vault_name: Some(vault_name.clone()),
    }
    .into();
    let correlation = Some(invocation_id).filter(|id| !id.is_empty());
    deps.enqueue(&[command], correlation).await?;
    // The activation count the Azure Monitor workbook charts (infra/modules/workbook.json).
    tracing::info!(device = %device_id, vault = vault_name.as_str(), "activation key requested");
    let location = status_url(&request.url, &operation_id);
    let mut response = HttpResponse::json(
        202,
        json!({"operationId": operation_id, "status": "pending", "vaultName": vault_name.as_str(), "statusUrl": location}),
    );
    response.headers.insert("Location".into(), location);
    response.headers.insert("Retry-After".into(), FIRST_POLL_SECONDS.to_string());
    Ok(response)
}

/// Whether `name` can be this device's vault: free, or already the device's own (live or soft-deleted, from an
/// earlier attempt). `checked` is the name check when it was already made. `Err` carries the reason for the caller.
async fn availability(
    deps: &Deps,
    device: &ResourceId,
    location: &str,
    name: &VaultName,
    checked: Option<NameAvailability>,
) -> Result<Result<(), String>, FunctionError> {
    let check = match checked {
        Some(check) => check,
        None => deps.vaults.check_vault_name(device.subscription(), name.as_str()).await?,
    };
    if check.name_available {
        return Ok(Ok(()));
    }
    let id = vault_id(device, name);
    if let Some(vault) = deps.vaults.get_vault(&id).await?
        && owned_by(&vault.tags, device)
    {
        return Ok(Ok(()));
    }
    if let Some(deleted) = deps.vaults.get_deleted_vault(device.subscription(), location, name.as_str()).await?
        && owned_by(&deleted.properties.tags, device)
    {
        return Ok(Ok(()));
    }
    Ok(Err(check.message.unwrap_or_else(|| {
        format!("vault name {name} is not available ({})", check.reason.unwrap_or_else(|| "taken".into()))
    })))
}

/// The first free default name; `first_check` is the name check already made for attempt 0.
async fn default_name(
    deps: &Deps,
    device: &ResourceId,
    location: &str,
    first_check: NameAvailability,
) -> Result<Option<VaultName>, FunctionError> {
    let mut checked = Some(first_check);
    for attempt in 0..DEFAULT_NAME_ATTEMPTS {
        let name = VaultName::default_for(device, attempt);
        if availability(deps, device, location, &name, checked.take()).await?.is_ok() {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

fn method_not_allowed(allowed: &str, path: &str) -> HttpResponse {
    let mut response = HttpResponse::error(405, "MethodNotAllowed", format!("{path} takes {allowed} only"));
    response.headers.insert("Allow".into(), allowed.to_string());
    response
}

async fn get(deps: &Deps, caller: &Caller, operation_id: &str) -> Result<HttpResponse, FunctionError> {
    let Some(device_id) = device_of(operation_id) else {
        return Ok(HttpResponse::error(404, "OperationNotFound", "no activation request has this operation id"));
    };
    if let Some(refused) = check(deps, caller, &device_id).await? {
        return Ok(refused);
    }
    let Some(status) = key_status(deps, &device_id).await? else {
        return Ok(HttpResponse::error(404, "DeviceNotFound", format!("{device_id} does not exist")));
    };
    let mut body = json!({"operationId": operation_id, "resourceId": device_id.to_string()});
    let (name, in_progress) = match status {
        KeyStatus::Pending => ("pending", true),
        KeyStatus::Syncing => ("syncing", true),
        KeyStatus::Succeeded { key, expires_at, vault_uri } => {
            body["activationKey"] = key.expose().into();
            body["expiresAt"] = rfc3339(expires_at).into();
            body["vaultUri"] = vault_uri.into();
            ("succeeded", false)
        }
        KeyStatus::Failed { reason } => {
            body["error"] = json!({"code": "KeyVaultSyncFailed", "message": reason});
            ("failed", false)
        }
        KeyStatus::NotRequested => ("notRequested", false),
        KeyStatus::Legacy => ("legacy", false),
    };
    body["status"] = name.into();
    let mut response = HttpResponse::json(200, body);
    if in_progress {
        response.headers.insert("Retry-After".into(), POLL_SECONDS.to_string());
    }
    response.headers.insert("Cache-Control".into(), "no-store".into());
    Ok(response)
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// `<base64url(device id)>.<nonce>`: self-describing, so the status endpoint needs no state of its own.
pub(super) fn operation_id(device: &ResourceId) -> String {
    use aes_gcm::aead::{OsRng, rand_core::RngCore};
    let nonce = OsRng.next_u64();
    format!("{}.{nonce:016x}", URL_SAFE_NO_PAD.encode(device.to_string()))
}

fn device_of(operation_id: &str) -> Option<ResourceId> {
    let (encoded, nonce) = operation_id.split_once('.')?;
    if nonce.len() != 16 || !nonce.chars().all(|c| c.is_ascii_hexdigit()) || encoded.len() > 4096 {
        return None;
    }
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()?;
    text.parse::<ResourceId>().ok().filter(|id| id.is_type(DEVICE_TYPE))
}

/// The status URL on the same scheme and host the caller used.
pub(super) fn status_url(request_url: &str, operation_id: &str) -> String {
    let path = format!("/api/activation-keys/{operation_id}");
    match azure_core::http::Url::parse(request_url) {
        Ok(url) => {
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}{path}", url.scheme(), url.host_str().unwrap_or("localhost"))
        }
        Err(_) => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d";

    #[test]
    fn operation_ids_round_trip_to_the_device_and_are_unique() {
        let device: ResourceId = DEVICE.parse().unwrap();
        let a = operation_id(&device);
        assert_ne!(a, operation_id(&device));
        assert_eq!(device_of(&a), Some(device));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'));
    }

    #[test]
    fn forged_operation_ids_are_refused() {
        let vault = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v";
        for bad in [
            "nope".to_string(),
            format!("{}.0000000000000000", URL_SAFE_NO_PAD.encode(vault)),
            format!("{}.xyz", URL_SAFE_NO_PAD.encode(DEVICE)),
            format!("{}.0000000000000000", URL_SAFE_NO_PAD.encode("../../etc/passwd")),
        ] {
            assert_eq!(device_of(&bad), None, "{bad}");
        }
    }

    #[test]
    fn status_url_keeps_scheme_host_and_port() {
        assert_eq!(
            status_url("https://app.azurewebsites.net/api/activation-keys", "op"),
            "https://app.azurewebsites.net/api/activation-keys/op"
        );
        assert_eq!(
            status_url("http://127.0.0.1:7071/api/activation-keys?code=x", "op"),
            "http://127.0.0.1:7071/api/activation-keys/op"
        );
        assert_eq!(status_url("not a url", "op"), "/api/activation-keys/op");
    }
}
