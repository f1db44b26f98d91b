//! The host's HTTP front door: HTTP triggers, the Event Grid webhook and the admin API on one listener.
//!
//! warp hands every request to [`dispatch`] as a plain [`Request`]; the trigger modules answer with a [`Reply`].
//! Keeping warp at this edge lets the trigger modules be tested without a server.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use warp::Filter;

use crate::Shared;
use crate::app::Trigger;
use crate::service_bus::ReceivedMessage;
use crate::timer::RunReason;
use crate::{event_grid, http_trigger, timer};

/// A request, decoupled from the server library.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path as received (percent-encoded).
    pub raw_path: String,
    pub raw_query: Option<String>,
    /// Lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.raw_query
            .as_deref()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default()
    }

    pub fn query_value(&self, name: &str) -> Option<String> {
        self.query_pairs().into_iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Decoded, non-empty path segments.
    pub fn segments(&self) -> Vec<String> {
        self.raw_path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect()
    }
}

/// A response, decoupled from the server library.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: Bytes::new() }
    }

    pub fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json; charset=utf-8".into())],
            body: Bytes::from(body.to_string()),
        }
    }

    fn into_response(self) -> warp::http::Response<Bytes> {
        let mut builder = warp::http::Response::builder().status(self.status);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        builder.body(self.body).unwrap_or_else(|err| {
            tracing::warn!("the handler's response headers are not valid HTTP: {err}");
            let mut response = warp::http::Response::new(Bytes::new());
            *response.status_mut() = warp::http::StatusCode::INTERNAL_SERVER_ERROR;
            response
        })
    }
}

/// Serves until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let routes = warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .and(warp::any().map(move || shared.clone()))
        .then(
            |method: warp::http::Method,
             path: warp::path::FullPath,
             query: String,
             headers: warp::http::HeaderMap,
             body: Bytes,
             shared: Arc<Shared>| async move {
                let request = Request {
                    method: method.as_str().to_ascii_uppercase(),
                    raw_path: path.as_str().to_string(),
                    raw_query: (!query.is_empty()).then_some(query),
                    headers: headers
                        .iter()
                        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                        .collect(),
                    body,
                };
                dispatch(&shared, request).await.into_response()
            },
        );
    warp::serve(routes).incoming(listener).graceful(shutdown).run().await;
}

pub(crate) async fn dispatch(shared: &Shared, request: Request) -> Reply {
    let segments = request.segments();
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match lower.as_slice() {
        ["runtime", "webhooks", "eventgrid"] => return event_grid::handle(shared, &request).await,
        ["admin", "functions", _] if request.method == "POST" => return admin_invoke(shared, &request, &segments[2]),
        ["admin", "host", "status"] if request.method == "GET" => {
            return if admin_authorised(shared, &request) {
                Reply::json(200, &json!({"state": "Running", "version": crate::HOST_VERSION}))
            } else {
                Reply::status(401)
            };
        }
        [] if request.method == "GET" || request.method == "HEAD" => {
            return Reply {
                status: 200,
                headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
                body: Bytes::from_static(b"local-azure Functions host is running\n"),
            };
        }
        _ => {}
    }
    let prefix: Vec<&str> = shared.app.host.route_prefix.split('/').filter(|s| !s.is_empty()).collect();
    let under_prefix =
        segments.len() >= prefix.len() && segments.iter().zip(&prefix).all(|(s, p)| s.eq_ignore_ascii_case(p));
    if under_prefix && let Some(reply) = http_trigger::handle(shared, &request, &segments[prefix.len()..]).await {
        return reply;
    }
    Reply::status(404)
}

fn admin_authorised(shared: &Shared, request: &Request) -> bool {
    http_trigger::presented_key(request).is_some_and(|k| shared.keys.is_master(&k))
}

/// `POST /admin/functions/<Name>` with `{"input": "..."}`: runs a non-HTTP function now, as the real host's admin
/// API does; answers `202` before the invocation finishes.
fn admin_invoke(shared: &Shared, request: &Request, name: &str) -> Reply {
    if !admin_authorised(shared, request) {
        return Reply::status(401);
    }
    let Some(def) = shared.app.function(name) else {
        return Reply::json(404, &json!({"error": format!("no function named `{name}`")}));
    };
    let input = match serde_json::from_slice::<Value>(&request.body) {
        Ok(body) => body.get("input").cloned().unwrap_or(Value::Null),
        Err(_) if request.body.is_empty() => Value::Null,
        Err(err) => return Reply::json(400, &json!({"error": format!("the body is not JSON: {err}")})),
    };
    let input_text = match &input {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let invoker = shared.invoker.clone();
    let function = def.name.clone();
    match &def.trigger {
        Trigger::Http { .. } => {
            return Reply::json(400, &json!({"error": "HTTP functions are invoked through their route"}));
        }
        Trigger::Timer { .. } => {
            let state = shared.timers.get(&def.name).expect("every timer function has a state").clone();
            timer::try_run(&state, &invoker, invoker.clock(), RunReason::Admin);
        }
        Trigger::ServiceBus { binding, .. } => {
            // `ConvertFromString`: a message holding the input as its body, with no actions or client.
            let input = ReceivedMessage::from_text(&input_text).invocation(binding, None, false);
            tokio::spawn(async move {
                let _ = invoker.invoke(&function, input).await;
            });
        }
        Trigger::EventGrid { binding } => {
            let event = serde_json::from_str::<Value>(&input_text).unwrap_or(Value::String(input_text));
            let input = event_grid::event_invocation(binding, &event);
            tokio::spawn(async move {
                let _ = invoker.invoke(&function, input).await;
            });
        }
    }
    Reply::status(202)
}
