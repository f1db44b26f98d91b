//! Resources – Move Resources: `POST /subscriptions/{s}/resourceGroups/{source}/moveResources` with
//! `{"resources": [ids], "targetResourceGroup": "/subscriptions/{s2}/resourceGroups/{target}"}`
//! (`Resources_MoveResources`, azure-rest-api-specs `specification/resources/resource-manager/Microsoft.Resources/
//! stable/2021-04-01/resources.json`: body `ResourcesMoveInfo`, answers `202`/`204`, a long-running operation).
//!
//! What "Move Azure resources to a new resource group or subscription" (learn.microsoft.com/azure/
//! azure-resource-manager/management/move-resource-group-and-subscription) says, as served here:
//! - the resources must all be in the source group; the target group may be in another subscription (of the same
//!   tenant); the resource keeps its name, location, properties and tags, and its id changes;
//! - a read-only lock on the source or target group (or above) stops the move (`ScopeLocked`); the resource's own
//!   locks move with it (they are scoped by its id);
//! - the caller needs `Microsoft.Resources/subscriptions/resourceGroups/moveResources/action` on the source group
//!   (checked with every request) and `Microsoft.Resources/subscriptions/resourceGroups/write` on the target group.
//!
//! local-azure moves Key Vault vaults (the only resource whose move edgevault must recognise) and answers `204` at
//! once: the move is complete when the answer comes, which the spec allows (`204 No Content`). Other types are
//! refused with `ResourceMoveNotSupported`, naming what is served.

use http::StatusCode;
use serde::Deserialize;

use super::vaults::{VAULT, Vault, key};
use super::{ArmCtx, ArmError, ResourceId, authz, locks};
use crate::http::Resp;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MoveInfo {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    target_resource_group: Option<String>,
}

/// The resource group a `targetResourceGroup` value names, or why it names none.
fn target_group(text: Option<&str>) -> Result<ResourceId, ArmError> {
    let invalid = |why: &str| ArmError::bad_request("InvalidTargetResourceGroup", why.to_string());
    let text = text.filter(|t| !t.is_empty()).ok_or_else(|| invalid("The 'targetResourceGroup' is required."))?;
    let id: ResourceId = text
        .parse()
        .map_err(|_| invalid(&format!("The target resource group '{text}' is not a resource group id.")))?;
    match (&id.resource_group, &id.provider) {
        (Some(_), None) => Ok(id),
        _ => Err(invalid(&format!("The target resource group '{text}' is not a resource group id."))),
    }
}

pub fn move_resources(ctx: &ArmCtx<'_>, source: &ResourceId) -> Result<Resp, ArmError> {
    let info: MoveInfo = ctx.body()?;
    let target = target_group(info.target_resource_group.as_deref())?;
    let source_group = source.resource_group.clone().unwrap_or_default();
    ctx.resource_group(&source.subscription, &source_group)?;
    let target_group_name = target.resource_group.clone().unwrap_or_default();
    let target_sub = ctx.subscription(&target.subscription)?;
    let source_sub = ctx.subscription(&source.subscription)?;
    if !target_sub.tenant_id.eq_ignore_ascii_case(&source_sub.tenant_id) {
        return Err(ArmError::bad_request(
            "InvalidTargetSubscription",
            "The source and target subscriptions must be in the same Microsoft Entra ID tenant.",
        ));
    }
    ctx.resource_group(&target.subscription, &target_group_name)?;
    if target.key() == source.key() {
        return Err(ArmError::bad_request(
            "InvalidTargetResourceGroup",
            "The source and target resource groups are the same.",
        ));
    }
    authz::authorize(
        ctx.app,
        ctx.caller(),
        "Microsoft.Resources/subscriptions/resourceGroups/write",
        &target.to_string(),
        false,
    )?;
    if info.resources.is_empty() {
        return Err(ArmError::bad_request("InvalidResourceMoveRequest", "The 'resources' to move are required."));
    }
    let mut vaults = Vec::new();
    for text in &info.resources {
        let id: ResourceId = text.parse().map_err(|_| {
            ArmError::bad_request("InvalidResourceMoveRequest", format!("'{text}' is not a resource id."))
        })?;
        let in_source = id.subscription.eq_ignore_ascii_case(&source.subscription)
            && id.resource_group.as_deref().is_some_and(|g| g.eq_ignore_ascii_case(&source_group));
        if !in_source {
            return Err(ArmError::bad_request(
                "ResourceNotInSourceResourceGroup",
                format!("The resource '{text}' is not in the source resource group '{source_group}'."),
            ));
        }
        if !id.resource_type().eq_ignore_ascii_case("Microsoft.KeyVault/vaults") {
            return Err(ArmError::bad_request(
                "ResourceMoveNotSupported",
                format!("local-azure moves Microsoft.KeyVault/vaults only, not '{}'.", id.resource_type()),
            ));
        }
        let vault = super::vaults::find_active(ctx.app, &id)?
            .ok_or_else(|| ArmError::resource_not_found("Microsoft.KeyVault/vaults", id.name(), &source_group))?;
        vaults.push(vault);
    }
    ctx.app.store.write(|tx| -> Result<(), ArmError> {
        locks::check(tx, source, false)?;
        locks::check(tx, &target, false)?;
        for vault in &vaults {
            let from = vault.id();
            let moved = Vault {
                subscription_id: target.subscription.clone(),
                resource_group: target_group_name.clone(),
                ..vault.clone()
            };
            locks::move_under(tx, &from, &moved.id())?;
            tx.put(VAULT, &key(&vault.name), &moved)?;
            ctx.record(tx, &from.to_string(), StatusCode::NO_CONTENT)?;
            tracing::info!(from = %from, to = %moved.id(), "moved");
        }
        Ok(())
    })?;
    Ok(Resp::empty(StatusCode::NO_CONTENT))
}
