//! Activation and recovery latency while a fleet sweep runs, against an idle system (issue #16: "Activation and
//! recovery latency while a 100,000-device sweep runs, against an idle system (target ≤ 1.2 ×)").
//!
//! The whole system: local-azure with the app in its Functions host (`up --app`, release binaries), so the sweep's
//! pages, the activations and the recoveries run in one handler process, delivered by the host's Service Bus
//! receivers. ARM is rate-limited per caller, subscription and operation type at `--rate` requests/s (the sweep
//! meets the buckets it meets in `sweep`; `429` + `Retry-After` beyond them), and the fleet, the activated devices
//! and the deleted vaults are all in one subscription: edgevault's activations and recoveries share the sweep's
//! buckets, and only the sweep's reserve (`EDGEVAULT_SWEEP_ARM_RESERVE_PERCENT`) keeps room for them.
//!
//! Phases, each `rounds` rounds of one activation (a new device: `POST` → key ready, `steps::activate`) and one
//! recovery (its vault deleted → recovered and locked, from the activity log, `steps::recover`):
//! 1. idle: the fleet present, no sweep;
//! 2. busy: a sweep started the way an operator starts a timer function out of schedule, the host's admin API
//!    (`POST /admin/functions/RecoverySweep`; the real host's `FunctionsController.Invoke`,
//!    Azure/azure-functions-host `src/WebJobs.Script.WebHost/Controllers/FunctionsController.cs`: admin key, `202`
//!    before the function runs), confirmed running from its progress rows (`lifecycle::sweep_progress::current`,
//!    read with the handler's own settings) before the first round and after the last;
//! 3. idle again once the sweep is done (the two idle phases bracket drift on a shared machine).
//!
//! The timer's own schedule is set to once a year so that no scheduled sweep falls inside an idle phase.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use edgevault::lifecycle::sweep_progress::{self, SweepProgress};
use edgevault_tests::fleet;
use edgevault_tests::local_azure::{ARM_AUDIENCE, LocalAzure, eventually};
use serde_json::{Value, json};

use crate::procfs::{self, load_average, median, percentile};
use crate::{Row, steps, sweep};

/// Never within a run: the sweep is started through the admin API only.
const SCHEDULE: &str = "0 0 0 1 1 *";
/// How long a sweep may take before the run gives up (100,000 devices take about 8 minutes at 300/s).
const SWEEP_LIMIT: Duration = Duration::from_secs(3600);

/// One phase's rounds.
#[derive(Default)]
struct Phase {
    name: &'static str,
    /// `POST` → key ready, per round.
    activation_ms: Vec<f64>,
    /// `POST` → the worker's last link write, per round.
    worker_ms: Vec<f64>,
    /// Where an activation's time went (`steps::Activation`), per round.
    api_ms: Vec<f64>,
    to_vault_put_ms: Vec<f64>,
    worker_writes_ms: Vec<f64>,
    status_get_ms: Vec<f64>,
    /// DELETE → edgevault's first write for it, per round.
    first_write_ms: Vec<f64>,
    /// DELETE → recovery `PUT`, per round.
    recover_ms: Vec<f64>,
    /// DELETE → recovered and locked, per round.
    locked_ms: Vec<f64>,
    /// The rate limit's refusals during the phase (edgevault's and the operator's; the operator's are none in
    /// practice, its own bucket being far from empty).
    refused: u64,
    seconds: f64,
    load: String,
    /// CPU seconds the handler and local-azure (with its Functions host) used during the phase.
    handler_cpu: f64,
    local_azure_cpu: f64,
}

fn summary(values: &[f64]) -> (f64, f64) {
    (median(&mut values.to_vec()), percentile(&mut values.to_vec(), 90.0))
}

fn spread(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")
}

