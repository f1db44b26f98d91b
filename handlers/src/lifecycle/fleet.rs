//! The fleet as an operator looks at it (the fleet page, its JSON form, `edgevault-cli status`): every device in
//! scope with what `observe` saw and what `assess` found, its open alerts, the recent recoveries and the last sweep.
//!
//! Nothing here decides whether a device is healthy: a device's [`Health`] and every cell of its row are read off
//! `assess`'s findings. What Azure does not keep (recoveries, sweep progress) comes from [`history`](super::history).
//! Who sees which device is decided in one place, [`visible`].

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::desired::{Desired, Observed, VaultState, assess, observe_listed};
use super::error::{Error, Refused};
use super::finding::Finding;
use super::history::{self, RecoveryRecord, SweepProgress};
use super::sweep::CONCURRENCY;
use crate::authorization::{Caller, Denied, READ, require_permission};
use crate::azure::models::{Device, KeyVaultSyncStatus};
use crate::azure::pages;
use crate::deps::Deps;
use crate::resource_id::{DEVICE_TYPE, ResourceId};

/// The most devices one view inspects (each costs about four reads): past it the view says it is truncated and the
/// filters narrow it.
pub const MAX_DEVICES: usize = 1000;
/// How many of the most recent recoveries a view shows.
pub const RECENT_RECOVERIES: usize = 50;

/// A device's state at a glance, from its findings and its sync status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Health {
    /// `assess` finds nothing.
    Healthy,
    /// Something `assess` found is being (or will be) fixed by a worker.
    Drifted,
    /// The vault is soft-deleted: recovery is due.
    VaultDeleted,
    /// Marked `KeyVaultSyncFailed`: past recovery, or a worker gave up; the operator must act.
    Failed,
    /// An activation is under way.
    Pending,
    NotActivated,
    /// Pre-integration: never touched.
    Legacy,
    /// The device could not be read (Azure failed); the next view tries again.
    Unreadable,
}

impl Health {
    pub const ALL: [Health; 8] = [
        Health::Healthy,
        Health::Drifted,
        Health::VaultDeleted,
        Health::Failed,
        Health::Pending,
        Health::NotActivated,
        Health::Legacy,
        Health::Unreadable,
    ];

    /// The name used in JSON and in the `status` filter.
    pub fn name(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Drifted => "drifted",
            Health::VaultDeleted => "vaultDeleted",
            Health::Failed => "failed",
            Health::Pending => "pending",
            Health::NotActivated => "notActivated",
            Health::Legacy => "legacy",
            Health::Unreadable => "unreadable",
        }
    }

    /// Reads a device's health off what `assess` found and the sync status the workers wrote.
    pub fn of(findings: &[Finding], sync: Option<KeyVaultSyncStatus>) -> Health {
        let has = |f: Finding| findings.contains(&f);
        if has(Finding::Legacy) {
            Health::Legacy
        } else if sync == Some(KeyVaultSyncStatus::KeyVaultSyncFailed) {
            Health::Failed
        } else if matches!(sync, Some(KeyVaultSyncStatus::KeyVaultSyncPending | KeyVaultSyncStatus::KeyVaultSyncing)) {
            Health::Pending
        } else if has(Finding::NotActivated) {
            Health::NotActivated
        } else if has(Finding::VaultSoftDeleted) {
            Health::VaultDeleted
        } else if findings.is_empty() || findings == [Finding::Healthy] {
            Health::Healthy
        } else {
            Health::Drifted
        }
    }
}

/// One cell of a device's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Check {
    Ok,
    Missing,
    /// Cannot be judged (no vault of the device's to look at, a legacy device).
    NotApplicable,
    /// Not observed yet.
    Unknown,
}

impl Check {
    fn unless(any_of: &[Finding], findings: &[Finding]) -> Check {
        if any_of.iter().any(|f| findings.contains(f)) { Check::Missing } else { Check::Ok }
    }
}

/// Where the device's vault stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum VaultPresence {
    Present,
    SoftDeleted,
    Missing,
    /// A vault of that name that is not the device's.
    NotOwned,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultView {
    pub id: String,
    pub name: String,
    pub presence: VaultPresence,
    pub portal_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub portal_url: String,
    pub health: Health,
    pub identity: Check,
    pub vault: Option<VaultView>,
    pub lock: Check,
    pub soft_delete: Check,
    pub purge_protection: Check,
    pub cik: Check,
    pub audit: Check,
    pub sync_status: Option<KeyVaultSyncStatus>,
    /// What `assess` found (empty when healthy).
    pub findings: Vec<Finding>,
    pub open_alerts: Vec<String>,
    /// Why the device could not be read, when it could not.
    pub error: Option<String>,
}

