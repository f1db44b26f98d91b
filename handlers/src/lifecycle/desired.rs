//! The one desired state of a device and its vault, in the shape of kube-rs's controllers: [`observe`] reads
//! everything once into an [`Observed`], and [`assess`] compares it with [`Desired`] and returns the [`Finding`]s.
//! `assess` is a pure function and the only place the rules live: the sweep reports its findings, the workers fix
//! exactly its findings (`provision`), and a property test shows that after a fix it finds nothing.
//!
//! A new requirement on a device's vault ("the vault must carry tag X") is one more check in [`assess`], one more
//! [`Finding`], and its fix in `provision::repair`.

use std::collections::BTreeMap;

use super::device::{device_and_info, is_legacy};
use super::error::Error;
use super::finding::Finding;
use super::fleet_index::Listed;
use super::vault::{Choice, choose_vault, cik_secret_name, owned_by, vault_id, vault_uri};
use super::{
    DEVICE_SECRET_NAMES, DEVICE_SECRET_PERMISSIONS, EDGEVAULT_SECRET_PERMISSIONS, LOCK_LEVEL, LOCK_NAME, OWNER_TAG,
    PRINCIPAL_TAG, RETENTION_DAYS,
};
use crate::alerts::AlertKind;
use crate::azure::models::{
    AccessPolicy, DeletedVault, Device, ExtendedInfo, KeyVaultSyncStatus, Lock, Sku, StoredCik, Vault, VaultLink,
    VaultProperties,
};
use crate::config::Settings;
use crate::deps::Deps;
use crate::resource_id::ResourceId;
use crate::vault_name::VaultName;

pub use super::vault_facts::recorded_principal;

/// What every device's vault must be, from the settings.
#[derive(Debug, Clone)]
pub struct Desired {
    pub tenant_id: String,
    /// edgevault's own identity, granted its access policy on every vault.
    pub principal_id: String,
    pub cutover: Option<time::OffsetDateTime>,
}

impl Desired {
    pub fn new(settings: &Settings) -> Self {
        Desired {
            tenant_id: settings.tenant_id.clone(),
            principal_id: settings.principal_id.clone(),
            cutover: settings.cutover,
        }
    }

    /// The access policies every device vault must have: the device's identity and edgevault's.
    pub fn policies(&self, device_principal: &str) -> Vec<AccessPolicy> {
        vec![
            AccessPolicy::secrets(&self.tenant_id, device_principal, DEVICE_SECRET_PERMISSIONS),
            AccessPolicy::secrets(&self.tenant_id, &self.principal_id, EDGEVAULT_SECRET_PERMISSIONS),
        ]
    }

