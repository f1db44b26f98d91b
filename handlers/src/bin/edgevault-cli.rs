//! `edgevault-cli`: the operator's and the device's side of edgevault.
//!
//! - `device open-key` acts as the device: it gets a token as the device's managed identity, reads the CIK from the
//!   vault the key names, opens the activation key and prints what it says (never the CIK).
//! - `device sync-secrets` acts as the device's "Sync device secrets": as the device's managed identity it writes
//!   its secrets into its vault under the names Stack Edge uses and asks for a re-sync
//!   (`updateExtendedInformation` with `syncStatus: KeyVaultSyncPending`), then waits for edgevault's verdict.
//! - `device refresh` (operator) re-checks one device now, as the API's refresh does, and prints what it found.
//! - `status` prints the fleet view (`lifecycle::fleet`, the same as the fleet page): per Stack Edge device in scope
//!   what the sweep would see, open alerts, recent recoveries and the sweep's progress; `--json` prints the page's
//!   JSON form, and the filters are the page's.
//! - `activate` asks the activation-key API for a device's key **as the operator**: with the operator's own Entra ID
//!   token for the API (`EDGEVAULT_API_TOKEN`, or the Azure CLI's login), so the API's per-device check applies to
//!   them as to anyone; the key goes to a file, never to the terminal.
//!
//! Both read the same environment as the handler (`IDENTITY_ENDPOINT`, `HTTPS_PROXY`, …), so against local-azure
//! `eval "$(local-azure env)"` is all the set-up there is.

use std::io::Read;
use std::sync::Arc;

use anyhow::{Context, bail};
use azure_core::credentials::TokenCredential;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use clap::{Parser, Subcommand};
use edgevault::activation_key::ActivationKey;
use edgevault::azure::HttpStack;
use edgevault::azure::arm::ArmClient;
use edgevault::azure::models::{ExtendedInfoPatch, KeyVaultSyncStatus};
use edgevault::azure::secrets::VaultSecrets;
use edgevault::azure::traits::{CikStore, Devices};
use edgevault::config::{Settings, settings};
use edgevault::deps::Deps;
use edgevault::lifecycle::fleet::{Check, Filter, FleetView, VaultPresence, Viewer, view};
use edgevault::lifecycle::history::{SweepProgress, last_sweep};
use edgevault::resource_id::ResourceId;

