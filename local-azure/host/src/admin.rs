//! The host's admin API: `POST /admin/functions/<Name>` runs a non-HTTP function now, `GET /admin/host/status`
//! says the host runs; both take the master key only.

use serde_json::{Value, json};

use crate::Shared;
use crate::app::Trigger;
use crate::event_grid;
use crate::http::{Reply, Request};
use crate::http_trigger;
use crate::service_bus::ReceivedMessage;
use crate::timer::{self, RunReason};

/// `GET /admin/host/status`: `{state, version}`, `version` being the real host's version this host sends.
pub(crate) fn host_status(shared: &Shared, request: &Request) -> Reply {
    if authorised(shared, request) {
        Reply::json(200, &json!({"state": "Running", "version": crate::HOST_VERSION}))
    } else {
        Reply::status(401)
    }
}

fn authorised(shared: &Shared, request: &Request) -> bool {
    http_trigger::presented_key(request).is_some_and(|k| shared.keys.is_master(&k))
}

/// `POST /admin/functions/<Name>` with `{"input": "..."}`: runs a non-HTTP function now, as the real host's admin
/// API does; answers `202` before the invocation finishes (Azure/azure-functions-host
/// `src/WebJobs.Script.WebHost/Controllers/FunctionsController.cs`, `Invoke`: the admin authorisation level,
/// `404` for an unknown function, the call started on its own task, then `Accepted()`).
pub(crate) fn invoke(shared: &Shared, request: &Request, name: &str) -> Reply {
    if !authorised(shared, request) {
        return Reply::status(401);
    }
    let Some(def) = shared.app.function(name) else {
        return Reply::error(404, format!("no function named `{name}`"));
    };
    let input = match serde_json::from_slice::<Value>(&request.body) {
        Ok(body) => body.get("input").cloned().unwrap_or(Value::Null),
        Err(_) if request.body.is_empty() => Value::Null,
        Err(err) => return Reply::error(400, format!("the body is not JSON: {err}")),
    };
    let input_text = match &input {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let invoker = shared.invoker.clone();
    let function = def.name.clone();
    match &def.trigger {
        Trigger::Http { .. } => {
            return Reply::error(400, "HTTP functions are invoked through their route");
        }
        Trigger::Timer { .. } => {
            let state = shared.timers.get(&def.name).expect("every timer function has a state").clone();
            timer::try_run(&state, &invoker, invoker.clock(), RunReason::Admin);
        }
        Trigger::ServiceBus { binding, .. } => {
            // `ConvertFromString`: a message holding the input as its body, with no actions or client.
            let input = ReceivedMessage::from_text(&input_text).invocation(binding, None, false);
            tokio::spawn(async move {
                let _ = invoker.invoke(&function, input).await;
            });
        }
        Trigger::EventGrid { binding } => {
            let event = serde_json::from_str::<Value>(&input_text).unwrap_or(Value::String(input_text));
            let input = event_grid::event_invocation(binding, &event);
            tokio::spawn(async move {
                let _ = invoker.invoke(&function, input).await;
            });
        }
    }
    Reply::status(202)
}
