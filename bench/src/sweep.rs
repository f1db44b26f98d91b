//! The recovery sweep at scale. A fleet is seeded into local-azure through ARM and Key Vault (as an operator, many
//! requests at once): 80 % healthy (identity, owned vault with soft delete + purge protection + both access
//! policies, lock, CIK, extended information in sync), 10 % drifted (lock missing), 10 % soft-deleted vaults. The
//! handler (as a process, pointed at local-azure) is then invoked with `RecoverySweep` directly; local-azure
//! counts the calls it receives with 0 ms latency rules, one per operation of interest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use edgevault_tests::local_azure::{ARM, ARM_AUDIENCE, LocalAzure, VAULT_AUDIENCE};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::{Row, invocations, procfs};

const SEED_CONCURRENCY: usize = 32;

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

struct Seeder {
    client: reqwest::Client,
    arm_token: String,
    vault_token: String,
    rg: String,
    location: String,
    tenant: String,
    edgevault: String,
    operator: String,
}

impl Seeder {
    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.client.request(method.clone(), url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "{method} {url}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn device(&self, i: usize) -> anyhow::Result<()> {
        use reqwest::Method;
        let id = format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/bench-{i:06}", self.rg);
        let device = self
            .call(
                &self.arm_token,
                Method::PUT,
                &format!("{ARM}{id}?api-version=2023-12-01"),
                Some(json!({"location": self.location, "sku": {"name": "Edge", "tier": "Standard"},
                            "identity": {"type": "SystemAssigned"}, "properties": {}})),
            )
            .await?;
        let principal = device["identity"]["principalId"].as_str().ok_or_else(|| anyhow!("no principal: {device}"))?;
        let vault_name = format!("bv{i:06}");
        let vault_id = format!("{}/providers/Microsoft.KeyVault/vaults/{vault_name}", self.rg);
        let policy = |oid: &str, perms: &[&str]| json!({"tenantId": self.tenant, "objectId": oid, "permissions": {"secrets": perms}});
        self.call(
            &self.arm_token,
            Method::PUT,
            &format!("{ARM}{vault_id}?api-version=2024-11-01"),
            Some(json!({"location": self.location, "tags": {"edgevault-device": id},
                "properties": {"tenantId": self.tenant, "sku": {"family": "A", "name": "standard"},
                  "accessPolicies": [policy(principal, &["get"]), policy(&self.edgevault, &["get", "set", "recover"]), policy(&self.operator, &["set"])],
                  "enableSoftDelete": true, "softDeleteRetentionInDays": 90, "enablePurgeProtection": true,
                  "enableRbacAuthorization": false}})),
        )
        .await?;
        let vault_url = format!("https://{vault_name}.vault.azure.net");
        let secret = self
            .call(
                &self.vault_token,
                Method::PUT,
                &format!("{vault_url}/secrets/ase-cik-bench?api-version=7.5"),
                Some(json!({"value": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "contentType": "application/octet-stream"})),
            )
            .await?;
        let version = secret["id"].as_str().and_then(|s| s.rsplit('/').next()).unwrap_or_default().to_string();
        match kind(i) {
            Kind::Healthy => {
                self.call(
                    &self.arm_token,
                    Method::PUT,
                    &format!("{ARM}{vault_id}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete?api-version=2020-05-01"),
                    Some(json!({"properties": {"level": "CanNotDelete", "notes": "bench"}})),
                )
                .await?;
            }
            Kind::LockMissing => {}
            Kind::SoftDeleted => {
                self.call(&self.arm_token, Method::DELETE, &format!("{ARM}{vault_id}?api-version=2024-11-01"), None)
                    .await?;
            }
        }
        self.call(
            &self.arm_token,
            Method::POST,
            &format!("{ARM}{id}/updateExtendedInformation?api-version=2023-12-01"),
            Some(json!({"clientSecretStoreId": vault_id, "clientSecretStoreUrl": vault_url,
                "channelIntegrityKeyName": "ase-cik-bench", "channelIntegrityKeyVersion": version, "syncStatus": "KeyVaultSynced"})),
        )
        .await?;
        Ok(())
    }
}

