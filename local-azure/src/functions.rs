//! `local-azure up --app`: the Functions host stand-in (`local-azure-host`) embedded in local-azure, with the app
//! settings edgevault needs, local-azure's clock, and an Event Grid subscription per `eventGridTrigger` function.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use local_azure_host::app::Trigger;
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
pub const DEFAULT_RECOVERY_SWEEP: &str = "0 */5 * * * *";

#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    #[error(transparent)]
    Host(#[from] local_azure_host::HostError),
    #[error("event subscription for {function}: {source}")]
    Subscription { function: String, source: crate::eventgrid::SaveError },
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

/// Starts the host, subscribes its Event Grid functions, and returns it with the environment additions.
pub async fn start(app: &Arc<App>, options: AppOptions) -> Result<(RunningHost, Map<String, Value>), FunctionsError> {
    let settings = app_settings(&app.env(), &options.settings);
    // The host starts the handler in the app folder: a handler path relative to where `up` ran must not move.
    let handler = options.handler.map(|h| std::fs::canonicalize(&h).unwrap_or(h));
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
    vars.insert("EDGEVAULT_MASTER_KEY".into(), json!(host.master_key()));
    vars.insert("LOCAL_AZURE_FUNCTIONS_HOST".into(), json!(host.base_url()));
    app.extend_env(&vars);
    Ok((host, vars))
}

#[cfg(test)]
mod tests {
    use super::*;

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
