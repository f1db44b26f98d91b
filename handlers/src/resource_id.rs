//! Typed Azure Resource Manager resource ids. Handlers parse ids once, here, and never slice strings themselves.
//!
//! An id is `/subscriptions/{sub}[/resourceGroups/{rg}][/providers/{namespace}/{type}/{name}[/{type}/{name}…]]`.
//! ARM treats the fixed segments, namespaces and types case-insensitively; names keep their case but compare
//! case-insensitively too, so [`ResourceId`] equality ignores case as ARM does.

use std::fmt;
use std::str::FromStr;

/// The resource type of an Azure Stack Edge device.
pub const DEVICE_TYPE: (&str, &str) = ("Microsoft.DataBoxEdge", "dataBoxEdgeDevices");
/// The resource type of a Key Vault.
pub const VAULT_TYPE: (&str, &str) = ("Microsoft.KeyVault", "vaults");

#[derive(Clone)]
pub struct ResourceId {
    subscription: String,
    resource_group: Option<String>,
    /// Provider namespace and the `(type, name)` chain below it (a child resource has more than one pair).
    provider: Option<(String, Vec<(String, String)>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{id}` is not a valid Azure resource id: {reason}")]
pub struct ResourceIdError {
    pub id: String,
    pub reason: String,
}

impl ResourceId {
    /// The id of a top-level resource in a resource group.
    pub fn new(subscription: &str, resource_group: &str, (namespace, kind): (&str, &str), name: &str) -> Self {
        ResourceId {
            subscription: subscription.to_string(),
            resource_group: Some(resource_group.to_string()),
            provider: Some((namespace.to_string(), vec![(kind.to_string(), name.to_string())])),
        }
    }

    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    pub fn resource_group(&self) -> Option<&str> {
        self.resource_group.as_deref()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.provider.as_ref().map(|(ns, _)| ns.as_str())
    }

    /// The full type, e.g. `Microsoft.DataBoxEdge/dataBoxEdgeDevices` (child types joined with `/`).
    pub fn resource_type(&self) -> Option<String> {
        let (ns, chain) = self.provider.as_ref()?;
        Some(std::iter::once(ns.as_str()).chain(chain.iter().map(|(t, _)| t.as_str())).collect::<Vec<_>>().join("/"))
    }

    /// The name of the innermost resource.
    pub fn name(&self) -> Option<&str> {
        self.provider.as_ref().and_then(|(_, chain)| chain.last()).map(|(_, n)| n.as_str())
    }

    /// Whether this is a top-level resource of the given `(namespace, type)`.
    pub fn is_type(&self, (namespace, kind): (&str, &str)) -> bool {
        match &self.provider {
            Some((ns, chain)) => {
                chain.len() == 1 && ns.eq_ignore_ascii_case(namespace) && chain[0].0.eq_ignore_ascii_case(kind)
            }
            None => false,
        }
    }

    /// The resource group's id (`/subscriptions/…/resourceGroups/…`), if the resource lives in one.
    pub fn resource_group_id(&self) -> Option<String> {
        self.resource_group.as_ref().map(|rg| format!("/subscriptions/{}/resourceGroups/{rg}", self.subscription))
    }
}

impl FromStr for ResourceId {
    type Err = ResourceIdError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| ResourceIdError { id: id.to_string(), reason: reason.to_string() };
        if id.len() > 2048 {
            return Err(fail("longer than 2048 characters"));
        }
        if !id.starts_with('/') {
            return Err(fail("it must start with `/subscriptions/`"));
        }
        let parts: Vec<&str> = id.trim_end_matches('/').split('/').skip(1).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(fail("it has an empty segment (`//`)"));
        }
        if let Some(bad) = parts.iter().find(|p| !valid_segment(p)) {
            return Err(fail(&format!("segment `{bad}` has characters ARM does not allow in ids")));
        }
        let mut rest = parts.as_slice();
        let subscription = match rest {
            [key, sub, tail @ ..] if key.eq_ignore_ascii_case("subscriptions") => {
                rest = tail;
                sub.to_string()
            }
            _ => return Err(fail("it must start with `/subscriptions/{subscriptionId}`")),
        };
        let mut resource_group = None;
        if let [key, rg, tail @ ..] = rest
            && key.eq_ignore_ascii_case("resourceGroups")
        {
            resource_group = Some(rg.to_string());
            rest = tail;
        }
        let provider = match rest {
            [] => None,
            [key, ns, chain @ ..] if key.eq_ignore_ascii_case("providers") => {
                if chain.is_empty() || chain.len() % 2 != 0 {
                    return Err(fail("after `/providers/{namespace}` it needs `/{type}/{name}` pairs"));
                }
                let pairs = chain.chunks(2).map(|p| (p[0].to_string(), p[1].to_string())).collect();
                Some((ns.to_string(), pairs))
            }
            [key, ..] => return Err(fail(&format!("unexpected segment `{key}`; expected `providers`"))),
        };
        Ok(ResourceId { subscription, resource_group, provider })
    }
}

