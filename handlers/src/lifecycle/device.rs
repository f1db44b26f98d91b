//! What is done to a device: its identity, its extended information (the link to the vault and the sync status),
//! the failure mark the status API shows, and whether it predates the integration.

use std::collections::BTreeMap;

use super::error::{Error, Refused};
use super::{ALERTS_TAG, ERROR_TAG, REQUESTED_BY_TAG};
use crate::alerts::AlertKind;
use crate::azure::models::{Device, ExtendedInfo, ExtendedInfoPatch, KeyVaultSyncStatus, VaultLink};
use crate::deps::Deps;
use crate::resource_id::ResourceId;

/// Whether the device predates the integration: no vault linked and created before the cut-over. Such a device is
/// reported as legacy and never changed. A device whose creation time is unknown counts as legacy when a cut-over
/// is configured: not touching a device is the safe mistake.
pub fn is_legacy(device: &Device, info: &ExtendedInfo, cutover: Option<time::OffsetDateTime>) -> bool {
    let Some(cutover) = cutover else { return false };
    if info.properties.link.client_secret_store_id.is_some() {
        return false;
    }
    match device
        .created_at()
        .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
    {
        Some(created) => created < cutover,
        None => true,
    }
}

/// The device and its extended information, read concurrently (they are independent). `None` if the device no
/// longer exists.
pub async fn device_and_info(deps: &Deps, id: &ResourceId) -> Result<Option<(Device, ExtendedInfo)>, Error> {
    let (device, info) = tokio::join!(deps.devices.get_device(id), deps.devices.get_extended_info(id));
    match (device?, info) {
        (None, _) => Ok(None),
        (Some(_), Err(err)) if err.is_not_found() => Ok(None),
        (Some(device), info) => Ok(Some((device, info?))),
    }
}

/// Turns on the device's system-assigned identity (the fix for `IdentityMissing`); returns the device as ARM now
/// has it, with its principal.
pub async fn enable_identity(deps: &Deps, id: &ResourceId) -> Result<Device, Error> {
    let updated = deps.devices.enable_identity(id).await?;
    if updated.principal_id().is_none() {
        return Err(Error::refused(
            Refused::IdentityNotCreated,
            format!("enabling the identity of {id} returned no principal id"),
        ));
    }
    tracing::info!(device = %id, "enabled the system-assigned identity");
    Ok(updated)
}

/// Writes the link and `KeyVaultSynced` (the fix for `ExtendedInfoOutOfSync`).
pub async fn write_link(deps: &Deps, id: &ResourceId, link: VaultLink) -> Result<ExtendedInfo, Error> {
    let patch = ExtendedInfoPatch { link, sync_status: Some(KeyVaultSyncStatus::KeyVaultSynced) };
    let info = deps.devices.update_extended_info(id, &patch).await?;
    tracing::info!(device = %id, "extended information synced");
    Ok(info)
}

/// Sets the device's sync status (pending / syncing) without touching the link.
pub async fn mark_status(deps: &Deps, id: &ResourceId, status: KeyVaultSyncStatus) -> Result<(), Error> {
    let patch = ExtendedInfoPatch { sync_status: Some(status), ..Default::default() };
    deps.devices.update_extended_info(id, &patch).await?;
    Ok(())
}

/// Marks the device `KeyVaultSyncPending` for a caller's activation request, after recording who asked in its
/// `edgevault-requested-by` tag (`<name> (<object id>)`), where the portal, the status and the alerts find it.
pub async fn mark_requested(deps: &Deps, id: &ResourceId, device: &Device, by: &str) -> Result<(), Error> {
    let by: String = by.chars().take(256).collect();
    if requested_by(device) != Some(by.as_str()) {
        let mut tags = device.tags.clone();
        tags.retain(|k, _| !k.eq_ignore_ascii_case(REQUESTED_BY_TAG));
        tags.insert(REQUESTED_BY_TAG.to_string(), by);
        deps.devices.set_device_tags(id, &tags).await?;
    }
    mark_status(deps, id, KeyVaultSyncStatus::KeyVaultSyncPending).await
}

/// Who last requested the device's activation key, as [`mark_requested`] recorded it.
pub fn requested_by(device: &Device) -> Option<&str> {
    device.tags.iter().find(|(k, _)| k.eq_ignore_ascii_case(REQUESTED_BY_TAG)).map(|(_, v)| v.as_str())
}

/// Records a failed synchronisation where the status API and the portal see it: `KeyVaultSyncFailed` in the
/// extended information and the reason in the device's `edgevault-sync-error` tag.
/// Returns the device as it was read (its tags say who requested it), `None` if it is gone.
pub async fn mark_failed(deps: &Deps, id: &ResourceId, reason: &str) -> Result<Option<Device>, Error> {
    let Some(device) = deps.devices.get_device(id).await? else { return Ok(None) };
    mark_status(deps, id, KeyVaultSyncStatus::KeyVaultSyncFailed).await?;
    let mut tags = device.tags.clone();
    // Tag values are limited to 256 characters.
    tags.insert(ERROR_TAG.to_string(), reason.chars().take(256).collect());
    deps.devices.set_device_tags(id, &tags).await?;
    Ok(Some(device))
}

/// Removes the failure mark of an earlier attempt, if there is one; `device` becomes what ARM now has.
pub async fn clear_failure(deps: &Deps, id: &ResourceId, device: &mut Device) -> Result<(), Error> {
    if device.tags.keys().any(|k| k.eq_ignore_ascii_case(ERROR_TAG)) {
        let tags = device
            .tags
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(ERROR_TAG))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        *device = deps.devices.set_device_tags(id, &tags).await?;
    }
    Ok(())
}

