//! Azure clients, one HTTP stack: the `azure_core` 1.x pipeline (retry policy honouring `Retry-After`, bearer tokens
//! from `azure_identity::ManagedIdentityCredential`) under everything.
//!
//! - [`arm`]: a thin typed Resource Manager client (Stack Edge devices and extended information, vaults, deleted
//!   vaults, locks), because no GA Rust crate covers these providers.
//! - [`secrets`]: CIK secrets through the official `azure_security_keyvault_secrets` crate.
//! - [`service_bus`]: a thin queue sender over the Service Bus REST protocol (no GA Rust crate either).
//! - [`on_behalf_of`]: a caller's token exchanged for an ARM token on the caller's behalf (OAuth 2.0 on-behalf-of,
//!   no GA Rust credential offers it), and ARM's permissions API asked as the caller.
//! - [`records`]: edgevault's own records (sweep progress, recovery history) in Table Storage, a thin REST client.
//! - [`models`]: the ARM payloads edgevault reads and writes, in the REST API's own shapes.
//!
//! Endpoints default to the public cloud; a local run differs only by environment (`HTTPS_PROXY`,
//! `SSL_CERT_FILE`, `IDENTITY_ENDPOINT`, …), never by code path.

pub mod arm;
#[cfg(test)]
pub mod fake;
pub mod models;
pub mod on_behalf_of;
pub mod pacing;
pub mod records;
pub mod retry;
pub mod secrets;
pub mod service_bus;
pub mod traits;

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{ClientOptions, Pipeline, RetryOptions, Transport};

/// The public-cloud Resource Manager endpoint.
pub const ARM_ENDPOINT: &str = "https://management.azure.com";
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
pub const SERVICE_BUS_SCOPE: &str = "https://servicebus.azure.net/.default";
/// Microsoft Entra ID's public-cloud authority (azure_identity's default too, `AZURE_AUTHORITY_HOST` overrides it).
pub const AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// How hard the pipeline retries. Production uses azure_core's defaults; tests shorten them (a connection that can
/// never succeed otherwise takes minutes to give up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    pub max_retries: u32,
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings { max_retries: 6, initial_delay_ms: 800, max_delay_ms: 60_000 }
    }
}

/// The one HTTP stack every client shares: a single HTTP client (one connection pool, the system's root
/// certificates parsed once — by far the largest cost of starting the handler), one retry policy, and one pacer, so
/// what ARM says about its throttling to one client holds back all of them.
#[derive(Debug, Clone)]
pub struct HttpStack {
    pub retry: RetrySettings,
    transport: Transport,
    pacer: Arc<pacing::Pacer>,
}

impl HttpStack {
    /// The stack, its HTTP client still being built on a thread of its own ([`DeferredClient`]), so the handler
    /// listens and answers without waiting for the root certificates.
    pub fn new(retry: RetrySettings) -> Self {
        let client = DeferredClient::building();
        HttpStack { retry, transport: Transport::new(client), pacer: pacing::Pacer::new() }
    }

    /// Client options for any `azure_core`-based client: the shared transport, the retry policy (the service's
    /// `Retry-After`, else exponential backoff) and, under it for every try, the pacer.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            retry: RetryOptions::custom(Arc::new(retry::ServerPacedRetry::new(self.retry))),
            per_try_policies: vec![self.pacer.clone()],
            transport: Some(self.transport.clone()),
            ..Default::default()
        }
    }
}

/// How long an idle connection is kept. Every vault is its own host, so a sweep opens one connection per vault and
/// uses it for two requests back to back (the challenge and the read), then never again: with reqwest's default
/// (90 s) a sweep at 100 vaults/s kept ~9,000 idle TLS sessions, ~40 KiB each (300 MiB at 10,000 devices,
/// measured), and with 3 s a sweep of ten subscriptions still held ~1,300 (docs/BENCHMARKS.md §4). ARM and the
/// identity endpoint are busy while there is work, so their connections stay in use; an idle app reconnects.
const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// The shared HTTP client, built on a thread of its own from the moment the stack is made: building it parses the
/// system's root certificates (~4 ms, most of the handler's start, `docs/BENCHMARKS.md` §1), which no invocation
/// answered without Azure needs. The first request waits for it if it is not ready yet (it is, well before the
/// first token is fetched, in every run measured).
#[derive(Debug)]
struct DeferredClient {
    client: std::sync::OnceLock<Arc<dyn azure_core::http::HttpClient>>,
}

