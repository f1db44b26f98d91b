//! Service Bus queues at `https://<namespace>.servicebus.windows.net`, over the REST protocol.
//!
//! - [`queue`]: namespaces, queue settings and messages as stored; the time rules of a message.
//! - [`broker`]: send / receive / settle as store transactions, session exclusivity, long-poll wake-ups.
//! - [`rest`]: the HTTP protocol (routes, `BrokerProperties`, tokens and grants, XML errors).
//!
//! The default namespace `edgevault` and edgevault's queues are created on first start, and edgevault's identity is
//! granted send and listen on the namespace. The admin API (`/admin/servicebus/…`) creates queues and peeks.

pub mod broker;
pub mod queue;
pub mod rest;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;

pub use broker::Broker;
use queue::{NAMESPACE, Namespace, QUEUE, QueueConfig, SubQueue, queue_key, unix_ms};

use crate::App;
use crate::arm::tenancy::{GRANT, Grant};
use crate::config;
use crate::http::{AdminError, Req, Resp, bad, body, created, ok};
use crate::store::{Store, StoreError};

pub const DEFAULT_NAMESPACE: &str = "edgevault";
/// edgevault's session queues (one device's work in order).
pub const SESSION_QUEUES: &[&str] =
    &["resource-created", "activation-key-requested", "vault-deleted", "resource-deleted", "sweep-pages"];
pub const ALERTS_QUEUE: &str = "alerts";
pub const APP_GRANT_ID: &str = "edgevault-app-servicebus";
/// How often queues nobody asks about are checked for lapsed locks, due schedules and expiry.
const TICK: Duration = Duration::from_millis(250);

/// Creates the default namespace, queues and grant once per data directory (a later admin change sticks).
pub fn seed_defaults(store: &Store) -> Result<(), StoreError> {
    store.write(|tx| -> Result<(), StoreError> {
        if tx.get::<bool>("meta", "servicebus-seeded")?.is_some() {
            return Ok(());
        }
        let ns = Namespace {
            name: DEFAULT_NAMESPACE.into(),
            subscription_id: config::DEFAULT_SUBSCRIPTION_ID.into(),
            resource_group: config::DEFAULT_RESOURCE_GROUP.into(),
        };
        tx.put(NAMESPACE, DEFAULT_NAMESPACE, &ns)?;
        let edgevault_queue = |name: &str, sessions: bool| QueueConfig {
            namespace: DEFAULT_NAMESPACE.into(),
            name: name.into(),
            max_delivery_count: 10,
            lock_duration_seconds: if sessions { 60 } else { 30 },
            requires_duplicate_detection: true,
            duplicate_detection_window_seconds: 600,
            requires_session: sessions,
            default_message_ttl_seconds: None,
            dead_lettering_on_message_expiration: true,
            last_sequence_number: 0,
        };
        for name in SESSION_QUEUES {
            let q = edgevault_queue(name, true);
            tx.put(QUEUE, &q.key(), &q)?;
        }
        let alerts = edgevault_queue(ALERTS_QUEUE, false);
        tx.put(QUEUE, &alerts.key(), &alerts)?;
        let grant = Grant {
            id: APP_GRANT_ID.into(),
            principal_id: config::APP_PRINCIPAL_ID.into(),
            scope: ns.scope(),
            actions: vec![rest::SEND_ACTION.into(), rest::LISTEN_ACTION.into()],
            not_actions: Vec::new(),
            role_name: "Azure Service Bus Data Owner".into(),
        };
        tx.put(GRANT, &grant.id, &grant)?;
        tx.put("meta", "servicebus-seeded", &true)
    })
}

/// Applies time to idle queues and wakes their receivers, until shutdown.
pub async fn run_ticker(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let app2 = app.clone();
        let changed =
            tokio::task::spawn_blocking(move || app2.servicebus.tick(&app2.store, unix_ms(app2.clock.now()))).await;
        match changed {
            Ok(Ok(keys)) => {
                for k in keys {
                    app.servicebus.wake(&k);
                }
            }
            Ok(Err(error)) => tracing::error!(%error, "Service Bus ticker"),
            Err(error) => tracing::error!(%error, "Service Bus ticker task"),
        }
    }
}

fn sb_err(e: broker::BrokerError) -> AdminError {
    match e {
        broker::BrokerError::Store(e) => AdminError::Store(e),
        broker::BrokerError::EntityNotFound(q) => AdminError::NotFound(format!("queue {q} not found")),
        other => AdminError::BadRequest(other.to_string()),
    }
}

fn queue_json(app: &App, q: &QueueConfig) -> Result<Value, AdminError> {
    let mut v = serde_json::to_value(q).map_err(StoreError::from)?;
    v["path"] = json!(format!("{}.servicebus.windows.net/{}", q.namespace, q.name));
    v["counts"] = app.servicebus.counts(&app.store, unix_ms(app.clock.now()), q).map_err(sb_err)?;
    Ok(v)
}

