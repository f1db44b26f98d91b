//! `Microsoft.Resources`: what a client reads before it touches a resource — Subscriptions – List and Tenants – List
//! (what `az login` calls once it has a token), Providers – Get / List / Register (where `az resource` finds an
//! api-version for a resource type), and Resources – List at subscription and resource-group scope (how
//! `az keyvault list` and `az keyvault show` without `-g` find vaults).
//!
//! Sources (Azure/azure-rest-api-specs, `specification/resources/resource-manager/Microsoft.Resources/stable/2022-12-01/`):
//! - `subscriptions.json`: `Subscriptions_List` (`GET /subscriptions`), `Tenants_List` (`GET /tenants`); shapes from
//!   `examples/GetSubscriptions.json` and `examples/GetTenants.json`.
//! - `resources.json`: `Providers_List` (`GET /subscriptions/{s}/providers`), `Providers_Get`
//!   (`…/providers/{namespace}`), `Providers_Register` (`POST …/providers/{namespace}/register`), shapes from
//!   `examples/GetProvider.json` / `GetProviders.json`; `Resources_List` (`GET /subscriptions/{s}/resources`) and
//!   `Resources_ListByResourceGroup` (`…/resourceGroups/{rg}/resources`) with `$filter`, `$expand`, `$top`, whose
//!   `$filter` grammar is the one that spec's parameter describes (see [`Filter`]).
//! - Key Vault's own `Vaults_List` (`keyvault/resource-manager/Microsoft.KeyVault/stable/2024-11-01/keyvault.json`) is
//!   defined as exactly `GET /subscriptions/{s}/resources?$filter=resourceType eq 'Microsoft.KeyVault/vaults'`: it
//!   answers with generic resources, not vaults.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::authz::scope_covers;
use super::devices::{self, DEVICE, Device};
use super::tenancy::{GRANT, Grant, SUBSCRIPTION, Subscription, TENANT, Tenant};
use super::vaults::{self, VAULT, Vault};
use super::{ArmCtx, ArmError, ResourceId};
use crate::http::Resp;

/// Stored registration states, `<subscription>/<namespace>` (lower case) → [`Registration`]. A namespace without an
/// entry is in its default state (see [`PROVIDERS`]).
pub const REGISTRATION: &str = "provider-registration";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub registration_state: String,
}

/// A resource type a provider declares: its name relative to the namespace, the api-versions a client may pick
/// from (newest first, as ARM lists them), and whether it is regional.
struct ResourceType {
    name: &'static str,
    api_versions: &'static [&'static str],
    regional: bool,
    capabilities: &'static str,
}

struct Provider {
    namespace: &'static str,
    /// `RegistrationFree` namespaces (`Microsoft.Resources`, `Microsoft.Authorization`) are always registered.
    registration_free: bool,
    types: &'static [ResourceType],
}

/// The regions local-azure reports for regional resource types, by display name as ARM lists them in
/// `resourceTypes[].locations` (`examples/GetProvider.json`: `"West US"`). Resources themselves may use any location.
const REGIONS: &[&str] = &[
    "West US",
    "West US 2",
    "West US 3",
    "Central US",
    "East US",
    "East US 2",
    "North Europe",
    "West Europe",
    "UK South",
    "Southeast Asia",
    "Japan East",
    "Australia East",
];

/// Api-versions shared by several types of one namespace (the namespace's stable spec folders).
const KEYVAULT_CHILD_VERSIONS: &[&str] = &["2024-11-01", "2023-07-01", "2022-07-01", "2019-09-01"];
const KEYVAULT_HSM_VERSIONS: &[&str] = &["2024-11-01", "2023-07-01", "2022-07-01"];
const RESOURCES_VERSIONS: &[&str] = &["2024-03-01", "2022-09-01", "2021-04-01", "2020-06-01"];

const TRACKED: &str = "CrossResourceGroupResourceMove, CrossSubscriptionResourceMove, SupportsTags, SupportsLocation";

