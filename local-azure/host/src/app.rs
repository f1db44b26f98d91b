//! Loading a function app: `host.json` plus one `function.json` per function, in either layout.
//!
//! The packaged layout (what `cargo xtask package` writes and the real host reads) keeps each definition at
//! `<app>/<Name>/function.json`; the repository keeps them at `<repo>/function-definitions/<Name>/function.json`.
//! Everything the host later relies on is checked here, once, so a typo in a definition is a startup error naming
//! the function and the field rather than a trigger that silently never fires.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::http_trigger::RouteTemplate;
use crate::timer::Schedule;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot read {path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid JSON")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("host.json: {0}")]
    HostJson(String),
    #[error("function `{function}`: {message}")]
    Invalid { function: String, message: String },
    #[error(
        "no function definitions under {0} (expected <Name>/function.json or function-definitions/<Name>/function.json)"
    )]
    NoFunctions(PathBuf),
}

/// Which of the two layouts the app folder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Packaged,
    Repository,
}

/// The loaded, validated app.
#[derive(Debug, Clone)]
pub struct App {
    pub root: PathBuf,
    pub layout: Layout,
    pub host: HostConfig,
    pub functions: Vec<FunctionDef>,
}

/// What the host reads from `host.json`.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// `customHandler.description.defaultExecutablePath`, relative to the app folder.
    pub executable: Option<String>,
    pub working_directory: Option<String>,
    pub arguments: Vec<String>,
    pub enable_forwarding_http_request: bool,
    /// `extensions.http.routePrefix` without surrounding slashes; empty means routes sit at the root.
    pub route_prefix: String,
    pub function_timeout: Duration,
    pub service_bus: ServiceBusOptions,
}

/// `extensions.serviceBus`, as the Service Bus extension 5.x reads it (azure-sdk-for-net
/// `sdk/servicebus/Microsoft.Azure.WebJobs.Extensions.ServiceBus/src/Config/ServiceBusOptions.cs`).
#[derive(Debug, Clone)]
pub struct ServiceBusOptions {
    /// `maxConcurrentCalls` (default 16 × processors): concurrency of a function **without** sessions. A
    /// session-enabled function ignores it (`ToSessionProcessorOptions` does not pass it on).
    pub max_concurrent_calls: usize,
    /// `maxConcurrentSessions` (default 8): sessions a session-enabled function works on at once.
    pub max_concurrent_sessions: usize,
    /// `maxConcurrentCallsPerSession` (default 1): calls per session; a session-enabled function runs
    /// `maxConcurrentSessions × maxConcurrentCallsPerSession` invocations at most.
    pub max_concurrent_calls_per_session: usize,
    /// `maxAutoLockRenewalDuration` (default 5 min).
    pub max_auto_lock_renewal: Duration,
    /// `autoCompleteMessages` (default true): complete the message after a successful invocation. When false the
    /// host leaves a successful message locked (a custom handler cannot settle it), so it comes back.
    pub auto_complete_messages: bool,
    /// `prefetchCount` (default 0).
    pub prefetch_count: u64,
    /// `sessionIdleTimeout` (default: `clientRetryOptions.tryTimeout`).
    pub session_idle_timeout: Option<Duration>,
    /// `clientRetryOptions.tryTimeout` (default 1 min): how long one Service Bus operation may take.
    pub try_timeout: Duration,
}

impl ServiceBusOptions {
    /// How many invocations of one function run at once: the processor's concurrency.
    pub fn concurrency(&self, sessions: bool) -> usize {
        if sessions {
            self.max_concurrent_sessions * self.max_concurrent_calls_per_session
        } else {
            self.max_concurrent_calls
        }
    }
}

