//! The recovery sweep at scale. A fleet is written into local-azure with its bulk seed (`POST /admin/seed`, a few
//! thousand devices per transaction): 80 % healthy (identity, owned vault with soft delete + purge protection + both
//! access policies, lock, CIK, extended information in sync), 10 % drifted (lock missing), 10 % soft-deleted vaults.
//! ARM is rate-limited for the handler's principal (a local-azure `rateLimit` rule: a token bucket, ARM's `429` with
//! `Retry-After` beyond it). The handler (as a process, pointed at local-azure, with its production retry settings)
//! is then invoked with `RecoverySweep` directly; local-azure counts the calls it receives with 0 ms latency rules,
//! one per operation of interest (counted in memory, so the timed sweep is the counted one).

use std::time::{Duration, Instant};

use anyhow::Context;
use edgevault_tests::local_azure::LocalAzure;
use serde_json::{Value, json};

use crate::{Row, invocations, procfs};

/// Devices per seed request: each request is one transaction, and its body must stay under local-azure's 8 MiB.
const SEED_CHUNK: usize = 2000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Healthy,
    LockMissing,
    SoftDeleted,
}

fn kind(i: usize) -> Kind {
    match i % 10 {
        8 => Kind::LockMissing,
        9 => Kind::SoftDeleted,
        _ => Kind::Healthy,
    }
}

