//! Event Grid: successful ARM writes, deletes and actions (from the durable activity log) published as
//! `Microsoft.Resources.Resource{Write,Delete,Action}Success` to validated webhook subscriptions.
//!
//! - [`schema`]: the events (Event Grid schema, CloudEvents 1.0) and the validation event.
//! - [`subscriptions`]: subscriptions, filters, retry policy, the stored pending and dead-lettered events.
//! - [`publisher`]: the delivery loop (cursor per subscription, retries with exponential backoff, dead-letter).
//!
//! Subscriptions are created through the admin API; creation runs the validation handshake and a subscription whose
//! endpoint fails it is kept as `Failed` and receives nothing.

pub mod publisher;
pub mod schema;
pub mod subscriptions;

use http::{Method, StatusCode};
use serde_json::{Value, json};

pub use publisher::Publisher;
use schema::Schema;
use subscriptions::{DEAD_LETTER, EventSubscription, PENDING, SUBSCRIPTION};

use crate::App;
use crate::http::{AdminError, ok};
use crate::http::{Req, Resp};

/// Runs the handshake: Event Grid schema endpoints echo a validation code, CloudEvents endpoints allow the origin.
pub async fn validate_endpoint(app: &App, sub: &EventSubscription) -> Result<(), String> {
    let http = &app.eventgrid.http;
    match sub.schema {
        Schema::EventGridSchema => {
            let code = uuid::Uuid::new_v4().to_string().to_ascii_uppercase();
            let event = schema::validation_event(&sub.scope, &code, &crate::clock::arm_time(app.clock.now()));
            let r = http
                .post(&sub.endpoint)
                .header("content-type", "application/json; charset=utf-8")
                .header("aeg-event-type", "SubscriptionValidation")
                .header("aeg-subscription-name", sub.name.to_ascii_uppercase())
                .header("aeg-delivery-count", "0")
                .body(event.to_string())
                .send()
                .await
                .map_err(|e| format!("the endpoint could not be reached: {e}"))?;
            let status = r.status();
            if !status.is_success() {
                return Err(format!("the endpoint answered {status} to the validation event"));
            }
            let body: Value = r.json().await.map_err(|e| format!("the validation answer is not JSON: {e}"))?;
            let echoed = body.get("validationResponse").or_else(|| body.get("ValidationResponse"));
            if echoed.and_then(Value::as_str).is_some_and(|c| c.eq_ignore_ascii_case(&code)) {
                Ok(())
            } else {
                Err("the endpoint did not echo the validation code as validationResponse".into())
            }
        }
        Schema::CloudEventSchemaV10 => {
            let r = http
                .request(Method::OPTIONS, &sub.endpoint)
                .header("WebHook-Request-Origin", "eventgrid.azure.net")
                .header("WebHook-Request-Rate", "120")
                .send()
                .await
                .map_err(|e| format!("the endpoint could not be reached: {e}"))?;
            let allowed = r.headers().get("webhook-allowed-origin").and_then(|v| v.to_str().ok()).map(str::to_string);
            match allowed {
                Some(o) if r.status().is_success() && (o == "*" || o.eq_ignore_ascii_case("eventgrid.azure.net")) => {
                    Ok(())
                }
                _ => Err(format!(
                    "the endpoint answered {} without WebHook-Allowed-Origin for eventgrid.azure.net",
                    r.status()
                )),
            }
        }
    }
}

/// `POST /admin/eventgrid/subscriptions`: create (or update) and validate. Async: it calls the endpoint.
pub async fn create(app: std::sync::Arc<App>, req: Req) -> Resp {
    let sub: EventSubscription = match req.json() {
        Ok(s) => s,
        Err(e) => return Resp::json(StatusCode::BAD_REQUEST, &json!({ "error": e.to_string() })),
    };
    match save_subscription(&app, sub).await {
        Ok(sub) => Resp::json(StatusCode::CREATED, &sub),
        Err(SaveError::Invalid(e)) => Resp::json(StatusCode::BAD_REQUEST, &json!({ "error": e })),
        Err(e) => Resp::json(StatusCode::INTERNAL_SERVER_ERROR, &json!({ "error": e.to_string() })),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("store task: {0}")]
    Task(String),
}

