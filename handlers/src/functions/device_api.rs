//! `DeviceApi` (httpTrigger): operations on one Stack Edge device, documented beside the activation-key API in
//! `docs/activation-key-api.openapi.json`.
//!
//! - `POST /api/devices/{subscriptionId}/{resourceGroup}/{deviceName}/refresh` re-checks the device now
//!   (`lifecycle::refresh`): its findings, the alerts raised or resolved, the fixes queued.
//!
//! Like the activation-key API it is served behind App Service Authentication, and a refresh may queue repairs of
//! the device's vault, so the caller needs the same right on the device (`authorization::ACTIVATE`); `401`/`403`
//! otherwise, before anything is read.

use std::sync::Arc;

use super::policy::{may_act, refusal, unavailable};
use super::{HandlerResult, Invocation};
use crate::authorization::{ACTIVATE, Caller};
use crate::deps::Deps;
use crate::error::FunctionError;
use crate::lifecycle::refresh::refresh;
use crate::protocol::InvocationResponse;
use crate::resource_id::{DEVICE_TYPE, ResourceId};
use crate::triggers::{HttpRequest, HttpResponse};

pub async fn run(invocation: Invocation, deps: Arc<Deps>) -> HandlerResult {
    let request: HttpRequest = invocation.request.binding("req")?;
    let response = answer(&deps, &request).await.or_else(|err| unavailable("device API", err))?;
    Ok(InvocationResponse::default().with_output("res", response))
}

async fn answer(deps: &Deps, request: &HttpRequest) -> Result<HttpResponse, FunctionError> {
    let param = |name: &str| request.params.get(name).map(String::as_str).unwrap_or_default();
    let (subscription, group, name, action) =
        (param("subscriptionId"), param("resourceGroup"), param("deviceName"), param("action"));
    if !request.method.eq_ignore_ascii_case("POST") {
        let mut response = HttpResponse::error(405, "MethodNotAllowed", "device operations take POST");
        response.headers.insert("Allow".into(), "POST".into());
        return Ok(response);
    }
    // Built as text and parsed, so every rule of a resource id applies to what the caller put in the path.
    let text = format!(
        "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}"
    );
    let device = match text.parse::<ResourceId>() {
        Ok(id)
            if id.is_type(DEVICE_TYPE)
                && [subscription, group, name].iter().all(|p| !p.is_empty() && !p.contains('/')) =>
        {
            id
        }
        Ok(_) => return Ok(HttpResponse::error(400, "InvalidResourceId", "subscription, group and name are required")),
        Err(e) => return Ok(HttpResponse::error(400, "InvalidResourceId", e.to_string())),
    };
    let caller = match Caller::from_request(request) {
        Ok(caller) => caller,
        Err(denied) => return refusal(denied),
    };
    if let Some(refused) = may_act(deps, &caller, &device, ACTIVATE).await? {
        return Ok(refused);
    }
    match action {
        "refresh" => match refresh(deps, &device).await? {
            Some(report) => Ok(HttpResponse::json(200, serde_json::to_value(report).expect("serializable"))),
            None => Ok(HttpResponse::error(404, "DeviceNotFound", format!("{device} does not exist"))),
        },
        other => {
            Ok(HttpResponse::error(404, "UnknownOperation", format!("`{other}` is not a device operation (refresh)")))
        }
    }
}
