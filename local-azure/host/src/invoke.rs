//! One invocation of the custom handler, as the real Functions host makes it.
//!
//! From azure-functions-host (read at 4.1037, `src/WebJobs.Script/Workers/Http/DefaultHttpWorkerService.cs`,
//! `Workers/MessageExtensions/HttpScriptInvocationContextExtensions.cs`, `Workers/Http/HttpWorkerConstants.cs`):
//!
//! - `POST http://127.0.0.1:<port>/<FunctionName>` with `{"Data", "Metadata"}` as an `ObjectContent`, which has no
//!   length: the body goes **chunked**. Headers `X-Azure-Functions-HostVersion`, `X-Azure-Functions-InvocationId`
//!   and `User-Agent: Azure-Functions-Host/<version>`. Core Tools (`func start`) runs the same host, but it reads the
//!   content for its request trace first (`SendInvocationRequestAsync` when `IsCoreTools()`), which buffers it, so
//!   it sends a `Content-Length` instead: [`HostForm::CoreTools`].
//! - `EnsureSuccessStatusCode()` comes before anything is read: an answer outside 2xx fails the invocation and its
//!   `Logs` are never written. A 2xx body is read as `{"Outputs", "Logs", "ReturnValue"}` (names matched
//!   case-insensitively); a body that does not read as that object fails the invocation; an empty or `null` body
//!   completes nothing, so the invocation hangs until `functionTimeout`.
//! - Without a `$return` binding, an object `ReturnValue` is merged into the outputs
//!   (`WorkerFunctionInvoker.HandleOutputDictionary`, `src/WebJobs.Script/Description/Workers/`).
//! - `functionTimeout` fails the invocation and restarts the handler process (`WebScriptHostExceptionHandler`,
//!   `src/WebJobs.Script.WebHost/`); the HTTP client's own timeout is `functionTimeout` + 1 minute and never fires
//!   first.
//!
//! `Metadata` is the trigger's binding data plus `sys`, with the trigger value's JSON fields merged in
//! (`WorkerFunctionInvoker.TransformInput` → `Utility.ApplyBindingData`), encoded by [`crate::binding_data`]. The
//! invoker delivers the output bindings other than `http` once the invocation has succeeded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;
use tracing::Instrument;

use crate::HostEvent;
use crate::app::{App, OutputBinding};
use crate::binding_data::{BindingData, BindingValue};
use crate::clock::{Clock, Zone, json_net};
use crate::handler_process::HandlerStatus;
use crate::http::{Reply, Request};
use crate::logs::LogStore;
use crate::service_bus::{ServiceBusClient, ServiceBusError};

/// How long an invocation waits for a (re)starting handler before it fails.
pub const HANDLER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The host version whose behaviour this crate follows (azure-functions-host `build/common.props`: 4.1037.0; the
/// file version the host reports appends the build number, 0 in a build without one).
pub const HOST_VERSION: &str = "4.1037.0.0";

/// Which host's request form the handler gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HostForm {
    /// The Azure Functions host in Azure: chunked invocation bodies.
    #[default]
    Real,
    /// Core Tools' `func start`: the same requests with the body buffered (`Content-Length`).
    CoreTools,
}

impl std::str::FromStr for HostForm {
    type Err = String;

    fn from_str(text: &str) -> Result<HostForm, String> {
        match text.to_ascii_lowercase().as_str() {
            "real" => Ok(HostForm::Real),
            "core-tools" | "coretools" => Ok(HostForm::CoreTools),
            other => Err(format!("host form `{other}` is not `real` or `core-tools`")),
        }
    }
}

impl std::fmt::Display for HostForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostForm::Real => "real",
            HostForm::CoreTools => "core-tools",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("the custom handler is not running (it did not become ready within {0:?})")]
    HandlerUnavailable(Duration),
    #[error("calling the custom handler failed: {}", crate::error_chain(.0))]
    Transport(#[source] reqwest::Error),
    #[error("the invocation exceeded functionTimeout {0:?}; the host restarts the custom handler")]
    Timeout(Duration),
    #[error("the custom handler answered {status}; the real host reads no Outputs or Logs from such an answer")]
    Failed { status: u16 },
    #[error(
        "the custom handler answered {status} with a body that is not {{\"Outputs\", \"Logs\", \"ReturnValue\"}}: {message}"
    )]
    BadResponse { status: u16, message: String },
    /// The Service Bus error is part of the message (not a `source`), so a log line with `{err}` says why.
    #[error("output binding `{binding}`: {error}")]
    Output { binding: String, error: ServiceBusError },
}