#[derive(Debug, Clone)]
pub struct FunctionDef {
    pub name: String,
    pub trigger: Trigger,
    pub outputs: Vec<OutputBinding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLevel {
    Anonymous,
    Function,
    Admin,
}

#[derive(Debug, Clone)]
pub enum Trigger {
    Http {
        binding: String,
        route: RouteTemplate,
        /// Upper-case method names; `None` accepts every method, as the real host does when `methods` is absent.
        methods: Option<Vec<String>>,
        auth_level: AuthLevel,
    },
    Timer {
        binding: String,
        schedule: Schedule,
        /// The expression as written (before `%NAME%` expansion), for messages.
        expression: String,
        run_on_startup: bool,
        use_monitor: bool,
    },
    ServiceBus {
        binding: String,
        queue: String,
        connection: String,
        sessions: bool,
    },
    EventGrid {
        binding: String,
    },
}

impl Trigger {
    pub fn binding(&self) -> &str {
        match self {
            Trigger::Http { binding, .. }
            | Trigger::Timer { binding, .. }
            | Trigger::ServiceBus { binding, .. }
            | Trigger::EventGrid { binding } => binding,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Http { .. } => "httpTrigger",
            Trigger::Timer { .. } => "timerTrigger",
            Trigger::ServiceBus { .. } => "serviceBusTrigger",
            Trigger::EventGrid { .. } => "eventGridTrigger",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputBinding {
    /// `http` output; `$return` means the handler's `ReturnValue`.
    Http {
        name: String,
    },
    ServiceBus {
        name: String,
        queue: String,
        connection: String,
    },
}

impl App {
    /// Loads the app at `root`, expanding `%NAME%` in timer schedules from `settings`.
    pub fn load(root: &Path, settings: &BTreeMap<String, String>) -> Result<App, AppError> {
        let host_path = root.join("host.json");
        let host_json = read_json(&host_path)?;
        let host = HostConfig::from_json(&host_json)?;
        let (layout, defs_dir) = if root.join("function-definitions").is_dir() {
            (Layout::Repository, root.join("function-definitions"))
        } else {
            (Layout::Packaged, root.to_path_buf())
        };
        let entries = std::fs::read_dir(&defs_dir).map_err(|source| AppError::Io { path: defs_dir.clone(), source })?;
        let mut functions = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| AppError::Io { path: defs_dir.clone(), source })?;
            let path = entry.path().join("function.json");
            if !path.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            // The real host honours this app setting to switch a function off without redeploying.
            let disabled_setting = format!("AzureWebJobs.{name}.Disabled");
            if settings.get(&disabled_setting).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                tracing::info!(function = %name, "disabled by app setting {disabled_setting}");
                continue;
            }
            let json = read_json(&path)?;
            if json.get("disabled").and_then(Value::as_bool) == Some(true) {
                tracing::info!(function = %name, "disabled in function.json");
                continue;
            }
            functions.push(FunctionDef::from_json(&name, &json, settings)?);
        }
        if functions.is_empty() {
            return Err(AppError::NoFunctions(root.to_path_buf()));
        }
        functions.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(App { root: root.to_path_buf(), layout, host, functions })
    }

