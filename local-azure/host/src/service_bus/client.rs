//! The Service Bus REST client: send (one message or a batch), peek-lock receive, complete, abandon, renew the lock;
//! and the HTTP client for Azure endpoints, with the proxy and CA that app settings may give.

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use super::{BrokerProperties, OutgoingMessage, ReceivedMessage, ServiceBusError, TokenSource, parse_date};

const BATCH_CONTENT_TYPE: &str = "application/vnd.microsoft.servicebus.json";

/// A Service Bus REST client for one namespace (any base URL).
#[derive(Debug)]
pub struct ServiceBusClient {
    base: String,
    http: reqwest::Client,
    token: TokenSource,
    /// `ServiceBusClient.Identifier`: the namespace and a GUID, one per client.
    identifier: String,
    /// `clientRetryOptions.tryTimeout`: how long one operation other than a receive may take.
    try_timeout: Duration,
}

impl ServiceBusClient {
    /// `base_url` is `https://<namespace>` for Azure; anything else for tests. The HTTP client comes from
    /// [`azure_http_client`].
    pub fn new(base_url: &str, token: TokenSource, http: reqwest::Client) -> ServiceBusClient {
        let base = base_url.trim_end_matches('/').to_string();
        let namespace = base.split_once("://").map_or(base.as_str(), |(_, rest)| rest).to_string();
        ServiceBusClient {
            identifier: format!("{namespace}-{}", uuid::Uuid::new_v4()),
            base,
            http,
            token,
            try_timeout: Duration::from_secs(60),
        }
    }

    /// Sets `clientRetryOptions.tryTimeout`.
    pub fn with_try_timeout(mut self, try_timeout: Duration) -> ServiceBusClient {
        self.try_timeout = try_timeout;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The namespace host name (`<ns>.servicebus.windows.net`), what `FullyQualifiedNamespace` says.
    pub fn namespace(&self) -> &str {
        self.base.split_once("://").map_or(self.base.as_str(), |(_, rest)| rest)
    }

    pub fn identifier(&self) -> &str {
        &self.identifier
    }

    fn url(&self, segments: &[&str]) -> String {
        let mut url = self.base.clone();
        for s in segments {
            url.push('/');
            url.extend(percent_encoding::utf8_percent_encode(s, SEGMENT));
        }
        url
    }

    /// Sends `build()`'s request with a bearer token; a `401` refreshes the token once (the broker's clock may have
    /// expired it before ours did).
    async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        operation: &'static str,
    ) -> Result<reqwest::Response, ServiceBusError> {
        for attempt in 0..2 {
            let mut request = build();
            if operation != "peek-lock" {
                request = request.timeout(self.try_timeout);
            }
            if let Some(token) = self.token.token(&self.http).await? {
                request = request.bearer_auth(token);
            }
            let response = request.send().await?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                self.token.invalidate().await;
                continue;
            }
            if !response.status().is_success() {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                return Err(ServiceBusError::Status { operation, status, body });
            }
            return Ok(response);
        }
        unreachable!("the second attempt always returns")
    }

    /// Peek-lock receive: `POST /<queue>/messages/head?timeout=<s>`; `None` when the queue stayed empty.
    pub async fn peek_lock(&self, queue: &str, timeout_secs: u64) -> Result<Option<ReceivedMessage>, ServiceBusError> {
        let url = format!("{}?timeout={timeout_secs}", self.url(&[queue, "messages", "head"]));
        let response = self
            .send(
                || {
                    self.http
                        .post(&url)
                        .header(reqwest::header::CONTENT_LENGTH, "0")
                        .timeout(Duration::from_secs(timeout_secs + 30))
                },
                "peek-lock",
            )
            .await?;
        if response.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        ReceivedMessage::from_parts(&headers, body).map(Some)
    }

    fn lock_url(&self, queue: &str, broker: &BrokerProperties) -> Result<String, ServiceBusError> {
        let id = broker
            .message_id
            .clone()
            .or_else(|| broker.sequence_number.map(|n| n.to_string()))
            .ok_or_else(|| ServiceBusError::BrokerProperties("no MessageId or SequenceNumber".into()))?;
        let lock = broker
            .lock_token
            .as_deref()
            .ok_or_else(|| ServiceBusError::BrokerProperties("no LockToken: not a peek-locked message".into()))?;
        Ok(self.url(&[queue, "messages", &id, lock]))
    }

    /// `DELETE /<queue>/messages/<id>/<lockToken>`.
    pub async fn complete(&self, queue: &str, broker: &BrokerProperties) -> Result<(), ServiceBusError> {
        let url = self.lock_url(queue, broker)?;
        self.send(|| self.http.delete(&url), "complete").await.map(drop)
    }

    /// `PUT /<queue>/messages/<id>/<lockToken>`.
    pub async fn abandon(&self, queue: &str, broker: &BrokerProperties) -> Result<(), ServiceBusError> {
        let url = self.lock_url(queue, broker)?;
        self.send(|| self.http.put(&url).header(reqwest::header::CONTENT_LENGTH, "0"), "abandon").await.map(drop)
    }

    /// `POST /<queue>/messages/<id>/<lockToken>`; returns how long the renewed lock lasts when the broker says so,
    /// measured on the broker's clock (`LockedUntilUtc` against its `Date`), which need not be ours.
    pub async fn renew_lock(
        &self,
        queue: &str,
        broker: &BrokerProperties,
    ) -> Result<Option<Duration>, ServiceBusError> {
        let url = self.lock_url(queue, broker)?;
        let response =
            self.send(|| self.http.post(&url).header(reqwest::header::CONTENT_LENGTH, "0"), "renew-lock").await?;
        let headers = response.headers();
        let until = headers
            .get("BrokerProperties")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| BrokerProperties::parse(v).ok())
            .and_then(|b| b.locked_until_utc)
            .and_then(|t| parse_date(&t));
        let broker_now = headers.get("Date").and_then(|v| v.to_str().ok()).and_then(parse_date);
        Ok(until
            .map(|until| until - broker_now.unwrap_or_else(OffsetDateTime::now_utc))
            .and_then(|left| (left > time::Duration::ZERO).then(|| left.unsigned_abs())))
    }

    /// `POST /<queue>/messages`: one message.
    pub async fn send_message(&self, queue: &str, message: &OutgoingMessage) -> Result<(), ServiceBusError> {
        let url = self.url(&[queue, "messages"]);
        let broker = message.broker.as_ref().map(Value::to_string);
        self.send(
            || {
                let mut request = self
                    .http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(message.body.clone());
                if let Some(broker) = &broker {
                    request = request.header("BrokerProperties", broker);
                }
                for (name, value) in &message.properties {
                    request = request.header(name, value.to_string());
                }
                request
            },
            "send",
        )
        .await
        .map(drop)
    }

    /// `POST /<queue>/messages` with `application/vnd.microsoft.servicebus.json`: a batch.
    pub async fn send_batch(&self, queue: &str, messages: &[OutgoingMessage]) -> Result<(), ServiceBusError> {
        let url = self.url(&[queue, "messages"]);
        let body = Value::Array(messages.iter().map(OutgoingMessage::batch_entry).collect()).to_string();
        self.send(
            || self.http.post(&url).header(reqwest::header::CONTENT_TYPE, BATCH_CONTENT_TYPE).body(body.clone()),
            "send-batch",
        )
        .await
        .map(drop)
    }
}

