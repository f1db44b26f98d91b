//! `VaultDeleted` (serviceBusTrigger): recovers a device's deleted vault and re-applies what edgevault owns.

use std::sync::Arc;

use super::{Deps, HandlerResult, Invocation, settle, worker_input};
use crate::lifecycle::recovery::on_vault_deleted;
use crate::messages::Command;
use crate::protocol::InvocationResponse;

pub async fn run(invocation: Invocation, deps: Arc<Deps>) -> HandlerResult {
    let (command, metadata) = worker_input(&invocation, &["VaultDeleted"])?;
    let Command::VaultDeleted { vault, .. } = &command else { unreachable!("worker_input checked the kind") };
    let result = on_vault_deleted(&deps, vault)
        .await
        .map(|outcome| InvocationResponse::default().with_log(format!("{vault}: {outcome:?}")));
    settle(&deps, None, &metadata, result).await
}
