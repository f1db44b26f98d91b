//! `ResourceCreated` (serviceBusTrigger): makes sure a Stack Edge resource has its system-assigned identity.
//! Pre-integration (legacy) resources are left exactly as they are.

use std::sync::Arc;

use super::{Deps, HandlerResult, Invocation, settle, worker_input};
use crate::lifecycle::is_legacy;
use crate::lifecycle::provision::{device_and_info, ensure_identity};
use crate::messages::Command;
use crate::protocol::InvocationResponse;

pub async fn run(invocation: Invocation, deps: Arc<Deps>) -> HandlerResult {
    let (command, metadata) = worker_input(&invocation, &["ResourceCreated"])?;
    let Command::ResourceCreated { device: id, .. } = &command else { unreachable!("worker_input checked the kind") };
    let result = async {
        let Some((device, info)) = device_and_info(&deps, id).await? else {
            return Ok(InvocationResponse::default().with_log(format!("{id} no longer exists")));
        };
        if is_legacy(&device, &info, deps.settings.cutover) {
            return Ok(
                InvocationResponse::default().with_log(format!("{id} is a pre-integration resource; left alone"))
            );
        }
        let principal = ensure_identity(&deps, id, &device).await?;
        Ok(InvocationResponse::default().with_log(format!("{id} has identity {principal}")))
    }
    .await;
    settle(&deps, None, &metadata, result).await
}
