//! `edgevault-bench`: reproducible benchmarks of edgevault and local-azure, as binaries (never timed tests).
//!
//! Build once in release (`cargo build --release -p edgevault-bench -p edgevault -p local-azure --bins`), then
//! `target/release/edgevault-bench all` (or one sub-command). The binaries under test are found next to this one
//! (`target/release`), as the end-to-end tests find theirs. Results go to `docs/BENCHMARKS.md` by hand, with the
//! machine line each run prints.

use std::time::Duration;

use clap::{Parser, Subcommand};

mod activation;
mod busy_sweep;
mod cold;
mod invocations;
mod invoke;
mod load;
mod procfs;
mod recovery;
mod stand_in;
mod steps;
mod sweep;

#[derive(Parser)]
#[command(about = "Benchmarks of edgevault and local-azure")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Process start to first answered invocation, and idle RSS: edgevault vs the warp floor.
    ColdStart {
        #[arg(long, default_value_t = 30)]
        runs: usize,
    },
    /// Handler-side invocation overhead per trigger type (no Azure), and the real work paths on local-azure.
    Invoke {
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 1)]
        client_threads: usize,
        /// Skip the real work paths against local-azure.
        #[arg(long)]
        no_azure: bool,
    },
    /// Activation key end to end through the Functions host, with realistic Azure latencies injected.
    Activation {
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Recovery sweep over seeded fleets (healthy / drifted / soft-deleted), ARM rate-limited for the handler.
    Sweep {
        #[arg(long, value_delimiter = ',', default_values_t = vec![1000, 10000])]
        sizes: Vec<usize>,
        /// ARM requests per second allowed to the handler in each subscription and operation type (reads,
        /// writes: local-azure's rate limit, a bucket of `rate` tokens each).
        #[arg(long, default_value_t = 300.0)]
        rate: f64,
        /// ARM's documented default buckets instead of `rate`: reads 250 refilled at 25/s, writes 200 at 10/s.
        #[arg(long)]
        arm_defaults: bool,
        /// Subscriptions, each with `sizes` devices, swept in parallel.
        #[arg(long, default_value_t = 1)]
        subscriptions: usize,
        /// EDGEVAULT_SWEEP_ARM_RESERVE_PERCENT for the handler (default: the handler's).
        #[arg(long)]
        reserve: Option<u8>,
        /// A co-tenant reading ARM at this many reads/s in the first subscription; the limit then is one bucket
        /// per subscription for every caller (ARM's global subscription limit).
        #[arg(long)]
        cotenant: Option<f64>,
    },
    /// local-azure's own throughput: ARM GETs, Service Bus send / receive.
    LocalAzure {
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// A deleted vault: edgevault's recovery against the manual runbook with the Azure CLI, interleaved rounds.
    Recovery {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Activation and recovery latency while a sweep of a healthy fleet runs through the Functions host, against
    /// idle phases before and after it (ARM rate-limited as in `sweep`).
    BusySweep {
        #[arg(long, default_value_t = 100_000)]
        devices: usize,
        /// ARM requests per second allowed to each caller in the subscription (local-azure's rate limit).
        #[arg(long, default_value_t = 300.0)]
        rate: f64,
        /// Activations and recoveries (one of each a round) in each phase.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// Everything, with the defaults above, and one summary table.
    All,
}

/// One line of the summary table.
pub struct Row {
    pub bench: &'static str,
    pub what: String,
    pub value: String,
    pub target: String,
    pub met: Option<bool>,
}

impl Row {
    pub fn new(
        bench: &'static str,
        what: impl Into<String>,
        value: String,
        target: impl Into<String>,
        met: Option<bool>,
    ) -> Self {
        Row { bench, what: what.into(), value, target: target.into(), met }
    }
}

fn print_summary(rows: &[Row]) {
    println!();
    println!("machine: {}", procfs::machine());
    println!("| benchmark | what | measured | target | met |");
    println!("|---|---|---|---|---|");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        println!("| {} | {} | {} | {} | {} |", r.bench, r.what, r.value, r.target, met);
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    println!("machine: {}", procfs::machine());
    let invoke_options = |seconds: f64, connections, client_threads| invoke::Options {
        duration: Duration::from_secs_f64(seconds),
        connections,
        client_threads,
    };
    let rows = match cli.command {
        Bench::ColdStart { runs } => cold::run(runs)?,
        Bench::Invoke { seconds, connections, client_threads, no_azure } => {
            let mut rows = invoke::run(&invoke_options(seconds, connections, client_threads))?;
            if !no_azure {
                rows.extend(invoke::run_real(Duration::from_secs_f64(seconds))?);
            }
            rows
        }
        Bench::Activation { runs } => activation::run(runs)?,
        Bench::Sweep { sizes, rate, arm_defaults, subscriptions, reserve, cotenant } => {
            sweep::run(&sizes, rate, arm_defaults, subscriptions, reserve, cotenant)?
        }
        Bench::LocalAzure { seconds } => stand_in::run(Duration::from_secs_f64(seconds))?,
        Bench::Recovery { rounds } => recovery::run(rounds)?,
        Bench::BusySweep { devices, rate, rounds } => busy_sweep::run(devices, rate, rounds)?,
        Bench::All => {
            let mut rows = Vec::new();
            let started = std::time::Instant::now();
            let mut section = |name: &str, result: anyhow::Result<Vec<Row>>| match result {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    eprintln!("{name} failed: {e:#}");
                    rows.push(Row::new("error", name, format!("{e:#}"), "", Some(false)));
                }
            };
            section("cold-start", cold::run(30));
            section("invoke", invoke::run(&invoke_options(2.0, 16, 1)));
            section("invoke (local-azure)", invoke::run_real(Duration::from_secs(2)));
            section("activation", activation::run(3));
            section("sweep", sweep::run(&[1000, 10000], 300.0, false, 1, None, None));
            section("local-azure", stand_in::run(Duration::from_secs(3)));
            section("recovery", recovery::run(5));
            // 10,000 devices, not the 100,000: the sweep then lasts about 45 s instead of 8 minutes, long
            // enough for the busy rounds, and `all` stays well under its 15 minutes.
            section("busy-sweep", busy_sweep::run(10_000, 300.0, 10));
            rows.push(Row::new(
                "all",
                "wall time",
                format!("{:.0} s", started.elapsed().as_secs_f64()),
                "< 15 min",
                None,
            ));
            rows
        }
    };
    print_summary(&rows);
    Ok(())
}
