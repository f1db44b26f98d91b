//! `ResourceCreated` (serviceBusTrigger): enables the system-assigned identity of a new Stack Edge resource.

use std::sync::Arc;

use super::{Deps, HandlerResult, Invocation, unbuilt_worker};

pub async fn run(invocation: Invocation, _deps: Arc<Deps>) -> HandlerResult {
    unbuilt_worker(&invocation, "ResourceCreated")
}