fn find_queue(app: &App, ns: &str, name: &str) -> Result<QueueConfig, AdminError> {
    broker::queue(&app.store, &queue_key(ns, name))?
        .ok_or_else(|| AdminError::NotFound(format!("queue {ns}/{name} not found")))
}

fn peek(app: &App, req: &Req, q: &QueueConfig, sub: SubQueue) -> Result<Resp, AdminError> {
    let limit = req.query("limit").and_then(|l| l.parse().ok()).unwrap_or(100usize);
    let now = unix_ms(app.clock.now());
    let msgs = app.servicebus.peek(&app.store, &q.key(), sub, limit).map_err(sb_err)?;
    let value: Vec<Value> = msgs.iter().map(|m| broker::peek_json(m, now)).collect();
    ok(json!({ "value": value }))
}

fn purge(app: &App, q: &QueueConfig, sub: SubQueue) -> Result<Resp, AdminError> {
    let n = app.servicebus.purge(&app.store, &q.key(), sub).map_err(sb_err)?;
    tracing::info!(queue = %q.key(), removed = n, "purged");
    ok(json!({ "removed": n }))
}

/// `/admin/servicebus/…` (the part after `servicebus`).
pub fn admin(app: &App, req: &Req, segs: &[&str]) -> Result<Resp, AdminError> {
    match (req.method.clone(), segs) {
        (Method::GET, ["namespaces"]) => ok(json!({ "value": app.store.list::<Value>(NAMESPACE, "")? })),
        (Method::POST, ["namespaces"]) => {
            let mut ns: Namespace = body(req)?;
            if !queue::valid_entity_name(&ns.name) || ns.name.contains('.') {
                return Err(bad(format!("namespace name '{}' is not valid", ns.name)));
            }
            ns.name = ns.name.to_ascii_lowercase();
            if ns.subscription_id.is_empty() {
                ns.subscription_id = config::DEFAULT_SUBSCRIPTION_ID.into();
            }
            if ns.resource_group.is_empty() {
                ns.resource_group = config::DEFAULT_RESOURCE_GROUP.into();
            }
            app.store.write(|tx| tx.put(NAMESPACE, &ns.name, &ns))?;
            created(&ns)
        }
        (Method::GET, ["queues"]) => {
            let queues: Vec<QueueConfig> = app.store.list(QUEUE, "")?;
            let value = queues.iter().map(|q| queue_json(app, q)).collect::<Result<Vec<_>, AdminError>>()?;
            ok(json!({ "value": value }))
        }
        (Method::POST, ["queues"]) => {
            let mut q: QueueConfig = body(req)?;
            if q.namespace.is_empty() {
                q.namespace = DEFAULT_NAMESPACE.into();
            }
            q.namespace = q.namespace.to_ascii_lowercase();
            q.validate().map_err(bad)?;
            let key = q.key();
            let result = app.store.write(|tx| -> Result<QueueConfig, AdminError> {
                if tx.get::<Namespace>(NAMESPACE, &q.namespace)?.is_none() {
                    return Err(AdminError::NotFound(format!("namespace {} not found", q.namespace)));
                }
                // Re-posting a queue updates its settings; its sequence numbers carry on.
                if let Some(old) = tx.get::<QueueConfig>(QUEUE, &key)? {
                    q.last_sequence_number = old.last_sequence_number;
                }
                tx.put(QUEUE, &key, &q)?;
                Ok(q)
            })?;
            app.servicebus.wake(&key);
            Ok(Resp::json(StatusCode::CREATED, &queue_json(app, &result)?))
        }
        (Method::GET, ["queues", ns, name]) => ok(queue_json(app, &find_queue(app, ns, name)?)?),
        (Method::DELETE, ["queues", ns, name]) => {
            let q = find_queue(app, ns, name)?;
            app.servicebus.delete_queue(&app.store, &q.key()).map_err(sb_err)?;
            Ok(Resp::empty(StatusCode::NO_CONTENT))
        }
        (Method::GET, ["queues", ns, name, "messages"]) => {
            peek(app, req, &find_queue(app, ns, name)?, SubQueue::Active)
        }
        (Method::GET, ["queues", ns, name, "deadletter"]) => {
            peek(app, req, &find_queue(app, ns, name)?, SubQueue::DeadLetter)
        }
        (Method::DELETE, ["queues", ns, name, "messages"]) => purge(app, &find_queue(app, ns, name)?, SubQueue::Active),
        (Method::DELETE, ["queues", ns, name, "deadletter"]) => {
            purge(app, &find_queue(app, ns, name)?, SubQueue::DeadLetter)
        }
        _ => Err(AdminError::NotFound(format!("no admin endpoint {} {}", req.method, req.path()))),
    }
}
