//! `VaultDeleted` (serviceBusTrigger): recovers a device's vault from soft delete and re-applies what edgevault owns.

use std::sync::Arc;

use super::{Deps, HandlerResult, Invocation, unbuilt_worker};

pub async fn run(invocation: Invocation, _deps: Arc<Deps>) -> HandlerResult {
    unbuilt_worker(&invocation, "VaultDeleted")
}