    pub fn function(&self, name: &str) -> Option<&FunctionDef> {
        // Function names are case-insensitive in the real host's admin and webhook APIs.
        self.functions.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The handler executable named by `host.json`, resolved against the app folder.
    pub fn default_executable(&self) -> Option<PathBuf> {
        self.host.executable.as_ref().map(|exe| self.root.join(exe))
    }
}

fn read_json(path: &Path) -> Result<Value, AppError> {
    let text = std::fs::read_to_string(path).map_err(|source| AppError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|source| AppError::Json { path: path.to_path_buf(), source })
}

impl HostConfig {
    fn from_json(json: &Value) -> Result<HostConfig, AppError> {
        if let Some(version) = json.get("version").and_then(Value::as_str)
            && version != "2.0"
        {
            return Err(AppError::HostJson(format!(
                "version `{version}` is not supported; the Functions v4 host reads \"2.0\""
            )));
        }
        let description = &json["customHandler"]["description"];
        let executable = description["defaultExecutablePath"].as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let working_directory = description["workingDirectory"].as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let arguments = description["arguments"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let route_prefix =
            json["extensions"]["http"]["routePrefix"].as_str().unwrap_or("api").trim_matches('/').to_string();
        let function_timeout = match json.get("functionTimeout").and_then(Value::as_str) {
            Some(text) => parse_timespan(text)
                .ok_or_else(|| AppError::HostJson(format!("functionTimeout `{text}` is not a hh:mm:ss timespan")))?,
            // The Consumption plan default (ScriptJobHostOptionsSetup.DefaultConsumptionFunctionTimeout); without a
            // limit a hung handler would hold a Service Bus lock forever.
            None => Duration::from_secs(5 * 60),
        };
        if function_timeout < Duration::from_secs(1) {
            // ScriptJobHostOptionsSetup.MinFunctionTimeout.
            return Err(AppError::HostJson("functionTimeout must be at least 00:00:01".into()));
        }
        let service_bus = service_bus_options(&json["extensions"]["serviceBus"])?;
        Ok(HostConfig {
            executable,
            working_directory,
            arguments,
            enable_forwarding_http_request: json["customHandler"]["enableForwardingHttpRequest"]
                .as_bool()
                .unwrap_or(false),
            route_prefix,
            function_timeout,
            service_bus,
        })
    }
}

/// Reads `extensions.serviceBus`. Every setting of the extension's `ServiceBusOptions` that a single-message
/// trigger uses is read and checked; the batch settings (`maxMessageBatchSize`, …) and ones that do not apply to
/// this transport are accepted as the real host accepts them.
fn service_bus_options(sb: &Value) -> Result<ServiceBusOptions, AppError> {
    let bad = |field: &str, what: &str| AppError::HostJson(format!("extensions.serviceBus.{field} must be {what}"));
    let count = |field: &str, default: usize| -> Result<usize, AppError> {
        match sb.get(field) {
            None => Ok(default),
            Some(v) => {
                v.as_u64().filter(|n| *n > 0).map(|n| n as usize).ok_or_else(|| bad(field, "a positive integer"))
            }
        }
    };
    let span = |value: &Value, field: &str| -> Result<Option<Duration>, AppError> {
        match value.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_str().and_then(parse_timespan).map(Some).ok_or_else(|| bad(field, "a timespan (hh:mm:ss)")),
        }
    };
    let processors = std::thread::available_parallelism().map_or(1, |n| n.get());
    let retry = &sb["clientRetryOptions"];
    if let Some(mode) = retry.get("mode").and_then(Value::as_str)
        && !matches!(mode.to_ascii_lowercase().as_str(), "exponential" | "fixed")
    {
        return Err(bad("clientRetryOptions.mode", "`exponential` or `fixed`"));
    }
    if retry.get("maxRetries").is_some_and(|v| v.as_u64().is_none()) {
        return Err(bad("clientRetryOptions.maxRetries", "a non-negative integer"));
    }
    for field in ["delay", "maxDelay"] {
        span(retry, field).map_err(|_| bad(&format!("clientRetryOptions.{field}"), "a timespan (hh:mm:ss)"))?;
    }
    let try_timeout = span(retry, "tryTimeout")
        .map_err(|_| bad("clientRetryOptions.tryTimeout", "a timespan (hh:mm:ss)"))?
        .unwrap_or(Duration::from_secs(60));
    let prefetch_count = match sb.get("prefetchCount") {
        None => 0,
        Some(v) => v.as_u64().ok_or_else(|| bad("prefetchCount", "a non-negative integer"))?,
    };
    let auto_complete_messages = match sb.get("autoCompleteMessages") {
        None => true,
        Some(v) => v.as_bool().ok_or_else(|| bad("autoCompleteMessages", "true or false"))?,
    };
    Ok(ServiceBusOptions {
        max_concurrent_calls: count("maxConcurrentCalls", 16 * processors)?,
        max_concurrent_sessions: count("maxConcurrentSessions", 8)?,
        max_concurrent_calls_per_session: count("maxConcurrentCallsPerSession", 1)?,
        // `Timeout.InfiniteTimeSpan` is written `-00:00:00.0010000` in host.json.
        max_auto_lock_renewal: if sb["maxAutoLockRenewalDuration"] == "-00:00:00.0010000" {
            Duration::MAX
        } else {
            span(sb, "maxAutoLockRenewalDuration")?.unwrap_or(Duration::from_secs(5 * 60))
        },
        auto_complete_messages,
        prefetch_count,
        session_idle_timeout: span(sb, "sessionIdleTimeout")?,
        try_timeout,
    })
}

/// Parses a .NET `TimeSpan` the way host.json writes them: `[d.]hh:mm:ss[.fffffff]`.
pub fn parse_timespan(text: &str) -> Option<Duration> {
    let (days, rest) = match text.split_once('.') {
        Some((d, rest)) if rest.contains(':') && !d.contains(':') => (d.parse::<u64>().ok()?, rest),
        _ => (0, text),
    };
    let mut parts = rest.split(':');
    let hours: u64 = parts.next()?.parse().ok()?;
    let minutes: u64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || minutes >= 60 || !(0.0..60.0).contains(&seconds) {
        return None;
    }
    Some(Duration::from_secs((days * 24 + hours) * 3600 + minutes * 60) + Duration::from_secs_f64(seconds))
}

/// Replaces every `%NAME%` with the app setting `NAME`, as the real host does for binding expressions.
pub fn expand_settings(text: &str, settings: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find('%').ok_or_else(|| format!("unterminated `%` in `{text}`"))?;
        let name = &after[..end];
        if name.is_empty() {
            return Err(format!("empty `%%` in `{text}`"));
        }
        let value = settings.get(name).ok_or_else(|| format!("app setting `{name}` (from `%{name}%`) is not set"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl FunctionDef {
    fn from_json(name: &str, json: &Value, settings: &BTreeMap<String, String>) -> Result<FunctionDef, AppError> {
        let invalid = |message: String| AppError::Invalid { function: name.to_string(), message };
        let bindings = json["bindings"].as_array().ok_or_else(|| invalid("`bindings` must be an array".into()))?;
        let mut trigger = None;
        let mut outputs = Vec::new();
        for (index, binding) in bindings.iter().enumerate() {
            let kind = binding["type"].as_str().ok_or_else(|| invalid(format!("bindings[{index}].type is missing")))?;
            let binding_name = binding["name"]
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(format!("bindings[{index}] ({kind}) has no `name`")))?
                .to_string();
            let direction = binding["direction"].as_str().unwrap_or("in");
            let label = binding_name.clone();
            let text = |field: &str| -> Result<String, AppError> {
                binding[field]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("{kind} binding `{label}` has no `{field}`")))
            };
            let parsed = match (kind, direction) {
                ("httpTrigger", "in") => {
                    let route_text = binding["route"].as_str().unwrap_or(name);
                    let route =
                        RouteTemplate::parse(route_text).map_err(|e| invalid(format!("route `{route_text}`: {e}")))?;
                    let methods = match binding.get("methods") {
                        None | Some(Value::Null) => None,
                        Some(Value::Array(items)) => Some(
                            items
                                .iter()
                                .map(|m| m.as_str().map(str::to_ascii_uppercase))
                                .collect::<Option<Vec<_>>>()
                                .ok_or_else(|| invalid("`methods` must be a list of strings".into()))?,
                        ),
                        Some(_) => return Err(invalid("`methods` must be a list of strings".into())),
                    };
                    let auth_level = match binding["authLevel"].as_str().map(str::to_ascii_lowercase).as_deref() {
                        None | Some("function") => AuthLevel::Function,
                        Some("anonymous") => AuthLevel::Anonymous,
                        Some("admin") => AuthLevel::Admin,
                        Some(other) => {
                            return Err(invalid(format!(
                                "authLevel `{other}` is not one of anonymous, function, admin"
                            )));
                        }
                    };
                    Binding::Trigger(Trigger::Http { binding: binding_name, route, methods, auth_level })
                }
                ("timerTrigger", "in") => {
                    let expression = text("schedule")?;
                    let expanded =
                        expand_settings(&expression, settings).map_err(|e| invalid(format!("schedule: {e}")))?;
                    let schedule = Schedule::parse(&expanded)
                        .map_err(|e| invalid(format!("schedule `{expanded}` (from `{expression}`): {e}")))?;
                    Binding::Trigger(Trigger::Timer {
                        binding: binding_name,
                        schedule,
                        expression,
                        run_on_startup: binding["runOnStartup"].as_bool().unwrap_or(false),
                        use_monitor: binding["useMonitor"].as_bool().unwrap_or(true),
                    })
                }
                ("serviceBusTrigger", "in") => {
                    if binding.get("topicName").is_some() {
                        return Err(invalid(
                            "topic subscriptions are not supported by local-azure; use a queue".into(),
                        ));
                    }
                    Binding::Trigger(Trigger::ServiceBus {
                        binding: binding_name,
                        queue: text("queueName")?,
                        connection: text("connection")?,
                        sessions: binding["isSessionsEnabled"].as_bool().unwrap_or(false),
                    })
                }
                ("eventGridTrigger", "in") => Binding::Trigger(Trigger::EventGrid { binding: binding_name }),
                ("http", "out") => Binding::Output(OutputBinding::Http { name: binding_name }),
                ("serviceBus", "out") => Binding::Output(OutputBinding::ServiceBus {
                    queue: text("queueName")?,
                    connection: text("connection")?,
                    name: binding_name,
                }),
                (kind, direction) if kind.ends_with("Trigger") => {
                    return Err(invalid(format!(
                        "trigger type `{kind}` (direction `{direction}`) is not supported; local-azure hosts \
                         httpTrigger, timerTrigger, serviceBusTrigger and eventGridTrigger"
                    )));
                }
                (kind, direction) => {
                    return Err(invalid(format!(
                        "binding type `{kind}` with direction `{direction}` is not supported; local-azure supports \
                         output bindings `http` and `serviceBus`"
                    )));
                }
            };
            match parsed {
                Binding::Trigger(t) if trigger.is_none() => trigger = Some(t),
                Binding::Trigger(_) => return Err(invalid("has more than one trigger binding".into())),
                Binding::Output(o) => outputs.push(o),
            }
        }
        let trigger = trigger.ok_or_else(|| invalid("has no trigger binding".into()))?;
        let has_http_output = outputs.iter().any(|o| matches!(o, OutputBinding::Http { .. }));
        if matches!(trigger, Trigger::Http { .. }) && !has_http_output {
            return Err(invalid("an httpTrigger needs an `http` output binding to answer the request".into()));
        }
        Ok(FunctionDef { name: name.to_string(), trigger, outputs })
    }
}

enum Binding {
    Trigger(Trigger),
    Output(OutputBinding),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(bindings: Value) -> Result<FunctionDef, AppError> {
        let settings = BTreeMap::from([("Sweep".to_string(), "0 */5 * * * *".to_string())]);
        FunctionDef::from_json("F", &json!({ "bindings": bindings }), &settings)
    }

