//! Tenants, subscriptions, resource groups and role grants: the directory that ARM requests
//! are checked against. Seeded with defaults on first start and extended through the admin API.

use serde::{Deserialize, Serialize};

use crate::config;
use crate::identity::Principal;
use crate::store::{StoreError, Tx};

pub const TENANT: &str = "tenant";
pub const SUBSCRIPTION: &str = "subscription";
pub const RESOURCE_GROUP: &str = "rg";
pub const GRANT: &str = "grant";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub tenant_id: String,
    #[serde(default)]
    pub display_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub subscription_id: String,
    pub tenant_id: String,
    #[serde(default)]
    pub display_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroup {
    pub subscription_id: String,
    pub name: String,
    pub location: String,
    #[serde(default)]
    pub tags: serde_json::Map<String, serde_json::Value>,
}

impl ResourceGroup {
    pub fn key(subscription_id: &str, name: &str) -> String {
        format!("{}/{}", subscription_id.to_ascii_lowercase(), name.to_ascii_lowercase())
    }
}

/// A role grant: `principal_id` may perform actions matching `actions` (glob patterns like
/// `Microsoft.KeyVault/*`) but not `not_actions` at `scope` and below. Any grant at a scope also allows reads there.
/// It is a role assignment and its role definition's one permission in one: `actions` / `notActions` as in Azure RBAC
/// (`notActions` subtract from this grant's `actions`; they deny nothing another grant allows).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    #[serde(default)]
    pub id: String,
    pub principal_id: String,
    pub scope: String,
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_actions: Vec<String>,
    #[serde(default)]
    pub role_name: String,
}

/// Writes the default tenant, subscription, resource group, the app identity and its grants.
pub fn seed_defaults(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    tx.put(
        TENANT,
        config::DEFAULT_TENANT_ID,
        &Tenant { tenant_id: config::DEFAULT_TENANT_ID.into(), display_name: "local-azure".into() },
    )?;
    tx.put(
        SUBSCRIPTION,
        config::DEFAULT_SUBSCRIPTION_ID,
        &Subscription {
            subscription_id: config::DEFAULT_SUBSCRIPTION_ID.into(),
            tenant_id: config::DEFAULT_TENANT_ID.into(),
            display_name: "local-azure default".into(),
        },
    )?;
    tx.put(
        RESOURCE_GROUP,
        &ResourceGroup::key(config::DEFAULT_SUBSCRIPTION_ID, config::DEFAULT_RESOURCE_GROUP),
        &ResourceGroup {
            subscription_id: config::DEFAULT_SUBSCRIPTION_ID.into(),
            name: config::DEFAULT_RESOURCE_GROUP.into(),
            location: config::DEFAULT_LOCATION.into(),
            tags: Default::default(),
        },
    )?;
    crate::identity::put_principal(
        tx,
        &Principal {
            object_id: config::APP_PRINCIPAL_ID.into(),
            client_id: config::APP_CLIENT_ID.into(),
            tenant_id: config::DEFAULT_TENANT_ID.into(),
            display_name: config::APP_DISPLAY_NAME.into(),
            resource_id: Some(format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Web/sites/{}",
                config::DEFAULT_SUBSCRIPTION_ID,
                config::DEFAULT_RESOURCE_GROUP,
                config::APP_DISPLAY_NAME
            )),
            user_principal_name: None,
        },
    )?;
    let grant = Grant {
        id: "edgevault-app".into(),
        principal_id: config::APP_PRINCIPAL_ID.into(),
        scope: format!("/subscriptions/{}", config::DEFAULT_SUBSCRIPTION_ID),
        actions: config::APP_ACTIONS.iter().map(|s| s.to_string()).collect(),
        not_actions: Vec::new(),
        role_name: "edgevault operator".into(),
    };
    tx.put(GRANT, &grant.id, &grant)?;
    Ok(())
}

/// `PUT /subscriptions/{s}/resourcegroups/{rg}`: creates or updates a resource group.
pub fn put_resource_group(
    ctx: &super::ArmCtx<'_>,
    id: &super::ResourceId,
) -> Result<crate::http::Resp, super::ArmError> {
    #[derive(Deserialize)]
    struct Body {
        location: String,
        #[serde(default)]
        tags: serde_json::Map<String, serde_json::Value>,
    }
    let body: Body = ctx.body()?;
    let rg = ResourceGroup {
        subscription_id: id.subscription.clone(),
        name: id.name().to_string(),
        location: body.location,
        tags: body.tags,
    };
    let created = ctx.app.store.write(|tx| -> Result<bool, super::ArmError> {
        let key = ResourceGroup::key(&rg.subscription_id, &rg.name);
        let existed = tx.get::<ResourceGroup>(RESOURCE_GROUP, &key)?.is_some();
        tx.put(RESOURCE_GROUP, &key, &rg)?;
        ctx.record(tx, &id.to_string(), http::StatusCode::OK)?;
        Ok(!existed)
    })?;
    Ok(crate::http::Resp::json(
        if created { http::StatusCode::CREATED } else { http::StatusCode::OK },
        &super::resource_group_json(&rg),
    ))
}
