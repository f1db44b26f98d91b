//! `ActivationKeyRequested` (serviceBusTrigger): provisions a device's vault, lock and CIK and links them in its
//! extended information, for an activation request or a sweep finding. The key itself is sealed when the status
//! API is asked for it, from the CIK this worker made sure of.

use std::sync::Arc;

use super::{Deps, HandlerResult, Invocation, settle, worker_input};
use crate::alerts::{Alert, Severity};
use crate::lifecycle::provision::provision;
use crate::messages::Command;
use crate::protocol::InvocationResponse;

pub async fn run(invocation: Invocation, deps: Arc<Deps>) -> HandlerResult {
    let (command, metadata) = worker_input(&invocation, &["ActivationKeyRequested", "ReconcileVault"])?;
    let (device, vault_name, requested) = match &command {
        Command::ActivationKeyRequested { device, vault_name, .. } => (device, vault_name.as_ref(), true),
        Command::ReconcileVault { device, .. } => (device, None, false),
        _ => unreachable!("worker_input checked the kind"),
    };
    let result = async {
        let Some(provisioned) = provision(&deps, device, vault_name, requested).await? else {
            return Ok(InvocationResponse::default().with_log(format!("{device} no longer exists")));
        };
        if provisioned.cik_created && !requested {
            // The sweep found the CIK gone and wrote a new one: the device's current activation no longer holds.
            let alert = Alert::raise(
                &format!("{}|{}|cik", device, provisioned.cik_version),
                Severity::Critical,
                format!("the CIK of {device} was missing; a new one was written"),
                "generate a new activation key for the device and re-activate it",
            )
            .about(Some(&device.to_string()), Some(&provisioned.vault_id.to_string()));
            deps.alert(&alert).await;
        }
        Ok(InvocationResponse::default().with_log(format!(
            "{device}: vault {} with CIK {} version {}",
            provisioned.vault_id, provisioned.cik_name, provisioned.cik_version
        )))
    }
    .await;
    settle(&deps, Some(device), &metadata, result).await
}
