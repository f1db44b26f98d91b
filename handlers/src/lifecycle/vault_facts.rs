//! What a vault object says of itself: the device its tags name as owner, the device principal they record, its
//! data-plane URI. Pure functions of the vault, apart from `vault` (which reads and writes through `Deps`), so the
//! sweep's index (`vault_brief`, below `Deps`) can use the same ones.

use std::collections::BTreeMap;

use super::{OWNER_TAG, PRINCIPAL_TAG};
use crate::azure::models::Vault;
use crate::resource_id::ResourceId;

/// The vault's data-plane URI, as ARM reports it (or the public cloud's form of its name).
pub fn vault_uri(vault: &Vault) -> String {
    vault.properties.vault_uri.clone().unwrap_or_else(|| format!("https://{}.vault.azure.net/", vault.name))
}

/// Whether `tags` name `device` as the owner (ARM ids compare case-insensitively).
pub fn owned_by(tags: &BTreeMap<String, String>, device: &ResourceId) -> bool {
    owner(tags).is_some_and(|owner| &owner == device)
}

/// The device the tags name as the vault's owner.
pub fn owner(tags: &BTreeMap<String, String>) -> Option<ResourceId> {
    tags.iter().find(|(k, _)| k.eq_ignore_ascii_case(OWNER_TAG)).and_then(|(_, v)| v.parse::<ResourceId>().ok())
}

/// The device principal the vault's tag records as granted.
pub fn recorded_principal(vault: &Vault) -> Option<&str> {
    vault.tags.iter().find(|(k, _)| k.eq_ignore_ascii_case(PRINCIPAL_TAG)).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_read_from_the_tag_case_insensitively() {
        let d: ResourceId =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d1".parse().unwrap();
        let tags = BTreeMap::from([(
            "Edgevault-Device".to_string(),
            d.to_string().to_uppercase().replace("SUBSCRIPTIONS", "subscriptions"),
        )]);
        assert!(owned_by(&tags, &d));
        assert!(!owned_by(&BTreeMap::new(), &d));
    }
}
