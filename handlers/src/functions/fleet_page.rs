//! `FleetPage` (`GET /api/fleet`, HTML) and `FleetData` (`GET /api/fleet.json`, JSON, in the OpenAPI document):
//! the fleet view (`lifecycle::fleet`) for operators. Filters `status`, `subscription`, `resourceGroup` as query
//! parameters; a bad one is a `400` naming it. Protected by the function key like the activation-key API.

use std::sync::Arc;

use super::{HandlerResult, Invocation};
use crate::deps::Deps;
use crate::error::FunctionError;
use crate::fleet_page::{CONTENT_SECURITY_POLICY, render, render_error};
use crate::lifecycle::fleet::{Filter, FilterErrorKind, FleetView, Viewer, view};
use crate::protocol::InvocationResponse;
use crate::triggers::{HttpRequest, HttpResponse};

/// Seconds to wait before retrying after Azure was unavailable.
const UNAVAILABLE_RETRY_SECONDS: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Html,
    Json,
}

pub async fn html(invocation: Invocation, deps: Arc<Deps>) -> HandlerResult {
    respond(invocation, deps, Format::Html).await
}

pub async fn json(invocation: Invocation, deps: Arc<Deps>) -> HandlerResult {
    respond(invocation, deps, Format::Json).await
}

async fn respond(invocation: Invocation, deps: Arc<Deps>, format: Format) -> HandlerResult {
    let request: HttpRequest = invocation.request.binding("req")?;
    let response = if !request.method.eq_ignore_ascii_case("GET") {
        let mut response = error(format, 405, "MethodNotAllowed", "the fleet view takes GET only");
        response.headers.insert("Allow".into(), "GET".into());
        response
    } else {
        let query = request.query.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        match Filter::parse(query, &deps.settings.subscriptions) {
            Err(e) if e.kind == FilterErrorKind::NotCovered => {
                error(format, 404, "SubscriptionNotCovered", &e.to_string())
            }
            Err(e) => error(format, 400, "InvalidFilter", &e.to_string()),
            Ok(filter) => match view(&deps, &viewer(&request), &filter).await.map_err(FunctionError::from) {
                Ok(fleet) => page(format, &fleet, request.query.get("code").map(String::as_str)),
                Err(FunctionError::Azure(err)) if err.retryable() => {
                    tracing::warn!("fleet view: {err}");
                    let message = format!("{} is temporarily unavailable; retry", err.operation);
                    let mut response = error(format, 503, "AzureUnavailable", &message);
                    response.headers.insert("Retry-After".into(), UNAVAILABLE_RETRY_SECONDS.to_string());
                    response
                }
                Err(err) => return Err(err),
            },
        }
    };
    Ok(InvocationResponse::default().with_output("res", response))
}

/// Who asks. The function key is the gate today: its holder sees the whole scope.
fn viewer(_request: &HttpRequest) -> Viewer {
    Viewer::FunctionKey
}

fn page(format: Format, fleet: &FleetView, key: Option<&str>) -> HttpResponse {
    let mut response = match format {
        Format::Json => HttpResponse::json(200, serde_json::to_value(fleet).expect("serializable")),
        Format::Html => html_response(200, render(fleet, key)),
    };
    response.headers.insert("Cache-Control".into(), "no-store".into());
    response
}

fn error(format: Format, status: u16, code: &str, message: &str) -> HttpResponse {
    match format {
        Format::Json => HttpResponse::error(status, code, message),
        Format::Html => html_response(status, render_error(status, message)),
    }
}

/// An HTML answer. The body is a string: the host passes it on as it is (a page is never valid base64, which the
/// host would decode).
fn html_response(status: u16, body: String) -> HttpResponse {
    let mut response = HttpResponse { status_code: status, body: body.into(), headers: Default::default() };
    for (name, value) in [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY.as_str()),
        // The page's links carry the caller's function key: never send it on to the portal in a Referer.
        ("Referrer-Policy", "no-referrer"),
        ("X-Content-Type-Options", "nosniff"),
    ] {
        response.headers.insert(name.into(), value.into());
    }
    response
}