impl Phase {
    fn print(&self) {
        let m = |v: &[f64]| summary(v).0;
        let (a50, a90) = summary(&self.activation_ms);
        let (r50, r90) = summary(&self.locked_ms);
        println!(
            "  {}: {} rounds in {:.1} s, load average {}; 429s {}; CPU handler {:.1} s, local-azure {:.1} s ({:.2} cores together)",
            self.name,
            self.activation_ms.len(),
            self.seconds,
            self.load,
            self.refused,
            self.handler_cpu,
            self.local_azure_cpu,
            (self.handler_cpu + self.local_azure_cpu) / self.seconds
        );
        println!(
            "    activation POST → key: median {a50:.0} ms, p90 {a90:.0} ms; medians of its parts: API {:.1} ms, → vault PUT {:.1} ms, worker's writes {:.1} ms, (→ worker done {:.0} ms), status GET {:.1} ms; every round: {}",
            m(&self.api_ms),
            m(&self.to_vault_put_ms),
            m(&self.worker_writes_ms),
            m(&self.worker_ms),
            m(&self.status_get_ms),
            spread(&self.activation_ms)
        );
        println!(
            "    recovery DELETE → recovered and locked: median {r50:.1} ms, p90 {r90:.1} ms; medians: → first write {:.1} ms, → recovery PUT {:.1} ms; every round: {}",
            m(&self.first_write_ms),
            m(&self.recover_ms),
            spread(&self.locked_ms)
        );
    }
}

/// `rounds` rounds of one activation and one recovery, on new devices named after the phase.
/// The rate limit's refusals so far, every bucket.
fn refused(la: &LocalAzure, limits: &[Value]) -> anyhow::Result<u64> {
    limits.iter().map(|limit| sweep::fired(la, limit)).sum()
}

fn phase(la: &LocalAzure, token: &str, limits: &[Value], name: &'static str, rounds: usize) -> anyhow::Result<Phase> {
    let refused_before = refused(la, limits)?;
    let cpu = |pid: Option<u32>| pid.and_then(procfs::cpu_seconds).unwrap_or(0.0);
    let (handler, local_azure) = (la.handler_pid(), procfs::child_named("local-azure"));
    let (handler_cpu, local_azure_cpu) = (cpu(handler), cpu(local_azure));
    let started = Instant::now();
    let mut phase = Phase { name, ..Default::default() };
    for i in 0..rounds {
        let id = steps::created_device(la, token, &format!("busy-{name}-{i}"))?;
        let activation = steps::activate(la, &id).with_context(|| format!("{name} round {i}: activation"))?;
        let vault = steps::linked_vault(la, token, &id)?;
        let recovery = steps::recover(la, token, &vault).with_context(|| format!("{name} round {i}: recovery"))?;
        phase.activation_ms.push(activation.to_key_ms);
        phase.worker_ms.push(activation.to_worker_done_ms);
        phase.api_ms.push(activation.api_ms);
        phase.to_vault_put_ms.push(activation.to_vault_put_ms);
        phase.worker_writes_ms.push(activation.worker_writes_ms);
        phase.status_get_ms.push(activation.status_get_ms);
        phase.first_write_ms.push(recovery.to_first_write_ms);
        phase.recover_ms.push(recovery.to_recover_ms);
        phase.locked_ms.push(recovery.to_locked_ms);
    }
    phase.seconds = started.elapsed().as_secs_f64();
    // The handler the host runs now (it restarts one that dies; then this phase's figure is partial).
    phase.handler_cpu = cpu(la.handler_pid()) - if la.handler_pid() == handler { handler_cpu } else { 0.0 };
    phase.local_azure_cpu = cpu(local_azure) - local_azure_cpu;
    phase.refused = refused(la, limits)? - refused_before;
    phase.load = load_average();
    phase.print();
    Ok(phase)
}

/// The sweep's progress as `edgevault-cli status` and the fleet page read it: the record store's rows added up,
/// with the handler's own settings and identity.
struct Progress {
    deps: edgevault::deps::Deps,
    runtime: tokio::runtime::Runtime,
}