/// The namespaces local-azure serves, with the api-versions of their stable specs (each folder of
/// `specification/<service>/resource-manager/<namespace>/stable/` in azure-rest-api-specs) — only served types.
const PROVIDERS: &[Provider] = &[
    Provider {
        namespace: "Microsoft.DataBoxEdge",
        registration_free: false,
        types: &[
            ResourceType {
                name: "dataBoxEdgeDevices",
                api_versions: &[
                    "2023-12-01",
                    "2023-07-01",
                    "2023-01-01-preview",
                    "2022-03-01",
                    "2021-06-01",
                    "2021-02-01",
                    "2020-12-01",
                    "2019-08-01",
                ],
                regional: true,
                capabilities: TRACKED,
            },
            ResourceType {
                name: "operations",
                api_versions: &["2023-12-01", "2022-03-01"],
                regional: false,
                capabilities: "None",
            },
        ],
    },
    Provider {
        namespace: "Microsoft.KeyVault",
        registration_free: false,
        types: &[
            ResourceType {
                name: "vaults",
                api_versions: &[
                    "2024-11-01",
                    "2023-07-01",
                    "2023-02-01",
                    "2022-07-01",
                    "2021-10-01",
                    "2019-09-01",
                    "2018-02-14",
                ],
                regional: true,
                capabilities: TRACKED,
            },
            ResourceType {
                name: "vaults/accessPolicies",
                api_versions: KEYVAULT_CHILD_VERSIONS,
                regional: true,
                capabilities: "None",
            },
            ResourceType {
                name: "deletedVaults",
                api_versions: KEYVAULT_CHILD_VERSIONS,
                regional: false,
                capabilities: "None",
            },
            ResourceType {
                name: "locations/deletedVaults",
                api_versions: KEYVAULT_CHILD_VERSIONS,
                regional: true,
                capabilities: "None",
            },
            ResourceType {
                name: "locations/operationResults",
                api_versions: KEYVAULT_CHILD_VERSIONS,
                regional: true,
                capabilities: "None",
            },
            ResourceType {
                name: "checkNameAvailability",
                api_versions: KEYVAULT_CHILD_VERSIONS,
                regional: false,
                capabilities: "None",
            },
            ResourceType {
                name: "managedHSMs",
                api_versions: KEYVAULT_HSM_VERSIONS,
                regional: true,
                capabilities: TRACKED,
            },
            ResourceType {
                name: "deletedManagedHSMs",
                api_versions: KEYVAULT_HSM_VERSIONS,
                regional: false,
                capabilities: "None",
            },
        ],
    },
    Provider {
        namespace: "Microsoft.Storage",
        registration_free: false,
        types: &[
            ResourceType {
                name: "storageAccounts",
                api_versions: &["2024-01-01", "2023-05-01", "2023-01-01", "2022-09-01", "2021-09-01", "2021-04-01"],
                regional: true,
                capabilities: TRACKED,
            },
            ResourceType {
                name: "checkNameAvailability",
                api_versions: &["2024-01-01", "2023-05-01", "2023-01-01", "2022-09-01", "2021-09-01", "2021-04-01"],
                regional: false,
                capabilities: "None",
            },
            ResourceType {
                name: "locations/asyncoperations",
                api_versions: &["2024-01-01", "2023-05-01", "2023-01-01", "2022-09-01", "2021-09-01", "2021-04-01"],
                regional: true,
                capabilities: "None",
            },
        ],
    },
    Provider {
        namespace: "Microsoft.Insights",
        registration_free: false,
        types: &[ResourceType {
            name: "diagnosticSettings",
            api_versions: &["2021-05-01-preview", "2017-05-01-preview", "2016-09-01"],
            regional: false,
            capabilities: "SupportsExtension",
        }],
    },
    Provider {
        namespace: "Microsoft.Authorization",
        registration_free: true,
        types: &[ResourceType {
            name: "locks",
            api_versions: &["2020-05-01", "2017-04-01", "2016-09-01", "2015-01-01"],
            regional: false,
            capabilities: "SupportsExtension",
        }],
    },
    Provider {
        namespace: "Microsoft.Resources",
        registration_free: true,
        types: &[
            ResourceType {
                name: "subscriptions",
                api_versions: &["2022-12-01", "2022-09-01", "2021-01-01", "2020-01-01", "2016-06-01"],
                regional: false,
                capabilities: "None",
            },
            ResourceType {
                name: "resourceGroups",
                api_versions: RESOURCES_VERSIONS,
                regional: true,
                capabilities: "SupportsTags, SupportsLocation",
            },
            ResourceType {
                name: "subscriptions/resources",
                api_versions: RESOURCES_VERSIONS,
                regional: false,
                capabilities: "None",
            },
            ResourceType {
                name: "subscriptions/providers",
                api_versions: RESOURCES_VERSIONS,
                regional: false,
                capabilities: "None",
            },
            ResourceType {
                name: "tenants",
                api_versions: &["2022-12-01", "2022-09-01", "2021-01-01", "2020-01-01"],
                regional: false,
                capabilities: "None",
            },
        ],
    },
];

