//! `serviceBusTrigger` and the `serviceBus` output binding, over the Service Bus REST protocol.
//!
//! The host is a Service Bus client with an identity-based connection: the namespace comes from the app setting
//! `<connection>__fullyQualifiedNamespace`, and a bearer token for `https://servicebus.azure.net` from the
//! managed-identity endpoint (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`, App Service form). Requests go to the real
//! hostname; `HTTPS_PROXY`/`SSL_CERT_FILE` from the environment route them to local-azure, as for any Azure client.
//!
//! Map of the module:
//! - `token`: the managed-identity [`TokenSource`] and its cache.
//! - `message`: the protocol's message shapes, [`ReceivedMessage`] (a peek-locked message and its
//!   [`BrokerProperties`]) and [`OutgoingMessage`], and its dates ([`parse_date`]).
//! - `client`: [`ServiceBusClient`], the REST client (send, peek-lock, complete, abandon, renew), deliberately a
//!   plain struct over a base URL so tests and other brokers can use it as is; [`azure_http_client`].
//! - `input`: what the handler gets for a message: the extension 5.x binding data (azure-sdk-for-net
//!   `ServiceBusTriggerBindingStrategy.GetBindingData` / `AddBindingData`) encoded by [`crate::binding_data`], with
//!   the body's JSON fields merged in, and `Data.<binding>` = the body as a string, JSON-encoded once more.
//! - `receiver`: [`Receiver`], the competing peek-lock loops for one function: `maxConcurrentCalls` of them, or
//!   `maxConcurrentSessions × maxConcurrentCallsPerSession` for a session-enabled function (extension 5.x
//!   `ServiceBusOptions.ToProcessorOptions` / `ToSessionProcessorOptions`); complete on a 2xx answer (unless
//!   `autoCompleteMessages` is off), abandon otherwise, renew the lock while the handler works. Dead-lettering after
//!   `MaxDeliveryCount` is the broker's business.
//! - `output`: the output binding, an `Outputs.<name>` value read into messages and sent.

mod client;
mod input;
mod message;
mod output;
mod receiver;
mod token;

pub use client::{ServiceBusClient, azure_http_client};
pub use message::{BrokerProperties, OutgoingMessage, ReceivedMessage, parse_date};
pub use receiver::{RECEIVE_TIMEOUT_SECS, Receiver};
pub use token::{SERVICE_BUS_RESOURCE, TokenSource};

#[derive(Debug, thiserror::Error)]
pub enum ServiceBusError {
    #[error("Service Bus is not configured: {0}")]
    NotConfigured(String),
    #[error("managed identity token request failed: {0}")]
    Token(String),
    #[error("Service Bus request failed: {}", crate::error_chain(.0))]
    Transport(#[from] reqwest::Error),
    #[error("Service Bus answered {status} to {operation}: {body}")]
    Status { operation: &'static str, status: u16, body: String },
    #[error("Service Bus answered with an unreadable BrokerProperties header: {0}")]
    BrokerProperties(String),
}

impl ServiceBusError {
    /// A lock that is gone (expired, or the message settled elsewhere): settling it again cannot succeed.
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, ServiceBusError::Status { status: 404 | 410, .. })
    }
}