#[derive(Parser)]
#[command(about = "edgevault's device and operator commands")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Act as a Stack Edge device, or (operator) work on one.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Print, per device, status / identity / vault / lock / soft delete / purge protection / CIK / audit / sync
    /// status / findings, then open alerts, recent recoveries and the sweep's progress (the fleet page's view).
    Status {
        /// Print the view as JSON (what `GET /api/fleet.json` answers).
        #[arg(long)]
        json: bool,
        /// Only devices in this state: healthy, drifted, vaultDeleted, failed, pending, notActivated, legacy,
        /// unreadable.
        #[arg(long)]
        status: Option<String>,
        /// Only this subscription (one of EDGEVAULT_SUBSCRIPTIONS).
        #[arg(long)]
        subscription: Option<String>,
        /// Only this resource group.
        #[arg(long)]
        resource_group: Option<String>,
        /// While a sweep is under way, print its progress every few seconds until it is done.
        #[arg(long)]
        follow: bool,
    },
    /// Request a device's activation key from the API as yourself and write it to a file (mode 0600).
    Activate {
        /// The device's resource id.
        #[arg(long)]
        resource_id: String,
        /// A custom vault name (default: derived from the device).
        #[arg(long)]
        vault_name: Option<String>,
        /// Where to write the key; it is never printed.
        #[arg(long)]
        key_out: std::path::PathBuf,
        /// The API's base URL, e.g. https://<app>.azurewebsites.net/api.
        #[arg(long, env = "EDGEVAULT_API_BASE_URL")]
        api: String,
        /// The API's audience for the Azure CLI token (`api://<client id>`); default from EDGEVAULT_API_AUDIENCE.
        #[arg(long, env = "EDGEVAULT_API_AUDIENCE")]
        audience: Option<String>,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// (Operator) Re-check one device now (what the API's refresh does): print its findings and the alerts raised or
    /// resolved, and queue the fixes (needs `ServiceBusConnection__fullyQualifiedNamespace`).
    Refresh {
        /// The device's resource id.
        #[arg(long)]
        resource_id: String,
    },
    /// Open an activation key as the device's managed identity and print its contents.
    OpenKey {
        /// The device's resource id.
        #[arg(long)]
        resource_id: String,
        /// The activation key; `-` reads it from standard input (keeps it out of shell history).
        #[arg(long, default_value = "-")]
        key: String,
    },
    /// As the device's managed identity: write the device's secrets into its vault and ask for a re-sync
    /// (`syncStatus: KeyVaultSyncPending`); then wait for edgevault to mark it synced or failed.
    SyncSecrets {
        /// The device's resource id.
        #[arg(long)]
        resource_id: String,
        /// Only ask for the re-sync; write no secret (as after a CIK was deleted by accident).
        #[arg(long)]
        no_write: bool,
        /// Seconds to wait for edgevault's verdict (0: do not wait).
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Arguments first, so `--help` works without an environment.
    let cli = Cli::parse();
    edgevault::telemetry::init();
    // The API is called as the operator, with nothing of edgevault's configuration or identity; the other commands
    // act with edgevault's (or the device's) identity from the environment.
    let edgevault = || -> anyhow::Result<(Settings, Deps)> {
        let settings = cli_settings()?;
        let deps = Deps::from_settings(&settings)?;
        Ok((settings, deps))
    };
    match cli.command {
        Top::Activate { resource_id, vault_name, key_out, api, audience } => {
            activate(&resource_id, vault_name.as_deref(), &key_out, &api, audience.as_deref()).await
        }
        Top::Device { command: DeviceCommand::OpenKey { resource_id, key } } => {
            let (settings, deps) = edgevault()?;
            open_key(&deps, &settings, &resource_id, &key).await
        }
        Top::Device { command: DeviceCommand::SyncSecrets { resource_id, no_write, wait } } => {
            let (settings, deps) = edgevault()?;
            sync_secrets(&deps, &settings, &resource_id, !no_write, wait).await
        }
        Top::Device { command: DeviceCommand::Refresh { resource_id } } => refresh(&edgevault()?.1, &resource_id).await,
        Top::Status { json, status: health, subscription, resource_group, follow } => {
            let deps = edgevault()?.1;
            let query = [("status", health), ("subscription", subscription), ("resourceGroup", resource_group)];
            let query = query.iter().filter_map(|(name, value)| value.as_deref().map(|v| (*name, v)));
            let filter = Filter::parse(query, &deps.settings.subscriptions)?;
            status(&deps, &filter, json, follow).await
        }
    }
}

/// The operator's token for the API: `EDGEVAULT_API_TOKEN` when set (e.g. `$(local-azure token --principal …)`),
/// else the Azure CLI's login (`az login`) for `<audience>/.default`.
async fn operator_token(audience: Option<&str>) -> anyhow::Result<String> {
    if let Some(token) = std::env::var("EDGEVAULT_API_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        return Ok(token.trim().to_string());
    }
    let audience = audience.context("no EDGEVAULT_API_TOKEN and no --audience (api://<the API's client id>) for az")?;
    let credential = azure_identity::AzureCliCredential::new(None)?;
    let scope = format!("{}/.default", audience.trim_end_matches('/'));
    let token = credential.get_token(&[&scope], None).await.context("getting a token from the Azure CLI (az login)")?;
    Ok(token.token.secret().to_string())
}

async fn activate(
    resource_id: &str,
    vault_name: Option<&str>,
    key_out: &std::path::Path,
    api: &str,
    audience: Option<&str>,
) -> anyhow::Result<()> {
    let token = operator_token(audience).await?;
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build()?;
    let mut body = serde_json::json!({"resourceId": resource_id});
    if let Some(name) = vault_name {
        body["vaultName"] = name.into();
    }
    let url = format!("{}/activation-keys", api.trim_end_matches('/'));
    let answer = http.post(&url).bearer_auth(&token).json(&body).send().await?;
    let (status, headers) = (answer.status().as_u16(), answer.headers().clone());
    let accepted: serde_json::Value = answer.json().await.unwrap_or_default();
    let refusal = |status: u16, body: &serde_json::Value| {
        anyhow::anyhow!(
            "the API answered {status} {}: {}",
            body["error"]["code"].as_str().unwrap_or_default(),
            body["error"]["message"].as_str().unwrap_or_default()
        )
    };
    if status != 202 {
        return Err(refusal(status, &accepted));
    }
    let caller = headers.get("x-edgevault-caller").and_then(|v| v.to_str().ok()).unwrap_or("-");
    println!("requested as {caller}; vault {}", accepted["vaultName"].as_str().unwrap_or_default());
    let location = headers.get("location").and_then(|v| v.to_str().ok()).context("no Location in the answer")?;
    let mut wait = std::time::Duration::from_secs(2);
    for _ in 0..120 {
        tokio::time::sleep(wait).await;
        let answer = http.get(location).bearer_auth(&token).send().await?;
        let status = answer.status().as_u16();
        let retry = answer.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        if status != 200 {
            return Err(refusal(status, &body));
        }
        match body["status"].as_str() {
            Some("succeeded") => {
                let key = body["activationKey"].as_str().context("a succeeded status without its key")?;
                write_secret(key_out, key)?;
                println!("activation key written to {} (expires {})", key_out.display(), body["expiresAt"]);
                return Ok(());
            }
            Some("failed") => bail!("the activation failed: {}", body["error"]["message"]),
            Some("pending" | "syncing") => wait = std::time::Duration::from_secs(retry.unwrap_or(1)),
            other => bail!("the device's status is {other:?}"),
        }
    }
    bail!("the key was not ready after the polls allowed; ask for the status again later: {location}")
}

/// Writes `secret` readable by the owner only.
fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(secret.as_bytes())?;
    Ok(())
}