impl DeferredClient {
    fn building() -> Arc<Self> {
        let deferred = Arc::new(DeferredClient { client: std::sync::OnceLock::new() });
        let warming = deferred.clone();
        // No thread (a test's constrained sandbox, say): the first request builds it.
        let _ = std::thread::Builder::new().name("http-client".into()).spawn(move || {
            warming.get();
        });
        deferred
    }

    fn get(&self) -> &Arc<dyn azure_core::http::HttpClient> {
        self.client.get_or_init(http_client)
    }
}

#[async_trait::async_trait]
impl azure_core::http::HttpClient for DeferredClient {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
        // Once, and only if the first request comes within the few milliseconds the build takes: this waits for
        // the thread building it (or builds it here), a one-off block of the runtime's thread, not an await.
        let client = self.get().clone();
        client.execute_request(request).await
    }
}

/// The SDK's default client (its timeouts, no redirects) with a short idle timeout ([`POOL_IDLE`]); the SDK's own
/// if that cannot be built.
fn http_client() -> Arc<dyn azure_core::http::HttpClient> {
    match reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(20))
        .read_timeout(std::time::Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(POOL_IDLE)
        .build()
    {
        Ok(client) => Arc::new(client),
        Err(err) => {
            tracing::warn!("building the HTTP client: {err}; using the SDK's default");
            azure_core::http::new_http_client(None)
        }
    }
}

/// A pipeline with the stack's retry and pacing but no credential: for requests that carry their own
/// `Authorization` (a caller's token) or none (the token endpoint).
pub fn unauthenticated_pipeline(stack: &HttpStack) -> Pipeline {
    Pipeline::new(
        Some(env!("CARGO_PKG_NAME")),
        Some(env!("CARGO_PKG_VERSION")),
        stack.client_options(),
        Vec::new(),
        Vec::new(),
        None,
    )
}

/// A pipeline that authenticates every request with a token for `scope`.
pub fn pipeline(credential: Arc<dyn TokenCredential>, scope: &str, stack: &HttpStack) -> Pipeline {
    let auth = Arc::new(BearerTokenAuthorizationPolicy::new(credential, vec![scope.to_string()]));
    Pipeline::new(
        Some(env!("CARGO_PKG_NAME")),
        Some(env!("CARGO_PKG_VERSION")),
        stack.client_options(),
        Vec::new(),
        vec![auth],
        None,
    )
}

/// Every page of an ARM list, following `nextLink`: a page is fetched only when the previous one has been taken
/// (so a fleet is never held in memory), and a failed page ends the stream with its error. The one pager for every
/// list edgevault reads.
pub fn pages<'a, T, F, Fut>(fetch: F) -> impl futures::Stream<Item = Result<Vec<T>, AzureError>> + 'a
where
    T: 'a,
    F: Fn(Option<String>) -> Fut + 'a,
    Fut: std::future::Future<Output = Result<models::Page<T>, AzureError>> + 'a,
{
    // The state is the next page to fetch: `Some(None)` the first, `Some(Some(link))` a later one, `None` done.
    futures::stream::try_unfold(Some(None::<String>), move |state| {
        let call = state.map(&fetch);
        async move {
            let Some(call) = call else { return Ok(None) };
            let page = call.await?;
            Ok(Some((page.value, page.next_link.map(Some))))
        }
    })
}

/// A failed Azure call, keeping what callers decide on: the HTTP status, the service's error code, and whether
/// trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed{}: {message}", status.map(|s| format!(" with {s}")).unwrap_or_default())]
pub struct AzureError {
    pub operation: &'static str,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
}

