//! Typed ARM resource ids: `/subscriptions/{s}[/resourceGroups/{rg}][/providers/{ns}/{type}/{name}[/{type}/{name}…]]`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId {
    pub subscription: String,
    pub resource_group: Option<String>,
    /// Provider namespace and (type, name) pairs, outermost first.
    pub provider: Option<(String, Vec<(String, String)>)>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("'{0}' is not a valid ARM resource id")]
pub struct InvalidResourceId(pub String);

impl ResourceId {
    pub fn subscription(subscription: &str) -> Self {
        ResourceId { subscription: subscription.to_string(), resource_group: None, provider: None }
    }

    pub fn resource_group(subscription: &str, group: &str) -> Self {
        ResourceId { resource_group: Some(group.to_string()), ..Self::subscription(subscription) }
    }

    pub fn resource(subscription: &str, group: &str, namespace: &str, kind: &str, name: &str) -> Self {
        ResourceId {
            provider: Some((namespace.to_string(), vec![(kind.to_string(), name.to_string())])),
            ..Self::resource_group(subscription, group)
        }
    }

    /// `Microsoft.KeyVault/vaults` for a vault; `Microsoft.Resources/subscriptions/resourceGroups`
    /// for a resource group.
    pub fn resource_type(&self) -> String {
        match &self.provider {
            Some((ns, types)) => {
                let mut s = ns.clone();
                for (t, _) in types {
                    s.push('/');
                    s.push_str(t);
                }
                s
            }
            None if self.resource_group.is_some() => "Microsoft.Resources/subscriptions/resourceGroups".into(),
            None => "Microsoft.Resources/subscriptions".into(),
        }
    }

    pub fn name(&self) -> &str {
        match (&self.provider, &self.resource_group) {
            (Some((_, types)), _) => types.last().map(|(_, n)| n.as_str()).unwrap_or(""),
            (None, Some(rg)) => rg,
            (None, None) => &self.subscription,
        }
    }

    /// The lowercase form used as a store key and for scope comparisons.
    pub fn key(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }

    /// This id and every scope above it, innermost first.
    pub fn ancestors_and_self(&self) -> Vec<ResourceId> {
        let mut out = vec![self.clone()];
        let mut cur = self.clone();
        loop {
            match &mut cur.provider {
                Some((_, types)) if types.len() > 1 => {
                    types.pop();
                }
                Some(_) => cur.provider = None,
                None if cur.resource_group.is_some() => cur.resource_group = None,
                None => break,
            }
            out.push(cur.clone());
        }
        out
    }

    /// Parses the leading resource id out of path segments (everything if `segments` is exactly
    /// an id).
    pub fn from_segments(segments: &[String]) -> Result<Self, InvalidResourceId> {
        let invalid = || InvalidResourceId(format!("/{}", segments.join("/")));
        let mut it = segments.iter();
        match it.next() {
            Some(s) if s.eq_ignore_ascii_case("subscriptions") => {}
            _ => return Err(invalid()),
        }
        let subscription = it.next().ok_or_else(invalid)?.clone();
        let mut id = ResourceId::subscription(&subscription);
        let rest: Vec<&String> = it.collect();
        let mut i = 0;
        if rest.len() >= 2 && rest[0].eq_ignore_ascii_case("resourcegroups") {
            id.resource_group = Some(rest[1].clone());
            i = 2;
        }
        if i < rest.len() {
            if !rest[i].eq_ignore_ascii_case("providers") || rest.len() < i + 4 {
                return Err(invalid());
            }
            let ns = rest[i + 1].clone();
            let pairs = &rest[i + 2..];
            if !pairs.len().is_multiple_of(2) {
                return Err(invalid());
            }
            let types = pairs.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
            id.provider = Some((ns, types));
        }
        Ok(id)
    }
}

impl FromStr for ResourceId {
    type Err = InvalidResourceId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let segments: Vec<String> = s.split('/').filter(|p| !p.is_empty()).map(str::to_string).collect();
        ResourceId::from_segments(&segments).map_err(|_| InvalidResourceId(s.to_string()))
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/subscriptions/{}", self.subscription)?;
        if let Some(rg) = &self.resource_group {
            write!(f, "/resourceGroups/{rg}")?;
        }
        if let Some((ns, types)) = &self.provider {
            write!(f, "/providers/{ns}")?;
            for (t, n) in types {
                write!(f, "/{t}/{n}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let id: ResourceId =
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.KeyVault/vaults/v".parse().unwrap();
        assert_eq!(id.resource_type(), "Microsoft.KeyVault/vaults");
        assert_eq!(id.name(), "v");
        assert_eq!(id.to_string(), "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v");
        let scopes: Vec<String> = id.ancestors_and_self().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            scopes,
            [
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v",
                "/subscriptions/s/resourceGroups/rg",
                "/subscriptions/s"
            ]
        );
        assert!("/subscriptions/s/providers/x".parse::<ResourceId>().is_err());
        assert!("/tenants/x".parse::<ResourceId>().is_err());
        let sub: ResourceId = "/subscriptions/s".parse().unwrap();
        assert_eq!(sub.resource_type(), "Microsoft.Resources/subscriptions");
    }
}
