//! The function table: every function edgevault exposes, its trigger binding and its handler, in one place.
//!
//! `function-definitions/<Name>/function.json` is generated from this table (`cargo xtask functions`), and a test
//! fails when the committed files drift from it, so the host and the handler can never disagree on a name, a queue
//! or a route.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::alerts::{Alert, Severity};
use crate::error::FunctionError;
use crate::lifecycle::provision::mark_failed;
use crate::messages::{Command, MAX_DELIVERY_COUNT};
use crate::protocol::{InvocationRequest, InvocationResponse};
use crate::resource_id::ResourceId;

mod activation_key_api;
mod activation_key_requested;
mod arm_events;
mod recovery_sweep;
mod resource_created;
mod resource_deleted;
mod vault_deleted;

use crate::deps::Deps;

/// One invocation as a handler sees it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub function: &'static str,
    pub invocation_id: String,
    pub request: InvocationRequest,
}

pub type HandlerResult = Result<InvocationResponse, FunctionError>;
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;
pub type Handler = fn(Invocation, Arc<Deps>) -> HandlerFuture;

/// How the host is told to trigger a function. Binding names are fixed per trigger kind: `req`/`res`, `timer`,
/// `message`, `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Http {
        route: &'static str,
        methods: &'static [&'static str],
        auth_level: &'static str,
    },
    /// `schedule` may name an app setting as `%NAME%`, so operators change it without a redeploy.
    Timer {
        schedule: &'static str,
    },
    /// `connection` names the identity-based connection prefix (`<connection>__fullyQualifiedNamespace`).
    ServiceBus {
        queue: &'static str,
        connection: &'static str,
        sessions: bool,
    },
    EventGrid,
}

/// The Service Bus connection setting prefix every worker uses. Identity-based: the app setting
/// `ServiceBusConnection__fullyQualifiedNamespace` names the namespace; no connection string exists.
pub const SERVICE_BUS_CONNECTION: &str = "ServiceBusConnection";

/// The app setting that holds the recovery sweep's NCRONTAB schedule.
pub const SWEEP_SCHEDULE_SETTING: &str = "RecoverySweepSchedule";

pub struct FunctionDef {
    pub name: &'static str,
    pub trigger: Trigger,
    pub handler: Handler,
}

impl std::fmt::Debug for FunctionDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionDef").field("name", &self.name).field("trigger", &self.trigger).finish()
    }
}

impl FunctionDef {
    /// The `function.json` the Functions host reads for this function.
    pub fn function_json(&self) -> Value {
        let bindings = match self.trigger {
            Trigger::Http { route, methods, auth_level } => json!([
                {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": auth_level,
                 "methods": methods, "route": route},
                {"type": "http", "direction": "out", "name": "res"}
            ]),
            Trigger::Timer { schedule } => json!([
                {"type": "timerTrigger", "direction": "in", "name": "timer", "schedule": schedule,
                 "runOnStartup": false, "useMonitor": true}
            ]),
            Trigger::ServiceBus { queue, connection, sessions } => json!([
                {"type": "serviceBusTrigger", "direction": "in", "name": "message", "queueName": queue,
                 "connection": connection, "isSessionsEnabled": sessions}
            ]),
            Trigger::EventGrid => json!([
                {"type": "eventGridTrigger", "direction": "in", "name": "event"}
            ]),
        };
        json!({ "bindings": bindings })
    }
}

/// Wraps an `async fn(Invocation, Arc<Deps>)` into the table's function-pointer type.
macro_rules! handler {
    ($module:ident) => {{
        fn boxed(invocation: Invocation, deps: Arc<Deps>) -> HandlerFuture {
            Box::pin($module::run(invocation, deps))
        }
        boxed as Handler
    }};
}

pub static FUNCTIONS: &[FunctionDef] = &[
    FunctionDef { name: "ArmEvents", trigger: Trigger::EventGrid, handler: handler!(arm_events) },
    FunctionDef {
        name: "ActivationKeyApi",
        trigger: Trigger::Http {
            route: "activation-keys/{operationId?}",
            methods: &["get", "post"],
            auth_level: "function",
        },
        handler: handler!(activation_key_api),
    },
    FunctionDef {
        name: "RecoverySweep",
        trigger: Trigger::Timer { schedule: "%RecoverySweepSchedule%" },
        handler: handler!(recovery_sweep),
    },
    FunctionDef {
        name: "ResourceCreated",
        trigger: Trigger::ServiceBus { queue: "resource-created", connection: SERVICE_BUS_CONNECTION, sessions: true },
        handler: handler!(resource_created),
    },
    FunctionDef {
        name: "ActivationKeyRequested",
        trigger: Trigger::ServiceBus {
            queue: "activation-key-requested",
            connection: SERVICE_BUS_CONNECTION,
            sessions: true,
        },
        handler: handler!(activation_key_requested),
    },
    FunctionDef {
        name: "VaultDeleted",
        trigger: Trigger::ServiceBus { queue: "vault-deleted", connection: SERVICE_BUS_CONNECTION, sessions: true },
        handler: handler!(vault_deleted),
    },
    FunctionDef {
        name: "ResourceDeleted",
        trigger: Trigger::ServiceBus { queue: "resource-deleted", connection: SERVICE_BUS_CONNECTION, sessions: true },
        handler: handler!(resource_deleted),
    },
];

