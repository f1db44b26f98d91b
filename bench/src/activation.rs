//! Activation key end to end through the whole system (local-azure with the app in its Functions host), with
//! realistic Azure latencies injected as local-azure fault rules. Measures `POST /api/activation-keys` → the worker's
//! final write (seen in local-azure's activity log) → the first status `GET` that returns the key, and compares it
//! with (a) the critical path the latency table allows and (b) the sum of every latency the run actually paid
//! (the rules' `fired` counts × their latency: the handler makes its calls one after another).

use edgevault_tests::local_azure::{ARM_AUDIENCE, LocalAzure};
use serde_json::json;

use crate::procfs::median;
use crate::{Row, steps};

/// (service, operation glob, ms, what): the injected latencies.
pub const LATENCIES: &[(&str, &str, u64, &str)] = &[
    ("arm", "Microsoft.KeyVault/vaults/write", 2000, "vault create / update (PUT)"),
    ("arm", "Microsoft.Authorization/locks/write", 300, "lock PUT"),
    ("arm", "*/read", 50, "every ARM read (device, vault, deleted vault, lock, list)"),
    ("arm", "*/getExtendedInformation/action", 50, "getExtendedInformation (a read)"),
    ("arm", "*/checkNameAvailability/action", 50, "vault checkNameAvailability"),
    ("arm", "*/updateExtendedInformation/action", 150, "updateExtendedInformation (a write)"),
    ("arm", "Microsoft.DataBoxEdge/dataBoxEdgeDevices/write", 150, "device PATCH (identity, tags)"),
    ("arm", "Microsoft.KeyVault/vaults/accessPolicies/write", 300, "vault access policies add"),
    ("keyvault", "secrets/set", 100, "secret set"),
    ("keyvault", "secrets/get", 50, "secret get"),
    ("servicebus", "send", 20, "Service Bus send"),
    // No latency: counted only, to show the handler's token cache (Azure tokens last hours; one fetch per audience).
    ("identity", "token", 0, "managed-identity token request"),
];

fn ms(service: &str, op_suffix: &str) -> u64 {
    LATENCIES.iter().find(|(s, o, _, _)| *s == service && o.ends_with(op_suffix)).map(|l| l.2).unwrap_or(0)
}

/// The critical path the table allows: what must happen one after another for a key to be ready.
/// API: the device and its extended information and the name checks are independent reads (one read deep), then
/// the pending mark (a write), then the send. Worker: vault PUT, then lock and CIK (independent of each other,
/// both need the vault), then the extended-information write that publishes the link. Status: device + extended
/// information (one read deep), then the CIK read that seals the key.
pub fn critical_path_ms() -> u64 {
    let read = ms("arm", "*/read");
    let update_info = ms("arm", "updateExtendedInformation/action");
    read + update_info
        + ms("servicebus", "send")
        + ms("arm", "vaults/write")
        + ms("arm", "locks/write").max(ms("keyvault", "secrets/set"))
        + update_info
        + read
        + ms("keyvault", "secrets/get")
}

struct RunResult {
    to_worker_done_ms: f64,
    to_key_ms: f64,
    status_get_ms: f64,
    paid_ms: u64,
    calls: Vec<(String, u64, u64)>,
}

