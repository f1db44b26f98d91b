//! Recovery of a deleted vault: edgevault against the manual runbook, in interleaved rounds of one run.
//!
//! - **edgevault**: local-azure with the app (`up --app`). A device is activated through the API (vault, lock,
//!   policies, CIK, link), then an operator removes the lock and deletes the vault. Measured on local-azure's activity
//!   log (timestamps to 100 ns, written in the transaction of each change): the vault's DELETE → the recovery `PUT`
//!   (`createMode: recover`) → the lock's `PUT`, i.e. the vault recovered and locked. The event path in between:
//!   activity log → Event Grid → the host's webhook → `ArmEvents` → Service Bus `vault-deleted` → the host's receiver
//!   → the `VaultDeleted` worker.
//! - **runbook**: a second local-azure without the app; the same state seeded (what edgevault leaves for a device),
//!   the same accident, then `docs/runbook/recover-deleted-vault.sh` with the Azure CLI, commands back to back, timed
//!   from its start to its exit (an operator who starts the moment the vault is deleted and never pauses).
//!
//! No latency is injected: both sides pay local-azure's own speed, so the ratio is the cost of the process
//! (CLI start-ups, round trips one after another) against edgevault's event path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use edgevault_tests::local_azure::{ARM_AUDIENCE, LocalAzure, eventually};
use serde_json::{Value, json};

use crate::Row;
use crate::procfs::median;

const LOCK: &str = "edgevault-do-not-delete";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Azure CLI: `EDGEVAULT_AZ`, else the one `tests/tools/install-azure-cli.sh` installs.
fn az_binary() -> anyhow::Result<PathBuf> {
    let az = match std::env::var_os("EDGEVAULT_AZ") {
        Some(p) => PathBuf::from(p),
        None => workspace().join("target/tools/azure-cli/bin/az"),
    };
    ensure!(
        az.is_file(),
        "the Azure CLI is not at {}: run `bash tests/tools/install-azure-cli.sh` (or set EDGEVAULT_AZ)",
        az.display()
    );
    Ok(az)
}

/// `HH:MM:SS.fffffff` of an activity timestamp, in seconds of the day.
fn seconds_of_day(timestamp: &str) -> Option<f64> {
    let time = timestamp.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn activity_after(la: &LocalAzure, after: u64) -> anyhow::Result<Vec<Value>> {
    let page = la.admin_get(&format!("/admin/activity?after={after}&limit=1000"))?;
    Ok(page["value"].as_array().cloned().unwrap_or_default())
}

fn last_sequence(la: &LocalAzure) -> anyhow::Result<u64> {
    let mut cursor = 0;
    loop {
        let entries = activity_after(la, cursor)?;
        match entries.iter().filter_map(|e| e["sequenceNumber"].as_u64()).max() {
            Some(last) => cursor = last,
            None => return Ok(cursor),
        }
    }
}

struct EdgevaultRound {
    /// DELETE → the recovery PUT, from the activity log.
    to_recover_ms: f64,
    /// DELETE → the lock PUT (recovered and locked), from the activity log.
    to_locked_ms: f64,
}

/// A device activated by edgevault; answers the vault's id.
fn activated_device(la: &LocalAzure, token: &str, name: &str) -> anyhow::Result<(String, String)> {
    let id = format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}", la.resource_group_id());
    let body =
        json!({"location": la.var("AZURE_LOCATION"), "sku": {"name": "Edge", "tier": "Standard"}, "properties": {}});
    let (status, answer) = la.arm(token, "PUT", &id, Some(body))?;
    ensure!(status == 200 || status == 201, "create device: {status} {answer}");
    eventually(Duration::from_secs(60), || {
        let (_, device) = la.arm(token, "GET", &id, None).ok()?;
        device["identity"]["principalId"].as_str().map(str::to_string)
    })
    .ok_or_else(|| anyhow!("{name} never got its identity"))?;
    let (status, headers, answer) = la.api("POST", "/activation-keys", Some(json!({"resourceId": id})))?;
    ensure!(status == 202, "POST activation key: {status} {answer}");
    let location = headers.get("location").and_then(|v| v.to_str().ok()).context("no Location")?.to_string();
    eventually(Duration::from_secs(120), || {
        let (status, _, body) = la.api("GET", &location, None).ok()?;
        (status == 200 && body["status"] == "succeeded").then_some(())
    })
    .ok_or_else(|| anyhow!("{name}: the activation key never became ready"))?;
    let (status, info) = la.arm(token, "POST", &format!("{id}/getExtendedInformation"), Some(json!({})))?;
    ensure!(status == 200, "getExtendedInformation: {status} {info}");
    let vault = info["properties"]["clientSecretStoreId"].as_str().context("no vault linked")?.to_string();
    Ok((id, vault))
}

