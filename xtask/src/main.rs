//! `cargo xtask <task>`: the repository's own tasks. See `cargo xtask --help`.

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use xtask::{definitions, demo, package, target_dir, workspace_root};

#[derive(Parser)]
#[command(about = "edgevault's repository tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build every binary, then run the whole test suite (extra arguments go to `cargo test`).
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The main job: one device's Key Vault lifecycle on local-azure, every step checked (see README).
    Demo,
    /// Build the release binary and assemble `dist/app` plus `dist/edgevault-app.zip` for zip deployment.
    Package {
        /// Package the debug build instead (fast; for trying the layout, not for deploying).
        #[arg(long)]
        debug: bool,
    },
    /// Regenerate `function-definitions/<Name>/function.json` from the handler's function table.
    Functions,
}

fn main() -> ExitCode {
    match run(Cli::parse().task) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<bool> {
    let root = workspace_root();
    match task {
        Task::Test { args } => {
            // Said before a long build rather than by a failing test at the end.
            let traced = std::process::Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success());
            anyhow::ensure!(
                traced,
                "the tests need strace (tests/loopback.rs traces the handler's network calls): apt-get install strace"
            );
            cargo(&["build", "--workspace", "--bins"])?;
            let mut test_args = vec!["test", "--workspace"];
            test_args.extend(args.iter().map(String::as_str));
            cargo(&test_args)?;
            Ok(true)
        }
        Task::Demo => {
            cargo(&["build", "--quiet", "-p", "edgevault", "-p", "local-azure", "--bins"])?;
            let held = demo::run()?;
            println!("\n{}", if held { "every step held" } else { "some steps did NOT hold" });
            Ok(held)
        }
        Task::Package { debug } => {
            let profile = if debug { "debug" } else { "release" };
            let mut args = vec!["build", "-p", "edgevault", "--bin", "edgevault"];
            if !debug {
                args.push("--release");
            }
            cargo(&args)?;
            let app = root.join("dist/app");
            package::assemble(&target_dir().join(profile).join(package::BINARY), &root, &app)?;
            let zip = root.join("dist/edgevault-app.zip");
            package::zip_dir(&app, &zip)?;
            println!("{}\n{}", app.display(), zip.display());
            Ok(true)
        }
        Task::Functions => {
            let names = definitions::write_all(&root.join("function-definitions"))?;
            println!("wrote function.json for {}", names.join(", "));
            Ok(true)
        }
    }
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
