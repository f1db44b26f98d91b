//! local-azure's Azure Functions host: loads a function app, runs its custom handler and drives it with the
//! payloads the real host sends.
//!
//! Map of the crate:
//! - [`app`]: `host.json` and the function definitions (packaged or repository layout), validated up front.
//! - [`handler_process`]: the custom handler as a supervised child (`FUNCTIONS_CUSTOMHANDLER_PORT`, restarts).
//! - [`invoke`]: one invocation (`POST /<Function>` with `{Data, Metadata}`, chunked as the real host sends it, or
//!   buffered as Core Tools does: [`HostForm`]), logs, output bindings, the function timeout.
//! - [`binding_data`]: binding data and its encoding into `Metadata`, value by value as the real host does it.
//! - `server`: the HTTP listener and routing (the only warp code); [`http_trigger`], [`event_grid`] and `admin`
//!   (the admin API) behind it, all speaking [`http`]'s `Request` and `Reply`. Only this file imports `server`.
//! - [`timer`]: NCRONTAB schedules and the one-run-at-a-time scheduler; [`clock`] makes time injectable.
//! - [`service_bus`]: the managed-identity token, the Service Bus REST client, the peek-lock receivers and the
//!   output binding, one file each (its `//!` has the map).
//! - [`keys`]: master, function and system keys; [`logs`]: the handler's invocation logs.
//! - [`easy_auth`]: App Service Authentication in front of the HTTP triggers (token checked, caller's headers set).
//!
//! [`Host::start`] wires these together and returns a [`RunningHost`] to query and shut down.

mod admin;
pub mod app;
pub mod binding_data;
pub mod clock;
pub mod easy_auth;
pub mod event_grid;
pub mod handler_process;
pub mod http;
pub mod http_trigger;
pub mod invoke;
pub mod keys;
pub mod logs;
mod server;
pub mod service_bus;
pub mod timer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

pub use app::App;
pub use clock::{Clock, ManualClock, SystemClock};
pub use invoke::{HOST_VERSION, HostForm};
pub use logs::LogEntry;

use app::Trigger;
use handler_process::{HandlerCommand, HandlerStatus};
use invoke::Invoker;
use keys::{EVENTGRID_SYSTEM_KEY, Keys};
use logs::LogStore;
use service_bus::{ServiceBusClient, TokenSource};
use timer::TimerState;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    App(#[from] app::AppError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    Handler(#[from] handler_process::ProcessError),
    #[error("host.json names no customHandler.description.defaultExecutablePath; pass the handler path")]
    NoHandler,
    #[error("cannot listen on {addr}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Something observable the host did; tests wait on these instead of sleeping. More may be added.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostEvent {
    HandlerReady {
        port: u16,
        restarts: u64,
    },
    HandlerExited {
        exit: String,
    },
    InvocationStarted {
        function: String,
        invocation_id: String,
    },
    InvocationFinished {
        function: String,
        invocation_id: String,
        succeeded: bool,
    },
    TimerSkipped {
        function: String,
    },
    /// A timer run ended and its schedule status is recorded; the next run may start.
    TimerRunFinished {
        function: String,
    },
    MessageSettled {
        function: String,
        message_id: String,
        completed: bool,
    },
}

/// How to run a host.
pub struct HostOptions {
    /// A packaged app folder or a repository root (see [`app`]).
    pub app_dir: PathBuf,
    /// The handler executable; defaults to host.json's `defaultExecutablePath` under `app_dir`.
    pub handler_path: Option<PathBuf>,
    /// App settings: `%NAME%` expansion, connections, and the handler's environment.
    pub app_settings: BTreeMap<String, String>,
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Keeps keys and timer status across restarts when given.
    pub state_dir: Option<PathBuf>,
    pub clock: Arc<dyn Clock>,
    /// The request form the handler gets: the real host's (default) or Core Tools'.
    pub host_form: HostForm,
    /// App Service Authentication in front of the HTTP triggers; `None` (the default) runs without it.
    pub easy_auth: Option<easy_auth::EasyAuth>,
}

impl HostOptions {
    /// Defaults: handler from host.json, no settings, `127.0.0.1:0`, no state, the system clock, the real host's form.
    pub fn new(app_dir: impl Into<PathBuf>) -> HostOptions {
        HostOptions {
            app_dir: app_dir.into(),
            handler_path: None,
            app_settings: BTreeMap::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: None,
            clock: Arc::new(SystemClock),
            host_form: HostForm::Real,
            easy_auth: None,
        }
    }
}