impl DeviceView {
    /// The row of an observed device, every cell read off `assess`'s findings.
    pub fn from_observed(tenant: &str, observed: &Observed, findings: Vec<Finding>) -> Self {
        let findings: Vec<Finding> = findings.into_iter().filter(|f| *f != Finding::Healthy).collect();
        let sync = observed.info.properties.key_vault_sync_status;
        let health = Health::of(&findings, sync);
        let presence = match &observed.vault {
            VaultState::Present(_) if findings.contains(&Finding::VaultNotOwned) => VaultPresence::NotOwned,
            VaultState::Present(_) => VaultPresence::Present,
            VaultState::SoftDeleted(_) => VaultPresence::SoftDeleted,
            VaultState::Missing => VaultPresence::Missing,
        };
        // The vault's own cells are judged only on a vault of the device's that `assess` looked into.
        let judged = presence == VaultPresence::Present && health != Health::Legacy;
        let cell = |any_of: &[Finding]| if judged { Check::unless(any_of, &findings) } else { Check::NotApplicable };
        let identity = match health {
            Health::Legacy => Check::NotApplicable,
            _ => Check::unless(&[Finding::IdentityMissing], &findings),
        };
        let audit = match history::audit_setting(observed) {
            Some(true) if judged => Check::Ok,
            Some(false) if judged => Check::Missing,
            Some(_) => Check::NotApplicable,
            None => Check::Unknown,
        };
        let vault = observed.target.as_ref().map(|target| VaultView {
            id: target.to_string(),
            name: target.name().unwrap_or_default().to_string(),
            presence,
            portal_url: portal_url(tenant, &target.to_string()),
        });
        DeviceView {
            lock: cell(&[Finding::LockMissing, Finding::LockNotCanNotDelete]),
            soft_delete: cell(&[Finding::SoftDeleteOff]),
            purge_protection: cell(&[Finding::PurgeProtectionOff]),
            cik: cell(&[Finding::CikMissing, Finding::CikDisabled]),
            audit,
            identity,
            vault,
            sync_status: sync,
            open_alerts: history::open_alerts(&observed.device),
            findings,
            health,
            error: None,
            ..DeviceView::listed(tenant, &observed.id, &observed.device)
        }
    }

    /// The row of a device that could not be read: what the listing says, and why.
    pub fn unreadable(tenant: &str, id: &ResourceId, device: &Device, error: &Error) -> Self {
        DeviceView { error: Some(error.to_string()), ..DeviceView::listed(tenant, id, device) }
    }

    fn listed(tenant: &str, id: &ResourceId, device: &Device) -> Self {
        DeviceView {
            id: device.id.clone(),
            name: device.name.clone(),
            subscription: id.subscription().to_string(),
            resource_group: id.resource_group().unwrap_or_default().to_string(),
            location: device.location.clone(),
            portal_url: portal_url(tenant, &device.id),
            health: Health::Unreadable,
            identity: Check::Unknown,
            vault: None,
            lock: Check::Unknown,
            soft_delete: Check::Unknown,
            purge_protection: Check::Unknown,
            cik: Check::Unknown,
            audit: Check::Unknown,
            sync_status: None,
            findings: Vec::new(),
            open_alerts: history::open_alerts(device),
            error: None,
        }
    }
}

/// The Azure portal's page of a resource.
pub fn portal_url(tenant: &str, id: &str) -> String {
    format!("https://portal.azure.com/#@{tenant}/resource{id}")
}

/// An open alert, with the device it is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenAlert {
    pub device: String,
    pub device_name: String,
    pub what: String,
}

/// A recovery as the view shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryView {
    #[serde(flatten)]
    pub record: RecoveryRecord,
    pub seconds_to_recover: Option<f64>,
}

/// What the view is narrowed to. Every field is validated ([`Filter::parse`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    pub status: Option<Health>,
    pub subscription: Option<String>,
    pub resource_group: Option<String>,
}

