//! `SweepPage` (serviceBusTrigger): one page of one subscription's devices, inspected; the next page and the fixes
//! found are sent on (`lifecycle::sweep::page`).

use crate::deps::Deps;
use crate::lifecycle::{Error, sweep};
use crate::messages::SweepPage;
use crate::protocol::InvocationResponse;
use crate::triggers::ServiceBusMetadata;

pub async fn run(work: SweepPage, _: &ServiceBusMetadata, deps: &Deps) -> Result<InvocationResponse, Error> {
    let summary = sweep::page(deps, &work).await?;
    let text = serde_json::to_string(&summary).unwrap_or_default();
    tracing::info!(sweep_id = %work.sweep_id, subscription = %work.subscription, page = work.page,
        devices = summary.devices, commands = summary.commands, errors = summary.errors, findings = %text,
        "sweep page done");
    let mut response = InvocationResponse::default()
        .with_log(format!("sweep {} {} page {}: {text}", work.sweep_id, work.subscription, work.page));
    response.return_value = serde_json::to_value(&summary).unwrap_or_default();
    Ok(response)
}
