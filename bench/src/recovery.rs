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
use std::time::Instant;

use anyhow::ensure;
use edgevault_tests::local_azure::{ARM_AUDIENCE, LocalAzure};
use serde_json::json;

use crate::Row;
use crate::procfs::median;
use crate::steps::{self, LOCK, unlock_and_delete};

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

/// One edgevault round: a device activated through the API, then its vault deleted and recovered.
fn edgevault_round(la: &LocalAzure, token: &str, index: usize) -> anyhow::Result<steps::Recovery> {
    let id = steps::created_device(la, token, &format!("bench-recovery-{index}"))?;
    steps::activate(la, &id)?;
    let vault = steps::linked_vault(la, token, &id)?;
    steps::recover(la, token, &vault)
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
