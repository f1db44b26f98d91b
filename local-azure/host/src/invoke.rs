//! One invocation of the custom handler, exactly as the Functions host makes it.
//!
//! `POST http://127.0.0.1:<port>/<FunctionName>` with `{"Data", "Metadata"}` and `X-Azure-Functions-InvocationId`;
//! the answer is `{"Outputs", "Logs", "ReturnValue"}` and any non-2xx status is a failed invocation. The
//! invoker adds the `sys` metadata every trigger carries, writes the handler's `Logs`, and delivers the output
//! bindings other than `http` (which belongs to the HTTP trigger) once the invocation has succeeded — the real host
//! also discards outputs of a failed invocation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use crate::HostEvent;
use crate::app::{App, OutputBinding};
use crate::clock::{Clock, utc_7};
use crate::logs::LogStore;
use crate::server::{Reply, Request};
use crate::service_bus::{ServiceBusClient, ServiceBusError};

/// How long an invocation waits for a (re)starting handler before it fails.
pub const HANDLER_READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("the custom handler is not running (it did not become ready within {0:?})")]
    HandlerUnavailable(Duration),
    #[error("calling the custom handler failed: {}", crate::error_chain(.0))]
    Transport(#[source] reqwest::Error),
    #[error("the custom handler did not answer within the function timeout {0:?}")]
    Timeout(Duration),
    #[error(
        "the custom handler answered {status} with a body that is not {{\"Outputs\", \"Logs\", \"ReturnValue\"}}: {message}"
    )]
    BadResponse { status: u16, message: String },
    /// The Service Bus error is part of the message (not a `source`), so a log line with `{err}` says why.
    #[error("output binding `{binding}`: {error}")]
    Output { binding: String, error: ServiceBusError },
}

/// What the handler answered.
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

pub struct Invoker {
    app: Arc<App>,
    client: reqwest::Client,
    handler_port: watch::Receiver<Option<u16>>,
    logs: Arc<LogStore>,
    events: broadcast::Sender<HostEvent>,
    clock: Arc<dyn Clock>,
    /// Service Bus clients for output bindings, by connection name.
    service_bus: BTreeMap<String, Arc<ServiceBusClient>>,
}

impl Invoker {
    pub fn new(
        app: Arc<App>,
        handler_port: watch::Receiver<Option<u16>>,
        logs: Arc<LogStore>,
        events: broadcast::Sender<HostEvent>,
        clock: Arc<dyn Clock>,
        service_bus: BTreeMap<String, Arc<ServiceBusClient>>,
    ) -> Invoker {
        // The handler is on loopback: never route it through an HTTPS_PROXY set for the Azure clients.
        let client = reqwest::Client::builder().no_proxy().build().expect("reqwest client for the handler");
        Invoker { app, client, handler_port, logs, events, clock, service_bus }
    }

    pub fn emit(&self, event: HostEvent) {
        // No subscriber is fine: events are for whoever is watching.
        let _ = self.events.send(event);
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Invokes `function` with `data` and `metadata` (the `sys` entry is added here).
    pub async fn invoke(
        &self,
        function: &str,
        data: Map<String, Value>,
        metadata: Map<String, Value>,
    ) -> Result<Outcome, InvokeError> {
        let invocation_id = uuid::Uuid::new_v4().to_string();
        let span = tracing::info_span!("invocation", function, invocation_id = %invocation_id);
        let result = self.invoke_inner(function, &invocation_id, data, metadata).instrument(span).await;
        let succeeded = matches!(&result, Ok(o) if o.succeeded());
        self.emit(HostEvent::InvocationFinished { function: function.to_string(), invocation_id, succeeded });
        result
    }

    async fn invoke_inner(
        &self,
        function: &str,
        invocation_id: &str,
        data: Map<String, Value>,
        mut metadata: Map<String, Value>,
    ) -> Result<Outcome, InvokeError> {
        metadata.insert(
            "sys".into(),
            json!({
                "MethodName": function,
                "UtcNow": utc_7(self.clock.now()),
                "RandGuid": uuid::Uuid::new_v4().to_string(),
            }),
        );
        self.emit(HostEvent::InvocationStarted {
            function: function.to_string(),
            invocation_id: invocation_id.to_string(),
        });
        let port = self.ready_port().await?;
        let timeout = self.app.host.function_timeout;
        let started = std::time::Instant::now();
        let request = self
            .client
            .post(format!("http://127.0.0.1:{port}/{function}"))
            .header("X-Azure-Functions-InvocationId", invocation_id)
            .json(&json!({"Data": data, "Metadata": metadata}))
            .timeout(timeout);
        let response = request.send().await.map_err(|e| classify(e, timeout))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| classify(e, timeout))?;
        let parsed: Result<Value, _> = serde_json::from_slice(&body);
        let mut outcome = Outcome {
            invocation_id: invocation_id.to_string(),
            status,
            outputs: Map::new(),
            return_value: Value::Null,
        };
        match parsed {
            Ok(Value::Object(mut answer)) => {
                if let Some(Value::Array(lines)) = answer.get("Logs") {
                    for line in lines {
                        let text = line.as_str().map(str::to_string).unwrap_or_else(|| line.to_string());
                        self.logs.record(function, invocation_id, &text);
                    }
                }
                if let Some(Value::Object(outputs)) = answer.remove("Outputs") {
                    outcome.outputs = outputs;
                }
                outcome.return_value = answer.remove("ReturnValue").unwrap_or(Value::Null);
            }
            _ if !outcome.succeeded() => {}
            Ok(_) if body.is_empty() => {}
            Err(_) if body.is_empty() => {}
            Ok(other) => {
                return Err(InvokeError::BadResponse { status, message: format!("got {}", kind_of(&other)) });
            }
            Err(err) => return Err(InvokeError::BadResponse { status, message: err.to_string() }),
        }
        tracing::info!(status, elapsed_ms = started.elapsed().as_millis() as u64, "invocation answered");
        if outcome.succeeded() {
            self.deliver_outputs(function, &outcome).await?;
        }
        Ok(outcome)
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
            let mut builder = self.client.request(method, url).timeout(timeout);
            for (name, value) in &request.headers {
                // Hop-by-hop and framing headers belong to each connection, not to the request.
                if !matches!(
                    name.as_str(),
                    "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade"
                ) {
                    builder = builder.header(name, value);
                }
            }
            let response = builder
                .header("X-Azure-Functions-InvocationId", &invocation_id)
                .body(request.body.clone())
                .send()
                .await
                .map_err(|e| classify(e, timeout))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "connection" | "transfer-encoding" | "content-length" | "date"))
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect();
            let body = response.bytes().await.map_err(|e| classify(e, timeout))?;
            tracing::info!(status, "forwarded request answered");
            Ok(Reply { status, headers, body })
        }
        .instrument(span)
        .await;
        let succeeded = matches!(&result, Ok(r) if (200..300).contains(&r.status));
        self.emit(HostEvent::InvocationFinished { function: function.to_string(), invocation_id, succeeded });
        result
    }

    async fn ready_port(&self) -> Result<u16, InvokeError> {
        let mut rx = self.handler_port.clone();
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

fn classify(err: reqwest::Error, timeout: Duration) -> InvokeError {
    if err.is_timeout() { InvokeError::Timeout(timeout) } else { InvokeError::Transport(err) }
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
