//! Service Bus triggers and output bindings against a minimal in-test broker speaking the REST protocol subset the
//! host uses (peek-lock, complete, abandon, renew, send) plus an App Service managed-identity endpoint.
//!
//! This checks the host's side of the protocol; local-azure's real broker (sessions, lock expiry, dead-lettering)
//! gets its own end-to-end test once it exists.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::TestApp;
use local_azure_host::HostEvent;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;
use tokio::sync::Notify;
use warp::Filter;

const TOKEN: &str = "token-for-servicebus";
const IDENTITY_HEADER: &str = "identity-header-secret";

#[derive(Debug, Clone)]
struct Message {
    id: String,
    body: String,
    properties: Vec<(String, String)>,
    lock: Option<String>,
    delivery_count: u32,
    lock_seconds: i64,
    /// An abandoned message comes back (as from a real broker) instead of being dropped.
    redeliver: bool,
}

/// What the host did to the broker, in order.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Complete { queue: String, id: String, lock: String },
    Abandon { queue: String, id: String, lock: String },
    Renew { queue: String, id: String },
    Send { queue: String, content_type: String, broker: Option<String>, body: String },
}

#[derive(Default)]
struct Broker {
    queues: Mutex<std::collections::BTreeMap<String, VecDeque<Message>>>,
    calls: Mutex<Vec<Call>>,
    token_requests: Mutex<Vec<String>>,
    unauthorised: Mutex<u32>,
    /// The most messages of each queue that were locked at once.
    most_locked: Mutex<std::collections::BTreeMap<String, usize>>,
    changed: Notify,
}

