//! The recovery sweep at scale, as the platform runs it: the timer starts a sweep, and the `sweep-pages` queue
//! is driven by the benchmark the way the Functions host drives it (receive a page, invoke `SweepPage`, two pages
//! of a subscription at a time), each invocation timed.
//!
//! A fleet (`edgevault_tests::fleet`: 80 % healthy, 10 % lock missing, 10 % soft-deleted vaults; every live vault
//! with its audit logging) is written into local-azure with its bulk seed, in one or more subscriptions. ARM is
//! rate-limited per caller, subscription and operation type (local-azure `rateLimit` rules: ARM's token buckets,
//! `429` + `Retry-After` beyond them): the sweep's reads (GET) in one bucket, its one action per device
//! (`getExtendedInformation`, a POST, which ARM counts as a write) in another. local-azure counts the calls
//! with 0 ms latency rules, in the timed sweep itself.
//!
//! With `--cotenant R`, another principal reads ARM in the first subscription at R reads/s throughout, and the
//! limit is one bucket per subscription shared by every caller (ARM's global subscription limit): its `429`s are
//! the ones the sweep caused.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgevault_tests::fleet::{self, Kind};
use edgevault_tests::local_azure::LocalAzure;
use serde_json::{Value, json};

use crate::{Row, invocations, procfs};

/// (label, service, operation glob): 0 ms latency rules whose `fired` counts are the calls made.
const COUNTERS: &[(&str, &str, &str)] = &[
    ("ARM, all", "arm", "*"),
    ("ARM device list/get", "arm", "Microsoft.DataBoxEdge/dataBoxEdgeDevices/read"),
    ("ARM getExtendedInformation", "arm", "*/getExtendedInformation/action"),
    ("ARM vault list/get", "arm", "Microsoft.KeyVault/vaults/read"),
    ("ARM deleted vault get", "arm", "Microsoft.KeyVault/locations/deletedVaults/read"),
    ("ARM lock list/get", "arm", "Microsoft.Authorization/locks/read"),
    ("ARM diagnostic setting get", "arm", "Microsoft.Insights/diagnosticSettings/read"),
    ("ARM storage account get", "arm", "Microsoft.Storage/storageAccounts/read"),
    ("Key Vault, all", "keyvault", "*"),
    ("identity tokens", "identity", "*"),
    ("Service Bus, all", "servicebus", "*"),
];

fn install_counters(la: &LocalAzure) -> anyhow::Result<Vec<(Value, &'static str)>> {
    COUNTERS
        .iter()
        .map(|(label, service, operation)| {
            let rule = la.admin_post(
                "/admin/faults",
                json!({"service": service, "operation": operation, "action": {"type": "latency", "ms": 0}}),
            )?;
            Ok((rule["id"].clone(), *label))
        })
        .collect()
}

/// How often fault rule `id` fired so far (a counter's calls, a rate limit's refusals).
pub(crate) fn fired(la: &LocalAzure, id: &Value) -> anyhow::Result<u64> {
    let faults = la.admin_get("/admin/faults")?;
    Ok(faults["value"]
        .as_array()
        .and_then(|l| l.iter().find(|r| &r["id"] == id))
        .and_then(|r| r["fired"].as_u64())
        .unwrap_or(0))
}

fn clear_faults(la: &LocalAzure) -> anyhow::Result<()> {
    la.admin_delete("/admin/faults")
}