impl Progress {
    fn new(la: &LocalAzure) -> anyhow::Result<Progress> {
        let env = la.handler_env();
        // The credential (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`) and the HTTP stack (`HTTPS_PROXY`,
        // `SSL_CERT_FILE`) read the process environment, as in the handler.
        for (name, value) in &env {
            // SAFETY: set before any thread of this process reads the environment (local-azure's harness threads
            // read only its pipes; the runtime below is created after).
            unsafe { std::env::set_var(name, value) };
        }
        let config = edgevault::config::Config::from_lookup(|name| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| (name == edgevault::config::PORT_VAR).then(|| "0".to_string()))
        })?;
        let runtime = tokio::runtime::Runtime::new()?;
        let deps = runtime.block_on(async { edgevault::deps::Deps::from_settings(&config.settings) })?;
        Ok(Progress { deps, runtime })
    }

    fn current(&self) -> anyhow::Result<Option<SweepProgress>> {
        Ok(self.runtime.block_on(sweep_progress::current(&self.deps))?)
    }
}

pub fn run(devices: usize, rate: f64, rounds: usize) -> anyhow::Result<Vec<Row>> {
    let la = LocalAzure::start_with_app(&[
        ("RecoverySweepSchedule", SCHEDULE),
        // The production retry policy, as `sweep` gives the handler (the harness's default is a short one for tests).
        ("EDGEVAULT_RETRY_MAX_RETRIES", "6"),
        ("EDGEVAULT_RETRY_INITIAL_DELAY_MS", "800"),
    ])?;
    let rg = la.resource_group_id();
    let seeding = Instant::now();
    fleet::seed_with(&la, &rg, "busy", 0..devices, fleet::all_healthy)?;
    println!(
        "activation and recovery while a sweep runs: {devices} healthy devices (seeded in {:.1} s), ARM {rate}/s per caller and subscription, {rounds} rounds a phase",
        seeding.elapsed().as_secs_f64()
    );
    let operator = la.principal("bench-operator", &["*"])?;
    let token = la.token(&operator, ARM_AUDIENCE)?;
    let progress = Progress::new(&la)?;
    // One rule: local-azure keeps a bucket per caller, subscription and operation type for it (reads; writes, a
    // POST action being one; deletes), as ARM does. The sweep (GETs and one POST a device) meets the same two
    // buckets as under `sweep::rate_limits`' per-method rules, and the activations' PUTs share the writes bucket
    // with their POSTs and the sweep's, as in ARM, where a per-method rule would leave them unlimited.
    let limits = vec![
        la.admin_post(
            "/admin/faults",
            json!({"service": "arm", "action": {"type": "rateLimit", "perSecond": rate, "burst": rate}}),
        )?["id"]
            .clone(),
    ];

    let idle = phase(&la, &token, &limits, "idle", rounds)?;

    let cpu = |pid: Option<u32>| pid.and_then(procfs::cpu_seconds).unwrap_or(0.0);
    let local_azure = procfs::child_named("local-azure");
    let (handler_cpu, local_azure_cpu) = (cpu(la.handler_pid()), cpu(local_azure));
    let sweep_started = Instant::now();
    let refused_before = refused(&la, &limits)?;
    ensure!(la.run_function("RecoverySweep", "")? == 202, "the host did not accept the RecoverySweep run");
    // Running: started, not done, and its pages being done (one page's row at least).
    let running =
        eventually(Duration::from_secs(120), || progress.current().ok().flatten().filter(|p| !p.done && p.pages > 0))
            .ok_or_else(|| anyhow!("the sweep was not seen running within 120 s"))?;
    println!(
        "  sweep {} running after {:.1} s: {} pages, {} devices done",
        running.id,
        sweep_started.elapsed().as_secs_f64(),
        running.pages,
        running.devices
    );
    let busy = phase(&la, &token, &limits, "busy", rounds)?;
    let after_busy = progress.current()?.context("the sweep's progress is gone")?;
    let still_running = !after_busy.done && after_busy.id == running.id;
    println!(
        "  after the busy rounds the sweep is {}: {} pages, {} of {devices} devices",
        if still_running { "still running" } else { "DONE (the busy phase outlasted it)" },
        after_busy.pages,
        after_busy.devices
    );
    // Polled once a second, not at `eventually`'s 100 ms: each read adds up every page's row (1,000 at 100,000
    // devices) in local-azure, which shares the machine with the sweep it times.
    let deadline = Instant::now() + SWEEP_LIMIT;
    let done = loop {
        if let Some(done) = progress.current()?.filter(|p| p.id == running.id && p.done) {
            break done;
        }
        ensure!(Instant::now() < deadline, "the sweep did not finish within {SWEEP_LIMIT:?}");
        std::thread::sleep(Duration::from_secs(1));
    };
    let sweep_seconds = sweep_started.elapsed().as_secs_f64();
    let sweep_refused = refused(&la, &limits)? - refused_before;
    let (handler_cpu, local_azure_cpu) = (cpu(la.handler_pid()) - handler_cpu, cpu(local_azure) - local_azure_cpu);
    println!(
        "  sweep done in {sweep_seconds:.1} s (seen by polling its rows): {} pages, {} devices, findings {:?}; 429s during it {sweep_refused}; CPU handler {handler_cpu:.1} s, local-azure {local_azure_cpu:.1} s ({:.2} cores together); load average {}",
        done.pages,
        done.devices,
        done.findings,
        (handler_cpu + local_azure_cpu) / sweep_seconds,
        load_average()
    );

    let idle_after = phase(&la, &token, &limits, "idle-after", rounds)?;

    let pooled = |pick: fn(&Phase) -> &Vec<f64>| {
        let mut all = pick(&idle).clone();
        all.extend(pick(&idle_after));
        median(&mut all)
    };
    let idle_activation = pooled(|p| &p.activation_ms);
    let idle_recovery = pooled(|p| &p.locked_ms);
    let (busy_activation, busy_activation_p90) = summary(&busy.activation_ms);
    let (busy_recovery, busy_recovery_p90) = summary(&busy.locked_ms);
    let activation_ratio = busy_activation / idle_activation;
    let recovery_ratio = busy_recovery / idle_recovery;
    println!(
        "  busy ÷ idle (medians; idle = both idle phases' rounds): activation {activation_ratio:.2} ({busy_activation:.0} / {idle_activation:.0} ms), recovery {recovery_ratio:.2} ({busy_recovery:.1} / {idle_recovery:.1} ms)"
    );
    let rows = vec![
        Row::new(
            "busy sweep",
            format!("activation POST → key while {devices} devices are swept, ÷ idle (medians)"),
            format!(
                "{activation_ratio:.2} × ({busy_activation:.0} ms, p90 {busy_activation_p90:.0} ms; idle {idle_activation:.0} ms)"
            ),
            "≤ 1.2 ×",
            Some(activation_ratio <= 1.2 && still_running),
        ),
        Row::new(
            "busy sweep",
            format!("vault DELETE → recovered and locked while {devices} devices are swept, ÷ idle (medians)"),
            format!(
                "{recovery_ratio:.2} × ({busy_recovery:.1} ms, p90 {busy_recovery_p90:.1} ms; idle {idle_recovery:.1} ms)"
            ),
            "≤ 1.2 ×",
            Some(recovery_ratio <= 1.2 && still_running),
        ),
        Row::new(
            "busy sweep",
            format!("the sweep of {devices} devices at {rate}/s"),
            format!(
                "{sweep_seconds:.1} s, {} pages, {} × 429 during it; still running after the busy rounds: {still_running}",
                done.pages, sweep_refused
            ),
            "",
            None,
        ),
    ];
    Ok(rows)
}