    /// The vault edgevault creates for a device.
    pub fn vault(&self, device: &Device, device_principal: &str) -> Vault {
        Vault {
            location: device.location.clone(),
            tags: BTreeMap::from([
                (OWNER_TAG.to_string(), device.id.clone()),
                (PRINCIPAL_TAG.to_string(), device_principal.to_string()),
            ]),
            properties: VaultProperties {
                tenant_id: self.tenant_id.clone(),
                sku: Sku::standard(),
                access_policies: self.policies(device_principal),
                enable_soft_delete: Some(true),
                soft_delete_retention_in_days: Some(RETENTION_DAYS),
                enable_purge_protection: Some(true),
                enable_rbac_authorization: Some(false),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// The device's vault as observed.
#[derive(Debug, Clone)]
pub enum VaultState {
    Present(Vault),
    SoftDeleted(DeletedVault),
    /// Neither live nor soft-deleted. For a vault the device does not link yet (a first activation) the
    /// soft-deleted listing is not read: creating the vault finds a soft-deleted holder of the name.
    Missing,
}

/// Everything [`assess`] looks at, read once.
#[derive(Debug, Clone)]
pub struct Observed {
    pub id: ResourceId,
    pub device: Device,
    pub info: ExtendedInfo,
    /// The vault the device should use: the linked one, or the one asked for. `None`: never activated.
    pub target: Option<ResourceId>,
    pub vault: VaultState,
    /// edgevault's lock on the vault (read only when the vault is present and the device's).
    pub lock: Option<Lock>,
    /// The CIK's secret name in the target vault.
    pub cik_name: String,
    /// The CIK: the linked version, or the latest when none is linked here (read like the lock).
    pub cik: Option<StoredCik>,
    /// The CIK secret's current version, when it is not the linked one (someone else wrote a version).
    pub cik_latest: Option<String>,
    /// The names of the enabled secrets in the vault; `None` when they were not read (see [`observe_secrets`]).
    pub secrets: Option<Vec<String>>,
    /// Whether the vault's audit setting (`audit::AUDIT_SETTING_NAME`) sends its audit logs to a storage account;
    /// `None` when it was not read (a sweep reads it for one vault in `audit::AUDIT_CHECK_EVERY`).
    pub audit_setting: Option<bool>,
    /// Why the audit setting could not be made (a provider not registered), for its alert's detail.
    pub audit_blocked: Option<String>,
}

impl Observed {
    /// Whether the device's extended information points at the target vault.
    pub fn linked_here(&self) -> bool {
        self.target.is_some() && self.info.properties.link.vault_id() == self.target
    }

    /// The link the extended information should hold, from what was observed.
    pub fn expected_link(&self) -> Option<VaultLink> {
        let (VaultState::Present(vault), Some(target), Some(cik)) = (&self.vault, &self.target, &self.cik) else {
            return None;
        };
        Some(VaultLink {
            client_secret_store_id: Some(target.to_string()),
            client_secret_store_url: Some(vault_uri(vault).trim_end_matches('/').to_string()),
            channel_integrity_key_name: Some(self.cik_name.clone()),
            channel_integrity_key_version: Some(cik.version.clone()),
        })
    }
}

/// Reads device `id` and its vault. `requested` is the vault name of an activation request. `None`: the device
/// does not exist. The requested vault is read beside the device (it needs neither), so a first activation pays
/// one round trip for all three.
pub async fn observe(deps: &Deps, id: &ResourceId, requested: Option<&VaultName>) -> Result<Option<Observed>, Error> {
    let early_id = requested.map(|name| vault_id(id, name));
    let early_read = async {
        match &early_id {
            Some(vault) => deps.vaults.get_vault(vault).await.map(Some),
            None => Ok(None),
        }
    };
    let (read, early) = tokio::join!(device_and_info(deps, id), early_read);
    let Some((device, info)) = read? else { return Ok(None) };
    let target = target(id, &info, requested)?;
    let known = match early? {
        Some(vault) if early_id.is_some() && early_id == target => Some(vault),
        _ => None,
    };
    observe_vault(deps, id.clone(), device, info, target, known, None, true).await.map(Some)
}

/// Reads a device the sweep has from a listing: its extended information, then its linked vault — from `listed`
/// (the subscription's vault and lock lists) when it is there, else by a read of its own. The audit setting is
/// read only when `check_audit` (the device's turn, `audit::due`).
pub async fn observe_listed(
    deps: &Deps,
    id: &ResourceId,
    device: Device,
    listed: impl FnOnce(&ResourceId) -> Option<Listed>,
    check_audit: bool,
) -> Result<Observed, Error> {
    let info = deps.devices.get_extended_info(id).await?;
    let target = target(id, &info, None)?;
    let (vault, lock) = match target.as_ref().and_then(listed) {
        Some(Listed { vault, lock }) => (Some(Some(vault)), Some(lock)),
        None => (None, None),
    };
    observe_vault(deps, id.clone(), device, info, target, vault, lock, check_audit).await
}

fn target(id: &ResourceId, info: &ExtendedInfo, requested: Option<&VaultName>) -> Result<Option<ResourceId>, Error> {
    Ok(match choose_vault(id, &info.properties.link, requested)? {
        Choice::Linked(vault) => Some(vault),
        Choice::Named(name) => Some(vault_id(id, &name)),
        Choice::Unnamed => None,
    })
}

/// The vault part of an observation. `known` is the vault's read when it was already made, `known_lock` the lock's.
#[allow(clippy::too_many_arguments)]
async fn observe_vault(
    deps: &Deps,
    id: ResourceId,
    device: Device,
    info: ExtendedInfo,
    target: Option<ResourceId>,
    known: Option<Option<Vault>>,
    known_lock: Option<Option<Lock>>,
    check_audit: bool,
) -> Result<Observed, Error> {
    let cik_name = match (&target, &info.properties.link) {
        (Some(t), link) if link.vault_id().as_ref() == Some(t) && link.channel_integrity_key_name.is_some() => {
            link.channel_integrity_key_name.clone().unwrap_or_default()
        }
        (Some(t), _) => cik_secret_name(&id, t),
        (None, _) => String::new(),
    };
    let mut observed = Observed {
        id,
        device,
        info,
        target,
        vault: VaultState::Missing,
        lock: None,
        cik_name,
        cik: None,
        cik_latest: None,
        secrets: None,
        audit_setting: None,
        audit_blocked: None,
    };
    // A legacy device is never touched, nor its (absent) vault read.
    if is_legacy(&observed.device, &observed.info, deps.settings.cutover) {
        return Ok(observed);
    }
    let Some(target) = observed.target.clone() else { return Ok(observed) };
    let vault = match known {
        Some(read) => read,
        None => deps.vaults.get_vault(&target).await?,
    };
    observed.vault = match vault {
        Some(vault) => VaultState::Present(vault),
        None if observed.linked_here() => {
            let name = target.name().unwrap_or_default();
            match deps.vaults.get_deleted_vault(target.subscription(), &observed.device.location, name).await? {
                Some(deleted) => VaultState::SoftDeleted(deleted),
                None => VaultState::Missing,
            }
        }
        None => VaultState::Missing,
    };
    observe_contents_with(deps, &mut observed, known_lock, check_audit).await?;
    Ok(observed)
}

/// Reads the lock and the CIK of a present vault of the device's (both at once: they are independent). The CIK
/// is read at its current version, which is the linked one on a healthy device (one read, as before); only when
/// another version is current is the linked one read as well.
pub async fn observe_contents(deps: &Deps, observed: &mut Observed) -> Result<(), Error> {
    observe_contents_with(deps, observed, None, true).await
}

/// [`observe_contents`], the lock read only when it is not `known` already, the audit setting only when
/// `check_audit` (beside the lock and the CIK: independent reads).
async fn observe_contents_with(
    deps: &Deps,
    observed: &mut Observed,
    known_lock: Option<Option<Lock>>,
    check_audit: bool,
) -> Result<(), Error> {
    let (VaultState::Present(vault), Some(target)) = (&observed.vault, &observed.target) else { return Ok(()) };
    if !owned_by(&vault.tags, &observed.id) {
        return Ok(());
    }
    let target = target.clone();
    let audit = async {
        match check_audit {
            true => super::audit::observe(deps, &target).await.map(Some),
            false => Ok(None),
        }
    };
    let (audit, contents) = tokio::join!(audit, observe_lock_and_cik(deps, observed, known_lock));
    contents?;
    observed.audit_setting = audit?;
    Ok(())
}

/// The lock and the CIK of a present vault of the device's.
async fn observe_lock_and_cik(
    deps: &Deps,
    observed: &mut Observed,
    known_lock: Option<Option<Lock>>,
) -> Result<(), Error> {
    let (VaultState::Present(vault), Some(target)) = (&observed.vault, &observed.target) else { return Ok(()) };
    let linked =
        if observed.linked_here() { observed.info.properties.link.channel_integrity_key_version.clone() } else { None };
    let uri = vault_uri(vault);
    let lock = async {
        match known_lock {
            Some(lock) => Ok(lock),
            None => deps.locks.get_lock(target, LOCK_NAME).await,
        }
    };
    if vault.properties.uses_rbac() {
        // Access policies do not apply: a CIK read would be refused. Only the lock is read.
        observed.lock = lock.await?;
        (observed.cik, observed.cik_latest) = (None, None);
        return Ok(());
    }
    let (lock, latest) = tokio::join!(lock, deps.secrets.get_cik(&uri, &observed.cik_name, None));
    observed.lock = lock?;
    observed.cik_latest = None;
    observed.cik = match (latest?, linked) {
        (Some(latest), Some(linked)) if latest.version != linked => {
            observed.cik_latest = Some(latest.version);
            deps.secrets.get_cik(&uri, &observed.cik_name, Some(&linked)).await?
        }
        (latest, _) => latest,
    };
    Ok(())
}

/// Reads the names of the secrets in the device's vault (a list: names and attributes, never values), so that
/// [`assess`] judges whether the device's secrets are there. Not part of [`observe`]: the sweep does not pay for
/// it; a sync request, a refresh and a device with that alert open do.
pub async fn observe_secrets(deps: &Deps, observed: &mut Observed) -> Result<(), Error> {
    let VaultState::Present(vault) = &observed.vault else { return Ok(()) };
    if !owned_by(&vault.tags, &observed.id) || vault.properties.uses_rbac() {
        return Ok(());
    }
    observed.secrets = Some(deps.secrets.secret_names(&vault_uri(vault)).await?);
    Ok(())
}

/// What is wrong with what was observed, in fix order; empty when the device is healthy. A device that is legacy,
/// has no identity, was never activated, or whose vault is soft-deleted or someone else's gets that one finding:
/// what else is wrong cannot be judged (or fixed) until it is dealt with.
pub fn assess(observed: &Observed, desired: &Desired) -> Vec<Finding> {
    if is_legacy(&observed.device, &observed.info, desired.cutover) {
        return vec![Finding::Legacy];
    }
    let Some(principal) = observed.device.principal_id() else { return vec![Finding::IdentityMissing] };
    if observed.target.is_none() {
        return vec![Finding::NotActivated];
    }
    let mut findings = Vec::new();
    match &observed.vault {
        VaultState::SoftDeleted(_) => return vec![Finding::VaultSoftDeleted],
        VaultState::Missing => findings.extend([Finding::VaultMissing, Finding::LockMissing, Finding::CikMissing]),
        VaultState::Present(vault) if !owned_by(&vault.tags, &observed.id) => return vec![Finding::VaultNotOwned],
        VaultState::Present(vault) => {
            let p = &vault.properties;
            if p.enable_soft_delete == Some(false) {
                findings.push(Finding::SoftDeleteOff);
            }
            if p.enable_purge_protection != Some(true) {
                findings.push(Finding::PurgeProtectionOff);
            }
            // Read from the vault object itself: no call of its own, whether it came by GET or by a list.
            if p.uses_rbac() {
                findings.push(Finding::RbacAuthorization);
            }
            if p.denies_by_default() {
                findings.push(Finding::NetworkDenied);
            }
            match &observed.lock {
                None => findings.push(Finding::LockMissing),
                Some(lock) if !lock.properties.level.eq_ignore_ascii_case(LOCK_LEVEL) => {
                    findings.push(Finding::LockNotCanNotDelete)
                }
                Some(_) => {}
            }
            let wanted = desired.policies(principal);
            if !wanted.iter().all(|w| p.access_policies.iter().any(|h| h.covers(w))) {
                findings.push(Finding::AccessPolicyMissing);
            }
            if recorded_principal(vault).is_none_or(|recorded| !recorded.eq_ignore_ascii_case(principal)) {
                findings.push(Finding::DevicePolicyStale);
            }
            match &observed.cik {
                // An RBAC vault cannot be read with access policies: the CIK is judged once it is switched back.
                None if p.uses_rbac() => {}
                None => findings.push(Finding::CikMissing),
                Some(cik) if !cik.enabled => findings.push(Finding::CikDisabled),
                Some(cik) if observed.cik_latest.as_ref().is_some_and(|latest| *latest != cik.version) => {
                    findings.push(Finding::CikNotCurrent)
                }
                Some(_) => {}
            }
        }
    }
    let props = &observed.info.properties;
    let in_sync = observed.expected_link().is_some_and(|link| props.link.same_as(&link))
        && props.key_vault_sync_status == Some(KeyVaultSyncStatus::KeyVaultSynced);
    if !in_sync {
        findings.push(Finding::ExtendedInfoOutOfSync);
    }
    if observed.audit_setting == Some(false) {
        findings.push(Finding::AuditSettingMissing);
    }
    if missing_device_secrets(observed).is_some_and(|missing| !missing.is_empty()) {
        findings.push(Finding::DeviceSecretsMissing);
    }
    findings
}

/// The device secrets missing from the vault, when its secrets were read.
pub fn missing_device_secrets(observed: &Observed) -> Option<Vec<&'static str>> {
    let present = observed.secrets.as_ref()?;
    Some(
        DEVICE_SECRET_NAMES
            .iter()
            .copied()
            .filter(|name| !present.iter().any(|p| p.eq_ignore_ascii_case(name)))
            .collect(),
    )
}

/// The alert kinds a check of `observed` could not judge (the device's secrets when they were not read): they stay
/// as they are, neither raised nor resolved.
pub fn unjudged(observed: &Observed) -> Vec<AlertKind> {
    let mut kinds = Vec::new();
    if observed.secrets.is_none() {
        kinds.push(AlertKind::SecretsNotRetrieved);
    }
    if observed.audit_setting.is_none() {
        kinds.push(AlertKind::AuditLoggingNotConfigured);
    }
    kinds
}

/// The alerts `findings` call for, each with a detail for the operator. A vault the device does not link yet
/// (a first activation under way) raises nothing about the vault: there is nothing deleted or lost yet.
pub fn alerts(observed: &Observed, findings: &[Finding]) -> Vec<(AlertKind, String)> {
    let linked = observed.linked_here();
    let vault = observed.target.as_ref().and_then(|t| t.name().map(str::to_string)).unwrap_or_default();
    let mut out: Vec<(AlertKind, String)> = Vec::new();
    let mut push = |kind: AlertKind, detail: String| {
        if !out.iter().any(|(k, _)| *k == kind) {
            out.push((kind, detail));
        }
    };
    for finding in findings {
        match finding {
            Finding::NotActivated => push(
                AlertKind::KeyVaultNotConfigured,
                "The device has no Key Vault yet: request its activation key.".into(),
            ),
            Finding::IdentityMissing => {
                push(AlertKind::IdentityOrAccessPolicyLost, "The device has no system-assigned identity.".into())
            }
            // A vault from before the tag existed only lacks the record: nothing was lost.
            Finding::DevicePolicyStale
                if linked && matches!(&observed.vault, VaultState::Present(v) if recorded_principal(v).is_some()) =>
            {
                push(
                    AlertKind::IdentityOrAccessPolicyLost,
                    format!("The device's identity was replaced; vault {vault} still granted the old principal."),
                )
            }
            Finding::AccessPolicyMissing if linked => push(
                AlertKind::IdentityOrAccessPolicyLost,
                format!("Vault {vault} lacks the device's or edgevault's access policy."),
            ),
            Finding::VaultSoftDeleted => push(AlertKind::KeyVaultDeleted, format!("Vault {vault} is soft-deleted.")),
            Finding::VaultMissing if linked => {
                push(AlertKind::KeyVaultDeleted, format!("Vault {vault} is neither live nor soft-deleted."))
            }
            Finding::CikMissing | Finding::CikDisabled if linked => push(
                AlertKind::KeyVaultNotConfigured,
                format!("The CIK {} in vault {vault} is missing or disabled.", observed.cik_name),
            ),
            Finding::CikNotCurrent => push(
                AlertKind::UnknownCikVersion,
                format!(
                    "Version {} of {} was not written by edgevault.",
                    observed.cik_latest.as_deref().unwrap_or("?"),
                    observed.cik_name
                ),
            ),
            Finding::RbacAuthorization => push(
                AlertKind::KeyVaultNotAccessible,
                format!("Vault {vault} authorises with Azure RBAC: the device's access policy no longer applies."),
            ),
            Finding::NetworkDenied => push(
                AlertKind::KeyVaultNotAccessible,
                format!("Vault {vault}'s network rules deny by default: allow the device's network."),
            ),
            Finding::AuditSettingMissing => push(
                AlertKind::AuditLoggingNotConfigured,
                format!(
                    "Vault {vault} sends its audit logs nowhere: {}.",
                    observed
                        .audit_blocked
                        .as_deref()
                        .unwrap_or("edgevault creates its storage account and diagnostic setting")
                ),
            ),
            Finding::DeviceSecretsMissing => push(
                AlertKind::SecretsNotRetrieved,
                format!(
                    "Missing from vault {vault}: {}.",
                    missing_device_secrets(observed).unwrap_or_default().join(", ")
                ),
            ),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::fake::{FakeAzure, key, settings};

    async fn observed(azure: &std::sync::Arc<FakeAzure>, id: &ResourceId) -> Observed {
        observe(&azure.deps(settings()), id, None).await.unwrap().expect("the device exists")
    }

    #[tokio::test]
    async fn a_provisioned_device_has_no_finding() {
        let azure = FakeAzure::new();
        let (id, _) = azure.add_healthy("d1");
        assert_eq!(assess(&observed(&azure, &id).await, &Desired::new(&settings())), []);
    }

    #[tokio::test]
    async fn a_lock_of_edgevaults_name_at_another_level_is_a_finding() {
        let azure = FakeAzure::new();
        let (id, vault) = azure.add_healthy("d1");
        azure.state().locks.get_mut(&key(&format!("{vault}/{LOCK_NAME}"))).unwrap().properties.level =
            "ReadOnly".into();
        assert_eq!(assess(&observed(&azure, &id).await, &Desired::new(&settings())), [Finding::LockNotCanNotDelete]);
    }

    #[tokio::test]
    async fn a_link_to_another_cik_version_is_out_of_sync() {
        let azure = FakeAzure::new();
        let (id, _) = azure.add_healthy("d1");
        let mut seen = observed(&azure, &id).await;
        seen.cik.as_mut().unwrap().version = "another".into();
        assert_eq!(assess(&seen, &Desired::new(&settings())), [Finding::ExtendedInfoOutOfSync]);
    }

    #[test]
    fn findings_serialize_as_their_names() {
        assert_eq!(serde_json::to_value(Finding::LockMissing).unwrap(), "LockMissing");
        assert_eq!(serde_json::from_value::<Finding>("CikDisabled".into()).unwrap(), Finding::CikDisabled);
    }
}
