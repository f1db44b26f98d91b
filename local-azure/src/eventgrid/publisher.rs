//! Delivery: the durable activity log is the source, a cursor per subscription says how far it was read, and
//! accepted events wait in the store until delivered or dead-lettered. A restart resumes from the store: nothing
//! acknowledged is lost, and an event is delivered again at most when the crash hit mid-delivery.
//!
//! Every event goes out as soon as it exists: each delivery is its own task, and the loop that reads the log never
//! waits for a webhook to answer. Event Grid gives no order ("Event Grid doesn't guarantee order for event
//! delivery, so subscribers may receive them out of order", learn.microsoft.com/azure/event-grid/delivery-and-retry),
//! and a slow subscriber answering one event must not hold back the next: that wait was the tick between a vault's
//! DELETE and edgevault's recovery (about 45 ms when the lock's delete event was still being answered). The loop
//! sleeps until it is woken (a new activity entry, a subscription change, a finished delivery, the clock moved) or
//! until the next retry is due.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use super::schema::{self, Schema};
use super::subscriptions::{DEAD_LETTER, EventSubscription, PENDING, Pending, SUBSCRIPTION, pending_key};
use crate::App;
use crate::servicebus::queue::unix_ms;
use crate::store::StoreError;

/// How long a webhook may take to answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest the loop sleeps without a wake-up: a safety net only (every change that makes work wakes it).
const IDLE: Duration = Duration::from_secs(5);
/// Deliveries in flight per subscription at most (local-azure's bound, so a flood of events cannot start
/// unbounded tasks); the rest wait their turn in the store.
const MAX_IN_FLIGHT: usize = 64;

/// The publisher's wake-up, HTTP client and the deliveries in flight.
pub struct Publisher {
    wake: Notify,
    pub(super) http: reqwest::Client,
    /// Pending keys being delivered now, so the loop does not start a second delivery of one.
    in_flight: Mutex<HashSet<String>>,
}

impl Default for Publisher {
    fn default() -> Self {
        // Endpoints are loopback webhooks: never through a proxy a test may have put in the environment.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(DELIVERY_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Publisher { wake: Notify::new(), http, in_flight: Mutex::new(HashSet::new()) }
    }
}

impl Publisher {
    /// Something was appended to the activity log, a subscription changed, a delivery ended or the clock moved.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads new activity entries into each validated subscription's pending events.
fn pump(app: &App) -> Result<(), StoreError> {
    for sub in app.store.list::<EventSubscription>(SUBSCRIPTION, "")? {
        if sub.provisioning_state != "Succeeded" {
            continue;
        }
        let entries = app.store.activity_after(sub.cursor, 500)?;
        let Some(last) = entries.last().and_then(|e| e["sequenceNumber"].as_u64()) else { continue };
        app.store.write(|tx| -> Result<(), StoreError> {
            let Some(mut current) = tx.get::<EventSubscription>(SUBSCRIPTION, &sub.name)? else { return Ok(()) };
            if current.cursor != sub.cursor {
                return Ok(()); // Changed under us; the next round reads again.
            }
            for entry in &entries {
                let Some(event) = schema::arm_event(entry) else { continue };
                let subject = event["subject"].as_str().unwrap_or_default();
                if !crate::arm::authz::scope_covers(&current.scope, subject) || !current.filter.matches(&event) {
                    continue;
                }
                let sequence = entry["sequenceNumber"].as_u64().unwrap_or_default();
                let published_ms = event["eventTime"]
                    .as_str()
                    .and_then(crate::clock::parse_time)
                    .map(unix_ms)
                    .unwrap_or_else(|| unix_ms(app.clock.now()));
                let pending = Pending {
                    sequence,
                    event,
                    attempts: 0,
                    next_attempt_ms: 0,
                    published_ms,
                    last_error: None,
                    last_http_status: None,
                };
                tx.put(PENDING, &pending_key(&current.name, sequence), &pending)?;
            }
            current.cursor = last;
            tx.put(SUBSCRIPTION, &current.name, &current)
        })?;
    }
    Ok(())
}

/// Deliveries to start now (due, not in flight, within [`MAX_IN_FLIGHT`] per subscription), and when the earliest
/// retry not yet due comes due (unix ms on local-azure's clock).
struct Due {
    start: Vec<(EventSubscription, Pending)>,
    next_retry: Option<i64>,
}

fn due(app: &App) -> Result<Due, StoreError> {
    let now = unix_ms(app.clock.now());
    let mut out = Vec::new();
    let mut next: Option<i64> = None;
    for sub in app.store.list::<EventSubscription>(SUBSCRIPTION, "")? {
        let pending: Vec<Pending> = app.store.list::<Pending>(PENDING, &format!("{}/", sub.name))?;
        let in_flight = app.eventgrid.in_flight();
        let mut busy = pending.iter().filter(|p| in_flight.contains(&pending_key(&sub.name, p.sequence))).count();
        for p in pending {
            if in_flight.contains(&pending_key(&sub.name, p.sequence)) {
                continue;
            }
            if p.next_attempt_ms > now {
                next = Some(next.map_or(p.next_attempt_ms, |n| n.min(p.next_attempt_ms)));
            } else if busy < MAX_IN_FLIGHT {
                busy += 1;
                out.push((sub.clone(), p));
            }
        }
    }
    Ok(Due { start: out, next_retry: next })
}

/// The body and content type a subscription receives for one event.
fn payload(sub: &EventSubscription, event: &Value) -> (Value, &'static str) {
    match sub.schema {
        Schema::EventGridSchema => (json!([event]), "application/json; charset=utf-8"),
        Schema::CloudEventSchemaV10 => (schema::to_cloud_event(event), "application/cloudevents+json; charset=utf-8"),
    }
}

/// One attempt; `Ok` on a 2xx answer, else the status (if any) and what went wrong.
async fn attempt(app: &App, sub: &EventSubscription, p: &Pending) -> Result<(), (Option<u16>, String)> {
    let (body, content_type) = payload(sub, &p.event);
    let response = app
        .eventgrid
        .http
        .post(&sub.endpoint)
        .header("content-type", content_type)
        .header("aeg-event-type", "Notification")
        .header("aeg-subscription-name", sub.name.to_ascii_uppercase())
        .header("aeg-delivery-count", p.attempts.to_string())
        .header("aeg-data-version", "2")
        .header("aeg-metadata-version", "1")
        .body(body.to_string())
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err((Some(r.status().as_u16()), format!("the endpoint answered {}", r.status()))),
        Err(e) => Err((None, format!("connection failed: {e}"))),
    }
}

