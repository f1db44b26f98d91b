//! `RecoverySweep` (timerTrigger): starts a sweep — page 0 of every subscription in scope on the `sweep-pages`
//! queue, where `SweepPage` inspects them one page at a time — unless the last one is still running
//! (`lifecycle::sweep::begin`). It answers in milliseconds whatever the fleet size.

use std::sync::Arc;

use super::{HandlerResult, Invocation};
use crate::deps::Deps;
use crate::lifecycle::sweep;
use crate::protocol::InvocationResponse;
use crate::triggers::TimerInfo;

pub async fn run(invocation: Invocation, deps: Arc<Deps>) -> HandlerResult {
    let timer: TimerInfo = invocation.request.binding("timer")?;
    let slot = slot(&timer).unwrap_or_else(|| {
        // No schedule status (first run without the monitor): the minute it runs in stands for the slot.
        let now = deps.now();
        now.replace_second(0).unwrap_or(now)
    });
    let sweep_id = sweep::sweep_id(slot);
    if timer.is_past_due {
        tracing::warn!(sweep_id = %sweep_id, "the sweep is starting late (past due)");
    }
    let mut response = InvocationResponse::default();
    match sweep::begin(&deps, &sweep_id, slot).await? {
        sweep::Begun::Started(pages) => {
            tracing::info!(sweep_id = %sweep_id, subscriptions = pages.len(), "recovery sweep started");
            response = response.with_log(format!("sweep {sweep_id} started over {} subscriptions", pages.len()));
            response.return_value = serde_json::json!({"sweepId": sweep_id, "subscriptions": pages.len()});
        }
        sweep::Begun::Skipped { running } => {
            tracing::info!(sweep_id = %sweep_id, running = %running, "slot skipped: the last sweep is still running");
            response = response.with_log(format!("sweep {sweep_id} skipped: {running} is still running"));
            response.return_value = serde_json::json!({"sweepId": sweep_id, "skipped": true, "running": running});
        }
    }
    Ok(response)
}

/// The occurrence this run is for: the host passes the status it stored after the last run, whose `Next` is this
/// run's scheduled time (the timer extension's `TimerListener`; local-azure-host's `timer.rs` does the same).
fn slot(timer: &TimerInfo) -> Option<time::OffsetDateTime> {
    let next = &timer.schedule_status.as_ref()?.next;
    time::OffsetDateTime::parse(next, &time::format_description::well_known::Rfc3339).ok()
}
