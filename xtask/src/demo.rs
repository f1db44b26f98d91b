//! The main job until local-azure can host the whole lifecycle: start the real handler with every Azure endpoint
//! unreachable and replay the documented sample invocations (one per trigger type, from
//! `tests/fixtures/triggers/`), checking that each gets the documented answer for an Azure outage.
//!
//! This becomes the local end-to-end demo on local-azure with the lifecycle issue.

use edgevault_tests::{Handler, fixture};

/// One sample invocation and the answer the handler must give it today.
pub struct Step {
    pub function: &'static str,
    pub fixture: &'static str,
    /// The status of the handler's answer to the host.
    pub status: u16,
    /// For HTTP triggers, the status of the `res` output the host returns to the caller.
    pub http_status: Option<u16>,
    pub what: &'static str,
}

pub const STEPS: &[Step] = &[
    Step {
        function: "ArmEvents",
        fixture: "triggers/event-grid-validation.json",
        status: 200,
        http_status: None,
        what: "Event Grid subscription validation reaches the handler and is acknowledged",
    },
    Step {
        function: "ArmEvents",
        fixture: "triggers/event-grid-write.json",
        status: 503,
        http_status: None,
        what: "a Stack Edge ResourceWriteSuccess event (Event Grid schema) is classified; queueing it needs Service Bus",
    },
    Step {
        function: "ArmEvents",
        fixture: "triggers/cloud-events-delete.json",
        status: 503,
        http_status: None,
        what: "vault and device ResourceDeleteSuccess events (CloudEvents 1.0) are classified; queueing needs Service Bus",
    },
    Step {
        function: "ActivationKeyApi",
        fixture: "triggers/http-post.json",
        status: 200,
        http_status: Some(503),
        what: "the portal's activation-key request is validated; with no Azure reachable the API answers 503 + Retry-After",
    },
    Step {
        function: "RecoverySweep",
        fixture: "triggers/timer.json",
        status: 503,
        http_status: None,
        what: "a past-due timer tick starts the sweep; listing devices needs ARM, so the run fails and is retried",
    },
    Step {
        function: "ResourceCreated",
        fixture: "triggers/service-bus.json",
        status: 503,
        http_status: None,
        what: "a Service Bus command is read; with ARM unreachable the worker fails retryably, so it is redelivered",
    },
];

/// Runs every step, printing each; `Ok(true)` only if every answer was the expected one.
pub fn run() -> anyhow::Result<bool> {
    let handler = Handler::start()?;
    println!("edgevault handler listening on 127.0.0.1:{}", handler.port);
    let mut all_held = true;
    for (i, step) in STEPS.iter().enumerate() {
        let (status, body) = handler.invoke(step.function, &fixture(step.fixture)?)?;
        let http_status = body.pointer("/Outputs/res/statusCode").and_then(|v| v.as_u64()).map(|v| v as u16);
        let held = status == step.status && (step.http_status.is_none() || http_status == step.http_status);
        all_held &= held;
        println!("\n{}. POST /{}  ({})", i + 1, step.function, step.fixture);
        println!("   {}", step.what);
        let shown = match http_status {
            Some(code) => format!("{status}, HTTP output {code}"),
            None => status.to_string(),
        };
        println!("   answer: {shown}  {}", if held { "✓ as documented" } else { "✗ NOT as documented" });
        let detail = body.pointer("/error/message").or_else(|| body.pointer("/Outputs/res/body/error/message"));
        if let Some(message) = detail.and_then(|m| m.as_str()) {
            println!("   message: {message}");
        }
    }
    Ok(all_held)
}
