//! `Microsoft.Authorization/locks` at any scope, and the lock check other providers run before
//! deleting (`CanNotDelete`, `ReadOnly`) or writing (`ReadOnly`).

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::authz::scope_covers;
use super::{ArmCtx, ArmError, ResourceId};
use crate::store::Tx;

pub const LOCK: &str = "lock";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lock {
    pub scope: String,
    pub name: String,
    pub level: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<Value>,
}

impl Lock {
    pub fn id(&self) -> String {
        format!("{}/providers/Microsoft.Authorization/locks/{}", self.scope, self.name)
    }

    pub(crate) fn key(scope: &str, name: &str) -> String {
        format!("{}|{}", scope.to_ascii_lowercase(), name.to_ascii_lowercase())
    }

    pub fn to_json(&self) -> Value {
        let mut props = json!({ "level": self.level });
        if let Some(n) = &self.notes {
            props["notes"] = json!(n);
        }
        if let Some(o) = &self.owners {
            props["owners"] = o.clone();
        }
        json!({
            "properties": props,
            "id": self.id(),
            "type": "Microsoft.Authorization/locks",
            "name": self.name,
        })
    }
}

#[derive(Debug, Deserialize)]
struct LockBody {
    properties: LockProps,
}

#[derive(Debug, Deserialize)]
struct LockProps {
    level: String,
    notes: Option<String>,
    owners: Option<Value>,
}

/// The scopes at or above `target`, lower-cased: every prefix of it that ends at a segment boundary. Locks are
/// keyed `scope|name`, so the locks that apply to a resource are a few prefix reads, not a scan of every lock. (Not
/// every prefix is a valid scope, `…/providers` for one, but no lock is stored at those.)
fn scopes_at_or_above(target: &str) -> Vec<String> {
    let t = target.trim_end_matches('/').to_ascii_lowercase();
    let mut out: Vec<String> = t.match_indices('/').filter(|(i, _)| *i > 0).map(|(i, _)| t[..i].to_string()).collect();
    out.push(t);
    out
}

/// The locks at exactly `scope` (any case).
fn at_scope(tx: &Tx<'_>, scope: &str) -> Result<Vec<Lock>, ArmError> {
    Ok(tx.list(LOCK, &format!("{}|", scope.trim_end_matches('/').to_ascii_lowercase()))?)
}

/// Fails with `409 ScopeLocked` when a lock at or above `resource` forbids the operation.
pub fn check(tx: &Tx<'_>, resource: &ResourceId, delete: bool) -> Result<(), ArmError> {
    let target = resource.to_string();
    let mut locks = Vec::new();
    for scope in scopes_at_or_above(&target) {
        locks.extend(at_scope(tx, &scope)?);
    }
    let blocking: Vec<&Lock> = locks
        .iter()
        .filter(|l| scope_covers(&l.scope, &target))
        .filter(|l| {
            l.level.eq_ignore_ascii_case("ReadOnly") || (delete && l.level.eq_ignore_ascii_case("CanNotDelete"))
        })
        .collect();
    if blocking.is_empty() {
        return Ok(());
    }
    let scopes: Vec<String> = blocking.iter().map(|l| format!("'{}'", l.scope)).collect();
    Err(ArmError::conflict(
        "ScopeLocked",
        format!(
            "The scope '{target}' cannot perform {} operation because following scope(s) are locked: {}. Please remove the lock and try again.",
            if delete { "delete" } else { "write" },
            scopes.join(",")
        ),
    ))
}

/// Removes the locks at or under a deleted resource, as ARM does.
pub fn remove_under(tx: &mut Tx<'_>, resource: &ResourceId) -> Result<(), ArmError> {
    let scope = resource.to_string().trim_end_matches('/').to_ascii_lowercase();
    let mut locks = at_scope(tx, &scope)?;
    locks.extend(tx.list::<Lock>(LOCK, &format!("{scope}/"))?);
    for l in locks.iter().filter(|l| scope_covers(&resource.to_string(), &l.scope)) {
        tx.delete(LOCK, &Lock::key(&l.scope, &l.name))?;
    }
    Ok(())
}

/// Re-scopes the locks at or under a moved resource to its new id (a lock is scoped by the resource's id, and ARM
/// moves a resource with its extension resources).
pub fn move_under(tx: &mut Tx<'_>, from: &ResourceId, to: &ResourceId) -> Result<(), ArmError> {
    let scope = from.to_string().trim_end_matches('/').to_ascii_lowercase();
    let mut locks = at_scope(tx, &scope)?;
    locks.extend(tx.list::<Lock>(LOCK, &format!("{scope}/"))?);
    for lock in locks.into_iter().filter(|l| scope_covers(&from.to_string(), &l.scope)) {
        tx.delete(LOCK, &Lock::key(&lock.scope, &lock.name))?;
        let moved = Lock { scope: format!("{to}{}", &lock.scope[scope.len()..]), ..lock };
        tx.put(LOCK, &Lock::key(&moved.scope, &moved.name), &moved)?;
    }
    Ok(())
}