fn one(la: &LocalAzure, operator_token: &str, index: usize) -> anyhow::Result<RunResult> {
    la.local_delete_faults()?;
    // The measured run starts from a created device with its identity, as a portal request would.
    let id = steps::created_device(la, operator_token, &format!("bench-activation-{index}"))?;
    let mut rules = Vec::new();
    for (service, operation, latency, _) in LATENCIES {
        let rule = la.admin_post(
            "/admin/faults",
            json!({"service": service, "operation": operation, "action": {"type": "latency", "ms": latency}}),
        )?;
        rules.push((rule["id"].clone(), *latency));
    }
    let timed = steps::activate(la, &id)?;
    let faults = la.admin_get("/admin/faults")?;
    let mut paid = 0;
    let mut calls = Vec::new();
    for rule in faults
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .chain(faults["value"].as_array().cloned().unwrap_or_default().iter())
    {
        if let Some((_, latency)) = rules.iter().find(|(rid, _)| *rid == rule["id"]) {
            let fired = rule["fired"].as_u64().unwrap_or(0);
            paid += fired * latency;
            calls.push((
                format!("{} {}", rule["service"].as_str().unwrap_or(""), rule["operation"].as_str().unwrap_or("")),
                fired,
                *latency,
            ));
        }
    }
    la.local_delete_faults()?;
    Ok(RunResult {
        to_worker_done_ms: timed.to_worker_done_ms,
        to_key_ms: timed.to_key_ms,
        status_get_ms: timed.status_get_ms,
        paid_ms: paid,
        calls,
    })
}

trait DeleteFaults {
    fn local_delete_faults(&self) -> anyhow::Result<()>;
}

impl DeleteFaults for LocalAzure {
    fn local_delete_faults(&self) -> anyhow::Result<()> {
        let response = reqwest::blocking::Client::builder()
            .no_proxy()
            .build()?
            .delete(format!("{}/admin/faults", self.admin))
            .send()?;
        anyhow::ensure!(response.status().is_success(), "DELETE /admin/faults: {}", response.status());
        Ok(())
    }
}

pub fn run(runs: usize) -> anyhow::Result<Vec<Row>> {
    let la = LocalAzure::start_with_app(&[])?;
    let operator = la.principal("bench-operator", &["*"])?;
    let token = la.token(&operator, ARM_AUDIENCE)?;
    let critical = critical_path_ms() as f64;
    println!("activation key end to end (through the Functions host; latencies injected, table in docs/BENCHMARKS.md)");
    let mut results = Vec::new();
    for i in 0..runs {
        let r = one(&la, &token, i)?;
        let tokens: u64 =
            r.calls.iter().filter(|(op, _, _)| op.starts_with("identity")).map(|(_, fired, _)| fired).sum();
        println!(
            "  run {i}: POST → worker done {:.0} ms, → key {:.0} ms (status GET {:.0} ms); latency paid {} ms; critical path {critical:.0} ms; ratio {:.3}; token requests {tokens}",
            r.to_worker_done_ms,
            r.to_key_ms,
            r.status_get_ms,
            r.paid_ms,
            r.to_key_ms / critical
        );
        results.push(r);
    }
    if let Some(last) = results.last() {
        println!("  calls that paid latency (last run): service operation × fired × ms");
        for (op, fired, latency) in &last.calls {
            if *fired > 0 {
                println!("    {op:<55} {fired:>3} × {latency:>4} ms = {:>5} ms", fired * latency);
            }
        }
    }
    let mut key: Vec<f64> = results.iter().map(|r| r.to_key_ms).collect();
    let mut paid: Vec<f64> = results.iter().map(|r| r.paid_ms as f64).collect();
    let key = median(&mut key);
    let paid = median(&mut paid);
    println!(
        "  median POST → key {key:.0} ms; critical path {critical:.0} ms (ratio {:.3}); latency the code paid {paid:.0} ms (ratio to it {:.3})",
        key / critical,
        key / paid
    );
    Ok(vec![
        Row::new("activation", "POST → ready key, median", format!("{key:.0} ms"), "", None),
        Row::new("activation", "critical path from the latency table", format!("{critical:.0} ms"), "", None),
        Row::new(
            "activation",
            "ratio to the critical path",
            format!("{:.3}", key / critical),
            "≤ 1.05",
            Some(key / critical <= 1.05),
        ),
        Row::new(
            "activation",
            "latency the calls made paid (sum, sequential)",
            format!("{paid:.0} ms (ratio {:.3})", key / paid),
            "",
            None,
        ),
    ])
}