impl AzureError {
    pub fn new(operation: &'static str, status: Option<u16>, code: Option<String>, message: impl Into<String>) -> Self {
        AzureError { operation, status, code, message: message.into() }
    }

    /// Transport failures, throttling and server errors can pass; a 4xx describes the request and will not.
    pub fn retryable(&self) -> bool {
        match self.status {
            None => true,
            Some(status) => status == 408 || status == 429 || status >= 500,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    /// Converts an `azure_core` error, reading ARM's / Key Vault's `{"error": {"code", "message"}}` body when present.
    pub fn from_core(operation: &'static str, err: azure_core::Error) -> Self {
        use azure_core::error::ErrorKind;
        match err.kind() {
            ErrorKind::HttpResponse { status, error_code, raw_response } => {
                let body = raw_response.as_ref().map(|r| r.body().to_vec()).unwrap_or_default();
                let (code, message) = error_body(&body);
                AzureError {
                    operation,
                    status: Some(u16::from(*status)),
                    code: code.or_else(|| error_code.clone()),
                    message: message.unwrap_or_else(|| err.to_string()),
                }
            }
            _ => AzureError { operation, status: None, code: None, message: err.to_string() },
        }
    }
}

/// `(code, message)` from an Azure error body: ARM's and Key Vault's `{"error": {"code", "message"}}`, or Table
/// Storage's OData form `{"odata.error": {"code", "message": {"lang", "value"}}}`.
pub fn error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let error = &value["error"];
    if error.is_object() {
        return (error["code"].as_str().map(str::to_string), error["message"].as_str().map(str::to_string));
    }
    let odata = &value["odata.error"];
    (odata["code"].as_str().map(str::to_string), odata["message"]["value"].as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_follow_next_links_one_fetch_at_a_time() {
        use futures::StreamExt;
        let fetched = std::cell::RefCell::new(Vec::new());
        let fetch = |next: Option<String>| {
            fetched.borrow_mut().push(next.clone());
            let page = match next.as_deref() {
                None => models::Page { value: vec![1, 2], next_link: Some("two".to_string()) },
                _ => models::Page { value: vec![3], next_link: None },
            };
            async move { Ok::<_, AzureError>(page) }
        };
        let mut listing = Box::pin(pages(fetch));
        assert_eq!(listing.next().await.unwrap().unwrap(), [1, 2]);
        assert_eq!(*fetched.borrow(), [None], "the next page is fetched only when asked for");
        assert_eq!(listing.next().await.unwrap().unwrap(), [3]);
        assert!(listing.next().await.is_none());
        assert_eq!(*fetched.borrow(), [None, Some("two".to_string())]);
        let failing = pages(|_| async { Err::<models::Page<u8>, _>(AzureError::new("list", Some(500), None, "down")) });
        let all: Vec<_> = failing.collect().await;
        assert!(all.len() == 1 && all[0].is_err(), "a failed page is the last item");
    }

    #[test]
    fn retryable_follows_the_status() {
        let err = |status| AzureError::new("op", status, None, "m");
        assert!(err(None).retryable());
        assert!(err(Some(429)).retryable());
        assert!(err(Some(503)).retryable());
        assert!(!err(Some(400)).retryable());
        assert!(!err(Some(409)).retryable());
        assert!(err(Some(404)).is_not_found());
    }

    #[test]
    fn reads_the_arm_error_body() {
        let (code, message) = error_body(br#"{"error":{"code":"ScopeLocked","message":"locked"}}"#);
        assert_eq!((code.as_deref(), message.as_deref()), (Some("ScopeLocked"), Some("locked")));
        assert_eq!(error_body(b"not json"), (None, None));
    }

    #[test]
    fn display_names_operation_and_status() {
        let err = AzureError::new("create vault", Some(409), Some("Conflict".into()), "taken");
        assert_eq!(err.to_string(), "create vault failed with 409: taken");
    }
}