/// Looks a function up by the name the host uses in the request path (case-sensitive, as the host sends it).
pub fn find(name: &str) -> Option<&'static FunctionDef> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// Reads a worker's Service Bus input: the command (which must be one of `kinds`) and its broker metadata.
pub(crate) fn worker_input(
    invocation: &Invocation,
    kinds: &[&str],
) -> Result<(Command, crate::triggers::ServiceBusMetadata), FunctionError> {
    let body: serde_json::Map<String, Value> = invocation.request.binding("message")?;
    let metadata: crate::triggers::ServiceBusMetadata = invocation.request.metadata()?;
    let command = Command::from_json(&body)?;
    if !kinds.contains(&command.kind()) {
        return Err(FunctionError::invalid(
            "Data.message.kind",
            format!("{} does not handle {} (it handles {})", invocation.function, command.kind(), kinds.join(", ")),
        ));
    }
    tracing::info!(message_id = %metadata.message_id, delivery_count = metadata.delivery_count,
        kind = command.kind(), subject = %command.subject(), "message received");
    Ok((command, metadata))
}

/// The error policy of the workers. A failure that retrying cannot fix — or the last delivery of one that it
/// could — is recorded on the device (`KeyVaultSyncFailed` with the reason) and raised as a critical alert before
/// the invocation fails, so the dead-lettered message is never a silent loss. Earlier retryable failures just
/// fail the invocation: Service Bus redelivers.
pub(crate) async fn settle(
    deps: &Deps,
    device: Option<&ResourceId>,
    metadata: &crate::triggers::ServiceBusMetadata,
    result: Result<InvocationResponse, FunctionError>,
) -> HandlerResult {
    let err = match result {
        Ok(response) => return Ok(response),
        Err(err) => err,
    };
    let last_attempt = metadata.delivery_count >= MAX_DELIVERY_COUNT;
    if let Some(device) = device.filter(|_| !err.retryable() || last_attempt) {
        let reason = err.to_string();
        if let Err(mark) = mark_failed(deps, device, &reason).await {
            tracing::error!(device = %device, "could not record the failure on the device: {mark}");
        }
        let alert = Alert::raise(
            &format!("{}|{}", metadata.message_id, device),
            Severity::Critical,
            format!("provisioning of {device} failed: {reason}"),
            "the device is marked KeyVaultSyncFailed; the message will be dead-lettered; fix the cause and request the activation key again",
        )
        .about(Some(&device.to_string()), None);
        deps.alert(&alert).await;
    }
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn definitions_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../function-definitions")
    }

    #[test]
    fn names_are_unique() {
        let names: BTreeSet<_> = FUNCTIONS.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), FUNCTIONS.len());
    }

    #[test]
    fn committed_function_json_files_match_the_table() {
        for function in FUNCTIONS {
            let path = definitions_dir().join(function.name).join("function.json");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask functions`", path.display()));
            let committed: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                committed,
                function.function_json(),
                "{} is stale; run `cargo xtask functions` and commit the result",
                path.display()
            );
        }
    }

    #[test]
    fn no_definition_folder_lacks_a_function() {
        let known: BTreeSet<_> = FUNCTIONS.iter().map(|f| f.name.to_string()).collect();
        for entry in std::fs::read_dir(definitions_dir()).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(known.contains(&name), "function-definitions/{name} has no entry in the function table");
        }
    }

    #[test]
    fn host_json_points_at_the_handler_binary() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../host.json");
        let host: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(host["version"], "2.0");
        assert_eq!(host["customHandler"]["description"]["defaultExecutablePath"], env!("CARGO_PKG_NAME"));
        assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], false);
        assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");
        assert!(host["extensions"]["serviceBus"]["maxConcurrentSessions"].as_u64().unwrap() > 0);
    }
}