    #[test]
    fn reads_the_repository_definitions() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let settings = BTreeMap::from([("RecoverySweepSchedule".to_string(), "0 0 * * * *".to_string())]);
        let app = App::load(&root, &settings).unwrap();
        assert_eq!(app.layout, Layout::Repository);
        assert_eq!(app.host.route_prefix, "api");
        // Every Service Bus trigger of the app is session-enabled: 24 sessions (the sweep's pages run two sessions per
        // subscription beside the workers'), one call each, and no maxConcurrentCalls, which such triggers ignore.
        assert_eq!(app.host.service_bus.max_concurrent_sessions, 24);
        assert_eq!(app.host.service_bus.max_concurrent_calls_per_session, 1);
        assert_eq!(app.host.service_bus.concurrency(true), 24);
        assert!(app.host.service_bus.auto_complete_messages);
        assert_eq!(app.host.service_bus.prefetch_count, 0);
        assert_eq!(app.host.service_bus.session_idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(app.host.service_bus.try_timeout, Duration::from_secs(60));
        assert!(app.functions.iter().all(|f| !matches!(f.trigger, Trigger::ServiceBus { sessions: false, .. })));
        assert_eq!(app.host.function_timeout, Duration::from_secs(600));
        assert_eq!(app.host.executable.as_deref(), Some("edgevault"));
        let names: Vec<_> = app.functions.iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"ActivationKeyApi") && names.contains(&"RecoverySweep"), "{names:?}");
        let Trigger::ServiceBus { queue, sessions, connection, .. } = &app.function("resourcecreated").unwrap().trigger
        else {
            panic!("ResourceCreated is a Service Bus function");
        };
        assert_eq!(
            (queue.as_str(), *sessions, connection.as_str()),
            ("resource-created", true, "ServiceBusConnection")
        );
    }

