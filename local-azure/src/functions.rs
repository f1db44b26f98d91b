//! `local-azure up --app`: the Functions host stand-in (`local-azure-host`) embedded in local-azure, with the app
//! settings edgevault needs, local-azure's clock, and an Event Grid subscription per `eventGridTrigger` function.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use local_azure_host::app::{App as FunctionApp, Layout, Trigger};
use local_azure_host::clock::SleepFuture;
use local_azure_host::{Host, HostOptions, RunningHost};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::App;
use crate::eventgrid::schema::{DELETE_SUCCESS, WRITE_SUCCESS};
use crate::eventgrid::subscriptions::{EventSubscription, Filter};
use crate::{config, servicebus};

/// The HTTP function whose key the environment carries as `EDGEVAULT_FUNCTION_KEY`.
pub const API_FUNCTION: &str = "ActivationKeyApi";
/// The fleet page (HTML, JSON) and the variable `env` exports its function key in.
const FLEET_FUNCTIONS: [(&str, &str); 2] =
    [("FleetPage", "EDGEVAULT_FLEET_KEY"), ("FleetData", "EDGEVAULT_FLEET_DATA_KEY")];
pub const DEFAULT_RECOVERY_SWEEP: &str = "0 */5 * * * *";

#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    #[error(transparent)]
    Host(#[from] local_azure_host::HostError),
    #[error("event subscription for {function}: {source}")]
    Subscription { function: String, source: crate::eventgrid::SaveError },
    #[error(
        "the custom handler {} does not exist, and neither does a cargo build of it ({}): build it with `cargo build \
         --bin {name}` in {}, or pass --handler <path>",
        expected.display(),
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        app_dir.display()
    )]
    HandlerNotBuilt { expected: PathBuf, tried: Vec<PathBuf>, name: String, app_dir: PathBuf },
}

/// The client variables a function app process needs, from local-azure's environment.
const FORWARDED: &[&str] = &[
    "HTTPS_PROXY",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NO_PROXY",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "AZURE_TENANT_ID",
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_RESOURCE_GROUP",
    "AZURE_LOCATION",
    "EDGEVAULT_PRINCIPAL_ID",
    "EDGEVAULT_RECORDS_TABLE_URI",
];

/// The app settings: the client environment, edgevault's settings, then `overrides` (`--settings`).
pub fn app_settings(env: &Value, overrides: &[(String, String)]) -> BTreeMap<String, String> {
    let mut settings = BTreeMap::new();
    for name in FORWARDED {
        if let Some(v) = env[*name].as_str() {
            settings.insert(name.to_string(), v.to_string());
        }
    }
    settings.insert("EDGEVAULT_SUBSCRIPTIONS".into(), config::DEFAULT_SUBSCRIPTION_ID.into());
    settings.insert(
        "ServiceBusConnection__fullyQualifiedNamespace".into(),
        format!("{}.servicebus.windows.net", servicebus::DEFAULT_NAMESPACE),
    );
    settings.insert("RecoverySweepSchedule".into(), DEFAULT_RECOVERY_SWEEP.into());
    settings.insert("FUNCTIONS_WORKER_RUNTIME".into(), "custom".into());
    for (k, v) in overrides {
        settings.insert(k.clone(), v.clone());
    }
    settings
}

/// The host's timers run on local-azure's clock, so advancing it through the admin API fires them.
struct HostClock(Arc<App>);

impl local_azure_host::Clock for HostClock {
    fn now(&self) -> OffsetDateTime {
        self.0.clock.now()
    }

    fn sleep_until(&self, deadline: OffsetDateTime) -> SleepFuture<'_> {
        let mut moves = self.0.clock.moves();
        Box::pin(async move {
            loop {
                let remaining = deadline - self.0.clock.now();
                if remaining <= time::Duration::ZERO {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(remaining.min(time::Duration::minutes(10)).unsigned_abs()) => {}
                    changed = moves.changed() => if changed.is_err() { std::future::pending::<()>().await },
                }
            }
        })
    }
}

