//! `RecoverySweep` (timerTrigger): the reconciler over every Stack Edge resource in scope. It inspects and
//! enqueues; the workers fix.

use std::sync::Arc;

use super::{HandlerResult, Invocation};
use crate::deps::Deps;
use crate::lifecycle::sweep;
use crate::protocol::InvocationResponse;
use crate::triggers::TimerInfo;

pub async fn run(invocation: Invocation, deps: Arc<Deps>) -> HandlerResult {
    let timer: TimerInfo = invocation.request.binding("timer")?;
    // One id per run: the commands a run sends get MessageIds derived from it, so a command sent twice within one
    // run (a retried batch) is dropped by duplicate detection, while the next run re-sends fixes for lasting drift.
    let sweep_id = if invocation.invocation_id.is_empty() {
        format!("sweep-{}", deps.now().unix_timestamp())
    } else {
        invocation.invocation_id.clone()
    };
    if timer.is_past_due {
        tracing::warn!(sweep_id = %sweep_id, "the sweep is running late (past due)");
    }
    let summary = sweep::run(&deps, &sweep_id).await?;
    let text = serde_json::to_string(&summary).unwrap_or_default();
    tracing::info!(sweep_id = %sweep_id, devices = summary.devices, commands = summary.commands,
        errors = summary.errors, findings = %text, "recovery sweep done");
    let mut response = InvocationResponse::default().with_log(format!("sweep {sweep_id}: {text}"));
    response.return_value = serde_json::to_value(&summary).unwrap_or_default();
    Ok(response)
}