/// What a trigger hands the invoker.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// `Data`: the trigger's value under its binding name.
    pub data: Map<String, Value>,
    /// The trigger's binding data; the invoker adds `sys` and encodes it into `Metadata`.
    pub binding_data: BindingData,
    /// A trigger value that is JSON text: the host merges its top-level fields into the binding data.
    pub trigger_text: Option<String>,
}

impl Invocation {
    /// `Data.<binding>` = `value`, with no binding data of its own.
    pub fn of(binding: &str, value: Value) -> Invocation {
        Invocation { data: Map::from_iter([(binding.to_string(), value)]), ..Invocation::default() }
    }
}

/// What the handler answered (a 2xx answer: anything else is an [`InvokeError`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub invocation_id: String,
    pub status: u16,
    pub outputs: Map<String, Value>,
    pub return_value: Value,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The value of an output binding; `$return` is the handler's `ReturnValue`.
    pub fn output(&self, name: &str) -> Option<&Value> {
        if name == "$return" { Some(&self.return_value) } else { self.outputs.get(name) }
    }
}

/// The body the host POSTs for an invocation: `{"Data", "Metadata"}`. `Metadata` is the binding data, then `sys`
/// (the WebJobs SDK adds it after the trigger's data; `UtcNow` is `now`), then the trigger value's JSON fields.
pub fn request_body(function: &str, mut input: Invocation, now: time::OffsetDateTime) -> Value {
    input.binding_data.set(
        "sys",
        BindingValue::Object(json!({
            "MethodName": function,
            "UtcNow": json_net(now, Zone::Utc),
            "RandGuid": uuid::Uuid::new_v4().to_string(),
        })),
    );
    if let Some(text) = &input.trigger_text {
        input.binding_data.apply_json_fields(text);
    }
    json!({"Data": input.data, "Metadata": input.binding_data.to_metadata()})
}

pub struct Invoker {
    app: Arc<App>,
    client: reqwest::Client,
    form: HostForm,
    handler: Arc<HandlerStatus>,
    logs: Arc<LogStore>,
    events: broadcast::Sender<HostEvent>,
    clock: Arc<dyn Clock>,
    /// Service Bus clients for output bindings, by connection name.
    service_bus: BTreeMap<String, Arc<ServiceBusClient>>,
}

impl Invoker {
    pub fn new(
        app: Arc<App>,
        form: HostForm,
        handler: Arc<HandlerStatus>,
        logs: Arc<LogStore>,
        events: broadcast::Sender<HostEvent>,
        clock: Arc<dyn Clock>,
        service_bus: BTreeMap<String, Arc<ServiceBusClient>>,
    ) -> Invoker {
        // The handler is on loopback: never route it through an HTTPS_PROXY set for the Azure clients. Redirects
        // are followed only when requests are not forwarded (`DefaultHttpWorkerService.CreateHttpClient`).
        let redirects = if app.host.enable_forwarding_http_request {
            reqwest::redirect::Policy::none()
        } else {
            reqwest::redirect::Policy::default()
        };
        let client =
            reqwest::Client::builder().no_proxy().redirect(redirects).build().expect("reqwest client for the handler");
        Invoker { app, client, form, handler, logs, events, clock, service_bus }
    }