/// The handler's settings, with what only the handler needs defaulted: the CLI sends nothing to Service Bus, and
/// without `EDGEVAULT_SUBSCRIPTIONS` it covers `AZURE_SUBSCRIPTION_ID`.
fn cli_settings() -> anyhow::Result<Settings> {
    let lookup = |name: &str| {
        std::env::var(name).ok().filter(|v| !v.is_empty()).or_else(|| match name {
            settings::SERVICE_BUS => Some("unused.servicebus.windows.net".into()),
            settings::SUBSCRIPTIONS => std::env::var("AZURE_SUBSCRIPTION_ID").ok(),
            _ => None,
        })
    };
    let config = edgevault::config::Config::from_lookup(|name| match name {
        edgevault::config::PORT_VAR => Some("0".into()),
        other => lookup(other),
    })?;
    Ok(config.settings)
}

async fn open_key(deps: &Deps, settings: &Settings, resource_id: &str, key: &str) -> anyhow::Result<()> {
    let device: ResourceId = resource_id.parse()?;
    let text = if key == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        key.to_string()
    };
    let key = ActivationKey::parse(&text)?;
    let location = key.cik_location()?;
    // From here on everything happens as the device: its identity, its access policy, nothing of edgevault's.
    let stack = HttpStack::new(settings.retry);
    let (principal, credential) = device_credential(deps, &stack, &device).await?;
    let secrets = VaultSecrets::new(credential, &stack);
    let stored = secrets
        .get_cik(&location.vault_uri, &location.secret_name, Some(&location.secret_version))
        .await?
        .context("the CIK the key names is not in the vault")?;
    let claims = key.open(&stored.cik, time::OffsetDateTime::now_utc().unix_timestamp())?;
    if claims.resource_id != device {
        bail!("the key was issued to {}, not to {device}", claims.resource_id);
    }
    let when = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default()
    };
    println!("activation key opened as the device's identity {principal}");
    println!("  resource    {}", claims.resource_id);
    println!("  vault       {}", claims.cik.vault_uri);
    println!("  CIK secret  {} (version {})", claims.cik.secret_name, claims.cik.secret_version);
    println!("  issued      {}", when(claims.issued_at));
    println!("  expires     {}", when(claims.expires_at));
    Ok(())
}

/// A credential for the device's system-assigned identity (its principal is read from the device).
async fn device_credential(
    deps: &Deps,
    stack: &HttpStack,
    device: &ResourceId,
) -> anyhow::Result<(String, Arc<dyn TokenCredential>)> {
    let found = deps.devices.get_device(device).await?.with_context(|| format!("{device} does not exist"))?;
    let Some(principal) = found.principal_id() else { bail!("{device} has no managed identity yet") };
    let options = ManagedIdentityCredentialOptions {
        user_assigned_id: Some(UserAssignedId::ObjectId(principal.to_string())),
        client_options: stack.client_options(),
    };
    Ok((principal.to_string(), ManagedIdentityCredential::new(Some(options))?))
}