/// The subscriptions of the run: the default one, then `n - 1` more, each with a resource group and edgevault's
/// grant on it. Returns (subscription id, resource group id).
fn subscriptions(la: &LocalAzure, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = vec![(la.subscription().to_string(), la.resource_group_id())];
    let grants = la.admin_get("/admin/grants")?;
    let app = grants["value"]
        .as_array()
        .or_else(|| grants.as_array())
        .and_then(|l| l.iter().find(|g| g["id"] == "edgevault-app"))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no grant edgevault-app in {grants}"))?;
    for i in 1..n {
        let sub = format!("5b000000-0000-4000-8000-{i:012}");
        la.admin_post(
            "/admin/subscriptions",
            json!({"subscriptionId": sub, "tenantId": la.var("AZURE_TENANT_ID"), "displayName": format!("bench-{i}")}),
        )?;
        la.admin_post(
            "/admin/resource-groups",
            json!({"subscriptionId": sub, "name": "bench", "location": la.var("AZURE_LOCATION")}),
        )?;
        let mut grant = app.clone();
        grant["id"] = format!("edgevault-app-{i}").into();
        grant["scope"] = format!("/subscriptions/{sub}").into();
        la.admin_post("/admin/grants", grant)?;
        out.push((sub.clone(), format!("/subscriptions/{sub}/resourceGroups/bench")));
    }
    Ok(out)
}

/// What one driven sweep measured.
struct Driven {
    seconds: f64,
    pages: usize,
    devices: u64,
    errors: u64,
    findings: std::collections::BTreeMap<String, u64>,
    /// The longest `SweepPage` invocation, and the timer's.
    longest_page: Duration,
    timer: Duration,
}

