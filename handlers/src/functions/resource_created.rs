//! `ResourceCreated` (serviceBusTrigger): makes sure a Stack Edge resource has its system-assigned identity.
//! Pre-integration (legacy) resources are left exactly as they are.

use crate::deps::Deps;
use crate::lifecycle::Error;
use crate::lifecycle::device::{device_and_info, enable_identity, is_legacy};
use crate::messages::ResourceCreated;
use crate::protocol::InvocationResponse;
use crate::triggers::ServiceBusMetadata;

pub async fn run(command: ResourceCreated, _: &ServiceBusMetadata, deps: &Deps) -> Result<InvocationResponse, Error> {
    let id = &command.device;
    let Some((device, info)) = device_and_info(deps, id).await? else {
        return Ok(InvocationResponse::default().with_log(format!("{id} no longer exists")));
    };
    if is_legacy(&device, &info, deps.settings.cutover) {
        return Ok(InvocationResponse::default().with_log(format!("{id} is a pre-integration resource; left alone")));
    }
    let principal = match device.principal_id() {
        Some(principal) => principal.to_string(),
        None => enable_identity(deps, id).await?.principal_id().unwrap_or_default().to_string(),
    };
    Ok(InvocationResponse::default().with_log(format!("{id} has identity {principal}")))
}
