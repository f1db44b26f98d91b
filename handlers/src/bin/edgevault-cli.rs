//! `edgevault-cli`: the operator's and the device's side of edgevault.
//!
//! - `device open-key` acts as the device: it gets a token as the device's managed identity, reads the CIK from the
//!   vault the key names, opens the activation key and prints what it says (never the CIK).
//! - `status` prints the fleet view (`lifecycle::fleet`, the same as the fleet page): per Stack Edge device in scope
//!   what the sweep would see, open alerts, recent recoveries and the sweep's progress; `--json` prints the page's
//!   JSON form, and the filters are the page's.
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
use edgevault::azure::secrets::VaultSecrets;
use edgevault::azure::traits::CikStore;
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
    /// Act as a Stack Edge device.
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
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Open an activation key as the device's managed identity and print its contents.
    OpenKey {
        /// The device's resource id.
        #[arg(long)]
        resource_id: String,
        /// The activation key; `-` reads it from standard input (keeps it out of shell history).
        #[arg(long, default_value = "-")]
        key: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    edgevault::telemetry::init();
    let settings = cli_settings()?;
    let deps = Deps::from_settings(&settings)?;
    match Cli::parse().command {
        Top::Device { command: DeviceCommand::OpenKey { resource_id, key } } => {
            open_key(&deps, &settings, &resource_id, &key).await
        }
        Top::Status { json, status: health, subscription, resource_group, follow } => {
            let query = [("status", health), ("subscription", subscription), ("resourceGroup", resource_group)];
            let query = query.iter().filter_map(|(name, value)| value.as_deref().map(|v| (*name, v)));
            let filter = Filter::parse(query, &deps.settings.subscriptions)?;
            status(&deps, &filter, json, follow).await
        }
    }
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
    let found = deps.devices.get_device(&device).await?.with_context(|| format!("{device} does not exist"))?;
    let Some(principal) = found.principal_id() else { bail!("{device} has no managed identity yet") };
    // From here on everything happens as the device: its identity, its access policy, nothing of edgevault's.
    let stack = HttpStack::new(settings.retry);
    let options = ManagedIdentityCredentialOptions {
        user_assigned_id: Some(UserAssignedId::ObjectId(principal.to_string())),
        client_options: stack.client_options(),
    };
    let credential: Arc<dyn TokenCredential> = ManagedIdentityCredential::new(Some(options))?;
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

/// How often `--follow` reads the sweep's progress again.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

async fn status(deps: &Deps, filter: &Filter, json: bool, follow: bool) -> anyhow::Result<()> {
    let fleet = view(deps, &Viewer::FunctionKey, filter).await?;
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