/// The HTTP client for Azure endpoints. reqwest already reads `HTTPS_PROXY` / `NO_PROXY` and trusts
/// `SSL_CERT_FILE` from the process environment; the same variables given as *app settings* win, so a process that
/// embeds the host (local-azure itself) can route the host's Service Bus traffic through its own proxy and CA
/// exactly as it does the handler's, without changing its own environment.
pub fn azure_http_client(
    settings: &std::collections::BTreeMap<String, String>,
) -> Result<reqwest::Client, ServiceBusError> {
    let setting =
        |name: &str| settings.get(name).or_else(|| settings.get(&name.to_ascii_lowercase())).filter(|v| !v.is_empty());
    let mut builder = reqwest::Client::builder();
    if let Some(proxy) = setting("HTTPS_PROXY") {
        let no_proxy = setting("NO_PROXY").and_then(|list| reqwest::NoProxy::from_string(list));
        let proxy = reqwest::Proxy::https(proxy.as_str())
            .map_err(|e| ServiceBusError::NotConfigured(format!("app setting HTTPS_PROXY: {e}")))?
            .no_proxy(no_proxy);
        builder = builder.proxy(proxy);
    }
    if let Some(path) = setting("SSL_CERT_FILE") {
        let pem = std::fs::read(path)
            .map_err(|e| ServiceBusError::NotConfigured(format!("app setting SSL_CERT_FILE ({path}): {e}")))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ServiceBusError::NotConfigured(format!("app setting SSL_CERT_FILE ({path}): {e}")))?;
        builder = builder.tls_certs_merge(certs);
    }
    Ok(builder.build()?)
}

/// Path-segment encoding: everything but unreserved characters (a MessageId may hold `/` or `?`).
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_urls_escape_message_ids() {
        let client =
            ServiceBusClient::new("https://ns.servicebus.windows.net/", TokenSource::Anonymous, reqwest::Client::new());
        let broker =
            BrokerProperties { message_id: Some("a/b c".into()), lock_token: Some("t-1".into()), ..Default::default() };
        assert_eq!(
            client.lock_url("q", &broker).unwrap(),
            "https://ns.servicebus.windows.net/q/messages/a%2Fb%20c/t-1"
        );
    }

    #[test]
    fn proxy_and_ca_come_from_app_settings_when_given() {
        let settings = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>()
        };
        assert!(azure_http_client(&settings(&[])).is_ok());
        assert!(
            azure_http_client(&settings(&[
                ("HTTPS_PROXY", "http://127.0.0.1:8443"),
                ("NO_PROXY", "127.0.0.1,localhost")
            ]))
            .is_ok()
        );
        let err = azure_http_client(&settings(&[("SSL_CERT_FILE", "/nonexistent/ca.pem")])).unwrap_err();
        assert!(err.to_string().contains("SSL_CERT_FILE (/nonexistent/ca.pem)"), "{err}");
    }
}