fn unlock_and_delete(la: &LocalAzure, token: &str, vault: &str) -> anyhow::Result<()> {
    let (status, body) =
        la.arm(token, "DELETE", &format!("{vault}/providers/Microsoft.Authorization/locks/{LOCK}"), None)?;
    ensure!(status == 200, "lock DELETE: {status} {body}");
    let (status, body) = la.arm(token, "DELETE", vault, None)?;
    ensure!(status == 200, "vault DELETE: {status} {body}");
    Ok(())
}

fn edgevault_round(la: &LocalAzure, token: &str, index: usize) -> anyhow::Result<EdgevaultRound> {
    let (_, vault) = activated_device(la, token, &format!("bench-recovery-{index}"))?;
    let lock_id = format!("{vault}/providers/Microsoft.Authorization/locks/{LOCK}");
    let cursor = last_sequence(la)?;
    unlock_and_delete(la, token, &vault)?;
    let same = |e: &Value, id: &str| e["resourceId"].as_str().is_some_and(|r| r.eq_ignore_ascii_case(id));
    let ok = |e: &Value, op: &str| e["status"] == "Succeeded" && e["operationName"] == op;
    let limit = Instant::now() + Duration::from_secs(60);
    let (deleted, recovered, locked) = loop {
        let entries = activity_after(la, cursor)?;
        let at = |pred: &dyn Fn(&Value) -> bool, after: f64| {
            entries
                .iter()
                .filter(|e| pred(e))
                .filter_map(|e| e["eventTimestamp"].as_str().and_then(seconds_of_day))
                .find(|t| *t >= after)
        };
        if let Some(deleted) = at(&|e| same(e, &vault) && ok(e, "Microsoft.KeyVault/vaults/delete"), 0.0)
            && let Some(recovered) = at(&|e| same(e, &vault) && ok(e, "Microsoft.KeyVault/vaults/write"), deleted)
            && let Some(locked) = at(&|e| same(e, &lock_id) && ok(e, "Microsoft.Authorization/locks/write"), deleted)
        {
            break (deleted, recovered, locked);
        }
        if Instant::now() > limit {
            bail!("round {index}: the vault was not recovered and locked within 60 s");
        }
        // Only for noticing the end: the figures are the log's own timestamps.
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(EdgevaultRound { to_recover_ms: (recovered - deleted) * 1000.0, to_locked_ms: (locked - deleted) * 1000.0 })
}

/// The CLI side: a local-azure without the app and an operator logged in with `az login --identity`.
struct Runbook {
    la: LocalAzure,
    token: String,
    operator: String,
    config: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Runbook {
    fn start() -> anyhow::Result<Runbook> {
        let az = az_binary()?;
        let la = LocalAzure::start()?;
        let operator = la.principal("bench-runbook-operator", &["*"])?;
        let token = la.token(&operator, ARM_AUDIENCE)?;
        let config = tempfile::tempdir()?;
        let path = format!(
            "{}:{}",
            az.parent().unwrap_or(Path::new(".")).display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut env: Vec<(String, String)> =
            ["HTTPS_PROXY", "REQUESTS_CA_BUNDLE", "NO_PROXY", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"]
                .iter()
                .map(|k| (k.to_string(), la.var(k).to_string()))
                .collect();
        env.push(("AZURE_CONFIG_DIR".into(), config.path().display().to_string()));
        env.push(("HOME".into(), config.path().display().to_string()));
        env.push(("PATH".into(), path));
        env.push(("AZURE_CORE_COLLECT_TELEMETRY".into(), "no".into()));
        let runbook = Runbook { la, token, operator, config, env };
        let out = runbook
            .command(&az)
            .args(["login", "--identity", "--object-id", &runbook.operator, "-o", "none"])
            .output()?;
        ensure!(out.status.success(), "az login --identity: {}", String::from_utf8_lossy(&out.stderr));
        Ok(runbook)
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env_clear().envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).current_dir(self.config.path());
        c
    }

    /// What edgevault leaves for a device, seeded in one request; answers (device id, vault id).
    fn provisioned(&self, index: usize) -> anyhow::Result<(String, String)> {
        let la = &self.la;
        let rg = la.resource_group_id();
        let device = format!("{rg}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/bench-runbook-{index}");
        let vault_name = format!("bench-rb-{index}");
        let vault = format!("{rg}/providers/Microsoft.KeyVault/vaults/{vault_name}");
        let principal = uuid_like(index, 1);
        let version = uuid_like(index, 2).replace('-', "");
        let tenant = la.var("AZURE_TENANT_ID");
        let policy = |oid: &str, secrets: &[&str]| json!({"tenantId": tenant, "objectId": oid, "permissions": {"secrets": secrets}});
        la.admin_post(
            "/admin/seed",
            json!({
                "devices": [{"id": device, "location": la.var("AZURE_LOCATION"), "sku": {"name": "Edge"}, "identity": {"principalId": principal},
                             "extendedInformation": {"clientSecretStoreId": vault, "clientSecretStoreUrl": format!("https://{vault_name}.vault.azure.net/"),
                                                     "channelIntegrityKeyName": "ase-cik-bench", "channelIntegrityKeyVersion": version, "syncStatus": "KeyVaultSynced"}}],
                "vaults": [{"id": vault, "location": la.var("AZURE_LOCATION"), "tags": {"edgevault-device": device},
                            "properties": {"tenantId": tenant, "sku": {"family": "A", "name": "standard"}, "enablePurgeProtection": true,
                                           "accessPolicies": [policy(&principal, &["get", "set"]), policy(la.var("EDGEVAULT_PRINCIPAL_ID"), &["get", "set", "list"])]}}],
                "locks": [{"scope": vault, "name": LOCK, "level": "CanNotDelete"}],
                "secrets": [{"vault": vault_name, "name": "ase-cik-bench", "value": format!("bench-{index}"), "version": version}],
            }),
        )?;
        Ok((device, vault))
    }

    /// One round: seed, the accident, then the script; answers its wall time in ms.
    fn round(&self, index: usize) -> anyhow::Result<f64> {
        let (device, vault) = self.provisioned(index)?;
        unlock_and_delete(&self.la, &self.token, &vault)?;
        let script = workspace().join("docs/runbook/recover-deleted-vault.sh");
        let started = Instant::now();
        let out = self.command(Path::new("bash")).arg(&script).args([&device, &self.operator]).output()?;
        let elapsed = started.elapsed();
        ensure!(
            out.status.success(),
            "runbook round {index} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let (status, _) = self.la.arm(
            &self.token,
            "GET",
            &format!("{vault}/providers/Microsoft.Authorization/locks/{LOCK}"),
            None,
        )?;
        ensure!(status == 200, "runbook round {index}: no lock after the script");
        Ok(elapsed.as_secs_f64() * 1000.0)
    }
}

/// A GUID-shaped id that differs per round and purpose.
fn uuid_like(index: usize, purpose: u8) -> String {
    format!("b0b0b0b0-{purpose:04x}-4000-8000-{index:012x}")
}

fn spread(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(", ")
}

pub fn run(rounds: usize) -> anyhow::Result<Vec<Row>> {
    let runbook = Runbook::start()?;
    let app = LocalAzure::start_with_app(&[])?;
    let operator = app.principal("bench-operator", &["*"])?;
    let token = app.token(&operator, ARM_AUDIENCE)?;
    println!(
        "vault recovery: edgevault (DELETE → recovered and locked) against the runbook (Azure CLI), {rounds} interleaved rounds"
    );
    let mut edgevault = Vec::new();
    let mut manual = Vec::new();
    for i in 0..rounds {
        let e = edgevault_round(&app, &token, i)?;
        let m = runbook.round(i)?;
        println!(
            "  round {i}: edgevault DELETE → recover PUT {:.1} ms, → locked {:.1} ms; runbook {m:.0} ms",
            e.to_recover_ms, e.to_locked_ms
        );
        edgevault.push(e);
        manual.push(m);
    }
    let starts: Vec<f64> = edgevault.iter().map(|e| e.to_recover_ms).collect();
    let mut locked: Vec<f64> = edgevault.iter().map(|e| e.to_locked_ms).collect();
    println!("  DELETE → recovery PUT, every round (sorted): {} ms", spread(&starts));
    println!("  DELETE → locked, every round (sorted): {} ms", spread(&locked));
    let start = median(&mut starts.clone());
    let e = median(&mut locked);
    let m = median(&mut manual);
    println!(
        "  median: edgevault {e:.1} ms (recovery starts after {start:.1} ms); runbook {m:.0} ms; runbook ÷ edgevault {:.0}",
        m / e
    );
    Ok(vec![
        Row::new("recovery", "edgevault: vault DELETE → recovered and locked, median", format!("{e:.1} ms"), "", None),
        Row::new(
            "recovery",
            "edgevault: vault DELETE → recovery PUT, median (spread in the log)",
            format!("{start:.1} ms"),
            "",
            None,
        ),
        Row::new(
            "recovery",
            "runbook with the Azure CLI, commands back to back, median",
            format!("{m:.0} ms"),
            "",
            None,
        ),
        Row::new("recovery", "runbook ÷ edgevault", format!("{:.0}×", m / e), "", None),
    ])
}
