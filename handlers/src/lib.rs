//! edgevault: an Azure Functions custom handler that gives every Azure Stack Edge resource its own Key Vault.
//!
//! Map of the crate:
//! - [`config`]: the typed configuration `main` reads once from the environment.
//! - [`server`]: the warp server the Functions host talks to (`POST /<FunctionName>`), with graceful shutdown.
//! - [`protocol`]: the custom-handler request/response envelope.
//! - [`triggers`]: typed trigger payloads (HTTP, timer, Service Bus, Event Grid in both schemas) and the HTTP output.
//! - [`functions`]: the function table and one module per function.
//! - [`fleet_page`]: the fleet view as one self-contained HTML page (maud, no script, nothing loaded from elsewhere).
//! - [`error`]: the handler error, with the status the host sees and whether a retry can help.
//! - [`lifecycle`]: the reconcilers behind the functions (provision, recovery, sweep, status).
//! - [`resource_id`]: typed ARM resource ids.
//! - [`vault_name`]: Key Vault naming rules and the default vault name of a device.
//! - [`azure`]: the Azure clients (ARM, Key Vault secrets, Service Bus) on one `azure_core` pipeline.
//! - [`deps`]: the settings and clients every handler shares.
//! - [`messages`]: the typed commands on the Service Bus queues.
//! - [`alerts`]: alerts as structured log events and messages on the `alerts` queue.
//! - [`activation_key`]: the CIK and the activation key sealed with it (AES-256-GCM).
//! - [`authorization`]: who calls the API (App Service Authentication's caller) and whether ARM says they may act
//!   on a device (`require_permission`).
//! - [`telemetry`]: tracing setup.

pub mod activation_key;
pub mod alerts;
pub mod authorization;
pub mod azure;
pub mod config;
pub mod deps;
pub mod error;
pub mod fleet_page;
pub mod functions;
pub mod lifecycle;
pub mod messages;
pub mod protocol;
pub mod resource_id;
pub mod server;
pub mod telemetry;
pub mod triggers;
pub mod vault_name;