    pub fn emit(&self, event: HostEvent) {
        // No subscriber is fine: events are for whoever is watching.
        let _ = self.events.send(event);
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn form(&self) -> HostForm {
        self.form
    }

    /// Invokes `function`.
    pub async fn invoke(&self, function: &str, input: Invocation) -> Result<Outcome, InvokeError> {
        let invocation_id = uuid::Uuid::new_v4().to_string();
        let span = tracing::info_span!("invocation", function, invocation_id = %invocation_id);
        let result = self.invoke_inner(function, &invocation_id, input).instrument(span).await;
        let succeeded = matches!(&result, Ok(o) if o.succeeded());
        self.emit(HostEvent::InvocationFinished { function: function.to_string(), invocation_id, succeeded });
        result
    }

    async fn invoke_inner(
        &self,
        function: &str,
        invocation_id: &str,
        input: Invocation,
    ) -> Result<Outcome, InvokeError> {
        let body = request_body(function, input, self.clock.now());
        self.emit(HostEvent::InvocationStarted {
            function: function.to_string(),
            invocation_id: invocation_id.to_string(),
        });
        let port = self.ready_port().await?;
        let timeout = self.app.host.function_timeout;
        let started = tokio::time::Instant::now();
        let body = bytes::Bytes::from(body.to_string());
        let request = self
            .client
            .post(format!("http://127.0.0.1:{port}/{function}"))
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header("X-Azure-Functions-InvocationId", invocation_id)
            .header(reqwest::header::USER_AGENT, format!("Azure-Functions-Host/{HOST_VERSION}"))
            // `JsonMediaTypeFormatter`'s content type.
            .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8")
            .timeout(timeout + Duration::from_secs(60));
        let request = match self.form {
            // A stream has no length, so hyper sends it with `Transfer-Encoding: chunked`, as .NET sends an
            // `ObjectContent`.
            HostForm::Real => request
                .body(reqwest::Body::wrap_stream(futures::stream::once(async move { Ok::<_, std::io::Error>(body) }))),
            HostForm::CoreTools => request.body(body),
        };
        let exchange = async {
            let response = request.send().await.map_err(InvokeError::Transport)?;
            let status = response.status().as_u16();
            let body = response.bytes().await.map_err(InvokeError::Transport)?;
            Ok::<_, InvokeError>((status, body))
        };
        let (status, body) = match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer?,
            Err(_) => return Err(self.timed_out(port, timeout)),
        };
        tracing::info!(status, elapsed_ms = started.elapsed().as_millis() as u64, "invocation answered");
        if !(200..300).contains(&status) {
            tracing::warn!(status, "the invocation failed; its Logs are discarded, as the real host discards them");
            return Err(InvokeError::Failed { status });
        }
        let parsed = if body.iter().all(u8::is_ascii_whitespace) {
            Ok(Value::Null)
        } else {
            serde_json::from_slice::<Value>(&body)
        };
        let answer = match parsed {
            Ok(Value::Object(answer)) => answer,
            Ok(Value::Null) => {
                // `ReadAsAsync` gives no result for an empty or `null` body, and the host never completes the
                // invocation: it waits for functionTimeout, then restarts the handler.
                tracing::warn!(
                    "the custom handler answered {status} with no result; the real host waits here until functionTimeout"
                );
                tokio::time::sleep_until(started + timeout).await;
                return Err(self.timed_out(port, timeout));
            }
            Ok(other) => {
                return Err(InvokeError::BadResponse { status, message: format!("got {}", kind_of(&other)) });
            }
            Err(err) => return Err(InvokeError::BadResponse { status, message: err.to_string() }),
        };
        let field = |answer: &Map<String, Value>, name: &str| {
            answer.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
        };
        if let Some(Value::Array(lines)) = field(&answer, "Logs") {
            for line in lines {
                let text = line.as_str().map(str::to_string).unwrap_or_else(|| line.to_string());
                self.logs.record(function, invocation_id, &text);
            }
        }
        let mut outcome = Outcome {
            invocation_id: invocation_id.to_string(),
            status,
            outputs: match field(&answer, "Outputs") {
                Some(Value::Object(outputs)) => outputs,
                _ => Map::new(),
            },
            return_value: field(&answer, "ReturnValue").unwrap_or(Value::Null),
        };
        let has_return_binding = self.app.function(function).is_some_and(|def| {
            def.outputs.iter().any(|o| matches!(o, OutputBinding::Http { name } | OutputBinding::ServiceBus { name, .. } if name == "$return"))
        });
        if !has_return_binding && let Value::Object(fields) = &outcome.return_value {
            for (name, value) in fields {
                outcome.outputs.insert(name.clone(), value.clone());
            }
        }
        self.deliver_outputs(function, &outcome).await?;
        Ok(outcome)
    }

    /// The invocation overran `functionTimeout`: fail it and have the handler restarted.
    fn timed_out(&self, port: u16, timeout: Duration) -> InvokeError {
        tracing::warn!(?timeout, "a function timeout has occurred; restarting the custom handler");
        self.handler.restart(port, format!("an invocation exceeded functionTimeout {timeout:?}"));
        InvokeError::Timeout(timeout)
    }

