//! What the sweep keeps of each vault it lists: exactly the fields [`assess`](super::desired::assess) reads, in
//! about a tenth of the memory of the vault itself, so the fleet index of a 100,000-device subscription stays
//! small (docs/BENCHMARKS.md §4).
//!
//! A [`Brief`] is made from a listed vault and its lock ([`Brief::of`]); [`Brief::vault`] gives back, for one
//! device, a vault that `assess` judges exactly as it judges the listed one (a property test below holds that for
//! arbitrary vaults). It is a view for judging, never for writing: fields `assess` does not read (other tags, key
//! and certificate permissions, the tenant of a policy, the location) are left out, and every repair reads the
//! vault again before it writes.
//!
//! Ids are kept as digests: the owner tag matters only as "this device or not", and the index is keyed by vault.

use sha2::{Digest as _, Sha256};

use super::vault_facts::{owner, recorded_principal, vault_uri};
use super::{LOCK_LEVEL, LOCK_NAME, OWNER_TAG, PRINCIPAL_TAG};
use crate::azure::models::{AccessPolicy, Lock, LockProperties, Permissions, Vault};
use crate::resource_id::ResourceId;

/// The secret permissions Key Vault defines (`SecretPermissions`, Microsoft.KeyVault 2024-11-01 `keyvault.json`,
/// in ../shared/fixtures/azure-rest-api-specs), one bit each. Other names grant nothing and are not kept.
const SECRET_PERMISSIONS: [&str; 9] = ["all", "get", "list", "set", "delete", "backup", "restore", "recover", "purge"];

/// 16 bytes of the SHA-256 of a lower-case resource id, in place of the id's ~150. Two of a subscription's
/// vaults share one with a probability of about n² / 2¹²⁹ (10⁻²⁹ for 100,000 vaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdDigest([u8; 16]);

impl IdDigest {
    pub fn of(id: &str) -> Self {
        let digest = Sha256::digest(id.to_ascii_lowercase().as_bytes());
        let mut out = [0; 16];
        out.copy_from_slice(&digest[..16]);
        IdDigest(out)
    }
}

/// A principal id: a GUID in 16 bytes (Entra object ids are GUIDs), anything else as it was written.
#[derive(Debug, Clone, PartialEq)]
enum Principal {
    Guid([u8; 16]),
    Other(Box<str>),
}

impl Principal {
    fn new(text: &str) -> Self {
        match uuid::Uuid::try_parse(text) {
            // Only the hyphenated form is kept as a GUID: it is the one given back, and Key Vault and edgevault
            // compare ids ignoring case only.
            Ok(guid) if guid.hyphenated().to_string().eq_ignore_ascii_case(text) => Principal::Guid(*guid.as_bytes()),
            _ => Principal::Other(text.into()),
        }
    }

    fn text(&self) -> String {
        match self {
            Principal::Guid(bytes) => uuid::Uuid::from_bytes(*bytes).hyphenated().to_string(),
            Principal::Other(text) => text.to_string(),
        }
    }
}

/// The vault's URI: the usual `https://<lower-case name><suffix>` (the suffix is the cloud's, one per index,
/// kept in [`Suffixes`]), or anything else as it was.
#[derive(Debug, Clone, PartialEq)]
enum Uri {
    Named(u8),
    Other(Box<str>),
}

/// The URI suffixes of an index's vaults (`.vault.azure.net/`: one per cloud, so a handful at most).
#[derive(Debug, Default)]
pub struct Suffixes(Vec<Box<str>>);

impl Suffixes {
    fn uri(&mut self, uri: &str, name: &str) -> Uri {
        let suffix = uri.strip_prefix("https://").and_then(|rest| rest.strip_prefix(name));
        let known = suffix.map(|suffix| match self.0.iter().position(|s| **s == *suffix) {
            Some(at) => Some(at),
            None if self.0.len() < usize::from(u8::MAX) => {
                self.0.push(suffix.into());
                Some(self.0.len() - 1)
            }
            None => None,
        });
        match known.flatten() {
            Some(at) => Uri::Named(at as u8),
            None => Uri::Other(uri.into()),
        }
    }

    fn text(&self, uri: &Uri, name: &str) -> String {
        match uri {
            Uri::Named(at) => format!("https://{name}{}", self.0[usize::from(*at)]),
            Uri::Other(uri) => uri.to_string(),
        }
    }
}

/// What assess reads of a listed vault and edgevault's lock on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Brief {
    /// The device the owner tag names (parsed as `vault::owner` parses it).
    owner: Option<IdDigest>,
    /// The device principal the vault's tag records as granted.
    principal: Option<Principal>,
    /// Each access policy that grants any secret permission: whom, and which (bits of [`SECRET_PERMISSIONS`]).
    policies: Box<[(Principal, u16)]>,
    uri: Uri,
    soft_delete: Option<bool>,
    purge_protection: Option<bool>,
    rbac: Option<bool>,
    denies_by_default: bool,
    /// edgevault's lock: `None` when there is none, else its level.
    lock: Option<LockLevel>,
}