fn provider(namespace: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.namespace.eq_ignore_ascii_case(namespace))
}

fn registration_key(subscription: &str, namespace: &str) -> String {
    format!("{}/{}", subscription.to_ascii_lowercase(), namespace.to_ascii_lowercase())
}

fn registration_state(ctx: &ArmCtx<'_>, subscription: &str, p: &Provider) -> Result<String, ArmError> {
    if p.registration_free {
        return Ok("Registered".into());
    }
    let stored: Option<Registration> = ctx.app.store.get(REGISTRATION, &registration_key(subscription, p.namespace))?;
    // Every namespace local-azure serves starts registered, as the ones a subscription has used are in Azure.
    Ok(stored.map(|r| r.registration_state).unwrap_or_else(|| "Registered".into()))
}

fn provider_json(subscription: &str, p: &Provider, state: &str) -> Value {
    let types: Vec<Value> = p
        .types
        .iter()
        .map(|t| {
            json!({
                "resourceType": t.name,
                "locations": if t.regional { REGIONS.to_vec() } else { Vec::new() },
                "apiVersions": t.api_versions,
                "capabilities": t.capabilities,
            })
        })
        .collect();
    json!({
        "id": format!("/subscriptions/{subscription}/providers/{}", p.namespace),
        "namespace": p.namespace,
        "registrationState": state,
        "registrationPolicy": if p.registration_free { "RegistrationFree" } else { "RegistrationRequired" },
        "resourceTypes": types,
    })
}

/// ARM's answer for a namespace no provider has (as reported in Azure/aci-connector-k8s#13: "The resource namespace
/// 'Microsoft.Container' is invalid.").
fn unknown_namespace(namespace: &str) -> ArmError {
    ArmError::not_found("InvalidResourceNamespace", format!("The resource namespace '{namespace}' is invalid."))
}

/// `Providers_Get`.
pub fn get_provider(ctx: &ArmCtx<'_>, subscription: &str, namespace: &str) -> Result<Resp, ArmError> {
    ctx.subscription(subscription)?;
    let p = provider(namespace).ok_or_else(|| unknown_namespace(namespace))?;
    let state = registration_state(ctx, subscription, p)?;
    Ok(Resp::json(StatusCode::OK, &provider_json(subscription, p, &state)))
}

/// `Providers_List`.
pub fn list_providers(ctx: &ArmCtx<'_>, subscription: &str) -> Result<Resp, ArmError> {
    ctx.subscription(subscription)?;
    let mut items = Vec::new();
    for p in PROVIDERS {
        items.push(provider_json(subscription, p, &registration_state(ctx, subscription, p)?));
    }
    Ok(Resp::json(StatusCode::OK, &ctx.page(items)))
}

/// `Providers_Register`: registration completes at once here (Azure passes through `Registering`); the answer is the
/// provider, as the spec's `200` says.
pub fn register_provider(ctx: &ArmCtx<'_>, subscription: &str, namespace: &str) -> Result<Resp, ArmError> {
    ctx.subscription(subscription)?;
    let p = provider(namespace).ok_or_else(|| unknown_namespace(namespace))?;
    if !p.registration_free {
        ctx.app.store.write(|tx| -> Result<(), ArmError> {
            let r = Registration { registration_state: "Registered".into() };
            tx.put(REGISTRATION, &registration_key(subscription, p.namespace), &r)?;
            ctx.record(tx, &format!("/subscriptions/{subscription}/providers/{}", p.namespace), StatusCode::OK)?;
            Ok(())
        })?;
    }
    Ok(Resp::json(StatusCode::OK, &provider_json(subscription, p, "Registered")))
}

