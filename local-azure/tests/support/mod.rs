//! Test support: start the real `local-azure` binary, point the official Azure clients at it,
//! drive ARM through an `azure_core` pipeline, and compare responses with the REST-spec fixtures.
#![allow(dead_code)]

pub mod az;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{
    ClientOptions, Context, ExponentialRetryOptions, Method, Pipeline, PipelineSendOptions, Request, RetryOptions, Url,
};
use serde_json::{Value, json};

/// A running local-azure process (`local-azure-testkit`, the harness edgevault's end-to-end tests use too); killed
/// (SIGKILL) on drop.
pub struct LocalAzure {
    process: local_azure_testkit::Process,
    pub data_dir: PathBuf,
    pub gateway: String,
    pub admin: String,
    pub env: Value,
}

impl LocalAzure {
    /// Starts local-azure on `data_dir` with the given ports (0 = any) and waits for its
    /// `local-azure ready <json>` line.
    pub fn start_on(data_dir: &Path, port: u16, admin_port: u16) -> LocalAzure {
        Self::start_with(data_dir, port, admin_port, &[])
    }

    /// [`LocalAzure::start_on`] with extra `up` arguments (`--app …`).
    pub fn start_with(data_dir: &Path, port: u16, admin_port: u16, extra: &[String]) -> LocalAzure {
        let process = local_azure_testkit::Process::start(local_azure_testkit::Launch {
            binary: Path::new(env!("CARGO_BIN_EXE_local-azure")),
            data_dir,
            port,
            admin_port,
            extra,
            stderr: local_azure_testkit::Stderr::Inherit,
        })
        .expect("starting local-azure");
        LocalAzure {
            data_dir: data_dir.to_path_buf(),
            gateway: process.gateway().to_string(),
            admin: process.admin().to_string(),
            env: process.ready["env"].clone(),
            process,
        }
    }

    pub fn start(data_dir: &Path) -> LocalAzure {
        Self::start_on(data_dir, 0, 0)
    }

    pub fn var(&self, name: &str) -> String {
        self.env[name].as_str().unwrap_or_default().to_string()
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill(mut self) {
        self.process.kill();
    }

    /// Points this process's Azure clients at local-azure. Env vars are process-global: call
    /// once, before any client is built.
    pub fn export_env(&self) {
        for name in ["HTTPS_PROXY", "SSL_CERT_FILE", "NO_PROXY", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"] {
            // SAFETY: called once per test process, guarded by a OnceLock, before clients
            // (and their threads) read the environment.
            unsafe { std::env::set_var(name, self.var(name)) };
        }
    }

    fn admin_client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        let r = Self::admin_client().get(format!("{}{path}", self.admin)).send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Value {
        let r = Self::admin_client().post(format!("{}{path}", self.admin)).json(&body).send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    pub async fn admin_delete(&self, path: &str) {
        Self::admin_client().delete(format!("{}{path}", self.admin)).send().await.unwrap();
    }

    /// A token minted through the admin API (no identity header needed).
    pub async fn token(&self, principal_id: &str, resource: &str) -> String {
        let v = self.admin_post("/admin/tokens", json!({ "principalId": principal_id, "resource": resource })).await;
        v["access_token"].as_str().unwrap().to_string()
    }
}

/// One local-azure per test binary, with the environment exported for the official clients.
pub fn shared() -> &'static LocalAzure {
    static SHARED: OnceLock<LocalAzure> = OnceLock::new();
    SHARED.get_or_init(|| {
        // The directory outlives the process on purpose: statics are never dropped, and the
        // process exits when our stdin pipe closes.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap().keep();
        let la = LocalAzure::start(&dir);
        la.export_env();
        la
    })
}

/// Short retries so a misconfiguration fails in seconds rather than minutes.
pub fn client_options() -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(50),
            max_retries: 2,
            max_total_elapsed: azure_core::time::Duration::seconds(10),
            max_delay: azure_core::time::Duration::seconds(1),
        }),
        ..Default::default()
    }
}

pub fn managed_identity(
    user: Option<azure_identity::UserAssignedId>,
) -> Arc<azure_identity::ManagedIdentityCredential> {
    azure_identity::ManagedIdentityCredential::new(Some(azure_identity::ManagedIdentityCredentialOptions {
        user_assigned_id: user,
        client_options: client_options(),
    }))
    .expect("managed identity credential")
}

