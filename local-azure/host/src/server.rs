//! The host's HTTP front door: HTTP triggers, the Event Grid webhook and the admin API on one listener.
//!
//! warp hands every request to [`dispatch`] as a plain [`Request`]; the routers ([`http_trigger`], [`event_grid`],
//! [`admin`]) answer with a [`Reply`] (both in [`crate::http`]). Keeping warp at this edge lets the routers be tested
//! without a server.

use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpListener;
use warp::Filter;

use crate::Shared;
use crate::http::{Reply, Request};
use crate::{admin, event_grid, http_trigger};

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
                into_response(dispatch(&shared, request).await)
            },
        );
    warp::serve(routes).incoming(listener).graceful(shutdown).run().await;
}

async fn dispatch(shared: &Shared, mut request: Request) -> Reply {
    let segments = request.segments();
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match lower.as_slice() {
        ["runtime", "webhooks", "eventgrid"] => return event_grid::handle(shared, &request).await,
        ["admin", "functions", _] if request.method == "POST" => return admin::invoke(shared, &request, &segments[2]),
        ["admin", "host", "status"] if request.method == "GET" => return admin::host_status(shared, &request),
        [] if request.method == "GET" || request.method == "HEAD" => {
            return Reply::text(200, "local-azure Functions host is running\n");
        }
        _ => {}
    }
    let prefix: Vec<&str> = shared.app.host.route_prefix.split('/').filter(|s| !s.is_empty()).collect();
    let under_prefix =
        segments.len() >= prefix.len() && segments.iter().zip(&prefix).all(|(s, p)| s.eq_ignore_ascii_case(p));
    // App Service Authentication runs before the host sees the request, for every HTTP trigger.
    if under_prefix
        && let Some(easy_auth) = &shared.easy_auth
        && let Err(refusal) = easy_auth.authenticate(&mut request)
    {
        return refusal;
    }
    if under_prefix && let Some(reply) = http_trigger::handle(shared, &request, &segments[prefix.len()..]).await {
        return reply;
    }
    Reply::status(404)
}

/// A reply as warp's response; headers that are not valid HTTP become a bare `500`.
fn into_response(reply: Reply) -> warp::http::Response<Bytes> {
    let mut builder = warp::http::Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        builder = builder.header(name, value);
    }
    builder.body(reply.body).unwrap_or_else(|err| {
        tracing::warn!("the handler's response headers are not valid HTTP: {err}");
        let mut response = warp::http::Response::new(Bytes::new());
        *response.status_mut() = warp::http::StatusCode::INTERNAL_SERVER_ERROR;
        response
    })
}