/// `Providers_Unregister` (`POST …/providers/{namespace}/unregister`): the namespace becomes `NotRegistered` (at
/// once here; Azure passes through `Unregistering`), so that a write of its resource types is refused. Refused while
/// the subscription still has resources of the namespace ("You can't unregister a resource provider when you still
/// have resource types from that resource provider in your subscription": MicrosoftDocs/azure-docs,
/// `articles/azure-resource-manager/management/resource-providers-and-types.md`).
pub fn unregister_provider(ctx: &ArmCtx<'_>, subscription: &str, namespace: &str) -> Result<Resp, ArmError> {
    ctx.subscription(subscription)?;
    let p = provider(namespace).ok_or_else(|| unknown_namespace(namespace))?;
    if p.registration_free {
        return Err(ArmError::bad_request(
            "ProviderUnregistrationNotAllowed",
            format!("The resource provider '{}' is registration-free and cannot be unregistered.", p.namespace),
        ));
    }
    let sub = ResourceId::subscription(subscription);
    let in_use = match p.namespace {
        "Microsoft.Storage" => !super::storage::all_in(ctx.app, &sub)?.is_empty(),
        "Microsoft.KeyVault" => {
            let found: Vec<Vault> = ctx.app.store.list(VAULT, "")?;
            found.iter().any(|v| v.subscription_id.eq_ignore_ascii_case(subscription))
        }
        "Microsoft.DataBoxEdge" => {
            let found: Vec<Device> = ctx.app.store.list(DEVICE, &format!("{}/", sub.key()))?;
            !found.is_empty()
        }
        _ => false,
    };
    if in_use {
        return Err(ArmError::conflict(
            "ProviderUnregistrationNotAllowed",
            format!(
                "The resource provider '{}' cannot be unregistered: the subscription '{subscription}' still has resources of it. Delete them first.",
                p.namespace
            ),
        ));
    }
    ctx.app.store.write(|tx| -> Result<(), ArmError> {
        let r = Registration { registration_state: "NotRegistered".into() };
        tx.put(REGISTRATION, &registration_key(subscription, p.namespace), &r)?;
        ctx.record(tx, &format!("/subscriptions/{subscription}/providers/{}", p.namespace), StatusCode::OK)?;
        Ok(())
    })?;
    Ok(Resp::json(StatusCode::OK, &provider_json(subscription, p, "NotRegistered")))
}

/// Refuses a write of a resource of `namespace` while it is not registered in the subscription, with ARM's
/// `409 MissingSubscriptionRegistration` ("The subscription is not registered to use namespace
/// {resource-provider-namespace}": MicrosoftDocs/azure-docs, `articles/azure-resource-manager/troubleshooting/
/// error-register-resource-provider.md`; the live message goes on with the link to how to register).
pub fn require_registered(app: &crate::App, subscription: &str, namespace: &str) -> Result<(), ArmError> {
    let Some(p) = provider(namespace).filter(|p| !p.registration_free) else { return Ok(()) };
    let stored: Option<Registration> = app.store.get(REGISTRATION, &registration_key(subscription, p.namespace))?;
    if stored.is_none_or(|r| r.registration_state.eq_ignore_ascii_case("Registered")) {
        return Ok(());
    }
    Err(ArmError::conflict(
        "MissingSubscriptionRegistration",
        format!(
            "The subscription is not registered to use namespace '{}'. See https://aka.ms/rps-not-found for how to register subscriptions.",
            p.namespace
        ),
    ))
}

/// True when `principal` holds a grant at or under `/subscriptions/{id}`: ARM lists a subscription to anyone with a
/// role assignment anywhere in it.
fn sees_subscription(grants: &[Grant], principal: &str, subscription: &str) -> bool {
    let scope = format!("/subscriptions/{subscription}");
    grants.iter().any(|g| g.principal_id.eq_ignore_ascii_case(principal) && scope_covers(&scope, &g.scope))
}

pub(crate) fn subscription_json(s: &Subscription) -> Value {
    json!({
        "id": format!("/subscriptions/{}", s.subscription_id),
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": s.subscription_id,
        "tenantId": s.tenant_id,
        "displayName": s.display_name,
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
    })
}