/// Validates the endpoint (handshake) and stores the subscription, `Succeeded` or `Failed`.
pub async fn save_subscription(
    app: &std::sync::Arc<App>,
    mut sub: EventSubscription,
) -> Result<EventSubscription, SaveError> {
    if sub.scope.is_empty() {
        sub.scope = format!("/subscriptions/{}", crate::config::DEFAULT_SUBSCRIPTION_ID);
    }
    sub.validate().map_err(SaveError::Invalid)?;
    let outcome = validate_endpoint(app, &sub).await;
    let app2 = app.clone();
    let sub = tokio::task::spawn_blocking(move || {
        app2.store.write(|tx| -> Result<EventSubscription, crate::store::StoreError> {
            // Events from now on; an update keeps its place in the log and its counts.
            match tx.get::<EventSubscription>(SUBSCRIPTION, &sub.name)? {
                // A subscription that never validated has not been receiving: it starts now, like a new one.
                Some(old) if old.provisioning_state == "Succeeded" => {
                    sub.cursor = old.cursor;
                    sub.delivered_count = old.delivered_count;
                    sub.dead_lettered_count = old.dead_lettered_count;
                }
                _ => sub.cursor = tx.last_activity_sequence()?,
            }
            match &outcome {
                Ok(()) => {
                    sub.provisioning_state = "Succeeded".into();
                    sub.validation_error = None;
                }
                Err(e) => {
                    sub.provisioning_state = "Failed".into();
                    sub.validation_error = Some(e.clone());
                }
            }
            tx.put(SUBSCRIPTION, &sub.name, &sub)?;
            Ok(sub)
        })
    })
    .await
    .map_err(|e| SaveError::Task(e.to_string()))??;
    tracing::info!(subscription = %sub.name, state = %sub.provisioning_state, "event subscription saved");
    app.eventgrid.wake();
    Ok(sub)
}

fn with_pending(app: &App, sub: &EventSubscription) -> Result<Value, AdminError> {
    let mut v = serde_json::to_value(sub).map_err(crate::store::StoreError::from)?;
    v["pendingCount"] = json!(app.store.list::<Value>(PENDING, &format!("{}/", sub.name))?.len());
    Ok(v)
}

/// `/admin/eventgrid/…` (the part after `eventgrid`), except creation.
pub fn admin(app: &App, req: &Req, segs: &[&str]) -> Result<Resp, AdminError> {
    match (req.method.clone(), segs) {
        (Method::GET, ["subscriptions"]) => {
            let subs: Vec<EventSubscription> = app.store.list(SUBSCRIPTION, "")?;
            let value = subs.iter().map(|s| with_pending(app, s)).collect::<Result<Vec<_>, _>>()?;
            ok(json!({ "value": value }))
        }
        (Method::GET, ["subscriptions", name]) => {
            let sub: EventSubscription = app
                .store
                .get(SUBSCRIPTION, name)?
                .ok_or_else(|| AdminError::NotFound(format!("event subscription {name} not found")))?;
            ok(with_pending(app, &sub)?)
        }
        (Method::DELETE, ["subscriptions", name]) => {
            let removed = app.store.write(|tx| -> Result<bool, crate::store::StoreError> {
                tx.delete_prefix(PENDING, &format!("{name}/"))?;
                tx.delete(SUBSCRIPTION, name)
            })?;
            crate::http::deleted(removed, "event subscription")
        }
        (Method::GET, ["deadletters"]) => {
            let prefix = req.query("subscription").map(|s| format!("{s}/")).unwrap_or_default();
            ok(json!({ "value": app.store.list::<Value>(DEAD_LETTER, &prefix)? }))
        }
        _ => Err(AdminError::NotFound(format!("no admin endpoint {} {}", req.method, req.path()))),
    }
}