/// ARM over an `azure_core` pipeline with the bearer-token policy, as edgevault's clients do.
pub struct Arm {
    pipeline: Pipeline,
}

pub struct ArmResponse {
    pub status: u16,
    pub headers: azure_core::http::headers::Headers,
    pub body: Value,
}

impl ArmResponse {
    pub fn header(&self, name: &'static str) -> Option<String> {
        self.headers.get_optional_string(&azure_core::http::headers::HeaderName::from_static(name))
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

impl Arm {
    pub fn new(credential: Arc<dyn TokenCredential>) -> Arm {
        let auth = Arc::new(BearerTokenAuthorizationPolicy::new(credential, ["https://management.azure.com/.default"]));
        Arm {
            pipeline: Pipeline::new(
                Some("local-azure-tests"),
                Some("0.1.0"),
                client_options(),
                Vec::new(),
                vec![auth],
                None,
            ),
        }
    }

    /// Sends a request to `https://management.azure.com{path}` (api-version added when absent).
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> ArmResponse {
        let mut url = if path.starts_with("https://") {
            Url::parse(path).unwrap()
        } else {
            Url::parse(&format!("https://management.azure.com{path}")).unwrap()
        };
        if !url.query_pairs().any(|(k, _)| k == "api-version") {
            url.query_pairs_mut().append_pair("api-version", "2024-11-01");
        }
        let mut req = Request::new(url, method);
        req.insert_header("accept", "application/json");
        if let Some(b) = body {
            req.insert_header("content-type", "application/json");
            req.set_body(serde_json::to_vec(b).unwrap());
        }
        let rsp = self
            .pipeline
            .send(&Context::new(), &mut req, Some(PipelineSendOptions { skip_checks: true, ..Default::default() }))
            .await
            .expect("ARM request");
        let (status, headers, body) = rsp.deconstruct();
        let text = body.into_string().unwrap_or_default();
        ArmResponse { status: u16::from(status), headers, body: serde_json::from_str(&text).unwrap_or(Value::Null) }
    }
}

pub fn fixture(relative: &str) -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/azure-rest-api-specs/specification").join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Asserts `actual` has every field of `expected`, recursively, with the same JSON type (values
/// may differ). Arrays compare their first element's shape; `ignore` lists JSON pointers that
/// local-azure deliberately leaves out.
pub fn assert_shape(expected: &Value, actual: &Value, ignore: &[&str]) {
    let mut problems = Vec::new();
    shape(expected, actual, "", ignore, &mut problems);
    assert!(
        problems.is_empty(),
        "response does not have the fixture's shape:\n{}\nactual: {actual:#}",
        problems.join("\n")
    );
}

fn shape(expected: &Value, actual: &Value, at: &str, ignore: &[&str], problems: &mut Vec<String>) {
    if ignore.contains(&at) {
        return;
    }
    match (expected, actual) {
        (Value::Null, _) => {}
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let path = format!("{at}/{k}");
                if ignore.contains(&path.as_str()) {
                    continue;
                }
                match a.get(k) {
                    Some(av) => shape(ev, av, &path, ignore, problems),
                    None => problems.push(format!("missing {path}")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let (Some(e0), Some(a0)) = (e.first(), a.first()) {
                shape(e0, a0, &format!("{at}/0"), ignore, problems);
            }
        }
        (Value::String(_), Value::String(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::Bool(_), Value::Bool(_)) => {}
        (e, a) => problems.push(format!("{at}: expected {e} (its type), got {a}")),
    }
}

/// Stable unique names for resources within one test process.
pub fn unique(prefix: &str) -> String {
    let id = uuid_like();
    let mut name = format!("{prefix}{id}");
    name.truncate(24);
    name
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:x}{n}", t % 0xfffff)
}

pub fn rg_path(la: &LocalAzure) -> String {
    format!("/subscriptions/{}/resourceGroups/{}", la.var("AZURE_SUBSCRIPTION_ID"), la.var("AZURE_RESOURCE_GROUP"))
}

/// A vault body granting `principals` the given secret permissions.
pub fn vault_body(la: &LocalAzure, principals: &[(&str, &[&str])], purge_protection: bool) -> Value {
    let tenant = la.var("AZURE_TENANT_ID");
    let policies: Vec<Value> = principals
        .iter()
        .map(|(oid, perms)| json!({ "tenantId": tenant, "objectId": oid, "permissions": { "secrets": perms } }))
        .collect();
    let mut props = json!({
        "tenantId": tenant,
        "sku": { "family": "A", "name": "standard" },
        "accessPolicies": policies,
        "softDeleteRetentionInDays": 90,
    });
    if purge_protection {
        props["enablePurgeProtection"] = json!(true);
    }
    json!({ "location": la.var("AZURE_LOCATION"), "properties": props })
}

pub const ALL_SECRET_PERMS: &[&str] = &["get", "list", "set", "delete", "recover", "purge"];

pub fn timeout() -> Duration {
    Duration::from_secs(60)
}

/// A raw Service Bus REST client over the proxy (reqwest reads `HTTPS_PROXY` and trusts `SSL_CERT_FILE`), with a
/// token from the managed-identity endpoint.
pub struct Sb {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

/// A received message: status, `BrokerProperties`, all headers and the body.
#[derive(Debug, Clone)]
pub struct Received {
    pub status: u16,
    pub broker: Value,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Received {
    pub fn lock_url(&self, base: &str, queue: &str) -> String {
        format!("{base}/{queue}/messages/{}/{}", self.broker["MessageId"].as_str().unwrap(), self.lock())
    }

    pub fn lock(&self) -> &str {
        self.broker["LockToken"].as_str().unwrap()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
}

/// A managed-identity token for `resource`, from the identity endpoint as an app would get it.
/// Sets a secret to a plain value with the official client, as most tests need.
pub async fn set_value(
    client: &azure_security_keyvault_secrets::SecretClient,
    name: &str,
    value: &str,
) -> azure_core::Result<azure_core::http::Response<azure_security_keyvault_secrets::models::Secret>> {
    let parameters = azure_security_keyvault_secrets::models::SetSecretParameters {
        value: Some(value.into()),
        ..Default::default()
    };
    client.set_secret(name, parameters.try_into()?, None).await
}

pub async fn msi_token(la: &LocalAzure, resource: &str) -> String {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}?api-version=2019-08-01&resource={resource}", la.var("IDENTITY_ENDPOINT")))
        .header("X-IDENTITY-HEADER", la.var("IDENTITY_HEADER"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string()
}

impl Sb {
    pub async fn new(la: &LocalAzure) -> Sb {
        Sb {
            http: reqwest::Client::new(),
            base: "https://edgevault.servicebus.windows.net".into(),
            token: msi_token(la, "https://servicebus.azure.net").await,
        }
    }

    /// A queue of the default namespace with these settings (a unique name).
    pub async fn queue(la: &LocalAzure, prefix: &str, settings: Value) -> String {
        let name = unique(prefix);
        let mut body = settings;
        body["name"] = json!(name);
        la.admin_post("/admin/servicebus/queues", body).await;
        name
    }

    pub async fn send(&self, queue: &str, body: &str, broker: Value, props: &[(&str, &str)]) -> u16 {
        let mut r = self
            .http
            .post(format!("{}/{queue}/messages", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("BrokerProperties", broker.to_string())
            .body(body.to_string());
        for (k, v) in props {
            r = r.header(*k, *v);
        }
        r.send().await.unwrap().status().as_u16()
    }

    pub async fn send_batch(&self, queue: &str, items: Value) -> u16 {
        self.http
            .post(format!("{}/{queue}/messages", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/vnd.microsoft.servicebus.json")
            .body(items.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn receive(&self, method: reqwest::Method, path: &str, timeout: u64) -> Option<Received> {
        let r = self
            .http
            .request(method, format!("{}/{path}/messages/head?timeout={timeout}", self.base))
            .bearer_auth(&self.token)
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 204 {
            return None;
        }
        let headers = r.headers().clone();
        let body = r.text().await.unwrap();
        assert!(status == 201 || status == 200, "receive {path}: {status} {body}");
        let broker = headers.get("BrokerProperties").map(|v| serde_json::from_str(v.to_str().unwrap()).unwrap());
        Some(Received { status, broker: broker.unwrap_or(Value::Null), headers, body })
    }

    /// Peek-lock from `path` (`queue` or `queue/$DeadLetterQueue`).
    pub async fn peek_lock(&self, path: &str, timeout: u64) -> Option<Received> {
        self.receive(reqwest::Method::POST, path, timeout).await
    }

    pub async fn receive_and_delete(&self, path: &str, timeout: u64) -> Option<Received> {
        self.receive(reqwest::Method::DELETE, path, timeout).await
    }

    /// DELETE (complete), PUT (abandon) or POST (renew) on the message's lock.
    pub async fn settle(&self, method: reqwest::Method, path: &str, m: &Received) -> reqwest::Response {
        self.http
            .request(method, m.lock_url(&self.base, path))
            .bearer_auth(&self.token)
            .header("content-length", "0")
            .send()
            .await
            .unwrap()
    }

    pub async fn complete(&self, path: &str, m: &Received) -> u16 {
        self.settle(reqwest::Method::DELETE, path, m).await.status().as_u16()
    }

    pub async fn abandon(&self, path: &str, m: &Received) -> u16 {
        self.settle(reqwest::Method::PUT, path, m).await.status().as_u16()
    }
}

/// A notification a [`Webhook`] received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: http::HeaderMap,
    pub body: Value,
}

/// A small webhook server inside the test: answers Event Grid's handshakes (or refuses them), fails the first
/// `fail_first` notifications with `500`, holds the answer to the first `hold_first` until [`Webhook::release`],
/// and hands every notification to [`Webhook::next`] as it arrives.
pub struct Webhook {
    pub url: String,
    rx: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Delivery>>,
    pub handshakes: Arc<std::sync::atomic::AtomicU32>,
    release: Arc<tokio::sync::Semaphore>,
}

impl Webhook {
    pub async fn start(validate: bool, fail_first: u32) -> Webhook {
        Self::start_holding(validate, fail_first, 0).await
    }

    /// Lets every held notification be answered.
    pub fn release(&self) {
        self.release.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    pub async fn start_holding(validate: bool, fail_first: u32, hold_first: u32) -> Webhook {
        use std::sync::atomic::{AtomicU32, Ordering};
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let holds = Arc::new(AtomicU32::new(hold_first));
        let (release2, holds2) = (release.clone(), holds.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/events?code=k", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let failures = Arc::new(AtomicU32::new(fail_first));
        let handshakes = Arc::new(AtomicU32::new(0));
        let hs = handshakes.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (tx, failures, hs) = (tx.clone(), failures.clone(), hs.clone());
                let (release, holds) = (release2.clone(), holds2.clone());
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (tx, failures, hs) = (tx.clone(), failures.clone(), hs.clone());
                    let (release, holds) = (release.clone(), holds.clone());
                    async move {
                        use http_body_util::BodyExt;
                        let (parts, body) = req.into_parts();
                        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let reply = |status: u16, body: String| {
                            let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            r
                        };
                        if parts.method == http::Method::OPTIONS {
                            hs.fetch_add(1, Ordering::SeqCst);
                            let mut r = reply(if validate { 200 } else { 403 }, String::new());
                            if validate {
                                let origin = parts.headers.get("webhook-request-origin").cloned().unwrap();
                                r.headers_mut().insert("WebHook-Allowed-Origin", origin);
                            }
                            return Ok::<_, std::convert::Infallible>(r);
                        }
                        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        if parts.headers.get("aeg-event-type").is_some_and(|v| v == "SubscriptionValidation") {
                            hs.fetch_add(1, Ordering::SeqCst);
                            if !validate {
                                return Ok(reply(400, "no".into()));
                            }
                            let code = body[0]["data"]["validationCode"].clone();
                            return Ok(reply(200, json!({ "validationResponse": code }).to_string()));
                        }
                        let _ = tx.send(Delivery { headers: parts.headers, body });
                        if holds.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                            let _ = release.acquire().await.map(|p| p.forget());
                        }
                        let failing =
                            failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                        Ok(reply(if failing { 500 } else { 200 }, String::new()))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Webhook { url, rx: tokio::sync::Mutex::new(rx), handshakes, release }
    }

    /// The next notification, waiting up to 30 s.
    pub async fn next(&self) -> Delivery {
        tokio::time::timeout(Duration::from_secs(30), self.rx.lock().await.recv())
            .await
            .expect("no notification within 30 s")
            .expect("webhook stopped")
    }

    /// A notification if one already arrived.
    pub async fn try_next(&self) -> Option<Delivery> {
        self.rx.lock().await.try_recv().ok()
    }
}

/// Polls `f` until it returns `Some`, for up to 30 s (for state that changes in the background).
pub async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "condition not reached within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