/// `Subscriptions_List`: the subscriptions of the token's tenant in which the caller has a grant. A managed identity
/// with no role assignment gets an empty list (and `az login --identity` then says so, unless
/// `--allow-no-subscriptions`).
pub fn list_subscriptions(ctx: &ArmCtx<'_>) -> Result<Resp, ArmError> {
    let grants: Vec<Grant> = ctx.app.store.list(GRANT, "")?;
    let subs: Vec<Subscription> = ctx.app.store.list(SUBSCRIPTION, "")?;
    let items = subs
        .iter()
        .filter(|s| s.tenant_id.eq_ignore_ascii_case(&ctx.claims.tid))
        .filter(|s| sees_subscription(&grants, &ctx.claims.oid, &s.subscription_id))
        .map(subscription_json)
        .collect();
    Ok(Resp::json(StatusCode::OK, &ctx.page(items)))
}

/// `Tenants_List`: the tenant the token was issued in (a managed identity belongs to exactly one).
pub fn list_tenants(ctx: &ArmCtx<'_>) -> Result<Resp, ArmError> {
    let tenant: Option<Tenant> = ctx.app.store.get(TENANT, &ctx.claims.tid.to_ascii_lowercase())?;
    let items: Vec<Value> = tenant
        .iter()
        .map(|t| {
            let slug: String =
                t.display_name.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
            let domain = format!("{}.onmicrosoft.com", if slug.is_empty() { "tenant".into() } else { slug });
            json!({
                "id": format!("/tenants/{}", t.tenant_id),
                "tenantId": t.tenant_id,
                "countryCode": "US",
                "displayName": t.display_name,
                "domains": [domain],
                "tenantCategory": "Home",
                "defaultDomain": domain,
                "tenantType": "AAD",
            })
        })
        .collect();
    Ok(Resp::json(StatusCode::OK, &ctx.page(items)))
}

/// One resource as `Resources_List` reports it (`GenericResourceExpanded`: no `properties`).
struct Generic {
    id: String,
    name: String,
    resource_type: String,
    resource_group: String,
    location: String,
    tags: serde_json::Map<String, Value>,
    extra: serde_json::Map<String, Value>,
    system_data: Value,
}

impl Generic {
    fn from_device(d: &Device) -> Generic {
        let mut extra = serde_json::Map::new();
        let v = d.to_json();
        for k in ["sku", "kind", "identity"] {
            if let Some(x) = v.get(k) {
                extra.insert(k.into(), x.clone());
            }
        }
        let id: Option<ResourceId> = d.id.parse().ok();
        Generic {
            id: d.id.clone(),
            name: d.name.clone(),
            resource_type: devices::TYPE.into(),
            resource_group: id.and_then(|i| i.resource_group).unwrap_or_default(),
            location: d.location.clone(),
            tags: d.tags.clone(),
            extra,
            system_data: d.system_data.clone(),
        }
    }

    fn from_account(a: &super::storage::Account) -> Generic {
        let v = a.to_json();
        let mut extra = serde_json::Map::new();
        for k in ["sku", "kind"] {
            if let Some(x) = v.get(k) {
                extra.insert(k.into(), x.clone());
            }
        }
        Generic {
            id: a.id().to_string(),
            name: a.name.clone(),
            resource_type: super::storage::TYPE.into(),
            resource_group: a.resource_group.clone(),
            location: a.location.clone(),
            tags: a.tags.clone(),
            extra,
            system_data: a.system_data.clone(),
        }
    }

    fn from_vault(v: &Vault) -> Generic {
        Generic {
            id: v.id().to_string(),
            name: v.name.clone(),
            resource_type: "Microsoft.KeyVault/vaults".into(),
            resource_group: v.resource_group.clone(),
            location: v.location.clone(),
            tags: v.tags.clone(),
            extra: serde_json::Map::new(),
            system_data: v.system_data.clone(),
        }
    }

    fn field(&self, name: &str) -> Option<String> {
        match name.to_ascii_lowercase().as_str() {
            "resourcetype" => Some(self.resource_type.clone()),
            "name" => Some(self.name.clone()),
            "location" => Some(self.location.clone()),
            "resourcegroup" => Some(self.resource_group.clone()),
            "identity/principalid" => self
                .extra
                .get("identity")
                .and_then(|i| i.get("principalId"))
                .and_then(Value::as_str)
                .map(str::to_string),
            "identity" => {
                self.extra.get("identity").and_then(|i| i.get("type")).and_then(Value::as_str).map(str::to_string)
            }
            _ => None,
        }
    }

