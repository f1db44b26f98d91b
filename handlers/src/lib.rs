//! edgevault: an Azure Functions custom handler that gives every Azure Stack Edge resource its own Key Vault.
//!
//! Map of the crate:
//! - [`config`]: the typed configuration `main` reads once from the environment.
//! - [`server`]: the warp server the Functions host talks to (`POST /<FunctionName>`), with graceful shutdown.
//! - [`protocol`]: the custom-handler request/response envelope.
//! - [`triggers`]: typed trigger payloads (HTTP, timer, Service Bus, Event Grid in both schemas) and the HTTP output.
//! - [`functions`]: the function table and one module per function.
//! - [`error`]: the handler error, with the status the host sees and whether a retry can help.
//! - [`telemetry`]: tracing setup.

pub mod config;
pub mod error;
pub mod functions;
pub mod protocol;
pub mod server;
pub mod telemetry;
pub mod triggers;