fn scope_exists(ctx: &ArmCtx<'_>, scope: &ResourceId) -> Result<(), ArmError> {
    ctx.subscription(&scope.subscription)?;
    if let Some(rg) = &scope.resource_group {
        ctx.resource_group(&scope.subscription, rg)?;
    }
    let exists = match scope.resource_type().to_ascii_lowercase().as_str() {
        "microsoft.keyvault/vaults" => super::vaults::find_active(ctx.app, scope)?.is_some(),
        "microsoft.databoxedge/databoxedgedevices" => super::devices::find(ctx.app, scope)?.is_some(),
        "microsoft.storage/storageaccounts" => super::storage::find(ctx.app, scope)?.is_some(),
        _ => true,
    };
    if exists {
        Ok(())
    } else {
        Err(ArmError::resource_not_found(
            &scope.resource_type(),
            scope.name(),
            scope.resource_group.as_deref().unwrap_or_default(),
        ))
    }
}

fn lock_not_found(name: &str) -> ArmError {
    ArmError::not_found("LockNotFound", format!("The lock '{name}' could not be found."))
}

pub fn get(ctx: &ArmCtx<'_>, scope: &str, name: &str) -> Result<crate::http::Resp, ArmError> {
    let lock: Lock = ctx.app.store.get(LOCK, &Lock::key(scope, name))?.ok_or_else(|| lock_not_found(name))?;
    Ok(crate::http::Resp::json(StatusCode::OK, &lock.to_json()))
}

pub fn put(ctx: &ArmCtx<'_>, scope: &str, name: &str) -> Result<crate::http::Resp, ArmError> {
    let body: LockBody = ctx.body()?;
    let level = match body.properties.level.to_ascii_lowercase().as_str() {
        "cannotdelete" => "CanNotDelete",
        "readonly" => "ReadOnly",
        _ => {
            return Err(ArmError::bad_request(
                "LockLevelInvalid",
                format!(
                    "The lock level '{}' is invalid. Valid values are 'CanNotDelete' and 'ReadOnly'.",
                    body.properties.level
                ),
            ));
        }
    };
    let scope_id: ResourceId =
        scope.parse().map_err(|_| ArmError::bad_request("InvalidScope", format!("'{scope}' is not a valid scope.")))?;
    scope_exists(ctx, &scope_id)?;
    let lock = Lock {
        scope: scope_id.to_string(),
        name: name.to_string(),
        level: level.to_string(),
        notes: body.properties.notes,
        owners: body.properties.owners,
    };
    let created = ctx.app.store.write(|tx| -> Result<bool, ArmError> {
        let key = Lock::key(scope, name);
        let existed = tx.get::<Lock>(LOCK, &key)?.is_some();
        tx.put(LOCK, &key, &lock)?;
        let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
        ctx.record(tx, &lock.id(), status)?;
        Ok(!existed)
    })?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(crate::http::Resp::json(status, &lock.to_json()))
}

pub fn delete(ctx: &ArmCtx<'_>, scope: &str, name: &str) -> Result<crate::http::Resp, ArmError> {
    let existed = ctx.app.store.write(|tx| -> Result<bool, ArmError> {
        let key = Lock::key(scope, name);
        let Some(lock) = tx.get::<Lock>(LOCK, &key)? else {
            return Ok(false);
        };
        tx.delete(LOCK, &key)?;
        ctx.record(tx, &lock.id(), StatusCode::OK)?;
        Ok(true)
    })?;
    Ok(crate::http::Resp::empty(if existed { StatusCode::OK } else { StatusCode::NO_CONTENT }))
}

/// Locks that apply at `scope` (at or above it) and locks on anything below it (`ManagementLocks_ListAtSubscriptionLevel`,
/// `…_ListAtResourceGroupLevel`, `…_ListByScope` in Microsoft.Authorization/stable/2020-05-01/locks.json, all
/// `x-ms-pageable` with `nextLink`). The first page holds the few locks at or above the scope, then keyset pages
/// of those below it (the `$skiptoken` is the last key served), so listing a subscription's locks reads each once.
pub fn list(ctx: &ArmCtx<'_>, scope: &str) -> Result<crate::http::Resp, ArmError> {
    let after = ctx.req.query("$skiptoken").filter(|t| !t.is_empty());
    let mut locks: Vec<(String, Lock)> = Vec::new();
    if after.is_none() {
        for at in scopes_at_or_above(scope) {
            locks.extend(ctx.app.store.list_keys::<Lock>(LOCK, &format!("{at}|"))?);
        }
        locks.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let below = format!("{}/", scope.trim_end_matches('/').to_ascii_lowercase());
    let (page, more) = ctx.app.store.page::<Lock>(LOCK, &below, after, ctx.page_size())?;
    let next = if more { page.last().map(|(k, _)| k.clone()) } else { None };
    locks.extend(page);
    let items: Vec<Value> = locks
        .iter()
        .map(|(_, l)| l)
        .filter(|l| scope_covers(&l.scope, scope) || scope_covers(scope, &l.scope))
        .map(Lock::to_json)
        .collect();
    Ok(crate::http::Resp::json(StatusCode::OK, &ctx.page_after(items, next.as_deref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_above_a_resource() {
        let scopes = scopes_at_or_above("/subscriptions/S/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/V/");
        assert_eq!(scopes.first().map(String::as_str), Some("/subscriptions"));
        for expected in [
            "/subscriptions/s",
            "/subscriptions/s/resourcegroups/rg",
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/v",
        ] {
            assert!(scopes.iter().any(|s| s == expected), "{expected} in {scopes:?}");
        }
        assert_eq!(
            scopes.last().map(String::as_str),
            Some("/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/vaults/v")
        );
    }
}