/// The failure reason recorded on the device, if any.
pub fn failure(device: &Device) -> Option<&str> {
    device.tags.iter().find(|(k, _)| k.eq_ignore_ascii_case(ERROR_TAG)).map(|(_, v)| v.as_str())
}

/// The alerts open on the device, from its `edgevault-alerts` tag (kinds it does not know are skipped). The fleet
/// view reads this from the device list, so it costs no call of its own.
pub fn open_alerts(device: &Device) -> Vec<AlertKind> {
    open_alert_times(device).into_keys().collect()
}

/// The open alerts with when each was raised (unix seconds), which their ids derive from.
fn open_alert_times(device: &Device) -> BTreeMap<AlertKind, i64> {
    let Some((_, value)) = device.tags.iter().find(|(k, _)| k.eq_ignore_ascii_case(ALERTS_TAG)) else {
        return BTreeMap::new();
    };
    value
        .split(',')
        .filter_map(|entry| {
            let (name, raised) = entry.split_once('@').unwrap_or((entry, "0"));
            Some((AlertKind::from_name(name)?, raised.trim().parse().unwrap_or(0)))
        })
        .collect()
}

fn alerts_tag_value(open: &BTreeMap<AlertKind, i64>) -> String {
    let value = open.iter().map(|(kind, raised)| format!("{}@{raised}", kind.name())).collect::<Vec<_>>().join(",");
    // Tag values are limited to 256 characters; every kind at once fits (about 230).
    value.chars().take(256).collect()
}

/// What a check did to a device's alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AlertChanges {
    pub open: Vec<AlertKind>,
    pub raised: Vec<AlertKind>,
    pub resolved: Vec<AlertKind>,
}

/// Raises each of `found` that is not open yet (once: an open kind is not raised again) and, when the check
/// judged everything but `resolve_except` (as `assess` does), resolves each open kind neither found nor in it,
/// with the id it was raised with; `None` resolves nothing. The device's alerts tag is written only when it
/// changes; `device` is the device as last read, and becomes what ARM has after the write.
pub async fn settle_alerts(
    deps: &Deps,
    id: &ResourceId,
    device: &mut Device,
    vault: Option<&str>,
    found: &[(AlertKind, String)],
    resolve_except: Option<&[AlertKind]>,
) -> Result<AlertChanges, Error> {
    let before = open_alert_times(device);
    let mut open = before.clone();
    let mut changes = AlertChanges::default();
    let now = deps.now().unix_timestamp();
    let device_name = id.to_string();
    // Who asked for this device's activation key: every alert about it names them.
    let who = requested_by(device).map(str::to_string);
    for (kind, detail) in found {
        if open.contains_key(kind) || changes.raised.contains(kind) {
            continue;
        }
        deps.alert(&kind.alert(&device_name, vault, now, detail).requested_by(who.as_deref())).await;
        changes.raised.push(*kind);
        if kind.stays_open() {
            open.insert(*kind, now);
        }
    }
    if let Some(keep) = resolve_except {
        for (kind, raised) in &before {
            if !found.iter().any(|(f, _)| f == kind) && !keep.contains(kind) {
                let alert = kind.alert(&device_name, vault, *raised, "").requested_by(who.as_deref());
                deps.alert(&alert.resolved("a check found the device healthy in this respect")).await;
                changes.resolved.push(*kind);
                open.remove(kind);
            }
        }
    }
    if open != before {
        // Read again before writing: another tag (the failure reason) may have been written since `device` was
        // read, and tags are replaced as a whole. Only a change pays for this read.
        let Some(fresh) = deps.devices.get_device(id).await? else { return Ok(changes) };
        let mut tags = fresh.tags.clone();
        tags.retain(|k, _| !k.eq_ignore_ascii_case(ALERTS_TAG));
        if !open.is_empty() {
            tags.insert(ALERTS_TAG.to_string(), alerts_tag_value(&open));
        }
        *device = deps.devices.set_device_tags(id, &tags).await?;
    }
    changes.open = open.into_keys().collect();
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::models::{ExtendedInfoProperties, SystemData};

    fn device(created: Option<&str>) -> Device {
        Device {
            id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d".into(),
            name: "d".into(),
            system_data: created.map(|c| SystemData { created_at: Some(c.into()) }),
            ..Default::default()
        }
    }

    #[test]
    fn legacy_means_unlinked_and_created_before_the_cutover() {
        let cutover = Some(time::macros::datetime!(2026-06-01 0:00 UTC));
        let unlinked = ExtendedInfo::default();
        let linked = ExtendedInfo {
            properties: ExtendedInfoProperties {
                link: VaultLink { client_secret_store_id: Some("/v".into()), ..Default::default() },
                ..Default::default()
            },
        };
        assert!(is_legacy(&device(Some("2025-01-01T00:00:00Z")), &unlinked, cutover));
        assert!(!is_legacy(&device(Some("2026-07-01T00:00:00Z")), &unlinked, cutover));
        assert!(!is_legacy(&device(Some("2025-01-01T00:00:00Z")), &linked, cutover));
        assert!(is_legacy(&device(None), &unlinked, cutover), "unknown age is left alone");
        assert!(!is_legacy(&device(Some("2025-01-01T00:00:00Z")), &unlinked, None), "no cut-over, no legacy");
    }
}