    fn to_json(&self, expand: &[String], hide_tags: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "type": self.resource_type,
            "location": self.location,
        });
        if !hide_tags {
            v["tags"] = json!(self.tags);
        }
        for (k, x) in &self.extra {
            v[k] = x.clone();
        }
        for e in expand {
            match e.as_str() {
                "createdtime" => v["createdTime"] = self.system_data.get("createdAt").cloned().unwrap_or(Value::Null),
                "changedtime" => {
                    v["changedTime"] = self.system_data.get("lastModifiedAt").cloned().unwrap_or(Value::Null)
                }
                "provisioningstate" => v["provisioningState"] = json!("Succeeded"),
                _ => {}
            }
        }
        v
    }
}

/// `Resources_List` / `Resources_ListByResourceGroup`: devices and live vaults at the scope, in id order, through
/// `$filter`, `$expand` and `$top` with `nextLink` paging. Soft-deleted vaults are not resources.
pub fn list_resources(ctx: &ArmCtx<'_>, subscription: &str, group: Option<&str>) -> Result<Resp, ArmError> {
    ctx.subscription(subscription)?;
    if let Some(g) = group {
        ctx.resource_group(subscription, g)?;
    }
    let filter = match ctx.req.query("$filter").filter(|f| !f.trim().is_empty()) {
        // ARM's answer, word for word (as reported in Azure/azure-sdk-for-net#18748 and Azure/azure-sdk-for-go#2480);
        // why the parse failed goes to the log only, as ARM says no more.
        Some(f) => Some(Filter::parse(f).map_err(|e| {
            tracing::debug!(filter = f, reason = %e, "invalid $filter");
            ArmError::bad_request(
                "InvalidFilterInQueryString",
                format!("Invalid $filter '{f}' specified in the query string."),
            )
        })?),
        None => None,
    };
    let expand: Vec<String> = ctx
        .req
        .query("$expand")
        .map(|e| e.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let scope = match group {
        Some(g) => ResourceId::resource_group(subscription, g),
        None => ResourceId::subscription(subscription),
    };
    vaults::expire(ctx.app, ctx.now)?;
    let mut all: Vec<Generic> = Vec::new();
    let wants = |ty: &str| filter.as_ref().is_none_or(|f| f.may_match_type(ty));
    if wants(devices::TYPE) {
        let found: Vec<Device> = ctx.app.store.list(DEVICE, &format!("{}/", scope.key()))?;
        all.extend(found.iter().map(Generic::from_device));
    }
    if wants("Microsoft.KeyVault/vaults") {
        let found: Vec<Vault> = ctx.app.store.list(VAULT, "")?;
        all.extend(
            found
                .iter()
                .filter(|v| v.deleted.is_none() && scope_covers(&scope.to_string(), &v.id().to_string()))
                .map(Generic::from_vault),
        );
    }
    if wants(super::storage::TYPE) {
        all.extend(super::storage::all_in(ctx.app, &scope)?.iter().map(Generic::from_account));
    }
    let hide_tags = filter.as_ref().is_some_and(Filter::uses_tags);
    let mut items: Vec<(String, Value)> = all
        .iter()
        .filter(|g| filter.as_ref().is_none_or(|f| f.matches(g)))
        .map(|g| (g.id.to_ascii_lowercase(), g.to_json(&expand, hide_tags)))
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Resp::json(StatusCode::OK, &ctx.page(items.into_iter().map(|(_, v)| v).collect())))
}

/// Managed HSMs are not emulated: their lists (`managedHsm.json`: `ManagedHsms_ListBySubscription`,
/// `…_ListByResourceGroup`, `…_ListDeleted`) are empty, as they are in a subscription that has none.
pub fn empty_list(ctx: &ArmCtx<'_>, subscription: &str) -> Result<Resp, ArmError> {
    ctx.subscription(subscription)?;
    Ok(Resp::json(StatusCode::OK, &json!({ "value": [] })))
}