/// A filter that cannot be applied: which parameter, and what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter `{parameter}`: {message}")]
pub struct FilterError {
    pub parameter: String,
    pub message: String,
    /// Malformed (`Invalid`), or well-formed but naming a subscription edgevault does not cover (`NotCovered`).
    pub kind: FilterErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterErrorKind {
    Invalid,
    NotCovered,
}

impl Filter {
    /// The query parameters the filter takes. `code` is the function key, which the platform reads itself.
    pub const PARAMETERS: [&'static str; 3] = ["status", "subscription", "resourceGroup"];

    /// Reads the filter from query parameters. `subscriptions` is the scope (`EDGEVAULT_SUBSCRIPTIONS`): a
    /// subscription outside it is an error, not an empty page.
    pub fn parse<'a>(
        query: impl IntoIterator<Item = (&'a str, &'a str)>,
        subscriptions: &[String],
    ) -> Result<Filter, FilterError> {
        let mut filter = Filter::default();
        let error = |parameter: &str, message: String| FilterError {
            parameter: parameter.into(),
            message,
            kind: FilterErrorKind::Invalid,
        };
        for (name, value) in query {
            // An empty value is no filter: the page's form sends its "any" choices and an empty text box so.
            if value.is_empty() && Filter::PARAMETERS.contains(&name) {
                continue;
            }
            match name {
                "status" => {
                    let health = Health::ALL.into_iter().find(|h| h.name() == value).ok_or_else(|| {
                        let names: Vec<_> = Health::ALL.iter().map(|h| h.name()).collect();
                        error(name, format!("`{value}` is not a status; use one of {}", names.join(", ")))
                    })?;
                    filter.status = Some(health);
                }
                "subscription" => {
                    if !is_guid(value) {
                        return Err(error(
                            name,
                            format!("`{value}` is not a subscription id (a GUID, 8-4-4-4-12 hexadecimal digits)"),
                        ));
                    }
                    let known =
                        subscriptions.iter().find(|s| s.eq_ignore_ascii_case(value)).ok_or_else(|| FilterError {
                            kind: FilterErrorKind::NotCovered,
                            ..error(
                                name,
                                format!(
                                    "edgevault does not cover subscription {value}; it covers {}",
                                    subscriptions.join(", ")
                                ),
                            )
                        })?;
                    filter.subscription = Some(known.clone());
                }
                "resourceGroup" => {
                    check_resource_group(value).map_err(|m| error(name, m))?;
                    filter.resource_group = Some(value.to_string());
                }
                "code" => {}
                other => {
                    return Err(error(
                        other,
                        format!("unknown parameter; the filters are {}", Filter::PARAMETERS.join(", ")),
                    ));
                }
            }
        }
        Ok(filter)
    }

