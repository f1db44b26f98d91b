//! The bearer tokens for Service Bus: the App Service managed-identity endpoint (`IDENTITY_ENDPOINT` +
//! `IDENTITY_HEADER`, `api-version=2019-08-01`), cached until five minutes before they expire.

use serde_json::Value;
use time::OffsetDateTime;

use super::ServiceBusError;

/// The audience of Service Bus data-plane tokens.
pub const SERVICE_BUS_RESOURCE: &str = "https://servicebus.azure.net";

/// Where bearer tokens come from.
pub enum TokenSource {
    /// The App Service managed-identity endpoint; tokens are cached until five minutes before they expire.
    ManagedIdentity {
        endpoint: String,
        header: String,
        client_id: Option<String>,
        cache: tokio::sync::Mutex<Option<(String, OffsetDateTime)>>,
    },
    /// No `Authorization` header (a test broker).
    Anonymous,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::ManagedIdentity { endpoint, client_id, .. } => f
                .debug_struct("ManagedIdentity")
                .field("endpoint", endpoint)
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            TokenSource::Anonymous => f.write_str("Anonymous"),
        }
    }
}

impl TokenSource {
    pub fn managed_identity(endpoint: String, header: String, client_id: Option<String>) -> TokenSource {
        TokenSource::ManagedIdentity { endpoint, header, client_id, cache: tokio::sync::Mutex::new(None) }
    }

    pub(super) async fn token(&self, http: &reqwest::Client) -> Result<Option<String>, ServiceBusError> {
        let TokenSource::ManagedIdentity { endpoint, header, client_id, cache } = self else { return Ok(None) };
        // A tokio mutex: concurrent receivers wait for one fetch instead of stampeding the identity endpoint.
        let mut cached = cache.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && *expires - time::Duration::minutes(5) > OffsetDateTime::now_utc()
        {
            return Ok(Some(token.clone()));
        }
        // The serializer is not `Send`; finish it before the first await.
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("api-version", "2019-08-01").append_pair("resource", SERVICE_BUS_RESOURCE);
            if let Some(id) = client_id {
                query.append_pair("client_id", id);
            }
            query.finish()
        };
        let separator = if endpoint.contains('?') { '&' } else { '?' };
        let response = http
            .get(format!("{endpoint}{separator}{query}"))
            .header("X-IDENTITY-HEADER", header)
            .send()
            .await
            .map_err(|e| ServiceBusError::Token(crate::error_chain(&e)))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| ServiceBusError::Token(e.to_string()))?;
        if !status.is_success() {
            return Err(ServiceBusError::Token(format!("identity endpoint answered {status}: {body}")));
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| ServiceBusError::Token("no access_token in the answer".into()))?
            .to_string();
        let expires_on = match &body["expires_on"] {
            Value::String(s) => s.parse::<i64>().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or_else(|| OffsetDateTime::now_utc() + time::Duration::minutes(10));
        *cached = Some((token.clone(), expires_on));
        Ok(Some(token))
    }

    pub(super) async fn invalidate(&self) {
        if let TokenSource::ManagedIdentity { cache, .. } = self {
            *cache.lock().await = None;
        }
    }
}