/// A parsed `$filter` of `Resources_List`. The grammar is the spec's description of the parameter: `eq` / `ne` on
/// `location`, `resourceType`, `name`, `resourceGroup`, `identity`, `identity/principalId` (plan fields never match:
/// no resource here has a plan); `substringof('v', name|resourceGroup)`; `tagName eq 'n' [and tagValue eq 'v']`;
/// joined with `and` / `or` and parentheses. Comparisons are case-insensitive, as ARM's are.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Cmp { field: String, value: String, negate: bool },
    Substring { value: String, field: String },
    Tag { name: String, value: Option<String> },
    TagValue(String),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '\'' => {
                // OData strings: '' is a quote inside one.
                let mut v = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            v.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            v.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !matches!(chars[i], '(' | ')' | ',' | '\'') {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Ident(x)) if x.eq_ignore_ascii_case(w))
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, t: Tok) -> Result<(), String> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            other => Err(format!("expected {t:?}, found {other:?}")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(s),
            other => Err(format!("expected a quoted value, found {other:?}")),
        }
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut parts = vec![self.and()?];
        while self.peek_word("or") {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Filter::Or(parts) })
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut parts = vec![self.factor()?];
        while self.peek_word("and") {
            self.pos += 1;
            parts.push(self.factor()?);
        }
        // tagName eq 'n' and tagValue eq 'v': one condition on one tag.
        if let Some(vi) = parts.iter().position(|p| matches!(p, Filter::TagValue(_)))
            && let Some(ni) = parts.iter().position(|p| matches!(p, Filter::Tag { value: None, .. }))
        {
            let Filter::TagValue(v) = parts.remove(vi) else { unreachable!() };
            let ni = if ni > vi { ni - 1 } else { ni };
            if let Filter::Tag { value, .. } = &mut parts[ni] {
                *value = Some(v);
            }
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Filter::And(parts) })
    }

    fn factor(&mut self) -> Result<Filter, String> {
        match self.next() {
            Some(Tok::LParen) => {
                let f = self.or()?;
                self.expect(Tok::RParen)?;
                Ok(f)
            }
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("substringof") => {
                self.expect(Tok::LParen)?;
                let value = self.string()?;
                self.expect(Tok::Comma)?;
                let field = match self.next() {
                    Some(Tok::Ident(f))
                        if f.eq_ignore_ascii_case("name") || f.eq_ignore_ascii_case("resourceGroup") =>
                    {
                        f
                    }
                    other => return Err(format!("substringof applies to name or resourceGroup, not {other:?}")),
                };
                self.expect(Tok::RParen)?;
                Ok(Filter::Substring { value, field })
            }
            Some(Tok::Ident(field)) => {
                let negate = match self.next() {
                    Some(Tok::Ident(op)) if op.eq_ignore_ascii_case("eq") => false,
                    Some(Tok::Ident(op)) if op.eq_ignore_ascii_case("ne") => true,
                    other => return Err(format!("expected eq or ne after {field}, found {other:?}")),
                };
                let value = self.string()?;
                let lower = field.to_ascii_lowercase();
                match lower.as_str() {
                    "tagname" | "tagvalue" if negate => Err(format!("{field} supports eq only")),
                    "tagname" => Ok(Filter::Tag { name: value, value: None }),
                    "tagvalue" => Ok(Filter::TagValue(value)),
                    "location"
                    | "resourcetype"
                    | "name"
                    | "resourcegroup"
                    | "identity"
                    | "identity/principalid"
                    | "plan"
                    | "plan/publisher"
                    | "plan/product"
                    | "plan/name"
                    | "plan/version"
                    | "plan/promotioncode" => Ok(Filter::Cmp { field: lower, value, negate }),
                    _ => Err(format!("'{field}' is not a property this filter supports")),
                }
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

impl Filter {
    pub fn parse(s: &str) -> Result<Filter, String> {
        let mut p = Parser { toks: tokenize(s)?, pos: 0 };
        let f = p.or()?;
        if p.pos != p.toks.len() {
            return Err(format!("unexpected {:?}", p.toks[p.pos]));
        }
        Ok(f)
    }

    fn matches(&self, r: &Generic) -> bool {
        match self {
            Filter::Cmp { field, value, negate } => {
                let hit = r.field(field).is_some_and(|v| v.eq_ignore_ascii_case(value));
                hit != *negate
            }
            Filter::Substring { value, field } => {
                r.field(field).is_some_and(|v| v.to_ascii_lowercase().contains(&value.to_ascii_lowercase()))
            }
            Filter::Tag { name, value } => r.tags.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case(name) && value.as_ref().is_none_or(|want| v.as_str() == Some(want.as_str()))
            }),
            Filter::TagValue(want) => r.tags.values().any(|v| v.as_str() == Some(want.as_str())),
            Filter::And(parts) => parts.iter().all(|p| p.matches(r)),
            Filter::Or(parts) => parts.iter().any(|p| p.matches(r)),
        }
    }

    /// False only when the filter cannot match a resource of type `ty` (saves reading a table).
    fn may_match_type(&self, ty: &str) -> bool {
        match self {
            Filter::Cmp { field, value, negate: false } if field == "resourcetype" => value.eq_ignore_ascii_case(ty),
            Filter::And(parts) => parts.iter().all(|p| p.may_match_type(ty)),
            Filter::Or(parts) => parts.iter().any(|p| p.may_match_type(ty)),
            _ => true,
        }
    }

    /// "When you filter by a tag name and value, the tags for each resource are not returned in the results."
    fn uses_tags(&self) -> bool {
        match self {
            Filter::Tag { .. } | Filter::TagValue(_) => true,
            Filter::And(p) | Filter::Or(p) => p.iter().any(Filter::uses_tags),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(name: &str, ty: &str, tags: Value) -> Generic {
        Generic {
            id: format!("/subscriptions/s/resourceGroups/rg/providers/{ty}/{name}"),
            name: name.into(),
            resource_type: ty.into(),
            resource_group: "RG".into(),
            location: "westus2".into(),
            tags: tags.as_object().cloned().unwrap_or_default(),
            extra: serde_json::Map::new(),
            system_data: json!({}),
        }
    }

    #[test]
    fn filters_from_the_spec_description() {
        let vault = generic("demo-vault", "Microsoft.KeyVault/vaults", json!({ "owner": "dev1", "env": "test" }));
        let device = generic("dev1", "Microsoft.DataBoxEdge/dataBoxEdgeDevices", json!({}));
        let f = |s: &str| Filter::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let kv = f("resourceType eq 'Microsoft.KeyVault/vaults'");
        assert!(kv.matches(&vault) && !kv.matches(&device));
        assert!(!kv.may_match_type(devices::TYPE));
        assert!(f("resourcetype EQ 'microsoft.keyvault/VAULTS'").matches(&vault));
        assert!(f("substringof('demo', name)").matches(&vault));
        assert!(!f("substringof('demo', name)").matches(&device));
        assert!(f("substringof('demo', name) or substringof('dev', name)").matches(&device));
        assert!(f("tagName eq 'owner' and tagValue eq 'dev1'").matches(&vault));
        assert!(!f("tagName eq 'owner' and tagValue eq 'dev2'").matches(&vault));
        assert!(f("tagName eq 'env'").matches(&vault) && !f("tagName eq 'env'").matches(&device));
        assert!(f("tagName eq 'env'").uses_tags());
        assert!(f("resourceGroup eq 'rg' and location ne 'eastus'").matches(&device));
        assert!(
            f("(name eq 'dev1' or name eq 'x') and resourceType eq 'Microsoft.DataBoxEdge/dataBoxEdgeDevices'")
                .matches(&device)
        );
        assert!(f("name eq 'it''s'").matches(&generic("it's", "a/b", json!({}))));
        for bad in [
            "name",
            "name eq",
            "name gt 'x'",
            "color eq 'red'",
            "substringof('x', location)",
            "(name eq 'x'",
            "name eq 'x' 'y'",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_provider_lists_api_versions_newest_first() {
        for p in PROVIDERS {
            for t in p.types {
                let stable: Vec<&&str> = t.api_versions.iter().filter(|v| !v.contains("preview")).collect();
                assert!(stable.windows(2).all(|w| w[0] > w[1]), "{}/{}", p.namespace, t.name);
            }
        }
    }
}
