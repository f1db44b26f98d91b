//! The `edgevault` binary: the custom handler the Azure Functions host starts.

use std::sync::Arc;

use anyhow::Context;
use edgevault::config::Config;
use edgevault::deps::Deps;
use edgevault::{server, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let config = Config::from_env()?;
    let shutdown = server::shutdown_signal();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", config.port))?;
    let deps = Deps::from_settings(&config.settings)?;
    tracing::info!("listening on {}", listener.local_addr()?);
    server::run(listener, Arc::new(deps), shutdown).await;
    tracing::info!("stopped");
    Ok(())
}