fn seed(la: &LocalAzure, range: std::ops::Range<usize>) -> anyhow::Result<Duration> {
    let operator = la.principal("bench-seeder", &["*"])?;
    let ca = std::fs::read(la.var("SSL_CERT_FILE"))?;
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(la.var("HTTPS_PROXY"))?)
        .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
        .timeout(Duration::from_secs(120))
        .build()?;
    let seeder = Arc::new(Seeder {
        client,
        arm_token: la.token(&operator, ARM_AUDIENCE)?,
        vault_token: la.token(&operator, VAULT_AUDIENCE)?,
        rg: la.resource_group_id(),
        location: la.var("AZURE_LOCATION").to_string(),
        tenant: la.var("AZURE_TENANT_ID").to_string(),
        edgevault: la.var("EDGEVAULT_PRINCIPAL_ID").to_string(),
        operator,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let started = Instant::now();
    let errors: Vec<anyhow::Error> = runtime.block_on(async {
        futures::stream::iter(range.map(|i| {
            let seeder = seeder.clone();
            async move { seeder.device(i).await }
        }))
        .buffer_unordered(SEED_CONCURRENCY)
        .filter_map(|r| async move { r.err() })
        .collect()
        .await
    });
    if let Some(first) = errors.into_iter().next() {
        return Err(first.context("seeding"));
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
    arm_calls: u64,
    needed_arm: u64,
    summary: Value,
    handler_cpu: f64,
    la_cpu: f64,
}

fn invoke_sweep(handler: &edgevault_tests::Handler, tag: &str) -> anyhow::Result<(f64, Value)> {
    let client = reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(1800)).build()?;
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

/// Two sweeps: the timed one with no fault rules installed, then one with the counting rules (local-azure records
/// every firing durably, one fsync'd write per request, which slows it several-fold: those timings are not used).
fn sweep(la: &LocalAzure, devices: usize) -> anyhow::Result<SweepResult> {
    clear_faults(la)?;
    let handler = edgevault_tests::Handler::start_with(&la.handler_env())?;
    let (idle, _) = procfs::memory_kib(handler.pid()).unwrap_or_default();
    let la_pid = procfs::child_named("local-azure");
    let cpu = |pid: Option<u32>| pid.and_then(procfs::cpu_seconds).unwrap_or(0.0);
    let (handler_cpu0, la_cpu0) = (cpu(Some(handler.pid())), cpu(la_pid));
    let (seconds, summary) = invoke_sweep(&handler, &format!("{devices}-timed"))?;
    let (_, hwm) = procfs::memory_kib(handler.pid()).unwrap_or_default();
    let (handler_cpu, la_cpu) = (cpu(Some(handler.pid())) - handler_cpu0, cpu(la_pid) - la_cpu0);
    let la_rss = la_pid.and_then(procfs::memory_kib).map(|m| m.0 as f64 / 1024.0).unwrap_or(0.0);
    let rules = install_counters(la)?;
    let (counted_seconds, _) = invoke_sweep(&handler, &format!("{devices}-counted"))?;
    let counted = counts(la, &rules)?;
    clear_faults(la)?;
    let arm_calls = counted.iter().find(|c| c.0 == "ARM, all").map(|c| c.1).unwrap_or(0);
    // What the findings need: the listing pages, and per device its extended information and its vault, then the
    // lock for a present vault or the deleted vault for a missing one (3 ARM reads); the CIK is one Key Vault read.
    let lists = counted.iter().find(|c| c.0 == "ARM device list/get").map(|c| c.1).unwrap_or(0);
    let needed_arm = lists + 3 * devices as u64;
    println!(
        "  {devices} devices: sweep {seconds:.2} s ({:.0} devices/s), handler RSS idle {:.1} MiB → peak (VmHWM) {:.1} MiB",
        devices as f64 / seconds,
        idle as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "    CPU during the sweep: handler {handler_cpu:.2} s ({:.2} ms per device), local-azure {la_cpu:.2} s ({:.2} ms per device; its RSS {la_rss:.0} MiB)",
        handler_cpu * 1000.0 / devices as f64,
        la_cpu * 1000.0 / devices as f64
    );
    println!("    summary {summary}");
    println!("    calls, counted in a second sweep with 0 ms latency rules (that sweep took {counted_seconds:.2} s):");
    for (label, n) in &counted {
        println!("    {label:<30} {n:>8}  ({:.2} per device)", *n as f64 / devices as f64);
    }
    Ok(SweepResult {
        devices,
        seconds,
        hwm_mib: hwm as f64 / 1024.0,
        idle_mib: idle as f64 / 1024.0,
        arm_calls,
        needed_arm,
        summary,
        handler_cpu,
        la_cpu,
    })
}

fn clear_faults(la: &LocalAzure) -> anyhow::Result<()> {
    let client = reqwest::blocking::Client::builder().no_proxy().build()?;
    client.delete(format!("{}/admin/faults", la.admin)).send()?.error_for_status()?;
    Ok(())
}

pub fn run(sizes: &[usize]) -> anyhow::Result<Vec<Row>> {
    let la = LocalAzure::start()?;
    println!("recovery sweep (local-azure unthrottled: its fault rules have no rate limit, only count / probability)");
    let mut seeded = 0;
    let mut results = Vec::new();
    let mut sizes = sizes.to_vec();
    sizes.sort_unstable();
    for size in sizes {
        let took = seed(&la, seeded..size)?;
        println!(
            "  seeded devices {seeded}..{size} in {:.1} s ({:.0} devices/s, ~6 writes each)",
            took.as_secs_f64(),
            (size - seeded) as f64 / took.as_secs_f64()
        );
        seeded = size;
        results.push(sweep(&la, size)?);
    }
    let mut rows = Vec::new();
    for r in &results {
        rows.push(Row::new(
            "sweep",
            format!("{} devices (80 % healthy, 10 % lock missing, 10 % soft-deleted)", r.devices),
            format!(
                "{:.2} s, RSS {:.1} → {:.1} MiB, ARM calls {} (needed {}), errors {}, CPU handler {:.1} s / local-azure {:.1} s",
                r.seconds, r.idle_mib, r.hwm_mib, r.arm_calls, r.needed_arm, r.summary["errors"], r.handler_cpu, r.la_cpu
            ),
            "",
            None,
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