/// What `up --app` was asked to run.
pub struct AppOptions {
    pub app_dir: PathBuf,
    pub handler: Option<PathBuf>,
    pub settings: Vec<(String, String)>,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// The request form the handler gets (the real host's by default, or Core Tools').
    pub host_form: local_azure_host::HostForm,
}

/// Where cargo puts a repository's build of the handler, most optimised first.
const CARGO_PROFILES: [&str; 2] = ["release", "debug"];

/// The handler to run when none was given: host.json's `defaultExecutablePath` in the app folder when it is there
/// (a packaged app), else, in a repository root (where that file is never built), cargo's build of it:
/// `target/release/<name>`, then `target/debug/<name>`. `None` leaves the choice to the host (host.json names none).
pub fn find_handler(app_dir: &Path, settings: &BTreeMap<String, String>) -> Result<Option<PathBuf>, FunctionsError> {
    let function_app = FunctionApp::load(app_dir, settings).map_err(local_azure_host::HostError::from)?;
    let Some(expected) = function_app.default_executable() else { return Ok(None) };
    if expected.is_file() || function_app.layout != Layout::Repository {
        return Ok(Some(expected));
    }
    let name = expected.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tried: Vec<PathBuf> =
        CARGO_PROFILES.iter().map(|profile| app_dir.join("target").join(profile).join(&name)).collect();
    match tried.iter().find(|p| p.is_file()) {
        Some(built) => {
            tracing::info!(handler = %built.display(), "no --handler and no {name} in the app folder: running cargo's build");
            Ok(Some(built.clone()))
        }
        None => Err(FunctionsError::HandlerNotBuilt { expected, tried, name, app_dir: app_dir.to_path_buf() }),
    }
}