/// Segments may not carry characters that would change the meaning of a URL built from the id.
fn valid_segment(segment: &str) -> bool {
    segment != "."
        && segment != ".."
        && segment.chars().all(|c| !c.is_control() && !matches!(c, '?' | '#' | '%' | '\\' | '<' | '>' | '"' | ' '))
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/subscriptions/{}", self.subscription)?;
        if let Some(rg) = &self.resource_group {
            write!(f, "/resourceGroups/{rg}")?;
        }
        if let Some((ns, chain)) = &self.provider {
            write!(f, "/providers/{ns}")?;
            for (kind, name) in chain {
                write!(f, "/{kind}/{name}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId({self})")
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, other: &Self) -> bool {
        self.to_string().eq_ignore_ascii_case(&other.to_string())
    }
}

impl Eq for ResourceId {}

impl std::hash::Hash for ResourceId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.to_string().to_ascii_lowercase().hash(state);
    }
}

impl serde::Serialize for ResourceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ResourceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: &str = "/subscriptions/4385cf00-2d3a-425a-832f-f4285b1c9dce/resourceGroups/GroupForEdgeAutomation/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/testedgedevice";

    #[test]
    fn parses_a_device_id() {
        let id: ResourceId = DEVICE.parse().unwrap();
        assert_eq!(id.subscription(), "4385cf00-2d3a-425a-832f-f4285b1c9dce");
        assert_eq!(id.resource_group(), Some("GroupForEdgeAutomation"));
        assert_eq!(id.name(), Some("testedgedevice"));
        assert!(id.is_type(DEVICE_TYPE));
        assert!(!id.is_type(VAULT_TYPE));
        assert_eq!(id.resource_type().unwrap(), "Microsoft.DataBoxEdge/dataBoxEdgeDevices");
        assert_eq!(id.to_string(), DEVICE);
    }

    #[test]
    fn compares_case_insensitively_like_arm() {
        let a: ResourceId = DEVICE.parse().unwrap();
        let b: ResourceId = DEVICE.to_lowercase().replace("resourcegroups", "RESOURCEGROUPS").parse().unwrap();
        assert_eq!(a, b);
        assert!(b.is_type(DEVICE_TYPE));
    }

    #[test]
    fn parses_scopes_and_child_resources() {
        let sub: ResourceId = "/subscriptions/s".parse().unwrap();
        assert_eq!((sub.resource_group(), sub.name()), (None, None));
        let rg: ResourceId = "/subscriptions/s/resourceGroups/rg/".parse().unwrap();
        assert_eq!(rg.resource_group_id().unwrap(), "/subscriptions/s/resourceGroups/rg");
        let child: ResourceId =
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v/secrets/x".parse().unwrap();
        assert_eq!(child.name(), Some("x"));
        assert!(!child.is_type(VAULT_TYPE));
        assert_eq!(child.resource_type().unwrap(), "Microsoft.KeyVault/vaults/secrets");
    }

    #[test]
    fn rejects_malformed_ids_with_a_reason() {
        for (bad, reason) in [
            ("subscriptions/s", "start with"),
            ("/resourceGroups/rg", "/subscriptions/{subscriptionId}"),
            ("/subscriptions//resourceGroups/rg", "empty segment"),
            ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults", "pairs"),
            ("/subscriptions/s/resourceGroups/rg/foo/bar", "expected `providers`"),
            ("/subscriptions/s/resourceGroups/../providers/A/b/c", "characters"),
            ("/subscriptions/s/resourceGroups/rg/providers/A/b/c?x=1", "characters"),
        ] {
            let err = bad.parse::<ResourceId>().unwrap_err();
            assert!(err.reason.contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn serde_round_trip_validates() {
        let id: ResourceId = serde_json::from_value(serde_json::json!(DEVICE)).unwrap();
        assert_eq!(serde_json::to_value(&id).unwrap(), DEVICE);
        assert!(serde_json::from_value::<ResourceId>(serde_json::json!("/nope")).is_err());
    }
}