/// A value of the secret's form: a BitLocker recovery password is 48 digits in eight groups of six; the others
/// are random base64. A stand-in device has no volumes to protect, so its values are generated, never printed.
fn device_secret_value(name: &str) -> String {
    use base64::Engine;
    if name.ends_with("RecoveryKey") {
        return (0..8).map(|_| format!("{:06}", fastrand::u32(0..1_000_000))).collect::<Vec<_>>().join("-");
    }
    let mut bytes = [0u8; 32];
    aes_gcm::aead::rand_core::RngCore::fill_bytes(&mut aes_gcm::aead::OsRng, &mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn sync_secrets(
    deps: &Deps,
    settings: &Settings,
    resource_id: &str,
    write: bool,
    wait: u64,
) -> anyhow::Result<()> {
    let device: ResourceId = resource_id.parse()?;
    let info = deps.devices.get_extended_info(&device).await?;
    let Some(vault_uri) = info.properties.link.client_secret_store_url.clone() else {
        bail!("{device} has no Key Vault linked (Key Vault is not configured): request its activation key first")
    };
    // From here on everything happens as the device: its identity, its access policy, its ARM rights.
    let stack = HttpStack::new(settings.retry);
    let (principal, credential) = device_credential(deps, &stack, &device).await?;
    let vault_uri = format!("{}/", vault_uri.trim_end_matches('/'));
    if write {
        let secrets = VaultSecrets::new(credential.clone(), &stack);
        for name in edgevault::lifecycle::DEVICE_SECRET_NAMES {
            secrets.set_secret(&vault_uri, name, &device_secret_value(name)).await.map_err(|e| {
                anyhow::anyhow!(
                    "writing {name} as the device's identity {principal} failed: {e}; the device's access policy \
                     must allow secrets get and set (edgevault's repair restores it)"
                )
            })?;
        }
        println!(
            "wrote {} secrets to {vault_uri} as the device's identity {principal}",
            edgevault::lifecycle::DEVICE_SECRET_NAMES.len()
        );
    }
    let arm = ArmClient::new(&settings.arm_endpoint, credential, &stack)?;
    let patch = ExtendedInfoPatch { sync_status: Some(KeyVaultSyncStatus::KeyVaultSyncPending), ..Default::default() };
    arm.update_extended_info(&device, &patch).await.map_err(|e| {
        anyhow::anyhow!(
            "asking for a re-sync as the device's identity failed: {e}; the identity needs \
             Microsoft.DataBoxEdge/dataBoxEdgeDevices/updateExtendedInformation/action on {device}"
        )
    })?;
    println!("asked for a re-sync (syncStatus KeyVaultSyncPending)");
    if wait == 0 {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
    loop {
        let info = deps.devices.get_extended_info(&device).await?;
        match info.properties.key_vault_sync_status {
            Some(KeyVaultSyncStatus::KeyVaultSynced) => {
                println!("KeyVaultSynced: edgevault verified the CIK and the device's secrets");
                return Ok(());
            }
            Some(KeyVaultSyncStatus::KeyVaultSyncFailed) => {
                let found = deps.devices.get_device(&device).await?;
                let reason = found.as_ref().and_then(|d| edgevault::lifecycle::device::failure(d)).unwrap_or("-");
                bail!("KeyVaultSyncFailed: {reason}");
            }
            _ if std::time::Instant::now() >= deadline => bail!("no verdict from edgevault within {wait} s"),
            // Polls ARM as the portal does; the verdict comes from edgevault's worker, not from this process.
            _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

async fn refresh(deps: &Deps, resource_id: &str) -> anyhow::Result<()> {
    let device: ResourceId = resource_id.parse()?;
    let report = edgevault::lifecycle::refresh::refresh(deps, &device)
        .await?
        .with_context(|| format!("{device} does not exist"))?;
    let names = |kinds: &[edgevault::alerts::AlertKind]| {
        if kinds.is_empty() { "-".to_string() } else { kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ") }
    };
    println!("{}", report.resource_id);
    println!("  healthy      {}", if report.healthy { "yes" } else { "NO" });
    let findings = report.findings.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>();
    println!("  findings     {}", if findings.is_empty() { "-".to_string() } else { findings.join(", ") });
    println!("  sync status  {}", report.sync_status.map(|s| format!("{s:?}")).unwrap_or_else(|| "-".into()));
    println!("  raised       {}", names(&report.alerts.raised));
    println!("  resolved     {}", names(&report.alerts.resolved));
    println!("  open alerts  {}", names(&report.alerts.open));
    println!("  queued       {}", if report.repairs.is_empty() { "-".to_string() } else { report.repairs.join(", ") });
    Ok(())
}

/// How often `--follow` reads the sweep's progress again.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

async fn status(deps: &Deps, filter: &Filter, json: bool, follow: bool) -> anyhow::Result<()> {
    let fleet = view(deps, &Viewer::App, filter).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&fleet)?);
    } else {
        print_table(&fleet);
    }
    let mut sweep = fleet.sweep;
    while follow && sweep.as_ref().is_some_and(|s| !s.done) {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        sweep = last_sweep(deps).await?;
        if let Some(progress) = &sweep {
            println!("{}", sweep_line(progress));
        }
    }
    Ok(())
}

fn print_table(fleet: &FleetView) {
    println!(
        "{:<28} {:<13} {:<5} {:<26} {:<5} {:<5} {:<5} {:<5} {:<5} {:<20} FINDINGS",
        "DEVICE", "STATUS", "MSI", "VAULT", "LOCK", "SOFT", "PURGE", "CIK", "AUDIT", "SYNC"
    );
    let cell = |check: Check| match check {
        Check::Ok => "yes",
        Check::Missing => "NO",
        Check::NotApplicable | Check::Unknown => "-",
    };
    for d in &fleet.devices {
        let vault = match &d.vault {
            None => "-".to_string(),
            Some(v) if v.presence == VaultPresence::Present => v.name.clone(),
            Some(v) => {
                format!("{} ({})", v.name, serde_json::to_value(v.presence).unwrap_or_default().as_str().unwrap_or("?"))
            }
        };
        let sync = d.sync_status.map(|s| format!("{s:?}")).unwrap_or_else(|| "-".into());
        let mut notes: Vec<String> = d.findings.iter().map(|f| format!("{f:?}")).collect();
        notes.extend(d.error.iter().cloned());
        println!(
            "{:<28} {:<13} {:<5} {:<26} {:<5} {:<5} {:<5} {:<5} {:<5} {:<20} {}",
            d.name,
            d.health.name(),
            cell(d.identity),
            vault,
            cell(d.lock),
            cell(d.soft_delete),
            cell(d.purge_protection),
            cell(d.cik),
            cell(d.audit),
            sync,
            notes.join(",")
        );
    }
    if fleet.truncated {
        println!("(more devices match than one view shows: narrow with --subscription, --resource-group or --status)");
    }
    if !fleet.alerts.is_empty() {
        println!("\nOPEN ALERTS");
        for alert in &fleet.alerts {
            println!("  {}: {}", alert.device_name, alert.what);
        }
    }
    if !fleet.recoveries.is_empty() {
        println!("\nRECENT RECOVERIES");
        for r in &fleet.recoveries {
            let took = r.seconds_to_recover.map(|s| format!("{s:.3} s")).unwrap_or_else(|| "-".into());
            let device = r.record.device.rsplit('/').next().unwrap_or_default();
            println!(
                "  {device}: {:?} at {} (deleted {}, took {took})",
                r.record.outcome,
                r.record.finished_at,
                r.record.deleted_at.as_deref().unwrap_or("?")
            );
        }
    }
    if let Some(sweep) = &fleet.sweep {
        println!("\n{}", sweep_line(sweep));
    }
}

fn sweep_line(sweep: &SweepProgress) -> String {
    let findings: Vec<String> = sweep.findings.iter().map(|(f, n)| format!("{f} {n}")).collect();
    format!(
        "SWEEP {} {}: {} devices in {} pages{}",
        sweep.id,
        if sweep.done { "done" } else { "under way" },
        sweep.devices,
        sweep.pages,
        if findings.is_empty() { String::new() } else { format!(" ({})", findings.join(", ")) }
    )
}
