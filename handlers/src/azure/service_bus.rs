//! A thin Service Bus queue sender over the documented REST protocol (`POST https://<ns>/<queue>/messages`), on the
//! same `azure_core` pipeline as everything else; no GA Rust crate exists for Service Bus.
//!
//! Broker properties travel in the `BrokerProperties` header (single send) or per message (batch send with
//! `application/vnd.microsoft.servicebus.json`). Duplicate detection on the queue works on `MessageId`, and
//! `SessionId` serialises one device's work.

use azure_core::http::{Context, Method, Pipeline, Request, Url};

use std::sync::Arc;

use azure_core::credentials::TokenCredential;

use super::{AzureError, HttpStack, SERVICE_BUS_SCOPE, pipeline};
use std::collections::BTreeMap;

use serde::Serialize;

use super::models::{BrokerProperties, OutgoingMessage};
use super::traits::Queue;

#[derive(Debug, Clone)]
pub struct QueueSender {
    namespace: Url,
    pipeline: Pipeline,
}

impl QueueSender {
    /// `namespace` is the fully qualified namespace, e.g. `edgevault.servicebus.windows.net`. Requests carry tokens
    /// for Service Bus from `credential`, over the shared `stack`.
    pub fn new(namespace: &str, credential: Arc<dyn TokenCredential>, stack: &HttpStack) -> Result<Self, AzureError> {
        let pipeline = pipeline(credential, SERVICE_BUS_SCOPE, stack);
        let namespace = Url::parse(&format!("https://{}/", namespace.trim_end_matches('/'))).map_err(|e| {
            AzureError::new("configure Service Bus", None, None, format!("invalid namespace `{namespace}`: {e}"))
        })?;
        Ok(QueueSender { namespace, pipeline })
    }
}

#[async_trait::async_trait]
impl Queue for QueueSender {
    async fn send(&self, queue: &str, message: &OutgoingMessage) -> Result<(), AzureError> {
        let mut request = Request::new(self.messages_url(queue)?, Method::Post);
        request.insert_header("content-type", "application/json");
        request.insert_header("brokerproperties", serde_json::to_string(&message.broker).expect("serializable"));
        for (name, value) in &message.properties {
            // Custom properties are headers whose values are JSON literals; strings are quoted.
            request.insert_header(name.to_ascii_lowercase(), serde_json::to_string(value).expect("serializable"));
        }
        request.set_body(message.body.clone());
        self.execute("send message", request).await
    }

    /// Sends several messages in one request (the broker takes all or none).
    async fn send_batch(&self, queue: &str, messages: &[OutgoingMessage]) -> Result<(), AzureError> {
        if messages.is_empty() {
            return Ok(());
        }
        #[derive(Serialize)]
        struct Entry<'a> {
            #[serde(rename = "Body")]
            body: &'a str,
            #[serde(rename = "BrokerProperties")]
            broker: &'a BrokerProperties,
            #[serde(rename = "UserProperties")]
            properties: &'a BTreeMap<String, String>,
        }
        let entries: Vec<Entry> =
            messages.iter().map(|m| Entry { body: &m.body, broker: &m.broker, properties: &m.properties }).collect();
        let mut request = Request::new(self.messages_url(queue)?, Method::Post);
        request.insert_header("content-type", "application/vnd.microsoft.servicebus.json");
        request.set_body(serde_json::to_vec(&entries).expect("serializable"));
        self.execute("send message batch", request).await
    }
}

impl QueueSender {
    fn messages_url(&self, queue: &str) -> Result<Url, AzureError> {
        if queue.is_empty() || !queue.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(AzureError::new("send message", None, None, format!("invalid queue name `{queue}`")));
        }
        self.namespace
            .join(&format!("{queue}/messages"))
            .map_err(|e| AzureError::new("send message", None, None, e.to_string()))
    }

    async fn execute(&self, operation: &'static str, mut request: Request) -> Result<(), AzureError> {
        self.pipeline
            .send(&Context::new(), &mut request, None)
            .await
            .map_err(|e| AzureError::from_core(operation, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_properties_use_the_rest_names_and_skip_empty_ones() {
        let props = BrokerProperties { message_id: "m1".into(), session_id: Some("s".into()), ..Default::default() };
        assert_eq!(serde_json::to_value(&props).unwrap(), serde_json::json!({"MessageId": "m1", "SessionId": "s"}));
    }
}
