//! The function table: every function edgevault exposes, its trigger binding and its handler, in one place.
//!
//! `function-definitions/<Name>/function.json` is generated from this table (`cargo xtask functions`), and a test
//! fails when the committed files drift from it, so the host and the handler can never disagree on a name, a queue
//! or a route.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::deps::Deps;
use crate::error::FunctionError;
use crate::messages::{Inbound, Provisioning, ResourceCreated, ResourceDeleted, SweepPage, VaultDeleted};
use crate::protocol::{InvocationRequest, InvocationResponse};

mod activation_key_api;
mod activation_key_requested;
mod arm_events;
mod device_api;
mod fleet_page;
pub mod policy;
mod recovery_sweep;
mod resource_created;
mod resource_deleted;
mod sweep_page;
mod vault_deleted;

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
    ($module:ident :: $function:ident) => {{
        fn boxed(invocation: Invocation, deps: Arc<Deps>) -> HandlerFuture {
            Box::pin($module::$function(invocation, deps))
        }
        boxed as Handler
    }};
}

/// A Service Bus worker's table entry: the trigger on its input type's queue, and a handler that reads the typed
/// command, runs `<module>::run(command, &metadata, &deps)` and applies the workers' error policy.
macro_rules! worker {
    ($name:literal, $module:ident, $input:ty) => {{
        fn boxed(invocation: Invocation, deps: Arc<Deps>) -> HandlerFuture {
            Box::pin(async move {
                let (command, metadata) = policy::worker_input::<$input>(&invocation.request)?;
                let device = command.device().cloned();
                let result = $module::run(command, &metadata, &deps).await;
                policy::settle(&deps, device.as_ref(), &metadata, result).await
            })
        }
        FunctionDef {
            name: $name,
            trigger: Trigger::ServiceBus {
                queue: <$input as Inbound>::QUEUE,
                connection: SERVICE_BUS_CONNECTION,
                sessions: true,
            },
            handler: boxed as Handler,
        }
    }};
}

pub static FUNCTIONS: &[FunctionDef] = &[
    FunctionDef { name: "ArmEvents", trigger: Trigger::EventGrid, handler: handler!(arm_events) },
    FunctionDef {
        name: "ActivationKeyApi",
        trigger: Trigger::Http {
            route: "activation-keys/{operationId?}",
            methods: &["get", "post"],
            // App Service Authentication admits callers, ARM decides per device (`authorization`); a shared key
            // would say nothing about who asks. See docs/AUTHORIZATION.md.
            auth_level: "anonymous",
        },
        handler: handler!(activation_key_api),
    },
    FunctionDef {
        name: "DeviceApi",
        trigger: Trigger::Http {
            route: "devices/{subscriptionId}/{resourceGroup}/{deviceName}/{action}",
            methods: &["post"],
            auth_level: "anonymous",
        },
        handler: handler!(device_api),
    },
    // Behind App Service Authentication too: each caller sees the devices it may read (`lifecycle::fleet::visible`).
    FunctionDef {
        name: "FleetPage",
        trigger: Trigger::Http { route: "fleet", methods: &["get"], auth_level: "anonymous" },
        handler: handler!(fleet_page::html),
    },
    FunctionDef {
        name: "FleetData",
        trigger: Trigger::Http { route: "fleet.json", methods: &["get"], auth_level: "anonymous" },
        handler: handler!(fleet_page::json),
    },
    FunctionDef {
        name: "RecoverySweep",
        trigger: Trigger::Timer { schedule: "%RecoverySweepSchedule%" },
        handler: handler!(recovery_sweep),
    },
    worker!("ResourceCreated", resource_created, ResourceCreated),
    worker!("ActivationKeyRequested", activation_key_requested, Provisioning),
    worker!("VaultDeleted", vault_deleted, VaultDeleted),
    worker!("ResourceDeleted", resource_deleted, ResourceDeleted),
    worker!("SweepPage", sweep_page, SweepPage),
];

/// Looks a function up by the name the host uses in the request path (case-sensitive, as the host sends it).
pub fn find(name: &str) -> Option<&'static FunctionDef> {
    FUNCTIONS.iter().find(|f| f.name == name)
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
