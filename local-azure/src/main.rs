//! `local-azure`: thin binary over the library (see `local_azure` crate docs).

use anyhow::Context;
use clap::Parser;
use local_azure::Server;
use local_azure::cli::{Cli, Command, export_lines};
use local_azure::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
        Command::Up(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("LOCAL_AZURE_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let config =
                Config { data_dir: args.data_dir, port: args.port, admin_port: args.admin_port, ..Config::default() };
            let server = Server::bind(&config).await?;
            let env = server.app.env.clone();
            let data_dir = std::fs::canonicalize(&config.data_dir)?;
            std::fs::write(data_dir.join("env.json"), serde_json::to_vec_pretty(&env)?)?;
            println!("# local-azure is listening; point clients at it with:");
            print!("{}", export_lines(&env));
            let ready = serde_json::json!({
                "gateway": server.gateway_addr.to_string(),
                "admin": format!("http://{}", server.admin_addr),
                "dataDir": data_dir.display().to_string(),
                "env": env,
            });
            println!("local-azure ready {ready}");
            use std::io::Write;
            std::io::stdout().flush()?;

            let (tx, rx) = tokio::sync::watch::channel(false);
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
            let serve = tokio::spawn(server.run(rx));
            let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm.recv() => {}
                _ = stdin_closed => {}
            }
            tracing::info!("shutting down");
            let _ = tx.send(true);
            let _ = serve.await;
            Ok(())
        }
    }
}