#[derive(Debug, Clone, PartialEq)]
enum LockLevel {
    CanNotDelete,
    Other(Box<str>),
}

impl Brief {
    /// The brief of `vault` (a vault from a list of its subscription), with no lock yet ([`Brief::set_lock`]).
    pub fn of(vault: &Vault, suffixes: &mut Suffixes) -> Self {
        let p = &vault.properties;
        let policies = p
            .access_policies
            .iter()
            .map(|policy| (Principal::new(&policy.object_id), secret_bits(&policy.permissions.secrets)))
            .filter(|(_, bits)| *bits != 0)
            .collect();
        Brief {
            owner: owner(&vault.tags).map(|device| IdDigest::of(&device.to_string())),
            principal: recorded_principal(vault).map(Principal::new),
            policies,
            uri: suffixes.uri(&vault_uri(vault), &name_of(&vault.id)),
            soft_delete: p.enable_soft_delete,
            purge_protection: p.enable_purge_protection,
            rbac: p.enable_rbac_authorization,
            denies_by_default: p.denies_by_default(),
            lock: None,
        }
    }

    /// Records edgevault's lock on the vault, at `level`.
    pub fn set_lock(&mut self, level: &str) {
        self.lock = Some(match level.eq_ignore_ascii_case(LOCK_LEVEL) {
            true => LockLevel::CanNotDelete,
            false => LockLevel::Other(level.into()),
        });
    }

    /// The vault `id`, as `assess` sees it when device `device` links it, and edgevault's lock on it.
    pub fn vault(&self, id: &ResourceId, device: &ResourceId, suffixes: &Suffixes) -> (Vault, Option<Lock>) {
        let name = name_of(&id.to_string());
        let mut vault =
            Vault { id: id.to_string(), name: id.name().unwrap_or_default().to_string(), ..Default::default() };
        if self.owner == Some(IdDigest::of(&device.to_string())) {
            vault.tags.insert(OWNER_TAG.to_string(), device.to_string());
        }
        if let Some(principal) = &self.principal {
            vault.tags.insert(PRINCIPAL_TAG.to_string(), principal.text());
        }
        let p = &mut vault.properties;
        p.access_policies = self
            .policies
            .iter()
            .map(|(principal, bits)| AccessPolicy {
                object_id: principal.text(),
                permissions: Permissions { secrets: secret_names(*bits), ..Default::default() },
                ..Default::default()
            })
            .collect();
        p.vault_uri = Some(suffixes.text(&self.uri, &name));
        p.enable_soft_delete = self.soft_delete;
        p.enable_purge_protection = self.purge_protection;
        p.enable_rbac_authorization = self.rbac;
        p.network_acls = self.denies_by_default.then(|| serde_json::json!({ "defaultAction": "Deny" }));
        let lock = self.lock.as_ref().map(|level| Lock {
            id: format!("{id}/providers/Microsoft.Authorization/locks/{LOCK_NAME}"),
            name: LOCK_NAME.to_string(),
            properties: LockProperties {
                level: match level {
                    LockLevel::CanNotDelete => LOCK_LEVEL.to_string(),
                    LockLevel::Other(level) => level.to_string(),
                },
                notes: None,
            },
        });
        (vault, lock)
    }
}

/// The lower-case last segment of a resource id (a vault's name as its usual URI spells it).
fn name_of(id: &str) -> String {
    id.rsplit('/').next().unwrap_or_default().to_ascii_lowercase()
}

fn secret_bits(names: &[String]) -> u16 {
    SECRET_PERMISSIONS
        .iter()
        .enumerate()
        .filter(|(_, known)| names.iter().any(|n| n.eq_ignore_ascii_case(known)))
        .fold(0, |bits, (at, _)| bits | 1 << at)
}

