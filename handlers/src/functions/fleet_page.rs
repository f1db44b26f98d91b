//! `FleetPage` (`GET /api/fleet`, HTML) and `FleetData` (`GET /api/fleet.json`, JSON, in the OpenAPI document):
//! the fleet view (`lifecycle::fleet`) for operators. Filters `status`, `subscription`, `resourceGroup` as query
//! parameters; a bad one is a `400` naming it. Served behind App Service Authentication like the activation-key
//! API: the caller sees the devices it holds `authorization::READ` on (`lifecycle::fleet::Viewer::Caller`).

use std::sync::Arc;

use super::policy::{answered_to, refusal, unavailable};
use super::{HandlerResult, Invocation};
use crate::authorization::Caller;
use crate::deps::Deps;
use crate::fleet_page::{CONTENT_SECURITY_POLICY, render, render_error};
use crate::lifecycle::fleet::{Filter, FilterErrorKind, FleetView, ViewError, Viewer, view};
use crate::protocol::InvocationResponse;
use crate::triggers::{HttpRequest, HttpResponse};

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
    let caller = match Caller::from_request(&request) {
        Ok(caller) => caller,
        Err(denied) => {
            tracing::warn!("fleet view: {denied}");
            return Ok(InvocationResponse::default().with_output("res", in_format(format, refusal(denied)?)));
        }
    };
    let span = tracing::Span::current();
    span.record("caller_id", caller.object_id.as_str());
    span.record("caller_name", caller.name.as_str());
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
            Ok(filter) => match view(&deps, &Viewer::Caller(caller.clone()), &filter).await {
                Ok(fleet) => page(format, &fleet),
                Err(ViewError::Denied(denied)) => in_format(format, refusal(denied)?),
                Err(ViewError::Lifecycle(err)) => in_format(format, unavailable("fleet view", err.into())?),
            },
        }
    };
    Ok(InvocationResponse::default().with_output("res", answered_to(response, &caller)))
}

/// A JSON error answer (`refusal`, `unavailable`) as the format asks for: the same status, headers and message.
fn in_format(format: Format, response: HttpResponse) -> HttpResponse {
    if format == Format::Json {
        return response;
    }
    let message = response.body["error"]["message"].as_str().unwrap_or_default().to_string();
    let mut page = html_response(response.status_code, render_error(response.status_code, &message));
    page.headers.extend(response.headers.into_iter().filter(|(name, _)| !name.eq_ignore_ascii_case("content-type")));
    page
}

fn page(format: Format, fleet: &FleetView) -> HttpResponse {
    let mut response = match format {
        Format::Json => HttpResponse::json(200, serde_json::to_value(fleet).expect("serializable")),
        Format::Html => html_response(200, render(fleet)),
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
        // The page's filter links name the caller's subscriptions and groups: nothing goes on to the portal.
        ("Referrer-Policy", "no-referrer"),
        ("X-Content-Type-Options", "nosniff"),
    ] {
        response.headers.insert(name.into(), value.into());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorization::Denied;

    #[test]
    fn a_refusal_answers_the_page_in_html_with_its_status_reason_and_challenge() {
        let refused = refusal(Denied::Unauthenticated("the token expired".into())).unwrap();
        let page = in_format(Format::Html, refused.clone());
        assert_eq!(page.status_code, 401);
        assert_eq!(page.headers["Content-Type"], "text/html; charset=utf-8");
        assert!(page.headers["WWW-Authenticate"].starts_with("Bearer"), "the challenge is kept: {:?}", page.headers);
        assert!(page.body.as_str().unwrap().contains("the token expired"));
        assert_eq!(in_format(Format::Json, refused.clone()), refused, "JSON stays as it is");
    }
}
