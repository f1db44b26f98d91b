//! Shared test scaffolding: a packaged app folder built in a temp dir, the test handler, and event waits.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use local_azure_host::{Host, HostEvent, HostForm, HostOptions, ManualClock, RunningHost};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::sync::broadcast;

/// The manual clock's starting point: a Saturday, three minutes past noon.
pub const START: OffsetDateTime = datetime!(2026-11-28 12:03:00 UTC);
pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct TestApp {
    pub dir: tempfile::TempDir,
    functions: Vec<(String, Value)>,
    settings: BTreeMap<String, String>,
    host_json: Value,
    form: HostForm,
}

impl TestApp {
    pub fn new() -> TestApp {
        TestApp {
            dir: tempfile::tempdir().unwrap(),
            functions: Vec::new(),
            settings: BTreeMap::new(),
            host_json: json!({
                "version": "2.0",
                "customHandler": {"description": {"defaultExecutablePath": "handler"}, "enableForwardingHttpRequest": false},
                "extensions": {"http": {"routePrefix": "api"}}
            }),
            form: HostForm::Real,
        }
    }

    pub fn function(mut self, name: &str, bindings: Value) -> TestApp {
        self.functions.push((name.to_string(), json!({ "bindings": bindings })));
        self
    }

    pub fn http(self, name: &str, auth: &str, route: &str, methods: &[&str]) -> TestApp {
        self.function(
            name,
            json!([
                {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": auth, "route": route, "methods": methods},
                {"type": "http", "direction": "out", "name": "res"}
            ]),
        )
    }

    pub fn timer(self, name: &str, schedule: &str) -> TestApp {
        self.function(name, json!([{"type": "timerTrigger", "direction": "in", "name": "timer", "schedule": schedule}]))
    }

    pub fn event_grid(self, name: &str) -> TestApp {
        self.function(name, json!([{"type": "eventGridTrigger", "direction": "in", "name": "event"}]))
    }

    pub fn forwarding(mut self) -> TestApp {
        self.host_json["customHandler"]["enableForwardingHttpRequest"] = json!(true);
        self
    }

    /// Changes host.json before it is written.
    pub fn host_json(mut self, change: impl FnOnce(&mut Value)) -> TestApp {
        change(&mut self.host_json);
        self
    }

    /// Runs the host in Core Tools' form instead of the real host's.
    pub fn form(mut self, form: HostForm) -> TestApp {
        self.form = form;
        self
    }

    pub fn setting(mut self, name: &str, value: &str) -> TestApp {
        self.settings.insert(name.to_string(), value.to_string());
        self
    }

    pub fn record_file(&self) -> PathBuf {
        self.dir.path().join("received.jsonl")
    }

    pub fn write(&self) -> PathBuf {
        let app = self.dir.path().join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(app.join("host.json"), self.host_json.to_string()).unwrap();
        for (name, def) in &self.functions {
            std::fs::create_dir_all(app.join(name)).unwrap();
            std::fs::write(app.join(name).join("function.json"), def.to_string()).unwrap();
        }
        app
    }

    pub async fn start(self) -> Started {
        self.try_start().await.expect("the host starts")
    }

    pub async fn try_start(self) -> Result<Started, local_azure_host::HostError> {
        let app_dir = self.write();
        let clock = Arc::new(ManualClock::new(START));
        let mut settings = self.settings.clone();
        settings.insert("TEST_HANDLER_RECORD".into(), self.record_file().display().to_string());
        let options = HostOptions {
            handler_path: Some(PathBuf::from(env!("CARGO_BIN_EXE_test-handler"))),
            app_settings: settings,
            clock: clock.clone(),
            host_form: self.form,
            ..HostOptions::new(&app_dir)
        };
        let host = Host::start(options).await?;
        let events = host.subscribe();
        Ok(Started { host, clock, events, http: reqwest::Client::builder().no_proxy().build().unwrap(), app: self })
    }
}

pub struct Started {
    pub host: RunningHost,
    pub clock: Arc<ManualClock>,
    pub events: broadcast::Receiver<HostEvent>,
    pub http: reqwest::Client,
    pub app: TestApp,
}

impl Started {
    /// Waits (with a deadline) for the first event from now on that satisfies `pred`.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&HostEvent) -> bool) -> HostEvent {
        let events = &mut self.events;
        tokio::time::timeout(DEADLINE, async {
            loop {
                match events.recv().await {
                    Ok(event) if pred(&event) => return event,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("the host's event channel closed"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no `{what}` event within {DEADLINE:?}"))
    }

    /// Waits for `count` invocations of `function` to start; returns their invocation ids.
    pub async fn wait_started(&mut self, function: &str, count: usize) -> Vec<String> {
        let mut ids = Vec::new();
        while ids.len() < count {
            if let HostEvent::InvocationStarted { invocation_id, .. } = self
                .wait_for(
                    &format!("{function} started"),
                    |e| matches!(e, HostEvent::InvocationStarted { function: f, .. } if f == function),
                )
                .await
            {
                ids.push(invocation_id);
            }
        }
        ids
    }

    pub async fn wait_finished(&mut self, function: &str) -> bool {
        match self
            .wait_for(
                &format!("{function} finished"),
                |e| matches!(e, HostEvent::InvocationFinished { function: f, .. } if f == function),
            )
            .await
        {
            HostEvent::InvocationFinished { succeeded, .. } => succeeded,
            _ => unreachable!(),
        }
    }

    /// Every invocation the handler recorded for `function`, oldest first.
    pub fn received(&self, function: &str) -> Vec<Value> {
        received(&self.app.record_file(), function)
    }

    /// Waits (with a deadline) until the handler has recorded `count` invocations of `function`: they reached it.
    /// The record file is the handler's only signal, so this looks at it every few milliseconds.
    pub async fn wait_received(&self, function: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let received = self.received(function);
            if received.len() >= count {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{function}: {} of {count} invocations arrived",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.host.base_url())
    }

    /// Asks the test handler's `Slow*` functions to finish.
    pub async fn release_slow(&self) {
        let port = self.host.handler_port().expect("the handler is up");
        let status = self.http.post(format!("http://127.0.0.1:{port}/_release")).send().await.unwrap().status();
        assert_eq!(status, 200);
    }
}

pub fn received(file: &Path, function: &str) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(file) else { return Vec::new() };
    // Only complete lines: another invocation may be being recorded right now.
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|r| r["function"] == function).collect()
}
