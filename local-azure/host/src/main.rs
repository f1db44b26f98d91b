//! `local-azure-host`: runs the Functions host for an app folder by hand and prints its URLs and keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use local_azure_host::app::Trigger;
use local_azure_host::{Host, HostForm, HostOptions, SystemClock};

/// Run a custom-handler Functions app the way the Azure Functions host does.
#[derive(Debug, Parser)]
#[command(version)]
struct Config {
    /// The app folder: packaged (`host.json` + `<Name>/function.json`) or a repository root with
    /// `function-definitions/`.
    #[arg(long, env = "LOCAL_AZURE_HOST_APP")]
    app: PathBuf,
    /// The handler executable (default: host.json's defaultExecutablePath inside the app folder).
    #[arg(long)]
    handler: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7071")]
    listen: SocketAddr,
    /// Keeps keys and timer status across runs.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// An app setting, `NAME=VALUE`; repeatable; wins over --settings-file.
    #[arg(long = "setting", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// A local.settings.json whose `Values` become app settings.
    #[arg(long)]
    settings_file: Option<PathBuf>,
    /// The request form the handler gets: `real` (the Azure host's: chunked bodies) or `core-tools` (`func start`'s:
    /// buffered, with Content-Length).
    #[arg(long, env = "LOCAL_AZURE_HOST_FORM", default_value = "real")]
    host_form: HostForm,
}

/// Ctrl-C or SIGTERM: either way the handler is stopped before the host exits.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| "expected NAME=VALUE".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let config = Config::parse();
    let mut app_settings = BTreeMap::new();
    if let Some(path) = &config.settings_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        for (k, v) in json["Values"].as_object().into_iter().flatten() {
            app_settings.insert(k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
        }
    }
    app_settings.extend(config.settings.iter().cloned());
    let host = Host::start(HostOptions {
        app_dir: config.app.clone(),
        handler_path: config.handler.clone(),
        app_settings,
        listen: config.listen,
        state_dir: config.state_dir.clone(),
        clock: Arc::new(SystemClock),
        host_form: config.host_form,
        // Standalone, the host has no token issuer to check tokens against; `local-azure up --app` runs it with one.
        easy_auth: None,
    })
    .await
    .context("starting the Functions host")?;

    // Printing keys is the point of this binary (like `func start` listing URLs); they never go to the log.
    println!("Functions host listening on {}", host.base_url());
    println!("master key: {}", host.master_key());
    for def in &host.app().functions {
        match &def.trigger {
            Trigger::Http { route, methods, auth_level, .. } => {
                let methods = methods.as_ref().map(|m| m.join(",")).unwrap_or_else(|| "ANY".into());
                let key = host.function_key(&def.name).unwrap_or_default();
                println!(
                    "  {}: [{methods}] {}/{} (auth {auth_level:?}; key {key})",
                    def.name,
                    host.api_base_url(),
                    route.as_str()
                );
            }
            Trigger::EventGrid { .. } => println!("  {}: eventGridTrigger {}", def.name, host.eventgrid_url(&def.name)),
            Trigger::Timer { schedule, .. } => println!("  {}: timerTrigger `{schedule}`", def.name),
            Trigger::ServiceBus { queue, .. } => println!("  {}: serviceBusTrigger queue `{queue}`", def.name),
        }
    }
    shutdown_signal().await;
    host.shutdown().await;
    Ok(())
}