/// Starts the sweep with the timer and drives `sweep-pages` until every subscription's last page is done, with two
/// pages of each subscription in flight at most (the host's two sessions per subscription and sweep).
fn drive(la: &LocalAzure, handler: &edgevault_tests::Handler, subscriptions: usize) -> anyhow::Result<Driven> {
    let started = Instant::now();
    let (status, answer) = handler.invoke("RecoverySweep", &invocations::timer())?;
    let timer = started.elapsed();
    anyhow::ensure!(status == 200, "RecoverySweep: {status} {answer}");
    let finished = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let stats = Mutex::new(Driven {
        seconds: 0.0,
        pages: 0,
        devices: 0,
        errors: 0,
        findings: Default::default(),
        longest_page: Duration::ZERO,
        timer,
    });
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..2 * subscriptions {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let received = match la.receive_and_delete("sweep-pages", 1) {
                        Ok(Some(message)) => message,
                        Ok(None) => continue,
                        Err(err) => {
                            *failure.lock().unwrap() = Some(err);
                            stop.store(true, Ordering::Relaxed);
                            return;
                        }
                    };
                    let (body, broker) = received;
                    let invocation = json!({
                        "Data": {"message": body},
                        "Metadata": {"MessageId": broker["MessageId"], "DeliveryCount": 1, "SessionId": broker["SessionId"],
                                     "SequenceNumber": broker["SequenceNumber"], "EnqueuedTimeUtc": "2026-11-28T12:00:00Z"}
                    });
                    let began = Instant::now();
                    let result = handler.invoke("SweepPage", &invocation);
                    let took = began.elapsed();
                    match result {
                        Ok((200, answer)) => {
                            let summary = &answer["ReturnValue"];
                            let mut s = stats.lock().unwrap();
                            s.pages += 1;
                            s.longest_page = s.longest_page.max(took);
                            s.devices += summary["devices"].as_u64().unwrap_or(0);
                            s.errors += summary["errors"].as_u64().unwrap_or(0);
                            for (finding, n) in summary["findings"].as_object().into_iter().flatten() {
                                *s.findings.entry(finding.clone()).or_default() += n.as_u64().unwrap_or(0);
                            }
                            if summary["next"] == false
                                && finished.fetch_add(1, Ordering::Relaxed) + 1 == subscriptions as u64
                            {
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                        other => {
                            *failure.lock().unwrap() = Some(anyhow::anyhow!("SweepPage: {other:?}"));
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    if let Some(err) = failure.into_inner().unwrap() {
        return Err(err);
    }
    let mut driven = stats.into_inner().unwrap();
    driven.seconds = started.elapsed().as_secs_f64();
    Ok(driven)
}

/// A co-tenant: another principal reading one device of the first subscription at `rate` reads/s until `stop`;
/// returns (reads, 429s).
fn cotenant(la: &LocalAzure, path: &str, rate: f64, stop: &AtomicBool) -> anyhow::Result<(u64, u64)> {
    let principal = la.principal("cotenant", &["*"])?;
    let token = la.token(&principal, edgevault_tests::local_azure::ARM_AUDIENCE)?;
    let every = Duration::from_secs_f64(1.0 / rate);
    let (mut reads, mut refused) = (0, 0);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let (status, _) = la.arm(&token, "GET", path, None)?;
        reads += 1;
        refused += u64::from(status == 429);
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok((reads, refused))
}

/// ARM's documented default buckets per principal and subscription (reads: 250, refilled at 25/s; writes: 200 at
/// 10/s; learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling).
const ARM_DEFAULT_READS: (f64, f64) = (25.0, 250.0);
const ARM_DEFAULT_WRITES: (f64, f64) = (10.0, 200.0);

/// ARM's rate limits as installed for a run: the rules' ids (their `fired` counts are the `429`s) and the rates.
pub(crate) struct Limits {
    pub ids: Vec<Value>,
    pub read_rate: f64,
    pub write_rate: f64,
}

/// ARM limited per caller (or, with `every_caller`, per subscription for every caller), subscription and operation
/// type: `rate` requests/s each, or ARM's default buckets with `arm_defaults`. The sweep reads (GET) and calls one
/// action per device (`getExtendedInformation`, a POST: a write to ARM).
pub(crate) fn rate_limits(
    la: &LocalAzure,
    rate: f64,
    arm_defaults: bool,
    every_caller: bool,
) -> anyhow::Result<Limits> {
    let ((read_rate, read_burst), (write_rate, write_burst)) =
        if arm_defaults { (ARM_DEFAULT_READS, ARM_DEFAULT_WRITES) } else { ((rate, rate), (rate, rate)) };
    let mut ids = Vec::new();
    for (method, per_second, burst) in [("GET", read_rate, read_burst), ("POST", write_rate, write_burst)] {
        let mut limit = json!({"service": "arm", "method": method,
                               "action": {"type": "rateLimit", "perSecond": per_second, "burst": burst}});
        if every_caller {
            limit["action"]["per"] = "subscription".into();
        }
        ids.push(la.admin_post("/admin/faults", limit)?["id"].clone());
    }
    Ok(Limits { ids, read_rate, write_rate })
}

/// One sweep over `subs` subscriptions of `devices` each, ARM limited to `rate` requests/s per subscription and
/// operation type (each type its own bucket, as ARM's), or to ARM's default buckets with `arm_defaults`.
pub fn run_one(
    devices: usize,
    subs: usize,
    rate: f64,
    arm_defaults: bool,
    reserve: Option<u8>,
    cotenant_rate: Option<f64>,
) -> anyhow::Result<Vec<Row>> {
    let la = LocalAzure::start()?;
    let scopes = subscriptions(&la, subs)?;
    let seeding = Instant::now();
    for (n, (_, rg)) in scopes.iter().enumerate() {
        fleet::seed(&la, rg, &format!("b{n}"), 0..devices)?;
    }
    println!(
        "recovery sweep: {subs} subscription(s) × {devices} devices (seeded in {:.1} s), ARM {rate}/s per operation type and {}{}{}",
        seeding.elapsed().as_secs_f64(),
        if cotenant_rate.is_some() { "subscription (every caller)" } else { "caller and subscription" },
        reserve.map(|r| format!(", reserve {r} %")).unwrap_or_default(),
        cotenant_rate.map(|r| format!(", a co-tenant reading {r}/s")).unwrap_or_default(),
    );
    clear_faults(&la)?;
    let rules = install_counters(&la)?;
    let Limits { ids: limits, read_rate, write_rate } = rate_limits(&la, rate, arm_defaults, cotenant_rate.is_some())?;
    let mut env: Vec<(String, String)> = la
        .handler_env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("EDGEVAULT_RETRY_") && k != "EDGEVAULT_SUBSCRIPTIONS")
        .collect();
    env.push(("EDGEVAULT_RETRY_MAX_RETRIES".into(), "6".into()));
    env.push(("EDGEVAULT_RETRY_INITIAL_DELAY_MS".into(), "800".into()));
    env.push(("EDGEVAULT_SUBSCRIPTIONS".into(), scopes.iter().map(|s| s.0.clone()).collect::<Vec<_>>().join(",")));
    if let Some(reserve) = reserve {
        env.push(("EDGEVAULT_SWEEP_ARM_RESERVE_PERCENT".into(), reserve.to_string()));
    }
    let handler = edgevault_tests::Handler::start_with(&env)?;
    let (idle, _) = procfs::memory_kib(handler.pid()).unwrap_or_default();
    let la_pid = procfs::child_named("local-azure");
    let cpu = |pid: Option<u32>| pid.and_then(procfs::cpu_seconds).unwrap_or(0.0);
    let (handler_cpu0, la_cpu0) = (cpu(Some(handler.pid())), cpu(la_pid));
    let stop = AtomicBool::new(false);
    let probe = fleet::device_id(&scopes[0].1, "b0", 0);
    let (driven, cotenant) = std::thread::scope(|scope| {
        let (la, probe, stop) = (&la, &probe, &stop);
        let reader = cotenant_rate.map(|r| scope.spawn(move || cotenant(la, probe, r, stop)));
        let driven = drive(la, &handler, subs);
        stop.store(true, Ordering::Relaxed);
        (driven, reader.map(|r| r.join().expect("the co-tenant thread")))
    });
    let driven = driven?;
    let cotenant = cotenant.transpose()?;
    let (_, hwm) = procfs::memory_kib(handler.pid()).unwrap_or_default();
    let (handler_cpu, la_cpu) = (cpu(Some(handler.pid())) - handler_cpu0, cpu(la_pid) - la_cpu0);
    let counted: Vec<(&str, u64)> =
        rules.iter().map(|(id, label)| Ok((*label, fired(&la, id)?))).collect::<anyhow::Result<_>>()?;
    let refused = limits.iter().map(|limit| fired(&la, limit)).sum::<anyhow::Result<u64>>()?;
    clear_faults(&la)?;
    let count = |label: &str| counted.iter().find(|c| c.0 == label).map(|c| c.1).unwrap_or(0);
    // The co-tenant's reads that were answered are not the sweep's.
    let cotenant_answered = cotenant.map(|c| c.0 - c.1).unwrap_or(0);
    let arm_answered = count("ARM, all") - refused - cotenant_answered;
    let total = devices * subs;
    let soft_deleted = (0..devices).filter(|i| fleet::kind(*i) == Kind::SoftDeleted).count() * subs;
    // The subscription's locks: a healthy vault's, and every live vault's audit account's (the list has them all).
    let locks = (0..devices).filter(|i| fleet::kind(*i) == Kind::Healthy).count()
        + (0..devices).filter(|i| fleet::kind(*i) != Kind::SoftDeleted).count();
    // What the findings need, per subscription: the device pages (100 each), the live vaults' list (1,000 a page)
    // and the locks' list (100 a page), and per device its extended information; a soft-deleted vault is not in the
    // list, so its device reads the vault and the deleted vault on its own.
    let per_sub =
        devices.div_ceil(100) + (devices - soft_deleted / subs).div_ceil(1000).max(1) + locks.div_ceil(100).max(1);
    // Each sweep checks the audit logging of the vaults whose turn it is (`lifecycle::audit::due`: one in
    // `AUDIT_CHECK_EVERY`, by a hash of the device and the sweep's slot): the setting, then the account it sends to
    // (every live vault of the seed has both), so those counts are measured.
    let audit_reads = count("ARM diagnostic setting get");
    let account_reads = count("ARM storage account get");
    let live_vaults = total - soft_deleted;
    let audit_share = audit_reads as f64 / live_vaults.max(1) as f64;
    let needed = (per_sub * subs + total + 2 * soft_deleted) as u64 + audit_reads + account_reads;
    let healthy_cost =
        1.0 + (per_sub * subs) as f64 / total as f64 + (audit_reads + account_reads) as f64 / live_vaults.max(1) as f64;
    let every = edgevault::lifecycle::audit::AUDIT_CHECK_EVERY;
    println!(
        "  audit settings read: {audit_reads} of {live_vaults} live vaults ({audit_share:.3}; 1/{every}), their accounts {account_reads}"
    );
    // Each subscription has its own buckets and runs in parallel, and reads and writes are buckets of their own: the
    // bound is the slower of one subscription's reads ÷ the read rate (with a co-tenant, the rate it leaves) and its
    // writes (one action per device) ÷ the write rate.
    let writes_needed = total as f64 / subs as f64;
    let reads_needed = needed as f64 / subs as f64 - writes_needed;
    let bound = f64::max(reads_needed / (read_rate - cotenant_rate.unwrap_or(0.0)), writes_needed / write_rate);
    let ratio = driven.seconds / bound;
    println!(
        "  sweep {:.1} s (bound {bound:.1} s, ratio {ratio:.3}); {} pages, longest SweepPage {:.2} s, RecoverySweep {:.3} s",
        driven.seconds,
        driven.pages,
        driven.longest_page.as_secs_f64(),
        driven.timer.as_secs_f64()
    );
    println!(
        "  devices {} (errors {}), findings {:?}; handler RSS {:.1} → peak {:.1} MiB",
        driven.devices,
        driven.errors,
        driven.findings,
        idle as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "  ARM answered {arm_answered} (needed {needed}, {:.3} per device; a healthy device {healthy_cost:.3}), 429s {refused}",
        arm_answered as f64 / total as f64
    );
    for (label, n) in &counted {
        println!("    {label:<30} {n:>8}  ({:.3} per device)", *n as f64 / total as f64);
    }
    println!("  CPU: handler {handler_cpu:.1} s, local-azure {la_cpu:.1} s");
    if let Some((reads, refused)) = cotenant {
        println!("  co-tenant: {reads} reads, {refused} refused with 429");
    }
    let limits = match arm_defaults {
        true => "ARM's default buckets (reads 25/s, writes 10/s)".to_string(),
        false => format!("{rate}/s per subscription and operation type"),
    };
    let what = format!(
        "{subs} × {devices} devices at {limits}{}{}",
        reserve.map(|r| format!(", reserve {r} %")).unwrap_or_default(),
        cotenant_rate.map(|r| format!(", co-tenant {r}/s")).unwrap_or_default()
    );
    let mut rows = vec![Row::new(
        "sweep",
        what.clone(),
        format!(
            "{:.1} s = {ratio:.3} × bound {bound:.1} s; longest invocation {:.2} s; ARM {:.3}/device (healthy {healthy_cost:.3}), answered {arm_answered} (needed {needed}), 429s {refused}; RSS {:.1} → {:.1} MiB; errors {}",
            driven.seconds,
            driven.longest_page.as_secs_f64(),
            arm_answered as f64 / total as f64,
            idle as f64 / 1024.0,
            hwm as f64 / 1024.0,
            driven.errors
        ),
        "≤ 1.1 × bound, invocation ≤ 60 s, healthy ≤ 1.2 ARM calls, calls = needed",
        Some(ratio <= 1.1 && driven.longest_page.as_secs() <= 60 && healthy_cost <= 1.2 && arm_answered == needed),
    )];
    if let Some((reads, refused)) = cotenant {
        rows.push(Row::new(
            "sweep",
            format!("{what}: co-tenant"),
            format!("{reads} reads, {refused} × 429"),
            "0 × 429",
            Some(refused == 0),
        ));
    }
    Ok(rows)
}

/// Sweeps fleets of `sizes` devices in each of `subs` subscriptions.
pub fn run(
    sizes: &[usize],
    rate: f64,
    arm_defaults: bool,
    subs: usize,
    reserve: Option<u8>,
    cotenant: Option<f64>,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for size in sizes {
        rows.extend(run_one(*size, subs, rate, arm_defaults, reserve, cotenant)?);
    }
    Ok(rows)
}
