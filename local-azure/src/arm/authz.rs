//! ARM authorisation: grants (principal + scope + action patterns) checked per request, and the permissions API
//! that tells a caller what its grants allow at a scope.

use http::StatusCode;
use serde_json::json;

use super::error::ArmError;
use super::tenancy::{GRANT, Grant};
use crate::App;
use crate::http::Resp;

/// True when `scope` is `ancestor` or lies below it (segment-wise, case-insensitive).
pub fn scope_covers(ancestor: &str, scope: &str) -> bool {
    let a = ancestor.trim_end_matches('/').to_ascii_lowercase();
    let s = scope.trim_end_matches('/').to_ascii_lowercase();
    s == a || s.starts_with(&format!("{a}/"))
}

/// Case-insensitive glob match where `*` matches any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let t = text.to_ascii_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut rest = t.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Whether one grant allows `action`: one of its `actions` matches and none of its `notActions` does. A
/// `notActions` entry only takes away from the same grant's `actions` (Azure RBAC: "NotActions … is not a deny";
/// https://learn.microsoft.com/azure/role-based-access-control/role-definitions#notactions).
pub fn grant_allows(grant: &Grant, action: &str) -> bool {
    grant.actions.iter().any(|p| glob_match(p, action)) && !grant.not_actions.iter().any(|p| glob_match(p, action))
}

/// Reads need any grant covering the scope; everything else needs a grant whose actions allow it.
pub fn authorize(app: &App, principal_id: &str, action: &str, scope: &str, is_read: bool) -> Result<(), ArmError> {
    let grants: Vec<Grant> = app.store.list(GRANT, "")?;
    let allowed = grants.iter().any(|g| {
        g.principal_id.eq_ignore_ascii_case(principal_id)
            && scope_covers(&g.scope, scope)
            && (is_read || grant_allows(g, action))
    });
    if allowed {
        Ok(())
    } else {
        Err(ArmError::new(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{principal_id}' with object id '{principal_id}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ),
        ))
    }
}

/// `GET {scope}/providers/Microsoft.Authorization/permissions` (`Permissions_ListForResource` /
/// `Permissions_ListForResourceGroup`, azure-rest-api-specs `specification/authorization/resource-manager/
/// Microsoft.Authorization/stable/2022-04-01/authorization-RoleDefinitionsCalls.json`): "all permissions the
/// caller has" at the scope — one entry per grant of the caller at the scope or above it, with the grant's
/// `actions` and `notActions` as written (wildcards included; the caller evaluates them). Any authenticated
/// caller may ask about itself, so no grant is needed to call it.
pub fn permissions(app: &App, principal_id: &str, scope: &str) -> Result<Resp, ArmError> {
    let grants: Vec<Grant> = app.store.list(GRANT, "")?;
    let value: Vec<_> = grants
        .iter()
        .filter(|g| g.principal_id.eq_ignore_ascii_case(principal_id) && scope_covers(&g.scope, scope))
        .map(|g| json!({"actions": g.actions, "notActions": g.not_actions, "dataActions": [], "notDataActions": []}))
        .collect();
    Ok(Resp::json(StatusCode::OK, &json!({ "value": value })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_actions_take_away_from_their_own_grant_only() {
        let grant = |actions: &[&str], not_actions: &[&str]| Grant {
            id: String::new(),
            principal_id: "p".into(),
            scope: "/subscriptions/s".into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
            not_actions: not_actions.iter().map(|a| a.to_string()).collect(),
            role_name: String::new(),
        };
        let write = "Microsoft.DataBoxEdge/dataBoxEdgeDevices/write";
        assert!(grant_allows(&grant(&["*"], &[]), write));
        assert!(!grant_allows(&grant(&["*"], &["Microsoft.DataBoxEdge/*/write"]), write));
        assert!(grant_allows(&grant(&["*"], &["*/delete"]), write));
        assert!(!grant_allows(&grant(&["*/read"], &[]), write));
    }

    #[test]
    fn globs_and_scopes() {
        assert!(glob_match("Microsoft.KeyVault/*", "microsoft.keyvault/vaults/write"));
        assert!(glob_match("*/read", "Microsoft.KeyVault/vaults/read"));
        assert!(!glob_match("Microsoft.KeyVault/vaults/*", "Microsoft.KeyVault/locations/deletedVaults/purge/action"));
        assert!(glob_match("*", "anything"));
        assert!(scope_covers("/subscriptions/S", "/subscriptions/s/resourceGroups/x"));
        assert!(!scope_covers("/subscriptions/s1", "/subscriptions/s10"));
    }
}