/// What the request paths share.
pub(crate) struct Shared {
    pub app: Arc<App>,
    pub keys: Keys,
    pub invoker: Arc<Invoker>,
    pub timers: BTreeMap<String, Arc<TimerState>>,
    pub easy_auth: Option<easy_auth::EasyAuth>,
}

pub struct Host;

impl Host {
    /// Loads the app, starts the handler and waits until it listens, then starts the triggers and the listener.
    pub async fn start(options: HostOptions) -> Result<RunningHost, HostError> {
        let settings = options.app_settings;
        let app = Arc::new(App::load(&options.app_dir, &settings)?);
        let names: Vec<String> = app.functions.iter().map(|f| f.name.clone()).collect();
        let keys = Keys::load_or_generate(options.state_dir.as_deref(), &names)?;
        let (events, _) = broadcast::channel(1024);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let executable = options.handler_path.or_else(|| app.default_executable()).ok_or(HostError::NoHandler)?;
        // The handler starts in the app folder, so a path relative to the caller's directory must be made absolute
        // first or the spawn would look for it relative to the app.
        let executable = std::path::absolute(&executable).unwrap_or(executable);
        let working_directory = match &app.host.working_directory {
            Some(dir) => app.root.join(dir),
            None => app.root.clone(),
        };
        let command = HandlerCommand {
            executable,
            arguments: app.host.arguments.clone(),
            working_directory,
            app_root: app.root.clone(),
            environment: settings.clone(),
        };
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| HostError::Listen { addr: options.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| HostError::Listen { addr: options.listen, source })?;
        let (handler, supervisor) = handler_process::supervise(command, events.clone(), shutdown_rx.clone()).await?;
        let mut tasks = vec![supervisor];

        let service_bus = service_bus_clients(&app, &settings);
        let logs = Arc::new(LogStore::default());
        let invoker = Arc::new(Invoker::new(
            app.clone(),
            options.host_form,
            handler.clone(),
            logs.clone(),
            events.clone(),
            options.clock.clone(),
            service_bus.clone(),
        ));

        let mut timers = BTreeMap::new();
        for def in &app.functions {
            match &def.trigger {
                Trigger::Timer { binding, schedule, use_monitor, run_on_startup, .. } => {
                    let state = Arc::new(TimerState::new(
                        &def.name,
                        binding,
                        schedule.clone(),
                        *use_monitor,
                        options.state_dir.as_deref(),
                    ));
                    timers.insert(def.name.clone(), state.clone());
                    tasks.push(tokio::spawn(timer::run_schedule(
                        state,
                        invoker.clone(),
                        options.clock.clone(),
                        options.clock.now(),
                        *run_on_startup,
                        shutdown_rx.clone(),
                    )));
                }
                Trigger::ServiceBus { binding, queue, connection, sessions } => {
                    let Some(client) = service_bus.get(connection) else {
                        // The real host also keeps running with the function in error.
                        tracing::error!(
                            function = %def.name,
                            "not listening: app setting `{connection}__fullyQualifiedNamespace` is not set"
                        );
                        continue;
                    };
                    let sb = &app.host.service_bus;
                    let receiver = Arc::new(service_bus::Receiver {
                        function: def.name.clone(),
                        binding: binding.clone(),
                        queue: queue.clone(),
                        client: client.clone(),
                        invoker: invoker.clone(),
                        sessions: *sessions,
                        options: sb.clone(),
                        failing: Default::default(),
                    });
                    tasks.push(tokio::spawn(receiver.run(shutdown_rx.clone())));
                }
                Trigger::Http { .. } | Trigger::EventGrid { .. } => {}
            }
        }

        let shared = Arc::new(Shared { app: app.clone(), keys, invoker, timers, easy_auth: options.easy_auth });
        let mut server_shutdown = shutdown_rx.clone();
        tasks.push(tokio::spawn(server::serve(listener, shared.clone(), async move {
            stopped(&mut server_shutdown).await;
        })));
        tracing::info!(%local_addr, functions = names.len(), form = %options.host_form, "Functions host started");
        Ok(RunningHost { local_addr, shared, handler, logs, events, shutdown: shutdown_tx, tasks })
    }
}

