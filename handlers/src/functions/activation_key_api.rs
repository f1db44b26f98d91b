//! `ActivationKeyApi` (httpTrigger): the portal's activation-key API.

use std::sync::Arc;

use super::{Deps, HandlerResult, Invocation};
use crate::error::FunctionError;
use crate::protocol::InvocationResponse;
use crate::triggers::{HttpRequest, HttpResponse};

pub async fn run(invocation: Invocation, _deps: Arc<Deps>) -> HandlerResult {
    let request: HttpRequest = invocation.request.binding("req")?;
    let response = match request.method.to_ascii_uppercase().as_str() {
        "GET" | "POST" => {
            // The invocation itself succeeds: the host must deliver this 501 to the caller, not retry it.
            let err = FunctionError::NotImplemented { function: "ActivationKeyApi" };
            HttpResponse::error(501, err.code(), err.to_string())
        }
        other => HttpResponse::error(405, "MethodNotAllowed", format!("{other} is not supported; use GET or POST")),
    };
    Ok(InvocationResponse::default().with_output("res", response))
}
