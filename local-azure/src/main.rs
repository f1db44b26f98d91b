//! `local-azure`: thin binary over the library (see `local_azure` crate docs).

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use local_azure::cli::{Cli, Command, UpArgs, export_lines};
use local_azure::config::Config;
use local_azure::{Prepared, Server};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Env(args) => {
            let path = args.data_dir.join("env.json");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("reading {} (has `local-azure up` run with this data dir?)", path.display())
            })?;
            let env: serde_json::Value = serde_json::from_str(&text)?;
            if args.json {
                println!("{}", serde_json::to_string(&env)?);
            } else {
                print!("{}", export_lines(&env));
            }
            Ok(())
        }
        Command::Token(args) => {
            let path = args.data_dir.join("env.json");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("reading {} (has `local-azure up` run with this data dir?)", path.display())
            })?;
            let env: serde_json::Value = serde_json::from_str(&text)?;
            let admin = env["LOCAL_AZURE_ADMIN"].as_str().context("env.json names no LOCAL_AZURE_ADMIN")?.to_string();
            let body = serde_json::json!({"principalId": args.principal, "resource": args.resource});
            let answer: serde_json::Value =
                tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
                    let client = reqwest::Client::builder().no_proxy().build()?;
                    let response = client.post(format!("{admin}/admin/tokens")).json(&body).send().await?;
                    let status = response.status();
                    let answer: serde_json::Value = response.json().await.unwrap_or_default();
                    anyhow::ensure!(status.is_success(), "local-azure refused the token: {status} {answer}");
                    Ok::<_, anyhow::Error>(answer)
                })?;
            // Only the token, on stdout, for `$(…)`; it is a secret, so nothing else is printed.
            println!("{}", answer["access_token"].as_str().context("no access_token in the answer")?);
            Ok(())
        }
        Command::Up(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("LOCAL_AZURE_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let config = Config {
                data_dir: args.data_dir.clone(),
                port: args.port,
                admin_port: args.admin_port,
                ..Config::default()
            };
            let prepared = Server::prepare(&config)?;
            if args.app.is_some() {
                // The embedded Functions host's Service Bus client is a default reqwest client: it takes the proxy
                // and CA from the process environment, like any Azure client would.
                let env = prepared.app.env();
                for name in ["HTTPS_PROXY", "SSL_CERT_FILE", "NO_PROXY"] {
                    if let Some(v) = env[name].as_str() {
                        // SAFETY: no other thread exists yet; the runtime is built below.
                        unsafe { std::env::set_var(name, v) };
                    }
                }
            }
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(up(args, config, prepared))
        }
    }
}

async fn up(args: UpArgs, config: Config, prepared: Prepared) -> anyhow::Result<()> {
    let server = prepared.into_server()?;
    let app = server.app.clone();
    let data_dir = std::fs::canonicalize(&config.data_dir)?;
    let (gateway_addr, admin_addr) = (server.gateway_addr, server.admin_addr);
    let (tx, rx) = tokio::sync::watch::channel(false);
    // Serve first: the function app's handler and triggers talk to local-azure as they start.
    let serve = tokio::spawn(server.run(rx));

    let host = match &args.app {
        Some(app_dir) => {
            let options = local_azure::functions::AppOptions {
                app_dir: app_dir.clone(),
                handler: args.handler.clone(),
                settings: args.settings.clone(),
                listen: SocketAddr::new(config.bind, args.host_port),
                state_dir: data_dir.join("functions-host"),
                host_form: args.host_form,
            };
            let (host, vars) = local_azure::functions::start(&app, options)
                .await
                .with_context(|| format!("starting the function app in {}", app_dir.display()))?;
            println!("# The function app is running:");
            let var = |k: &str| vars.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            println!(
                "#   API      {} (App Service Authentication: Authorization: Bearer $(local-azure token --principal <user>))",
                var("EDGEVAULT_API_BASE_URL")
            );
            println!("#   admin    {}/admin/... (x-functions-key: $EDGEVAULT_MASTER_KEY)", host.base_url());
            Some(host)
        }
        None => None,
    };

    let env = app.env();
    std::fs::write(data_dir.join("env.json"), serde_json::to_vec_pretty(&env)?)?;
    println!("# local-azure is listening; point clients at it with:");
    print!("{}", export_lines(&env));
    let ready = serde_json::json!({
        "gateway": gateway_addr.to_string(),
        "admin": format!("http://{admin_addr}"),
        "dataDir": data_dir.display().to_string(),
        "env": env,
    });
    println!("local-azure ready {ready}");
    std::io::stdout().flush()?;

    let stdin_closed = async {
        if args.exit_on_stdin_close {
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        } else {
            std::future::pending::<()>().await;
        }
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
        _ = stdin_closed => {}
    }
    tracing::info!("shutting down");
    if let Some(host) = host {
        host.shutdown().await;
    }
    let _ = tx.send(true);
    let _ = serve.await;
    Ok(())
}
