//! `ResourceDeleted` (serviceBusTrigger): a Stack Edge resource is gone, and its vault's life ends with it — with the
//! operator's consent (`EDGEVAULT_DELETE_VAULT_WITH_DEVICE=true`) the lock is removed and the vault deleted (it stays
//! soft-deleted and purge-protected for its retention period); without it the vault is kept and reported orphaned.

use std::sync::Arc;

use super::{Deps, HandlerResult, Invocation, settle, worker_input};
use crate::alerts::{Alert, Severity};
use crate::error::FunctionError;
use crate::lifecycle::{LOCK_NAME, owned_by};
use crate::messages::Command;
use crate::protocol::InvocationResponse;
use crate::resource_id::ResourceId;

pub async fn run(invocation: Invocation, deps: Arc<Deps>) -> HandlerResult {
    let (command, metadata) = worker_input(&invocation, &["ResourceDeleted"])?;
    let Command::ResourceDeleted { device, .. } = &command else { unreachable!("worker_input checked the kind") };
    let result = handle(&deps, device).await;
    settle(&deps, None, &metadata, result).await
}

async fn handle(deps: &Deps, device: &ResourceId) -> Result<InvocationResponse, FunctionError> {
    if deps.devices.get_device(device).await?.is_some() {
        return Ok(InvocationResponse::default().with_log(format!("{device} exists again; its vault stays")));
    }
    let mut response = InvocationResponse::default();
    let (subscription, group) = (device.subscription(), device.resource_group().unwrap_or_default());
    let mut next: Option<String> = None;
    loop {
        let page = deps.vaults.list_vaults(subscription, group, next.as_deref()).await?;
        for vault in page.value.iter().filter(|v| owned_by(&v.tags, device)) {
            let vault_id: ResourceId = vault
                .id
                .parse()
                .map_err(|e| FunctionError::Permanent { code: "BadVaultId", message: format!("{e}") })?;
            let alert = if deps.settings.delete_vault_with_device {
                deps.locks.delete_lock(&vault_id, LOCK_NAME).await?;
                deps.vaults.delete_vault(&vault_id).await?;
                Alert::raise(
                    &format!("{vault_id}|device-deleted"),
                    Severity::Informational,
                    format!("{device} was deleted, and its vault with it"),
                    "the vault stays soft-deleted and purge-protected for its retention period",
                )
            } else {
                Alert::raise(
                    &format!("{vault_id}|orphaned"),
                    Severity::Warning,
                    format!("{device} was deleted; its vault {vault_id} is kept and now orphaned"),
                    "delete the vault by hand when its secrets are no longer needed, or set EDGEVAULT_DELETE_VAULT_WITH_DEVICE=true",
                )
            };
            let alert = alert.about(Some(&device.to_string()), Some(&vault_id.to_string()));
            deps.alert(&alert).await;
            response = response.with_log(format!("{vault_id}: {}", alert.what));
        }
        match page.next_link {
            Some(link) => next = Some(link),
            None => return Ok(response),
        }
    }
}