    /// `enableForwardingHttpRequest`: passes an HTTP request to the handler as it came (same method, path, query,
    /// headers and body) and its answer back as it is. There is no `Data`/`Metadata` envelope in this mode.
    pub async fn forward(&self, function: &str, request: &Request) -> Result<Reply, InvokeError> {
        let invocation_id = uuid::Uuid::new_v4().to_string();
        let span = tracing::info_span!("invocation", function, invocation_id = %invocation_id, forwarded = true);
        self.emit(HostEvent::InvocationStarted {
            function: function.to_string(),
            invocation_id: invocation_id.clone(),
        });
        let result = async {
            let port = self.ready_port().await?;
            let timeout = self.app.host.function_timeout;
            let url = match &request.raw_query {
                Some(q) => format!("http://127.0.0.1:{port}{}?{q}", request.raw_path),
                None => format!("http://127.0.0.1:{port}{}", request.raw_path),
            };
            let method = reqwest::Method::from_bytes(request.method.as_bytes())
                .map_err(|e| InvokeError::BadResponse { status: 0, message: e.to_string() })?;
            let mut builder = self.client.request(method, url).timeout(timeout + Duration::from_secs(60));
            let mut user_agent = None;
            for (name, value) in &request.headers {
                // Hop-by-hop and framing headers belong to each connection, not to the request.
                match name.as_str() {
                    "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade" => {}
                    "user-agent" => user_agent = Some(value.clone()),
                    _ => builder = builder.header(name, value),
                }
            }
            // `AddHeaders`: the host's product is added to the caller's User-Agent.
            let host_agent = format!("Azure-Functions-Host/{HOST_VERSION}");
            let user_agent = user_agent.map_or(host_agent.clone(), |agent| format!("{agent} {host_agent}"));
            let exchange = async {
                let response = builder
                    .header("X-Azure-Functions-HostVersion", HOST_VERSION)
                    .header("X-Azure-Functions-InvocationId", &invocation_id)
                    .header(reqwest::header::USER_AGENT, user_agent)
                    .body(request.body.clone())
                    .send()
                    .await
                    .map_err(InvokeError::Transport)?;
                let status = response.status().as_u16();
                let headers = response
                    .headers()
                    .iter()
                    .filter(|(k, _)| {
                        !matches!(k.as_str(), "connection" | "transfer-encoding" | "content-length" | "date")
                    })
                    .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                    .collect();
                let body = response.bytes().await.map_err(InvokeError::Transport)?;
                Ok::<_, InvokeError>(Reply { status, headers, body })
            };
            let reply = match tokio::time::timeout(timeout, exchange).await {
                Ok(reply) => reply?,
                Err(_) => return Err(self.timed_out(port, timeout)),
            };
            tracing::info!(status = reply.status, "forwarded request answered");
            Ok(reply)
        }
        .instrument(span)
        .await;
        let succeeded = matches!(&result, Ok(r) if (200..300).contains(&r.status));
        self.emit(HostEvent::InvocationFinished { function: function.to_string(), invocation_id, succeeded });
        result
    }

    async fn ready_port(&self) -> Result<u16, InvokeError> {
        let mut rx = self.handler.port.clone();
        match tokio::time::timeout(HANDLER_READY_TIMEOUT, rx.wait_for(Option::is_some)).await {
            Ok(Ok(port)) => Ok(port.expect("waited for Some")),
            _ => Err(InvokeError::HandlerUnavailable(HANDLER_READY_TIMEOUT)),
        }
    }

    async fn deliver_outputs(&self, function: &str, outcome: &Outcome) -> Result<(), InvokeError> {
        let Some(def) = self.app.function(function) else { return Ok(()) };
        for output in &def.outputs {
            let OutputBinding::ServiceBus { name, queue, connection } = output else { continue };
            let Some(value) = outcome.output(name).filter(|v| !v.is_null()) else { continue };
            let err = |error| InvokeError::Output { binding: name.clone(), error };
            let client = self.service_bus.get(connection).ok_or_else(|| {
                err(ServiceBusError::NotConfigured(format!(
                    "app setting `{connection}__fullyQualifiedNamespace` is not set"
                )))
            })?;
            client.send_output(queue, value).await.map_err(err)?;
            tracing::info!(binding = %name, queue = %queue, "output binding delivered");
        }
        Ok(())
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