/// Starts the host, subscribes its Event Grid functions, and returns it with the environment additions.
pub async fn start(app: &Arc<App>, options: AppOptions) -> Result<(RunningHost, Map<String, Value>), FunctionsError> {
    let settings = app_settings(&app.env(), &options.settings);
    let handler = match options.handler {
        // The host starts the handler in the app folder: a handler path relative to where `up` ran must not move.
        Some(h) => Some(std::fs::canonicalize(&h).unwrap_or(h)),
        None => find_handler(&options.app_dir, &settings)?,
    };
    let host = Host::start(HostOptions {
        app_dir: options.app_dir,
        handler_path: handler,
        app_settings: settings,
        listen: options.listen,
        state_dir: Some(options.state_dir),
        clock: Arc::new(HostClock(app.clone())),
        host_form: options.host_form,
    })
    .await?;
    for def in &host.app().functions {
        if !matches!(def.trigger, Trigger::EventGrid { .. }) {
            continue;
        }
        let sub = EventSubscription {
            name: format!("functions-{}", def.name.to_ascii_lowercase()),
            endpoint: host.eventgrid_url(&def.name),
            scope: String::new(),
            schema: Default::default(),
            filter: Filter {
                included_event_types: Some(vec![WRITE_SUCCESS.into(), DELETE_SUCCESS.into()]),
                ..Default::default()
            },
            max_delivery_attempts: 30,
            event_ttl_minutes: 1440,
            retry_delay_ms: 1000,
            provisioning_state: String::new(),
            validation_error: None,
            cursor: 0,
            delivered_count: 0,
            dead_lettered_count: 0,
        };
        let saved = crate::eventgrid::save_subscription(app, sub)
            .await
            .map_err(|source| FunctionsError::Subscription { function: def.name.clone(), source })?;
        tracing::info!(function = %def.name, state = %saved.provisioning_state, "Event Grid subscription for the function");
    }
    let mut vars = Map::new();
    vars.insert("EDGEVAULT_API_BASE_URL".into(), json!(host.api_base_url()));
    if let Some(key) = host.function_key(API_FUNCTION) {
        vars.insert("EDGEVAULT_FUNCTION_KEY".into(), json!(key));
    }
    // The fleet page's functions have keys of their own, as every function does in Azure.
    for (function, var) in FLEET_FUNCTIONS {
        if let Some(key) = host.function_key(function) {
            vars.insert(var.into(), json!(key));
        }
    }
    vars.insert("EDGEVAULT_MASTER_KEY".into(), json!(host.master_key()));
    vars.insert("LOCAL_AZURE_FUNCTIONS_HOST".into(), json!(host.base_url()));
    app.extend_env(&vars);
    Ok((host, vars))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository-layout app (host.json naming `edgevault`, one HTTP function) with the given files present.
    fn repository(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let host = json!({"version": "2.0", "customHandler": {"description": {"defaultExecutablePath": "edgevault"}}});
        std::fs::write(root.join("host.json"), host.to_string()).unwrap();
        std::fs::create_dir_all(root.join("function-definitions/Api")).unwrap();
        let binding = json!({"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["get"]});
        let function = json!({"bindings": [binding, {"type": "http", "direction": "out", "name": "res"}]});
        std::fs::write(root.join("function-definitions/Api/function.json"), function.to_string()).unwrap();
        for file in files {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        dir
    }

    fn found(files: &[&str]) -> Result<Option<PathBuf>, FunctionsError> {
        let app = repository(files);
        find_handler(app.path(), &BTreeMap::new())
            .map(|handler| handler.map(|h| h.strip_prefix(app.path()).unwrap().to_path_buf()))
    }

    #[test]
    fn a_repository_root_runs_cargos_build_of_the_handler_release_first() {
        let both = ["target/release/edgevault", "target/debug/edgevault"];
        assert_eq!(found(&both).unwrap(), Some(PathBuf::from("target/release/edgevault")));
        assert_eq!(found(&["target/debug/edgevault"]).unwrap(), Some(PathBuf::from("target/debug/edgevault")));
        // A handler in the app folder itself wins, as the real host would run it.
        assert_eq!(found(&["edgevault", "target/debug/edgevault"]).unwrap(), Some(PathBuf::from("edgevault")));
    }

    #[test]
    fn without_a_build_the_error_says_which_command_builds_it() {
        let message = found(&[]).unwrap_err().to_string();
        for part in
            ["target/release/edgevault", "target/debug/edgevault", "`cargo build --bin edgevault` in", "--handler"]
        {
            assert!(message.contains(part), "{part} missing from: {message}");
        }
    }

    #[test]
    fn a_packaged_app_without_its_handler_is_left_to_the_host_to_refuse() {
        let app = tempfile::tempdir().unwrap();
        let repo = repository(&["target/debug/edgevault"]);
        std::fs::copy(repo.path().join("host.json"), app.path().join("host.json")).unwrap();
        std::fs::create_dir_all(app.path().join("Api")).unwrap();
        std::fs::copy(repo.path().join("function-definitions/Api/function.json"), app.path().join("Api/function.json"))
            .unwrap();
        assert_eq!(find_handler(app.path(), &BTreeMap::new()).unwrap(), Some(app.path().join("edgevault")));
    }

    #[test]
    fn settings_forward_the_environment_and_take_overrides() {
        let env = json!({"HTTPS_PROXY": "http://127.0.0.1:1", "IDENTITY_HEADER": "h", "LOCAL_AZURE_ADMIN": "x"});
        let s = app_settings(&env, &[("RecoverySweepSchedule".into(), "0 0 * * * *".into())]);
        assert_eq!(s["HTTPS_PROXY"], "http://127.0.0.1:1");
        assert_eq!(s["IDENTITY_HEADER"], "h");
        assert!(!s.contains_key("LOCAL_AZURE_ADMIN"));
        assert_eq!(s["ServiceBusConnection__fullyQualifiedNamespace"], "edgevault.servicebus.windows.net");
        assert_eq!(s["EDGEVAULT_SUBSCRIPTIONS"], config::DEFAULT_SUBSCRIPTION_ID);
        assert_eq!(s["RecoverySweepSchedule"], "0 0 * * * *");
    }
}
