//! Where the lifecycle meets the host protocol: a worker's input read from the invocation, the lifecycle's error
//! mapped to the handler's ([`FunctionError`], with the status the host sees), and the workers' error policy.

use serde_json::{Map, Value};

use crate::alerts::{Alert, Severity};
use crate::authorization::{self, Caller, Denied, require_permission};
use crate::deps::Deps;
use crate::error::FunctionError;
use crate::lifecycle::{self, device::mark_failed};
use crate::messages::{Inbound, MAX_DELIVERY_COUNT, read};
use crate::protocol::{InvocationRequest, InvocationResponse};
use crate::resource_id::ResourceId;
use crate::triggers::{HttpResponse, ServiceBusMetadata};

impl From<lifecycle::Error> for FunctionError {
    fn from(err: lifecycle::Error) -> Self {
        match err {
            lifecycle::Error::Azure(err) => FunctionError::Azure(err),
            // A race, not a refusal: the next delivery observes again.
            lifecycle::Error::Refused(refusal) if refusal.kind == lifecycle::Refused::NotConverged => {
                FunctionError::Internal(refusal.to_string())
            }
            lifecycle::Error::Refused(refusal) => {
                FunctionError::Permanent { code: refusal.kind.code(), message: refusal.message }
            }
        }
    }
}

/// A refused API caller's answer: `401` (with the bearer challenge), `403` naming the missing permission, `500` when
/// edgevault cannot check at all. An Azure failure stays an error, answered like any other. Shared by every HTTP
/// function that acts on a device.
pub fn refusal(denied: Denied) -> Result<HttpResponse, FunctionError> {
    Ok(match denied {
        Denied::Unauthenticated(reason) => {
            let mut response = HttpResponse::error(401, "Unauthenticated", reason);
            response.headers.insert("WWW-Authenticate".into(), "Bearer error=\"invalid_token\"".into());
            response
        }
        denied @ Denied::Forbidden { .. } => HttpResponse::error(403, "AuthorizationFailed", denied.to_string()),
        Denied::NotConfigured(reason) => HttpResponse::error(500, authorization::NOT_CONFIGURED, reason),
        Denied::Azure(err) => return Err(FunctionError::Azure(err)),
    })
}

/// Seconds an API caller waits before retrying after Azure was unavailable.
const UNAVAILABLE_RETRY_SECONDS: u32 = 5;

/// The header every answer to an authenticated caller carries: the caller's object id, so a client's log of the
/// answer says who asked.
pub const CALLER_HEADER: &str = "X-Edgevault-Caller";

/// An HTTP function's answer to a request whose work failed: Azure being unavailable is the caller's to retry
/// (`503` with `Retry-After`); anything else stays an error, a bug to report, not to hide. Shared by every HTTP
/// function, so they all answer an outage alike.
pub fn unavailable(function: &str, err: FunctionError) -> Result<HttpResponse, FunctionError> {
    match err {
        FunctionError::Azure(err) if err.retryable() => {
            tracing::warn!("{function}: {err}");
            let message = format!("{} is temporarily unavailable; retry", err.operation);
            let mut response = HttpResponse::error(503, "AzureUnavailable", message);
            response.headers.insert("Retry-After".into(), UNAVAILABLE_RETRY_SECONDS.to_string());
            Ok(response)
        }
        err => Err(err),
    }
}

/// `response`, marked with who asked ([`CALLER_HEADER`]).
pub fn answered_to(mut response: HttpResponse, caller: &Caller) -> HttpResponse {
    response.headers.insert(CALLER_HEADER.into(), caller.object_id.clone());
    response
}

/// `Ok(None)` when `caller` holds `permission` on `device`, else the answer that says why not.
pub async fn may_act(
    deps: &Deps,
    caller: &Caller,
    device: &ResourceId,
    permission: &str,
) -> Result<Option<HttpResponse>, FunctionError> {
    match require_permission(deps, caller, device, permission).await {
        Ok(()) => Ok(None),
        Err(denied) => refusal(denied).map(Some),
    }
}

/// A worker's input: its command, decoded from the message body (never from `Metadata`, where the host merges the
/// body's fields over the broker's — see `triggers`), and the broker's metadata.
pub fn worker_input<T: Inbound>(request: &InvocationRequest) -> Result<(T, ServiceBusMetadata), FunctionError> {
    let body: Map<String, Value> = request.binding("message")?;
    let metadata: ServiceBusMetadata = request.metadata()?;
    let command = read::<T>(&body)?;
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
    tracing::info!(message_id = %metadata.message_id, delivery_count = metadata.delivery_count, kind,
        device = ?command.device().map(ToString::to_string), "message received");
    Ok((command, metadata))
}

/// The error policy of the workers. A failure that retrying cannot fix — or the last delivery of one that it
/// could — is recorded on the device (`KeyVaultSyncFailed` with the reason) and raised as a critical alert before
/// the invocation fails, so the dead-lettered message is never a silent loss. Earlier retryable failures just
/// fail the invocation: Service Bus redelivers.
pub async fn settle(
    deps: &Deps,
    device: Option<&ResourceId>,
    metadata: &ServiceBusMetadata,
    result: Result<InvocationResponse, lifecycle::Error>,
) -> Result<InvocationResponse, FunctionError> {
    let err = match result {
        Ok(response) => return Ok(response),
        Err(err) => err,
    };
    let last_attempt = metadata.delivery_count >= MAX_DELIVERY_COUNT;
    if let Some(device) = device.filter(|_| !err.retryable() || last_attempt) {
        let reason = err.to_string();
        let marked = match mark_failed(deps, device, &reason).await {
            Ok(marked) => marked,
            Err(mark) => {
                tracing::error!(device = %device, "could not record the failure on the device: {mark}");
                None
            }
        };
        let alert = Alert::raise(
            &format!("{}|{}", metadata.message_id, device),
            Severity::Critical,
            format!("provisioning of {device} failed: {reason}"),
            "the device is marked KeyVaultSyncFailed; the message will be dead-lettered; fix the cause and request the activation key again",
        )
        .about(Some(&device.to_string()), None)
        .requested_by(marked.as_ref().and_then(lifecycle::device::requested_by));
        deps.alert(&alert).await;
    }
    Err(err.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::AzureError;
    use crate::lifecycle::Refused;

    #[test]
    fn refusals_are_permanent_424s_with_their_code_and_azure_errors_keep_theirs() {
        let refused: FunctionError = lifecycle::Error::refused(Refused::VaultNotOwned, "not yours").into();
        assert_eq!((refused.status(), refused.code(), refused.retryable()), (424, "VaultNotOwned", false));
        assert!(refused.to_string().contains("not yours"));
        let throttled: FunctionError = lifecycle::Error::Azure(AzureError::new("get", Some(429), None, "slow")).into();
        assert_eq!((throttled.status(), throttled.retryable()), (503, true));
    }
}
