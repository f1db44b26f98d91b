//! ARM authorisation: grants (principal + scope + action patterns) checked per request.

use http::StatusCode;

use super::error::ArmError;
use super::tenancy::{GRANT, Grant};
use crate::App;

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

/// Reads need any grant covering the scope; everything else needs a matching action pattern.
pub fn authorize(app: &App, principal_id: &str, action: &str, scope: &str, is_read: bool) -> Result<(), ArmError> {
    let grants: Vec<Grant> = app.store.list(GRANT, "")?;
    let allowed = grants.iter().any(|g| {
        g.principal_id.eq_ignore_ascii_case(principal_id)
            && scope_covers(&g.scope, scope)
            && (is_read || g.actions.iter().any(|p| glob_match(p, action)))
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

#[cfg(test)]
mod tests {
    use super::*;

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
