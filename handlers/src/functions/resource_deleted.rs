//! `ResourceDeleted` (serviceBusTrigger): a Stack Edge resource is gone, and its vault's life ends with it
//! (`lifecycle::retirement`).

use crate::deps::Deps;
use crate::lifecycle::Error;
use crate::lifecycle::retirement::{Outcome, on_device_deleted};
use crate::messages::ResourceDeleted;
use crate::protocol::InvocationResponse;
use crate::triggers::ServiceBusMetadata;

pub async fn run(command: ResourceDeleted, _: &ServiceBusMetadata, deps: &Deps) -> Result<InvocationResponse, Error> {
    let device = &command.device;
    let log = match on_device_deleted(deps, device).await? {
        Outcome::DeviceExists => format!("{device} exists again; its vault stays"),
        Outcome::Vaults(vaults) => vaults
            .iter()
            .map(|(vault, deleted)| format!("{vault}: {}", if *deleted { "deleted" } else { "kept, orphaned" }))
            .collect::<Vec<_>>()
            .join("; "),
    };
    Ok(InvocationResponse::default().with_log(log))
}
