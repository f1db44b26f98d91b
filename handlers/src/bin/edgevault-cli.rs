//! `edgevault-cli`: the operator's and the device's side of edgevault.
//!
//! - `device open-key` acts as the device: it gets a token as the device's managed identity, reads the CIK from the
//!   vault the key names, opens the activation key and prints what it says (never the CIK).
//! - `status` prints, per Stack Edge device in scope, what the sweep would see.
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
use edgevault::lifecycle::Finding;
use edgevault::lifecycle::sweep::inspect;
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
    /// Print, per device, identity / vault / lock / soft delete / purge protection / CIK / sync status / legacy.
    Status,
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
        Top::Status => status(&deps).await,
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

async fn status(deps: &Deps) -> anyhow::Result<()> {
    println!(
        "{:<28} {:<5} {:<26} {:<5} {:<5} {:<5} {:<5} {:<22} NOTE",
        "DEVICE", "MSI", "VAULT", "LOCK", "SOFT", "PURGE", "CIK", "SYNC"
    );
    for subscription in &deps.settings.subscriptions {
        let mut next: Option<String> = None;
        loop {
            let page = deps.devices.list_devices(subscription, next.as_deref()).await?;
            for device in &page.value {
                let id: ResourceId = device.id.parse()?;
                let info = deps.devices.get_extended_info(&id).await?;
                let (findings, _) = inspect(deps, device, "status").await?;
                let has = |f: Finding| findings.contains(&f);
                let mark = |ok: bool| if ok { "yes" } else { "NO" };
                let vault = info
                    .properties
                    .link
                    .client_secret_store_id
                    .as_deref()
                    .and_then(|v| v.rsplit('/').next())
                    .unwrap_or("-");
                let linked = vault != "-";
                let vault_ok = linked && !has(Finding::VaultMissing) && !has(Finding::VaultSoftDeleted);
                let sync =
                    info.properties.key_vault_sync_status.map(|s| format!("{s:?}")).unwrap_or_else(|| "-".into());
                let note = findings.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(",");
                let cell = |ok: bool| if vault_ok { mark(ok) } else { "-" };
                println!(
                    "{:<28} {:<5} {:<26} {:<5} {:<5} {:<5} {:<5} {:<22} {}",
                    device.name,
                    mark(device.principal_id().is_some()),
                    if vault_ok {
                        vault.to_string()
                    } else if linked {
                        format!("{vault} (gone)")
                    } else {
                        "-".into()
                    },
                    cell(!has(Finding::LockMissing)),
                    cell(!has(Finding::SoftDeleteOff)),
                    cell(!has(Finding::PurgeProtectionOff)),
                    cell(!has(Finding::CikMissing) && !has(Finding::CikDisabled)),
                    sync,
                    if has(Finding::Legacy) { "legacy".to_string() } else { note },
                );
            }
            match page.next_link {
                Some(link) => next = Some(link),
                None => break,
            }
        }
    }
    Ok(())
}