    #[test]
    fn names_what_is_wrong() {
        let err = def(json!([{"type": "blobTrigger", "direction": "in", "name": "b"}])).unwrap_err();
        assert!(err.to_string().contains("`blobTrigger`"), "{err}");
        let err =
            def(json!([{"type": "serviceBusTrigger", "direction": "in", "name": "m", "connection": "C"}])).unwrap_err();
        assert!(err.to_string().contains("no `queueName`"), "{err}");
        let err = def(json!([{"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "0 61 * * * *"}]))
            .unwrap_err();
        assert!(err.to_string().contains("schedule `0 61 * * * *`"), "{err}");
        let err = def(json!([{"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "%Missing%"}]))
            .unwrap_err();
        assert!(err.to_string().contains("`Missing`"), "{err}");
        let err = def(json!([{"type": "httpTrigger", "direction": "in", "name": "req"}])).unwrap_err();
        assert!(err.to_string().contains("`http` output"), "{err}");
        let err = def(json!([{"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "system"},
                              {"type": "http", "direction": "out", "name": "res"}]))
        .unwrap_err();
        assert!(err.to_string().contains("authLevel `system`"), "{err}");
        assert!(def(json!([])).unwrap_err().to_string().contains("no trigger"));
    }

    #[test]
    fn expands_app_settings_in_schedules() {
        let f = def(json!([{"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "%Sweep%"}])).unwrap();
        let Trigger::Timer { expression, schedule, .. } = f.trigger else { panic!() };
        assert_eq!(expression, "%Sweep%");
        assert_eq!(schedule.to_string(), "0 */5 * * * *");
    }

    #[test]
    fn setting_expansion() {
        let settings = BTreeMap::from([("A".to_string(), "1".to_string()), ("B".to_string(), "two".to_string())]);
        assert_eq!(expand_settings("x%A%y%B%", &settings).unwrap(), "x1ytwo");
        assert_eq!(expand_settings("plain", &settings).unwrap(), "plain");
        assert!(expand_settings("%A", &settings).unwrap_err().contains("unterminated"));
        assert!(expand_settings("%C%", &settings).unwrap_err().contains("`C`"));
    }

    #[test]
    fn service_bus_settings_are_read_and_checked() {
        let options = |sb: Value| service_bus_options(&sb);
        let defaults = options(json!(null)).unwrap();
        assert_eq!((defaults.max_concurrent_sessions, defaults.max_concurrent_calls_per_session), (8, 1));
        assert!(defaults.max_concurrent_calls >= 16 && defaults.auto_complete_messages);
        let sessions =
            options(json!({"maxConcurrentCalls": 3, "maxConcurrentSessions": 2, "maxConcurrentCallsPerSession": 4}))
                .unwrap();
        assert_eq!((sessions.concurrency(true), sessions.concurrency(false)), (8, 3));
        assert_eq!(
            options(json!({"maxAutoLockRenewalDuration": "-00:00:00.0010000"})).unwrap().max_auto_lock_renewal,
            Duration::MAX
        );
        for (bad, field) in [
            (json!({"maxConcurrentCallsPerSession": 0}), "maxConcurrentCallsPerSession"),
            (json!({"autoCompleteMessages": "yes"}), "autoCompleteMessages"),
            (json!({"sessionIdleTimeout": "30 seconds"}), "sessionIdleTimeout"),
            (json!({"clientRetryOptions": {"mode": "linear"}}), "clientRetryOptions.mode"),
            (json!({"clientRetryOptions": {"tryTimeout": "soon"}}), "clientRetryOptions.tryTimeout"),
        ] {
            let err = options(bad).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        let err = HostConfig::from_json(&json!({"functionTimeout": "00:00:00.5"})).unwrap_err();
        assert!(err.to_string().contains("at least 00:00:01"), "{err}");
    }

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("00:10:00"), Some(Duration::from_secs(600)));
        assert_eq!(parse_timespan("1.02:00:00"), Some(Duration::from_secs(26 * 3600)));
        assert_eq!(parse_timespan("00:00:00.80"), Some(Duration::from_millis(800)));
        assert_eq!(parse_timespan("10 minutes"), None);
    }
}