/// A deterministic GUID per device, so the seed can name the device's identity in its vault's access policy.
fn principal_of(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// The seed request for devices `range`.
fn seed_body(la: &LocalAzure, range: std::ops::Range<usize>) -> Value {
    let rg = la.resource_group_id();
    let location = la.var("AZURE_LOCATION");
    let tenant = la.var("AZURE_TENANT_ID");
    let edgevault = la.var("EDGEVAULT_PRINCIPAL_ID");
    let policy =
        |oid: &str, perms: &[&str]| json!({"tenantId": tenant, "objectId": oid, "permissions": {"secrets": perms}});
    let (mut devices, mut vaults, mut locks, mut secrets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in range {
        let id = format!("{rg}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/bench-{i:06}");
        let vault_name = format!("bv{i:06}");
        let vault_id = format!("{rg}/providers/Microsoft.KeyVault/vaults/{vault_name}");
        let principal = principal_of(i);
        let version = format!("{i:032x}");
        devices.push(json!({"id": id, "location": location, "sku": {"name": "Edge", "tier": "Standard"},
            "identity": {"principalId": principal},
            "extendedInformation": {"clientSecretStoreId": vault_id, "clientSecretStoreUrl": format!("https://{vault_name}.vault.azure.net"),
                "channelIntegrityKeyName": "ase-cik-bench", "channelIntegrityKeyVersion": version, "syncStatus": "KeyVaultSynced"}}));
        vaults.push(json!({"id": vault_id, "location": location, "tags": {"edgevault-device": id},
            "properties": {"tenantId": tenant, "sku": {"family": "A", "name": "standard"},
              "accessPolicies": [policy(&principal, &["get"]), policy(edgevault, &["get", "set", "recover"])],
              "enableSoftDelete": true, "softDeleteRetentionInDays": 90, "enablePurgeProtection": true, "enableRbacAuthorization": false},
            "softDeleted": kind(i) == Kind::SoftDeleted}));
        secrets.push(json!({"vault": vault_name, "name": "ase-cik-bench", "value": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "contentType": "application/octet-stream", "version": version}));
        if kind(i) == Kind::Healthy {
            locks.push(json!({"scope": vault_id, "name": "edgevault-do-not-delete", "level": "CanNotDelete", "notes": "bench"}));
        }
    }
    json!({"devices": devices, "vaults": vaults, "locks": locks, "secrets": secrets})
}

fn seed(la: &LocalAzure, range: std::ops::Range<usize>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut from = range.start;
    while from < range.end {
        let to = (from + SEED_CHUNK).min(range.end);
        la.admin_post("/admin/seed", seed_body(la, from..to)).with_context(|| format!("seeding {from}..{to}"))?;
        from = to;
    }
    Ok(started.elapsed())
}

/// (label, service, operation glob): 0 ms latency rules whose `fired` counts are the calls made.
const COUNTERS: &[(&str, &str, &str)] = &[
    ("ARM, all", "arm", "*"),
    ("ARM device list/get", "arm", "Microsoft.DataBoxEdge/dataBoxEdgeDevices/read"),
    ("ARM getExtendedInformation", "arm", "*/getExtendedInformation/action"),
    ("ARM vault get", "arm", "Microsoft.KeyVault/vaults/read"),
    ("ARM deleted vault get", "arm", "Microsoft.KeyVault/locations/deletedVaults/read"),
    ("ARM lock get", "arm", "Microsoft.Authorization/locks/read"),
    ("Key Vault, all", "keyvault", "*"),
    ("identity tokens", "identity", "*"),
    ("Service Bus, all", "servicebus", "*"),
];

fn install_counters(la: &LocalAzure) -> anyhow::Result<Vec<(Value, &'static str)>> {
    clear_faults(la)?;
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

fn counts(la: &LocalAzure, rules: &[(Value, &'static str)]) -> anyhow::Result<Vec<(&'static str, u64)>> {
    let faults = la.admin_get("/admin/faults")?;
    let list = faults.as_array().cloned().or_else(|| faults["value"].as_array().cloned()).unwrap_or_default();
    Ok(rules
        .iter()
        .map(|(id, label)| {
            (*label, list.iter().find(|r| &r["id"] == id).and_then(|r| r["fired"].as_u64()).unwrap_or(0))
        })
        .collect())
}

struct SweepResult {
    devices: usize,
    seconds: f64,
    hwm_mib: f64,
    idle_mib: f64,
    /// ARM requests answered (not refused by the rate limit) and refused with `429`.
    arm_answered: u64,
    arm_refused: u64,
    needed_arm: u64,
    keyvault: u64,
    tokens: u64,
    summary: Value,
    handler_cpu: f64,
    la_cpu: f64,
    la_rss_mib: f64,
    /// Required ARM calls ÷ the allowed rate, when throttled.
    bound: Option<f64>,
}

fn invoke_sweep(handler: &edgevault_tests::Handler, tag: &str) -> anyhow::Result<(f64, Value)> {
    let client = reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(3 * 3600)).build()?;
    let started = Instant::now();
    let response = client
        .post(handler.url("RecoverySweep"))
        .header("content-type", "application/json")
        .header("x-azure-functions-invocationid", format!("bench-sweep-{tag}"))
        .body(invocations::timer().to_string())
        .send()?;
    let status = response.status();
    let answer: Value = response.json()?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(status.is_success(), "RecoverySweep: {status} {answer}");
    Ok((seconds, answer["ReturnValue"].clone()))
}

fn count(counted: &[(&'static str, u64)], label: &str) -> u64 {
    counted.iter().find(|c| c.0 == label).map(|c| c.1).unwrap_or(0)
}

/// One timed and counted sweep over the first `devices` devices, ARM limited to `rate` requests/s (burst: one
/// second's worth) for the handler's principal, or unthrottled.
fn sweep(la: &LocalAzure, devices: usize, rate: Option<f64>) -> anyhow::Result<SweepResult> {
    let rules = install_counters(la)?;
    let limit = match rate {
        Some(r) => Some(
            la.admin_post(
                "/admin/faults",
                json!({"service": "arm", "action": {"type": "rateLimit", "perSecond": r, "burst": r}}),
            )?["id"]
                .clone(),
        ),
        None => None,
    };
    // The production retry policy (6 retries, honouring Retry-After), not the tests' short one.
    // (Explicitly: the handler's test placeholders turn retries off.)
    let mut env: Vec<(String, String)> =
        la.handler_env().into_iter().filter(|(k, _)| !k.starts_with("EDGEVAULT_RETRY_")).collect();
    env.push(("EDGEVAULT_RETRY_MAX_RETRIES".into(), "6".into()));
    env.push(("EDGEVAULT_RETRY_INITIAL_DELAY_MS".into(), "800".into()));
    let handler = edgevault_tests::Handler::start_with(&env)?;
    let (idle, _) = procfs::memory_kib(handler.pid()).unwrap_or_default();
    let la_pid = procfs::child_named("local-azure");
    let cpu = |pid: Option<u32>| pid.and_then(procfs::cpu_seconds).unwrap_or(0.0);
    let (handler_cpu0, la_cpu0) = (cpu(Some(handler.pid())), cpu(la_pid));
    let (seconds, summary) = invoke_sweep(&handler, &format!("{devices}"))?;
    let (_, hwm) = procfs::memory_kib(handler.pid()).unwrap_or_default();
    let (handler_cpu, la_cpu) = (cpu(Some(handler.pid())) - handler_cpu0, cpu(la_pid) - la_cpu0);
    let la_rss_mib = la_pid.and_then(procfs::memory_kib).map(|m| m.0 as f64 / 1024.0).unwrap_or(0.0);
    let counted = counts(la, &rules)?;
    let refused = match &limit {
        Some(id) => {
            let faults = la.admin_get("/admin/faults")?;
            faults["value"]
                .as_array()
                .and_then(|l| l.iter().find(|r| &r["id"] == id))
                .and_then(|r| r["fired"].as_u64())
                .unwrap_or(0)
        }
        None => 0,
    };
    clear_faults(la)?;
    let arm_answered = count(&counted, "ARM, all") - refused;
    // What the findings need: the listing pages (100 devices each), and per device its extended information and its
    // vault, then the lock for a present vault or the deleted vault for a missing one (3 ARM reads); the CIK is one
    // Key Vault read per present vault.
    let needed_arm = devices.div_ceil(100) as u64 + 3 * devices as u64;
    let bound = rate.map(|r| needed_arm as f64 / r);
    println!(
        "  {devices} devices: sweep {seconds:.2} s ({:.0} devices/s){}, handler RSS idle {:.1} MiB → peak (VmHWM) {:.1} MiB",
        devices as f64 / seconds,
        bound.map(|b| format!(", bound {b:.2} s, ratio {:.3}", seconds / b)).unwrap_or_default(),
        idle as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "    CPU during the sweep: handler {handler_cpu:.2} s ({:.2} ms per device), local-azure {la_cpu:.2} s ({:.2} ms per device; its RSS {la_rss_mib:.0} MiB)",
        handler_cpu * 1000.0 / devices as f64,
        la_cpu * 1000.0 / devices as f64
    );
    println!("    summary {summary}");
    println!("    ARM requests answered {arm_answered} (needed {needed_arm}), refused with 429 {refused}");
    for (label, n) in &counted {
        println!("    {label:<30} {n:>8}  ({:.2} per device)", *n as f64 / devices as f64);
    }
    Ok(SweepResult {
        devices,
        seconds,
        hwm_mib: hwm as f64 / 1024.0,
        idle_mib: idle as f64 / 1024.0,
        arm_answered,
        arm_refused: refused,
        needed_arm,
        keyvault: count(&counted, "Key Vault, all"),
        tokens: count(&counted, "identity tokens"),
        summary,
        handler_cpu,
        la_cpu,
        la_rss_mib,
        bound,
    })
}

fn clear_faults(la: &LocalAzure) -> anyhow::Result<()> {
    let client = reqwest::blocking::Client::builder().no_proxy().build()?;
    client.delete(format!("{}/admin/faults", la.admin)).send()?.error_for_status()?;
    Ok(())
}

/// Sweeps fleets of `sizes` devices (one local-azure, the fleet grown between sizes), ARM limited to `rate`
/// requests/s (0: unthrottled).
pub fn run(sizes: &[usize], rate: f64) -> anyhow::Result<Vec<Row>> {
    let la = LocalAzure::start()?;
    let rate = (rate > 0.0).then_some(rate);
    match rate {
        Some(r) => {
            println!("recovery sweep, ARM rate-limited to {r}/s for the handler (burst {r}, 429 + Retry-After beyond)")
        }
        None => println!("recovery sweep, ARM unthrottled"),
    }
    let mut seeded = 0;
    let mut results = Vec::new();
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    for size in sizes {
        let took = seed(&la, seeded..size)?;
        println!(
            "  seeded devices {seeded}..{size} in {:.2} s ({:.0} devices/s, /admin/seed in chunks of {SEED_CHUNK})",
            took.as_secs_f64(),
            (size - seeded) as f64 / took.as_secs_f64()
        );
        seeded = size;
        results.push(sweep(&la, size, rate)?);
    }
    let mut rows = Vec::new();
    for r in &results {
        let (measured, target, met) = match r.bound {
            Some(b) => (
                format!("{:.1} s = {:.3} × bound {:.1} s", r.seconds, r.seconds / b, b),
                "≤ 1.1 × bound, RSS ≤ 64 MiB, calls = needed",
                Some(r.seconds <= 1.1 * b && r.hwm_mib <= 64.0 && r.arm_answered == r.needed_arm),
            ),
            None => (format!("{:.1} s (unthrottled)", r.seconds), "", None),
        };
        rows.push(Row::new(
            "sweep",
            format!("{} devices (80 % healthy, 10 % lock missing, 10 % soft-deleted)", r.devices),
            format!(
                "{measured}; RSS {:.1} → {:.1} MiB; ARM answered {} (needed {}), 429s {}; Key Vault {}; tokens {}; errors {}; CPU handler {:.1} s / local-azure {:.1} s (RSS {:.0} MiB)",
                r.idle_mib, r.hwm_mib, r.arm_answered, r.needed_arm, r.arm_refused, r.keyvault, r.tokens, r.summary["errors"], r.handler_cpu, r.la_cpu, r.la_rss_mib
            ),
            target,
            met,
        ));
    }
    if let (Some(a), Some(b)) = (results.first(), results.last())
        && b.devices > a.devices
    {
        rows.push(Row::new(
            "sweep",
            format!("growth {} → {} devices", a.devices, b.devices),
            format!(
                "time {:.2}x, peak RSS {:.2}x for {:.0}x devices",
                b.seconds / a.seconds,
                b.hwm_mib / a.hwm_mib,
                b.devices as f64 / a.devices as f64
            ),
            "linear time, flat memory",
            None,
        ));
    }
    Ok(rows)
}