/// One Service Bus client per connection name that has its namespace configured.
fn service_bus_clients(app: &App, settings: &BTreeMap<String, String>) -> BTreeMap<String, Arc<ServiceBusClient>> {
    let mut connections: Vec<&str> = Vec::new();
    for def in &app.functions {
        if let Trigger::ServiceBus { connection, .. } = &def.trigger {
            connections.push(connection);
        }
        for output in &def.outputs {
            if let app::OutputBinding::ServiceBus { connection, .. } = output {
                connections.push(connection);
            }
        }
    }
    connections.sort();
    connections.dedup();
    let setting = |name: &str| settings.get(name).cloned().or_else(|| std::env::var(name).ok());
    let mut clients = BTreeMap::new();
    if connections.is_empty() {
        return clients;
    }
    let http = match service_bus::azure_http_client(settings) {
        Ok(http) => http,
        Err(err) => {
            tracing::error!("Service Bus functions and outputs are off: {err}");
            return clients;
        }
    };
    for connection in connections {
        let Some(namespace) = setting(&format!("{connection}__fullyQualifiedNamespace")) else { continue };
        let token = match (setting("IDENTITY_ENDPOINT"), setting("IDENTITY_HEADER")) {
            (Some(endpoint), Some(header)) => {
                TokenSource::managed_identity(endpoint, header, setting(&format!("{connection}__clientId")))
            }
            _ => {
                tracing::warn!(
                    connection,
                    "IDENTITY_ENDPOINT/IDENTITY_HEADER are not set: Service Bus requests go without a token"
                );
                TokenSource::Anonymous
            }
        };
        // A URL instead of a host name is taken as the base URL as is (a broker on plain HTTP in tests).
        let base = if namespace.contains("://") { namespace } else { format!("https://{namespace}") };
        let client =
            ServiceBusClient::new(&base, token, http.clone()).with_try_timeout(app.host.service_bus.try_timeout);
        clients.insert(connection.to_string(), Arc::new(client));
    }
    clients
}

/// An error and its sources on one line: reqwest's own message ("error sending request") hides the cause.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Completes once the shutdown flag is set (or its sender is gone). Holds no `watch::Ref` across an await point.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A started host. Dropping it stops the triggers; [`RunningHost::shutdown`] also waits for the handler to exit.
pub struct RunningHost {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    handler: Arc<HandlerStatus>,
    logs: Arc<LogStore>,
    events: broadcast::Sender<HostEvent>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningHost {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<addr>`: the admin API and webhooks live here.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// `http://<addr>/<routePrefix>`: HTTP triggers live here.
    pub fn api_base_url(&self) -> String {
        let prefix = &self.shared.app.host.route_prefix;
        if prefix.is_empty() { self.base_url() } else { format!("{}/{prefix}", self.base_url()) }
    }

    /// The Event Grid webhook URL for `function`, with the system key: what an event subscription points at.
    pub fn eventgrid_url(&self, function: &str) -> String {
        format!("{}/runtime/webhooks/eventgrid?functionName={function}&code={}", self.base_url(), self.eventgrid_key())
    }

    pub fn app(&self) -> &App {
        &self.shared.app
    }

    /// The function's `default` key.
    pub fn function_key(&self, function: &str) -> Option<String> {
        self.shared.keys.function(function).map(str::to_string)
    }

    pub fn master_key(&self) -> String {
        self.shared.keys.master().to_string()
    }

    /// The `eventgrid_extension` system key.
    pub fn eventgrid_key(&self) -> String {
        self.shared.keys.system(EVENTGRID_SYSTEM_KEY).unwrap_or_default().to_string()
    }

    /// How many times the handler was restarted after dying.
    pub fn handler_restarts(&self) -> u64 {
        self.handler.restarts()
    }

    /// The port the handler currently listens on (`None` while it restarts).
    pub fn handler_port(&self) -> Option<u16> {
        *self.handler.port.borrow()
    }

    /// How many timer occurrences (or admin runs) of `function` were skipped because a run was still going.
    pub fn timer_skips(&self, function: &str) -> Option<u64> {
        self.shared.timers.get(function).map(|t| t.skipped())
    }

    /// The recorded `ScheduleStatus` of a timer function.
    pub fn timer_status(&self, function: &str) -> Option<timer::ScheduleStatus> {
        self.shared.timers.get(function).and_then(|t| t.status())
    }

    /// The most recent handler log lines (bounded, oldest first).
    pub fn logs(&self) -> Vec<LogEntry> {
        self.logs.snapshot()
    }

    /// Host events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.events.subscribe()
    }

    /// Stops the listener and triggers and the handler (SIGTERM, then kill), and waits for them.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send_sync<T: Send + Sync>(_: &T) {}
    fn is_send_future<F: std::future::Future + Send>(_: F) {}

    #[test]
    fn the_host_can_live_in_spawned_tasks() {
        // `local-azure up` embeds the host: starting it and holding it must work from any tokio task. The future is
        // only built, never run.
        is_send_future(async {
            if let Ok(host) = Host::start(HostOptions::new(".")).await {
                is_send_sync(&host);
                host.shutdown().await;
            }
        });
    }
}