fn secret_names(bits: u16) -> Vec<String> {
    SECRET_PERMISSIONS.iter().enumerate().filter(|(at, _)| bits & 1 << at != 0).map(|(_, n)| n.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::azure::fake::{FakeAzure, settings};
    use crate::lifecycle::desired::{Desired, Observed, VaultState, alerts, assess, observe};
    use crate::lifecycle::sweep::fixes;
    use crate::lifecycle::{DEVICE_SECRET_PERMISSIONS, EDGEVAULT_SECRET_PERMISSIONS};

    #[test]
    fn every_permission_edgevault_asks_for_is_kept() {
        for wanted in DEVICE_SECRET_PERMISSIONS.iter().chain(EDGEVAULT_SECRET_PERMISSIONS) {
            assert!(SECRET_PERMISSIONS.contains(wanted), "{wanted} would be dropped from every brief");
        }
    }

    #[test]
    fn a_principal_is_given_back_as_it_compares() {
        let guid = "0A1B2C3D-0000-4000-8000-00000000000F";
        assert!(matches!(Principal::new(guid), Principal::Guid(_)));
        assert!(Principal::new(guid).text().eq_ignore_ascii_case(guid));
        for other in ["{0a1b2c3d-0000-4000-8000-00000000000f}", "0a1b2c3d000040008000 00000000000f", "not-a-guid", ""] {
            assert_eq!(Principal::new(other).text(), other);
        }
    }

    /// A healthy device's observation from the fake, to swap vaults into.
    fn healthy() -> (Observed, Vault, Lock) {
        let azure = FakeAzure::new();
        let (id, _) = azure.add_healthy("d1");
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let observed = runtime.block_on(observe(&azure.deps(settings()), &id, None)).unwrap().unwrap();
        let VaultState::Present(vault) = observed.vault.clone() else { panic!("a healthy device has its vault") };
        let lock = observed.lock.clone().expect("and its lock");
        (observed, vault, lock)
    }

    proptest! {
        /// Whatever the vault and lock, the sweep judges the brief as it judges the vault: the same findings, the
        /// same alerts, the same fixes.
        #[test]
        fn assess_judges_the_brief_as_it_judges_the_vault(
            owner in 0..4usize,
            principal in 0..5usize,
            policies in prop::collection::vec((0..5usize, prop::collection::vec(0..12usize, 0..5)), 0..4),
            uri in 0..4usize,
            soft_delete in prop::option::of(any::<bool>()),
            purge_protection in prop::option::of(any::<bool>()),
            rbac in prop::option::of(any::<bool>()),
            acls in 0..4usize,
            lock in 0..4usize,
            upper_id in any::<bool>(),
        ) {
            let (base, healthy_vault, healthy_lock) = healthy();
            let device_principal = base.device.principal_id().unwrap().to_string();
            let edgevault = settings().principal_id;
            let principals = [
                device_principal.clone(),
                device_principal.to_ascii_uppercase(),
                edgevault.clone(),
                "7f000000-0000-4000-8000-000000000001".to_string(),
                "an-app-id-not-a-guid".to_string(),
            ];
            let permissions = ["get", "set", "list", "recover", "GET", "Set", "all", "purge", "delete", "backup", "restore", "bogus"];
            let mut vault = healthy_vault.clone();
            if upper_id {
                vault.id = vault.id.to_ascii_uppercase();
            }
            let device = base.id.to_string();
            match owner {
                0 => {}
                1 => { vault.tags.insert(OWNER_TAG.into(), device.to_ascii_uppercase()); }
                2 => { vault.tags.insert(OWNER_TAG.into(), device.replace("d1", "d2")); }
                _ => { vault.tags.remove(OWNER_TAG); }
            }
            match principal {
                4 => { vault.tags.remove(PRINCIPAL_TAG); }
                at => { vault.tags.insert(PRINCIPAL_TAG.into(), principals[at].clone()); }
            }
            if !policies.is_empty() {
                vault.properties.access_policies = policies
                    .iter()
                    .map(|(who, grants)| {
                        let grants: Vec<&str> = grants.iter().map(|g| permissions[*g]).collect();
                        AccessPolicy::secrets("t", &principals[*who], &grants)
                    })
                    .collect();
            }
            let name = vault.name.clone();
            vault.properties.vault_uri = match uri {
                0 => vault.properties.vault_uri.clone(),
                1 => None,
                2 => Some(format!("https://{}.vault.azure.net/", name.to_ascii_uppercase())),
                _ => Some("https://elsewhere.example/".into()),
            };
            vault.properties.enable_soft_delete = soft_delete;
            vault.properties.enable_purge_protection = purge_protection;
            vault.properties.enable_rbac_authorization = rbac;
            vault.properties.network_acls = match acls {
                0 => None,
                1 => Some(serde_json::json!({"defaultAction": "Deny", "ipRules": [{"value": "10.0.0.0/8"}]})),
                2 => Some(serde_json::json!({"defaultAction": "allow"})),
                _ => Some(serde_json::json!({"defaultAction": "deny"})),
            };
            let lock = match lock {
                0 => Some(healthy_lock.clone()),
                1 => None,
                2 => Some(Lock { properties: LockProperties { level: "ReadOnly".into(), notes: None }, ..healthy_lock.clone() }),
                _ => Some(Lock { properties: LockProperties { level: "cannotdelete".into(), notes: Some("n".into()) }, ..healthy_lock.clone() }),
            };

            let mut suffixes = Suffixes::default();
            let mut brief = Brief::of(&vault, &mut suffixes);
            if let Some(lock) = &lock {
                brief.set_lock(&lock.properties.level);
            }
            let target = base.target.clone().unwrap();
            let (rebuilt, rebuilt_lock) = brief.vault(&target, &base.id, &suffixes);

            let judge = |vault: Vault, lock: Option<Lock>| {
                let mut observed = base.clone();
                observed.vault = VaultState::Present(vault);
                observed.lock = lock;
                let findings = assess(&observed, &Desired::new(&settings()));
                (findings.clone(), alerts(&observed, &findings), fixes(&observed, &findings, "sweep-1"))
            };
            prop_assert_eq!(judge(rebuilt, rebuilt_lock), judge(vault, lock));
        }
    }
}
