//! `ArmEvents` (eventGridTrigger): Resource Manager events in, queue commands out.

use std::sync::Arc;

use super::{Deps, HandlerResult, Invocation};
use crate::error::FunctionError;
use crate::protocol::InvocationResponse;
use crate::triggers::{GridEvent, SubscriptionValidationData, event_types};

pub async fn run(invocation: Invocation, _deps: Arc<Deps>) -> HandlerResult {
    let value = invocation.request.data.get("event").cloned().ok_or_else(|| {
        FunctionError::invalid("Data.event", "missing; the eventGridTrigger binding is named `event`")
    })?;
    let events = GridEvent::list_from_value(value, "Data.event")?;
    let mut response = InvocationResponse::default();
    let mut pending = 0;
    for (i, event) in events.iter().enumerate() {
        let path = format!("Data.event[{i}]");
        if event.event_type() == event_types::SUBSCRIPTION_VALIDATION {
            // The Functions host answers the handshake for eventGridTrigger functions itself; one that reaches the
            // handler needs nothing more than a well-formed acknowledgement.
            let data: SubscriptionValidationData = crate::protocol::decode(event.data().clone(), &path)?;
            response = response.with_log(format!("subscription validation {} acknowledged", data.validation_code));
            continue;
        }
        if event.event_type().starts_with("Microsoft.Resources.") {
            event.resource_action(&path)?;
        }
        pending += 1;
    }
    if pending > 0 {
        return Err(FunctionError::NotImplemented { function: "ArmEvents" });
    }
    Ok(response)
}