impl Broker {
    fn enqueue(&self, queue: &str, message: Message) {
        self.queues.lock().unwrap().entry(queue.to_string()).or_default().push_back(message);
        self.changed.notify_waiters();
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
        self.changed.notify_waiters();
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits (with a deadline) until a call satisfies `pred`.
    async fn wait_call(&self, what: &str, pred: impl Fn(&Call) -> bool) -> Call {
        tokio::time::timeout(common::DEADLINE, async {
            loop {
                let changed = self.changed.notified();
                if let Some(call) = self.calls().into_iter().find(|c| pred(c)) {
                    return call;
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no `{what}` call within the deadline; calls: {:?}", self.calls()))
    }

    async fn serve(self: Arc<Self>) -> String {
        let broker = self.clone();
        let routes = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(move |method, path: warp::path::FullPath, query, headers, body| {
                let broker = broker.clone();
                async move { broker.handle(method, path.as_str().to_string(), query, headers, body).await }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        format!("http://{addr}")
    }

    async fn handle(
        &self,
        method: warp::http::Method,
        path: String,
        query: String,
        headers: warp::http::HeaderMap,
        body: Bytes,
    ) -> warp::http::Response<Bytes> {
        let reply = |status: u16| warp::http::Response::builder().status(status).body(Bytes::new()).unwrap();
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        if segments == ["msi"] {
            if headers.get("x-identity-header").map(|v| v.as_bytes()) != Some(IDENTITY_HEADER.as_bytes()) {
                return reply(400);
            }
            self.token_requests.lock().unwrap().push(query);
            let expires = OffsetDateTime::now_utc().unix_timestamp() + 3600;
            let body = json!({"access_token": TOKEN, "expires_on": expires.to_string(), "token_type": "Bearer",
                              "resource": "https://servicebus.azure.net"});
            return warp::http::Response::builder().status(200).body(Bytes::from(body.to_string())).unwrap();
        }
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
            *self.unauthorised.lock().unwrap() += 1;
            return reply(401);
        }
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (method.as_str(), s.as_slice()) {
            ("POST", [queue, "messages", "head"]) => self.peek_lock(queue).await,
            ("POST", [queue, "messages"]) => {
                let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                self.record(Call::Send {
                    queue: queue.to_string(),
                    content_type: text("content-type").unwrap_or_default(),
                    broker: text("brokerproperties"),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                reply(201)
            }
            (verb, [queue, "messages", id, lock]) => {
                let (queue, id, lock) = (queue.to_string(), id.to_string(), lock.to_string());
                let mut queues = self.queues.lock().unwrap();
                let messages = queues.entry(queue.clone()).or_default();
                let Some(index) = messages.iter().position(|m| m.id == id && m.lock.as_deref() == Some(&lock)) else {
                    return reply(404);
                };
                let call = match verb {
                    "DELETE" => {
                        messages.remove(index);
                        Call::Complete { queue, id, lock }
                    }
                    "PUT" => {
                        // Abandoned messages are dropped unless the test wants them back, as a real broker would.
                        if messages[index].redeliver {
                            messages[index].lock = None;
                        } else {
                            messages.remove(index);
                        }
                        Call::Abandon { queue, id, lock }
                    }
                    "POST" => Call::Renew { queue, id },
                    _ => return reply(405),
                };
                let renewed = matches!(call, Call::Renew { .. }).then(|| messages[index].lock_seconds);
                drop(queues);
                self.record(call);
                match renewed {
                    Some(seconds) => {
                        let now = broker_now();
                        let broker = json!({"LockedUntilUtc": (now + time::Duration::seconds(seconds)).format(&Rfc2822).unwrap()});
                        warp::http::Response::builder()
                            .status(200)
                            .header("BrokerProperties", broker.to_string())
                            .header("Date", now.format(&Rfc2822).unwrap())
                            .body(Bytes::new())
                            .unwrap()
                    }
                    None => reply(200),
                }
            }
            _ => reply(404),
        }
    }

    async fn peek_lock(&self, queue: &str) -> warp::http::Response<Bytes> {
        // Long-poll briefly so idle receivers do not spin.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            let changed = self.changed.notified();
            if let Some(response) = self.try_lock(queue) {
                return response;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return warp::http::Response::builder().status(204).body(Bytes::new()).unwrap();
            }
        }
    }

    fn try_lock(&self, queue: &str) -> Option<warp::http::Response<Bytes>> {
        let mut queues = self.queues.lock().unwrap();
        let messages = queues.get_mut(queue)?;
        let locked = messages.iter().filter(|m| m.lock.is_some()).count() + 1;
        let message = messages.iter_mut().find(|m| m.lock.is_none())?;
        let lock = uuid::Uuid::new_v4().to_string();
        message.lock = Some(lock.clone());
        message.delivery_count += 1;
        let mut most = self.most_locked.lock().unwrap();
        let most = most.entry(queue.to_string()).or_default();
        *most = (*most).max(locked);
        let now = broker_now();
        let broker = json!({
            "MessageId": message.id,
            "LockToken": lock,
            "DeliveryCount": message.delivery_count,
            "SequenceNumber": 41,
            "EnqueuedTimeUtc": "Sat, 28 Nov 2026 11:59:58 GMT",
            "LockedUntilUtc": (now + time::Duration::seconds(message.lock_seconds)).format(&Rfc2822).unwrap(),
            "SessionId": "ase-1",
            "CorrelationId": "8a7e9a3c",
            "Label": "ResourceCreated",
            "TimeToLive": 1209600.0,
            "State": "Active"
        });
        let mut builder = warp::http::Response::builder()
            .status(201)
            .header("Date", now.format(&Rfc2822).unwrap())
            .header("BrokerProperties", broker.to_string())
            .header("Content-Type", "application/json");
        for (name, value) in &message.properties {
            builder = builder.header(name, value);
        }
        Some(builder.body(Bytes::from(message.body.clone())).unwrap())
    }
}

/// The broker's clock runs 30 days ahead of ours, as local-azure's does once a test has moved it: lock timing must
/// be measured on the broker's clock (`LockedUntilUtc` against its `Date`), never against the host's.
fn broker_now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::days(30)
}

fn message(id: &str, body: &str) -> Message {
    Message {
        id: id.to_string(),
        body: body.to_string(),
        properties: vec![("schemaVersion".into(), "1".into()), ("origin".into(), "\"arm\"".into())],
        lock: None,
        delivery_count: 0,
        lock_seconds: 60,
        redeliver: false,
    }
}

/// Waits for `function`'s next message to be settled; returns whether it was completed.
async fn settled(t: &mut common::Started, function: &str) -> bool {
    let event = t
        .wait_for(
            &format!("{function} settled"),
            |e| matches!(e, HostEvent::MessageSettled { function: f, .. } if f == function),
        )
        .await;
    matches!(event, HostEvent::MessageSettled { completed: true, .. })
}

async fn start(broker: &Arc<Broker>) -> common::Started {
    start_with(broker, |_| {}).await
}

/// The test app against `broker`, with `host_json` changed first.
async fn start_with(broker: &Arc<Broker>, host_json: impl FnOnce(&mut Value)) -> common::Started {
    let base = broker.clone().serve().await;
    let queue = |name: &str, queue: &str| {
        json!([{"type": "serviceBusTrigger", "direction": "in", "name": "message", "queueName": queue,
                "connection": "ServiceBusConnection", "isSessionsEnabled": name.contains("Session")}])
    };
    TestApp::new()
        .function("EchoQueue", queue("EchoQueue", "work"))
        .function("FailQueue", queue("FailQueue", "failing"))
        .function("SlowQueue", queue("SlowQueue", "slow"))
        .function("SlowSessionQueue", queue("SlowSessionQueue", "slow-sessions"))
        .function(
            "OutQueue",
            json!([
                {"type": "serviceBusTrigger", "direction": "in", "name": "message", "queueName": "fanout",
                 "connection": "ServiceBusConnection"},
                {"type": "serviceBus", "direction": "out", "name": "out", "queueName": "results",
                 "connection": "ServiceBusConnection"}
            ]),
        )
        // A URL instead of a namespace host name points the client at the in-test broker.
        .setting("ServiceBusConnection__fullyQualifiedNamespace", &base)
        .setting("IDENTITY_ENDPOINT", &format!("{base}/msi"))
        .setting("IDENTITY_HEADER", IDENTITY_HEADER)
        .host_json(host_json)
        .start()
        .await
}

#[tokio::test]
async fn a_message_is_delivered_with_the_documented_metadata_and_completed() {
    let broker = Arc::new(Broker::default());
    let mut t = start(&broker).await;
    broker.enqueue("work", message("resource-created:testedgedevice:2c9a7f4e", "{\"kind\":\"ResourceCreated\"}"));
    assert!(settled(&mut t, "EchoQueue").await, "the message was completed");
    let completed = broker.wait_call("complete", |c| matches!(c, Call::Complete { .. })).await;
    assert!(
        matches!(&completed, Call::Complete { queue, id, .. } if queue == "work" && id == "resource-created:testedgedevice:2c9a7f4e")
    );

    let received = t.received("EchoQueue");
    assert_eq!(received.len(), 1);
    let request = &received[0]["request"];
    assert_eq!(
        request["Data"],
        json!({"message": "\"{\\\"kind\\\":\\\"ResourceCreated\\\"}\""}),
        "the body as a string, JSON-encoded once more by the host"
    );
    let m = &request["Metadata"];
    assert_eq!(m["MessageId"], "\"resource-created:testedgedevice:2c9a7f4e\"", "strings JSON-encoded again");
    assert_eq!(m["DeliveryCount"], "1", "numbers as strings");
    assert_eq!(m["SequenceNumber"], "41");
    assert_eq!(m["EnqueuedTimeUtc"], "2026-11-28T11:59:58");
    assert_eq!(m["EnqueuedTime"], "2026-11-28T11:59:58+00:00");
    assert_eq!(m["ExpiresAtUtc"], "2026-12-12T11:59:58");
    assert_eq!(m["ExpiresAt"], "2026-12-12T11:59:58+00:00");
    assert_eq!(m["SessionId"], "\"ase-1\"");
    assert_eq!(m["CorrelationId"], "\"8a7e9a3c\"");
    assert_eq!(m["Subject"], "\"ResourceCreated\"");
    assert_eq!(m["Label"], "\"ResourceCreated\"");
    assert_eq!(m["ContentType"], "\"application/json\"");
    assert_eq!(m["ApplicationProperties"], json!({"schemaversion": 1, "origin": "arm"}));
    assert_eq!(m["UserProperties"], m["ApplicationProperties"]);
    assert_eq!(m["MessageActions"], json!({}));
    assert_eq!(m["SessionActions"], json!({}));
    assert_eq!(m["ReceiveActions"], json!({}));
    assert_eq!(m["Client"]["IsClosed"], false);
    assert!(m.get("ReplyTo").is_none() && m.get("DeadLetterSource").is_none(), "nulls are left out");
    assert_eq!(m["kind"], "\"ResourceCreated\"", "the body's fields are merged into Metadata");
    let Call::Complete { lock, .. } = completed else { unreachable!() };
    assert_eq!(m["LockToken"], format!("\"{lock}\""));
    assert_eq!(m["sys"]["MethodName"], "EchoQueue");

    // One token for every request so far: it is cached, fetched for the Service Bus audience.
    let tokens = broker.token_requests.lock().unwrap().clone();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(
        tokens[0].contains("resource=https%3A%2F%2Fservicebus.azure.net")
            && tokens[0].contains("api-version=2019-08-01")
    );
    assert_eq!(*broker.unauthorised.lock().unwrap(), 0);
}

#[tokio::test]
async fn a_failed_invocation_abandons_the_message() {
    let broker = Arc::new(Broker::default());
    let mut t = start(&broker).await;
    broker.enqueue("failing", message("m-fail", "{}"));
    assert!(!settled(&mut t, "FailQueue").await, "the message was not completed");
    broker.wait_call("abandon", |c| matches!(c, Call::Abandon { id, .. } if id == "m-fail")).await;
    assert!(!broker.calls().iter().any(|c| matches!(c, Call::Complete { .. })));
}

#[tokio::test]
async fn the_lock_is_renewed_while_the_handler_works() {
    let broker = Arc::new(Broker::default());
    let mut t = start(&broker).await;
    let mut slow = message("m-slow", "{}");
    slow.lock_seconds = 2;
    broker.enqueue("slow", slow);
    t.wait_for(
        "SlowQueue started",
        |e| matches!(e, HostEvent::InvocationStarted { function, .. } if function == "SlowQueue"),
    )
    .await;
    // The lock has two seconds left on the broker's (skewed) clock: the host renews it at about half of that, and
    // again once the renewed lock is half gone.
    broker.wait_call("renew", |c| matches!(c, Call::Renew { id, .. } if id == "m-slow")).await;
    tokio::time::timeout(common::DEADLINE, async {
        loop {
            let changed = broker.changed.notified();
            if broker.calls().iter().filter(|c| matches!(c, Call::Renew { .. })).count() >= 2 {
                break;
            }
            changed.await;
        }
    })
    .await
    .expect("a second renewal");
    t.release_slow().await;
    broker.wait_call("complete", |c| matches!(c, Call::Complete { id, .. } if id == "m-slow")).await;
}

#[tokio::test]
async fn a_service_bus_output_is_sent_to_its_queue() {
    let broker = Arc::new(Broker::default());
    let t = start(&broker).await;
    broker.enqueue("fanout", message("m-out", "{\"n\":1}"));
    let sent = broker.wait_call("send", |c| matches!(c, Call::Send { .. })).await;
    let Call::Send { queue, content_type, broker: props, body } = sent else { unreachable!() };
    assert_eq!(queue, "results");
    assert_eq!(content_type, "application/json");
    assert_eq!(props, None);
    // The test handler's Out* answers Outputs.out = its Data, which the host sends as the message body.
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"message": "\"{\\\"n\\\":1}\""}));
    broker.wait_call("complete", |c| matches!(c, Call::Complete { id, .. } if id == "m-out")).await;
    // The output went out before the trigger message was completed.
    let calls = broker.calls();
    let send_at = calls.iter().position(|c| matches!(c, Call::Send { .. })).unwrap();
    let complete_at = calls.iter().position(|c| matches!(c, Call::Complete { id, .. } if id == "m-out")).unwrap();
    assert!(send_at < complete_at);
    drop(t);
}

#[tokio::test]
async fn a_session_function_runs_sessions_times_calls_per_session_and_ignores_max_concurrent_calls() {
    let broker = Arc::new(Broker::default());
    let t = start_with(&broker, |h| {
        h["extensions"]["serviceBus"] =
            json!({"maxConcurrentCalls": 3, "maxConcurrentSessions": 2, "maxConcurrentCallsPerSession": 2});
    })
    .await;
    for i in 0..5 {
        broker.enqueue("slow-sessions", message(&format!("s-{i}"), "{}"));
        broker.enqueue("slow", message(&format!("p-{i}"), "{}"));
    }
    // 2 sessions × 2 calls for the session function, maxConcurrentCalls for the other.
    t.wait_received("SlowSessionQueue", 4).await;
    t.wait_received("SlowQueue", 3).await;
    for done in 1..=10 {
        t.release_slow().await;
        broker
            .wait_call("a message completed", |_| {
                broker.calls().iter().filter(|c| matches!(c, Call::Complete { .. })).count() >= done
            })
            .await;
    }
    let most = broker.most_locked.lock().unwrap().clone();
    assert_eq!(
        most["slow-sessions"], 4,
        "maxConcurrentSessions × maxConcurrentCallsPerSession, not maxConcurrentCalls"
    );
    assert_eq!(most["slow"], 3, "maxConcurrentCalls");
    drop(t);
}

#[tokio::test]
async fn without_auto_complete_a_successful_message_is_left_locked() {
    let broker = Arc::new(Broker::default());
    let mut t = start_with(&broker, |h| h["extensions"]["serviceBus"] = json!({"autoCompleteMessages": false})).await;
    broker.enqueue("work", message("m-kept", "{}"));
    assert!(!settled(&mut t, "EchoQueue").await, "the message was not completed");
    assert!(
        !broker.calls().iter().any(|c| matches!(c, Call::Complete { .. } | Call::Abandon { .. })),
        "neither completed nor abandoned: {:?}",
        broker.calls()
    );
}

#[tokio::test]
async fn an_invocation_past_function_timeout_restarts_the_handler_and_every_message_in_flight_comes_back() {
    let broker = Arc::new(Broker::default());
    let mut t = start_with(&broker, |h| h["functionTimeout"] = json!("00:00:03")).await;
    let mut overrun = message("m-overrun", "{}");
    overrun.lock_seconds = 2;
    overrun.redeliver = true;
    broker.enqueue("slow", overrun);
    t.wait_started("SlowQueue", 1).await;
    // The host renews the first lock about a second in. The second message arrives then, so it is in flight when
    // the first overruns functionTimeout, well before its own time is up.
    broker.wait_call("renew", |c| matches!(c, Call::Renew { id, .. } if id == "m-overrun")).await;
    let mut in_flight = message("m-in-flight", "{}");
    in_flight.redeliver = true;
    broker.enqueue("slow", in_flight);
    t.wait_received("SlowQueue", 2).await;
    let second_started = tokio::time::Instant::now();

    // At three seconds the host restarts the handler process, failing both invocations: both messages are
    // abandoned, the second one before its own timeout.
    let exited = t.wait_for("the handler killed", |e| matches!(e, HostEvent::HandlerExited { .. })).await;
    assert!(matches!(&exited, HostEvent::HandlerExited { exit } if exit.contains("functionTimeout")), "{exited:?}");
    broker.wait_call("first abandoned", |c| matches!(c, Call::Abandon { id, .. } if id == "m-overrun")).await;
    broker.wait_call("second abandoned", |c| matches!(c, Call::Abandon { id, .. } if id == "m-in-flight")).await;
    assert!(
        second_started.elapsed() < Duration::from_secs(3),
        "the second failed with the restart, not its own timeout"
    );
    t.wait_for("a new handler", |e| matches!(e, HostEvent::HandlerReady { restarts: 1, .. })).await;

    // Both come back to the new process with a higher delivery count, and complete this time.
    let received = t.wait_received("SlowQueue", 4).await;
    let redelivered: Vec<(String, Value)> = received[2..]
        .iter()
        .map(|r| {
            (
                r["request"]["Metadata"]["MessageId"].as_str().unwrap().to_string(),
                r["request"]["Metadata"]["DeliveryCount"].clone(),
            )
        })
        .collect();
    assert!(redelivered.contains(&("\"m-overrun\"".into(), json!("2"))), "{redelivered:?}");
    assert!(redelivered.contains(&("\"m-in-flight\"".into(), json!("2"))), "{redelivered:?}");
    t.release_slow().await;
    t.release_slow().await;
    broker.wait_call("first completed", |c| matches!(c, Call::Complete { id, .. } if id == "m-overrun")).await;
    broker.wait_call("second completed", |c| matches!(c, Call::Complete { id, .. } if id == "m-in-flight")).await;
    assert_eq!(t.host.handler_restarts(), 1);
}