fn dead_letter(app: &App, sub: &EventSubscription, p: &Pending, reason: &str) -> Result<(), StoreError> {
    tracing::warn!(subscription = %sub.name, sequence = p.sequence, reason, "event dead-lettered");
    let (event, _) = payload(sub, &p.event);
    let now = app.clock.now();
    app.store.write(|tx| -> Result<(), StoreError> {
        let record = json!({
            "subscription": sub.name,
            "sequence": p.sequence,
            "event": if sub.schema == Schema::EventGridSchema { p.event.clone() } else { event },
            "deadLetterReason": reason,
            "deliveryAttempts": p.attempts,
            "lastDeliveryOutcome": p.last_error,
            "lastHttpStatusCode": p.last_http_status,
            "publishTime": crate::clock::arm_time(crate::servicebus::queue::from_ms(p.published_ms)),
            "deadLetteredTime": crate::clock::arm_time(now),
        });
        tx.put(DEAD_LETTER, &pending_key(&sub.name, p.sequence), &record)?;
        tx.delete(PENDING, &pending_key(&sub.name, p.sequence))?;
        if let Some(mut s) = tx.get::<EventSubscription>(SUBSCRIPTION, &sub.name)? {
            s.dead_lettered_count += 1;
            tx.put(SUBSCRIPTION, &s.name, &s)?;
        }
        Ok(())
    })
}

/// Delivers one event (one attempt); a failure is rescheduled or dead-lettered. Wakes the loop when done.
async fn deliver(app: Arc<App>, sub: EventSubscription, mut p: Pending) {
    let key = pending_key(&sub.name, p.sequence);
    let now = unix_ms(app.clock.now());
    let expired = now >= p.published_ms + sub.event_ttl_minutes as i64 * 60_000;
    let outcome = if expired { None } else { Some(attempt(&app, &sub, &p).await) };
    let app2 = app.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        let app = app2;
        match outcome {
            None => dead_letter(&app, &sub, &p, "TimeToLiveExceeded"),
            Some(Ok(())) => {
                tracing::info!(subscription = %sub.name, sequence = p.sequence, event_type = %p.event["eventType"], "event delivered");
                app.store.write(|tx| -> Result<(), StoreError> {
                    tx.delete(PENDING, &pending_key(&sub.name, p.sequence))?;
                    if let Some(mut s) = tx.get::<EventSubscription>(SUBSCRIPTION, &sub.name)? {
                        s.delivered_count += 1;
                        tx.put(SUBSCRIPTION, &s.name, &s)?;
                    }
                    Ok(())
                })
            }
            Some(Err((status, error))) => {
                p.attempts += 1;
                p.last_error = Some(error);
                p.last_http_status = status;
                if p.attempts >= sub.max_delivery_attempts {
                    return dead_letter(&app, &sub, &p, "MaxDeliveryAttemptsExceeded");
                }
                p.next_attempt_ms = unix_ms(app.clock.now()) + sub.backoff_ms(p.attempts);
                tracing::info!(subscription = %sub.name, sequence = p.sequence, attempts = p.attempts, "delivery failed; retrying");
                app.store.write(|tx| tx.put(PENDING, &pending_key(&sub.name, p.sequence), &p))
            }
        }
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "recording an Event Grid delivery"),
        Err(error) => tracing::error!(%error, "Event Grid delivery task"),
    }
    app.eventgrid.in_flight().remove(&key);
    app.eventgrid.wake();
}

/// Publishes until shutdown.
pub async fn run(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut deliveries = tokio::task::JoinSet::new();
    loop {
        let a = app.clone();
        let work = tokio::task::spawn_blocking(move || pump(&a).and_then(|()| due(&a))).await;
        let mut next_retry = None;
        match work {
            Ok(Ok(due)) => {
                next_retry = due.next_retry;
                let mut in_flight = app.eventgrid.in_flight();
                for (sub, p) in due.start {
                    if in_flight.insert(pending_key(&sub.name, p.sequence)) {
                        deliveries.spawn(deliver(app.clone(), sub, p));
                    }
                }
            }
            Ok(Err(error)) => tracing::error!(%error, "Event Grid publisher"),
            Err(error) => tracing::error!(%error, "Event Grid publisher task"),
        }
        // Reap finished tasks so the set does not grow.
        while deliveries.try_join_next().is_some() {}
        let sleep = next_retry
            .map(|at| Duration::from_millis((at - unix_ms(app.clock.now())).max(0) as u64).min(IDLE))
            .unwrap_or(IDLE);
        tokio::select! {
            _ = app.eventgrid.wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.changed() => {
                deliveries.abort_all();
                return;
            }
        }
    }
}
