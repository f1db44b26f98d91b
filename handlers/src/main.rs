//! The `edgevault` binary: the custom handler the Azure Functions host starts.

use std::sync::Arc;

use anyhow::Context;
use edgevault::config::Config;
use edgevault::functions::Deps;
use edgevault::{server, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let config = Config::from_env()?;
    let shutdown = server::shutdown_signal();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", config.port))?;
    let deps = Deps::from_settings(&config.lifecycle)?;
    tracing::info!("listening on {}", listener.local_addr()?);
    let hooks = server::Hooks { panic_in: config.test_panic_in.clone() };
    server::run(listener, Arc::new(deps), hooks, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}
