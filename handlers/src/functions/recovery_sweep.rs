//! `RecoverySweep` (timerTrigger): the reconciler over every Stack Edge resource in scope.

use std::sync::Arc;

use super::{Deps, HandlerResult, Invocation};
use crate::error::FunctionError;
use crate::triggers::TimerInfo;

pub async fn run(invocation: Invocation, _deps: Arc<Deps>) -> HandlerResult {
    let timer: TimerInfo = invocation.request.binding("timer")?;
    tracing::info!(past_due = timer.is_past_due, "recovery sweep triggered");
    Err(FunctionError::NotImplemented { function: "RecoverySweep" })
}
