//! `cargo xtask <task>`: the repository's own tasks. See `cargo xtask --help`.

use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use xtask::{definitions, demo, package, target_dir, tools, workspace_root};

#[derive(Parser)]
#[command(about = "edgevault's repository tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the tests need (`tests/tools/install-*.sh`), build every binary, then run every suite: `cargo
    /// test --workspace`, the infra check, the API fuzzing, the parser fuzzing (extra arguments go to `cargo test`).
    Test {
        /// Run only these suites (repeatable; the tools are installed and the binaries built all the same).
        #[arg(long, value_enum)]
        only: Vec<Suite>,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The main job: one device's Key Vault lifecycle on local-azure, every step checked (see README).
    Demo {
        /// Leave local-azure and the app running afterwards, print how to talk to them, stop on Ctrl-C.
        #[arg(long)]
        keep: bool,
        /// After the walk-through, save a screenshot of its fleet page here (headless Chromium, as the browser test
        /// drives it; installs playwright-core like `cargo xtask test`). How `docs/fleet-page.png` is made.
        #[arg(long, value_name = "PNG")]
        screenshot: Option<std::path::PathBuf>,
    },
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

/// The test suites, in the order `cargo xtask test` runs them.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    /// `cargo test --workspace`: unit tests, and the end-to-end tests against the real binaries.
    Cargo,
    /// `infra/check.sh`: every Bicep file parses, checkov passes.
    Infra,
    /// `tests/api-fuzz.sh`: schemathesis cases from the OpenAPI document against the app on local-azure.
    ApiFuzz,
    /// `tests/fuzz.sh`: every cargo-fuzz target for a bounded time.
    Fuzz,
}

const SUITES: [Suite; 4] = [Suite::Cargo, Suite::Infra, Suite::ApiFuzz, Suite::Fuzz];

fn run(task: Task) -> anyhow::Result<bool> {
    let root = workspace_root();
    match task {
        Task::Test { only, args } => {
            let started = Instant::now();
            // Before the long build, so a missing tool is said at once (with the command that installs it).
            section("tools the tests need (tests/tools/install-*.sh)");
            tools::install_all(&root.join("tests/tools"), &root)?;
            section("build every binary (the end-to-end tests run them as processes)");
            cargo(&["build", "--workspace", "--bins"])?;
            let runs = |suite: Suite| only.is_empty() || only.contains(&suite);
            let mut fuzz_build = match runs(Suite::Cargo) && runs(Suite::Fuzz) {
                true => Some(BackgroundFuzzBuild::start()?),
                false => None,
            };
            for suite in SUITES.into_iter().filter(|s| runs(*s)) {
                let name = suite.to_possible_value().expect("no skipped variants").get_name().to_string();
                let began = Instant::now();
                match suite {
                    Suite::Cargo => {
                        section("cargo test --workspace");
                        let mut test_args = vec!["test", "--workspace"];
                        test_args.extend(args.iter().map(String::as_str));
                        cargo(&test_args)?;
                    }
                    Suite::Infra => script("infra: Bicep parses, checkov passes", "infra/check.sh")?,
                    Suite::ApiFuzz => {
                        script("API cases from the OpenAPI document (schemathesis)", "tests/api-fuzz.sh")?
                    }
                    Suite::Fuzz => {
                        if let Some(build) = fuzz_build.take() {
                            build.finish()?;
                        }
                        script("every cargo-fuzz target for a bounded time", "tests/fuzz.sh")?
                    }
                }
                println!("-- {name}: passed in {} s", began.elapsed().as_secs());
            }
            println!("\nall passed in {} s", started.elapsed().as_secs());
            Ok(true)
        }
        Task::Demo { keep, screenshot } => {
            // First, while this is the only thread: Ctrl-C must reach the wait at the end, not end the process.
            let interrupts = if keep { Some(demo::Interrupts::hold()?) } else { None };
            cargo(&["build", "--quiet", "-p", "edgevault", "-p", "local-azure", "--bins"])?;
            demo::run(interrupts, screenshot.as_deref())
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

/// The fuzz targets' build (an instrumented build of the handler library and its dependencies: ~6 minutes on 2
/// cores), started beside `cargo test` at the lowest CPU and I/O priority. The end-to-end tests spend most of their
/// time waiting on the processes they drive, so the build takes their idle CPU instead of adding its own minutes
/// to the run; `tests/fuzz.sh` then finds the targets built. Killed if the run ends first (a suite failed).
struct BackgroundFuzzBuild {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl BackgroundFuzzBuild {
    fn start() -> anyhow::Result<Self> {
        let log = target_dir().join("fuzz-build.log");
        std::fs::create_dir_all(target_dir())?;
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("nice")
            .args(["-n", "19", "ionice", "-c", "3", "bash", "tests/fuzz.sh"])
            .env("FUZZ_BUILD_ONLY", "1")
            .current_dir(workspace_root())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting the fuzz targets' build (nice, ionice, bash)")?;
        println!("(building the fuzz targets in the background, at low priority: {})", log.display());
        Ok(BackgroundFuzzBuild { child, log })
    }

    fn finish(mut self) -> anyhow::Result<()> {
        let status = self.child.wait().context("waiting for the fuzz targets' build")?;
        if !status.success() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!("building the fuzz targets failed ({status}):\n{log}");
        }
        Ok(())
    }
}

impl Drop for BackgroundFuzzBuild {
    fn drop(&mut self) {
        // Finished already when `finish` ran; otherwise a suite failed and the build is not needed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn section(what: &str) {
    println!("\n== {what}");
}

/// Runs a suite's script with bash from the workspace root.
fn script(what: &str, path: &str) -> anyhow::Result<()> {
    section(&format!("{what}: bash {path}"));
    let status = Command::new("bash")
        .arg(path)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running bash {path}"))?;
    if !status.success() {
        bail!("`bash {path}` failed ({status})");
    }
    Ok(())
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