    /// Whether a listed device is within the subscription and resource group asked for.
    fn covers_place(&self, id: &ResourceId) -> bool {
        self.resource_group.as_deref().is_none_or(|rg| id.resource_group().is_some_and(|g| g.eq_ignore_ascii_case(rg)))
    }
}

/// Whether `text` has the form of a subscription id: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hexadecimal.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// ARM's rule for resource group names, ASCII only: 1–90 letters, digits, `_`, `(`, `)`, `-`, `.`, not ending in
/// `.`. (ARM also takes other Unicode letters; the OpenAPI document's pattern is ASCII, so a generated name outside
/// it must be refused here.)
fn check_resource_group(name: &str) -> Result<(), String> {
    let length = name.chars().count();
    if !(1..=90).contains(&length) {
        return Err(format!("a resource group name has 1 to 90 characters, not {length}"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_()-.".contains(*c))) {
        return Err(format!(
            "`{}` cannot be in a resource group name (ASCII letters, digits, _ ( ) - . only)",
            bad.escape_default()
        ));
    }
    if name.ends_with('.') {
        return Err("a resource group name cannot end with `.`".into());
    }
    Ok(())
}

/// Who is looking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// edgevault's own identity (`edgevault-cli status`, run with the app's identity): every device in scope.
    App,
    /// A caller of the fleet page, signed in through App Service Authentication: the devices it holds
    /// [`READ`](crate::authorization::READ) on, as ARM reports the caller's rights on its behalf.
    Caller(Caller),
}

/// Why a view was not made: a lifecycle failure, or a caller whose rights could not be asked for (its token
/// cannot be used on its behalf, or the API's app registration is not configured).
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Lifecycle(#[from] Error),
    #[error(transparent)]
    Denied(Denied),
}

/// The devices of a listing page `viewer` may see: the one place where the caller's rights on devices apply. A
/// right held on the resource group (or above it) covers each of its devices, so the group is asked first (one
/// ARM call for the group, not one per device) and a device only when the group's answer is no: a role assigned
/// on one device is found all the same. `groups` remembers the groups' answers for the rest of the view.
async fn visible(
    deps: &Deps,
    viewer: &Viewer,
    devices: Vec<Device>,
    groups: &std::sync::Mutex<BTreeMap<String, bool>>,
) -> Result<Vec<Device>, ViewError> {
    let Viewer::Caller(caller) = viewer else { return Ok(devices) };
    let may_read = |scope: ResourceId| async move {
        match require_permission(deps, caller, &scope, READ).await {
            Ok(()) => Ok(true),
            Err(Denied::Forbidden { .. }) => Ok(false),
            Err(Denied::Azure(err)) => Err(ViewError::Lifecycle(err.into())),
            Err(denied) => Err(ViewError::Denied(denied)),
        }
    };
    let mut seen = Vec::with_capacity(devices.len());
    for device in devices {
        let invalid = || Error::refused(Refused::InvalidResourceId, device.id.clone());
        let id: ResourceId = device.id.parse().map_err(|_| invalid())?;
        let group: ResourceId = id.resource_group_id().and_then(|g| g.parse().ok()).ok_or_else(invalid)?;
        let key = group.to_string().to_ascii_lowercase();
        let known = groups.lock().expect("never poisoned: no panics while held").get(&key).copied();
        let group_reads = match known {
            Some(answer) => answer,
            None => {
                let answer = may_read(group).await?;
                groups.lock().expect("never poisoned: no panics while held").insert(key, answer);
                answer
            }
        };
        if group_reads || may_read(id).await? {
            seen.push(device);
        }
    }
    Ok(seen)
}

/// The whole view.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetView {
    pub generated_at: String,
    pub tenant_id: String,
    /// The subscriptions the view covers.
    pub subscriptions: Vec<String>,
    pub filter: Filter,
    /// Devices per health within the subscription and resource group asked for (before the status filter).
    pub counts: BTreeMap<Health, usize>,
    pub devices: Vec<DeviceView>,
    /// More than [`MAX_DEVICES`] matched: narrow with the filters.
    pub truncated: bool,
    pub alerts: Vec<OpenAlert>,
    pub recoveries: Vec<RecoveryView>,
    pub sweep: Option<SweepProgress>,
}

/// Reads the fleet: lists the devices in scope (one subscription, if asked), keeps those in the resource group asked
/// for and visible to `viewer`, observes and assesses each (as many at once as the sweep), and adds the history.
pub async fn view(deps: &Deps, viewer: &Viewer, filter: &Filter) -> Result<FleetView, ViewError> {
    let groups = std::sync::Mutex::new(BTreeMap::new());
    let tenant = deps.settings.tenant_id.as_str();
    let subscriptions: Vec<String> = match &filter.subscription {
        Some(one) => vec![one.clone()],
        None => deps.settings.subscriptions.clone(),
    };
    let listed = futures::stream::iter(subscriptions.iter())
        .flat_map(|subscription| {
            pages(move |next| async move { deps.devices.list_devices(subscription, next.as_deref()).await })
        })
        .map_err(|err| ViewError::Lifecycle(Error::from(err)))
        .and_then(|page| {
            let groups = &groups;
            async move {
                let in_place = page
                    .into_iter()
                    .filter(|d| {
                        d.id.parse::<ResourceId>().is_ok_and(|id| id.is_type(DEVICE_TYPE) && filter.covers_place(&id))
                    })
                    .collect();
                visible(deps, viewer, in_place, groups).await
            }
        });
    let mut devices = Vec::new();
    let mut truncated = false;
    {
        let mut listed = std::pin::pin!(listed);
        while let Some(page) = listed.try_next().await? {
            let room = MAX_DEVICES - devices.len();
            truncated |= page.len() > room;
            devices.extend(page.into_iter().take(room));
            if devices.len() == MAX_DEVICES {
                truncated |= listed.try_next().await?.is_some_and(|more| !more.is_empty());
                break;
            }
        }
    }
    // A caller's recoveries are those of the devices it sees; edgevault's own view has every one in place.
    let in_view: Option<std::collections::HashSet<String>> = match viewer {
        Viewer::App => None,
        Viewer::Caller(_) => Some(devices.iter().map(|d| d.id.to_ascii_lowercase()).collect()),
    };
    let desired = Desired::new(&deps.settings);
    let mut rows: Vec<DeviceView> = futures::stream::iter(devices)
        .map(|device| {
            let desired = &desired;
            async move {
                let id: ResourceId = device.id.parse().expect("filtered on parsing above");
                // Each vault read on its own: a view is often narrowed to a few devices, for which the sweep's
                // subscription-wide lists would cost more than they save. Its audit setting too (one read).
                match observe_listed(deps, &id, device.clone(), |_| None, true).await {
                    Ok(observed) => DeviceView::from_observed(tenant, &observed, assess(&observed, desired)),
                    Err(err) => {
                        tracing::warn!(device = %id, "fleet view: could not read the device: {err}");
                        DeviceView::unreadable(tenant, &id, &device, &err)
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    rows.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    let mut counts = BTreeMap::new();
    for row in &rows {
        *counts.entry(row.health).or_default() += 1;
    }
    rows.retain(|row| filter.status.is_none_or(|status| row.health == status));
    let alerts = rows
        .iter()
        .flat_map(|row| {
            row.open_alerts.iter().map(|what| OpenAlert {
                device: row.id.clone(),
                device_name: row.name.clone(),
                what: what.clone(),
            })
        })
        .collect();
    let (recoveries, sweep) =
        tokio::join!(history::recent_recoveries(deps, &subscriptions, RECENT_RECOVERIES), history::last_sweep(deps));
    let recoveries = recoveries?
        .into_iter()
        .filter(|r| r.device.parse::<ResourceId>().is_ok_and(|id| filter.covers_place(&id)))
        .filter(|r| in_view.as_ref().is_none_or(|seen| seen.contains(&r.device.to_ascii_lowercase())))
        .map(|record| RecoveryView { seconds_to_recover: record.seconds_to_recover(), record })
        .collect();
    Ok(FleetView {
        // Whole seconds: a person reads it, and nothing finer is meant.
        generated_at: deps
            .now()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default(),
        tenant_id: tenant.to_string(),
        subscriptions,
        filter: filter.clone(),
        counts,
        devices: rows,
        truncated,
        alerts,
        recoveries,
        sweep: sweep?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::fake::{FakeAzure, key, settings};
    use crate::lifecycle::ERROR_TAG;

    fn query<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a str, &'a str)> {
        pairs.iter().copied()
    }

    #[tokio::test]
    async fn a_healthy_a_drifted_a_deleted_and_a_failed_device_each_show_in_their_state() {
        let azure = FakeAzure::new();
        let (healthy, _) = azure.add_healthy("a-healthy");
        let (drifted, drifted_vault) = azure.add_healthy("b-drifted");
        let (deleted, deleted_vault) = azure.add_healthy("c-deleted");
        let (failed, failed_vault) = azure.add_healthy("d-failed");
        azure.state().locks.remove(&key(&format!("{drifted_vault}/{}", crate::lifecycle::LOCK_NAME)));
        azure.soft_delete(&deleted_vault);
        azure.soft_delete(&failed_vault);
        {
            let mut state = azure.state();
            state.deleted.remove("kv-d-failed");
            state.infos.get_mut(&key(&failed)).unwrap().properties.key_vault_sync_status =
                Some(KeyVaultSyncStatus::KeyVaultSyncFailed);
            state.devices.get_mut(&key(&failed)).unwrap().tags.insert(ERROR_TAG.into(), "vault purged".into());
        }
        let deps = azure.deps(settings());
        let view = view(&deps, &Viewer::App, &Filter::default()).await.unwrap();
        let by_id = |id: &ResourceId| view.devices.iter().find(|d| d.id == id.to_string()).unwrap().clone();
        let h = by_id(&healthy);
        assert_eq!((h.health, h.lock, h.cik, h.audit), (Health::Healthy, Check::Ok, Check::Ok, Check::Ok));
        assert!(h.findings.is_empty() && h.open_alerts.is_empty());
        assert_eq!(h.portal_url, format!("https://portal.azure.com/#@tenant/resource{healthy}"));
        let d = by_id(&drifted);
        assert_eq!((d.health, d.lock, d.cik), (Health::Drifted, Check::Missing, Check::Ok));
        let x = by_id(&deleted);
        assert_eq!((x.health, x.lock), (Health::VaultDeleted, Check::NotApplicable));
        assert_eq!(x.vault.unwrap().presence, VaultPresence::SoftDeleted);
        let f = by_id(&failed);
        assert_eq!((f.health, f.open_alerts.clone()), (Health::Failed, vec!["vault purged".to_string()]));
        assert_eq!(view.alerts.len(), 1);
        assert_eq!(view.alerts[0].device, failed.to_string());
        assert_eq!(view.counts.values().sum::<usize>(), 4);
        assert!(azure.writes().is_empty(), "a view writes nothing: {:?}", azure.writes());
    }

    #[tokio::test]
    async fn filters_narrow_the_devices_and_the_counts_cover_the_place_asked_for() {
        let azure = FakeAzure::new();
        azure.add_healthy("a");
        let (drifted, vault) = azure.add_healthy("b");
        azure.state().locks.remove(&key(&format!("{vault}/{}", crate::lifecycle::LOCK_NAME)));
        let deps = azure.deps(settings());
        let filter = Filter::parse(query(&[("status", "drifted")]), &deps.settings.subscriptions).unwrap();
        let narrowed = view(&deps, &Viewer::App, &filter).await.unwrap();
        assert_eq!(narrowed.devices.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), [drifted.to_string()]);
        assert_eq!(narrowed.counts[&Health::Healthy], 1, "counts are before the status filter");
        let elsewhere = Filter::parse(query(&[("resourceGroup", "other")]), &deps.settings.subscriptions).unwrap();
        assert!(view(&deps, &Viewer::App, &elsewhere).await.unwrap().devices.is_empty());
    }

    #[test]
    fn bad_filters_say_which_parameter_and_what_it_takes() {
        let sub = "5b0c7e2a-0000-4000-8000-000000000002";
        let scope = vec![sub.to_string()];
        let err = Filter::parse(query(&[("status", "sick")]), &scope).unwrap_err();
        assert_eq!(err.parameter, "status");
        assert!(err.message.contains("healthy, drifted"), "{err}");
        let err = Filter::parse(query(&[("subscription", "sub-2")]), &scope).unwrap_err();
        assert_eq!(err.kind, FilterErrorKind::Invalid, "{err}");
        let other = "5b0c7e2a-0000-4000-8000-000000000009";
        let err = Filter::parse(query(&[("subscription", other)]), &scope).unwrap_err();
        assert_eq!(err.kind, FilterErrorKind::NotCovered);
        assert!(err.message.contains(&format!("it covers {sub}")), "{err}");
        for bad in ["rg/..", "rg.", &"r".repeat(91), "rg<script>"] {
            let err = Filter::parse(query(&[("resourceGroup", bad)]), &scope).unwrap_err();
            assert_eq!(err.parameter, "resourceGroup", "{bad}");
        }
        let err = Filter::parse(query(&[("colour", "red")]), &scope).unwrap_err();
        assert_eq!(err.parameter, "colour");
        let fine = Filter::parse(
            query(&[
                ("status", "vaultDeleted"),
                ("subscription", &sub.to_ascii_uppercase()),
                ("resourceGroup", "rg_(1).a"),
                ("code", "k"),
            ]),
            &scope,
        )
        .unwrap();
        assert_eq!(fine.status, Some(Health::VaultDeleted));
        assert_eq!(fine.subscription.as_deref(), Some(sub));
        let any = Filter::parse(query(&[("status", ""), ("subscription", ""), ("resourceGroup", "")]), &scope);
        assert_eq!(any.unwrap(), Filter::default(), "the form's empty choices filter nothing");
    }

    #[test]
    fn health_is_read_off_the_findings_and_the_sync_status() {
        use KeyVaultSyncStatus::*;
        assert_eq!(Health::of(&[], Some(KeyVaultSynced)), Health::Healthy);
        assert_eq!(Health::of(&[Finding::Healthy], Some(KeyVaultSynced)), Health::Healthy);
        assert_eq!(Health::of(&[Finding::LockMissing], Some(KeyVaultSynced)), Health::Drifted);
        assert_eq!(Health::of(&[Finding::VaultMissing], Some(KeyVaultSyncFailed)), Health::Failed);
        assert_eq!(Health::of(&[Finding::VaultSoftDeleted], Some(KeyVaultSynced)), Health::VaultDeleted);
        assert_eq!(Health::of(&[Finding::NotActivated], Some(KeyVaultSyncPending)), Health::Pending);
        assert_eq!(Health::of(&[Finding::Legacy], None), Health::Legacy);
        for health in Health::ALL {
            assert_eq!(serde_json::to_value(health).unwrap(), health.name());
        }
    }
}
