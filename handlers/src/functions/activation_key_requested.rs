//! `ActivationKeyRequested` (serviceBusTrigger): provisions the vault, lock and CIK and issues the activation key.

use std::sync::Arc;

use super::{Deps, HandlerResult, Invocation, unbuilt_worker};

pub async fn run(invocation: Invocation, _deps: Arc<Deps>) -> HandlerResult {
    unbuilt_worker(&invocation, "ActivationKeyRequested")
}
