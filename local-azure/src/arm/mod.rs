//! Azure Resource Manager at `https://management.azure.com`.
//!
//! - [`resource_id`]: typed resource ids.
//! - [`tenancy`]: tenants, subscriptions, resource groups, grants (seeded defaults).
//! - [`authz`]: grant checks (`403 AuthorizationFailed`).
//! - [`activity`]: the durable activity log every mutation appends to.
//! - [`devices`], [`vaults`], [`locks`]: the resource providers edgevault uses.
//! - [`moves`]: Resources – Move Resources (a vault to another resource group or subscription).
//! - [`storage`], [`diagnostics`]: audit logging's storage accounts and a vault's diagnostic settings.
//! - [`resources`]: `Microsoft.Resources` reads clients make first (subscriptions, tenants, providers, resource lists).
//!
//! A request is routed ([`Route`]), named (`Microsoft.KeyVault/vaults/write`), authenticated
//! (bearer token for `https://management.azure.com/`), authorised and then handled. Any
//! api-version is accepted, paths are case-insensitive and `//` is tolerated.

pub mod activity;
pub mod authz;
pub mod devices;
pub mod diagnostics;
pub mod error;
pub mod locks;
pub mod moves;
pub mod resource_id;
pub mod resources;
pub mod storage;
pub mod tenancy;
pub mod vaults;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::App;
use crate::http::{Req, Resp};
use crate::token::{Claims, TokenError};
pub use error::ArmError;
pub use resource_id::ResourceId;
use tenancy::{ResourceGroup, Subscription};

pub const AUDIENCES: &[&str] = &["https://management.azure.com/", "https://management.core.windows.net/"];

/// What an ARM path addresses.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    SubscriptionList,
    TenantList,
    Subscription(String),
    ProviderList(String),
    Provider {
        subscription: String,
        namespace: String,
    },
    ProviderRegister {
        subscription: String,
        namespace: String,
    },
    ProviderUnregister {
        subscription: String,
        namespace: String,
    },
    ResourceList {
        subscription: String,
        group: Option<String>,
    },
    /// Managed HSM lists (active, deleted): served empty.
    ManagedHsmList {
        subscription: String,
        deleted: bool,
    },
    ResourceGroup(ResourceId),
    /// `…/resourceGroups/{g}/moveResources`: the source group.
    MoveResources(ResourceId),
    Device(ResourceId),
    DeviceAction(ResourceId, String),
    DeviceList {
        subscription: String,
        group: Option<String>,
    },
    CheckVaultName(String),
    Vault(ResourceId),
    VaultAccessPolicies(ResourceId, String),
    VaultList {
        subscription: String,
        group: Option<String>,
    },
    DeletedVaultList(String),
    DeletedVault {
        subscription: String,
        location: String,
        name: String,
    },
    PurgeDeletedVault {
        subscription: String,
        location: String,
        name: String,
    },
    OperationResult {
        subscription: String,
        location: String,
        id: String,
    },
    Lock {
        scope: String,
        name: String,
    },
    LockList {
        scope: String,
    },
    /// `{scope}/providers/Microsoft.Authorization/permissions`: what the caller may do there.
    Permissions {
        scope: String,
    },
    StorageAccount(ResourceId),
    StorageAccountList {
        subscription: String,
        group: Option<String>,
    },
    CheckStorageName(String),
    StorageOperation {
        subscription: String,
        id: String,
    },
    DiagnosticSetting {
        scope: String,
        name: String,
    },
    DiagnosticSettingList {
        scope: String,
    },
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Routes a path given as segments.
pub fn route(segments: &[String]) -> Option<Route> {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    // Locks first: they hang off any scope, including resources with their own `providers`.
    if let Some(pos) = (0..s.len()).rev().find(|&i| {
        eq(s[i], "providers")
            && s.get(i + 1).is_some_and(|n| eq(n, "Microsoft.Authorization"))
            && s.get(i + 2).is_some_and(|n| eq(n, "locks"))
    }) {
        let scope = format!("/{}", s[..pos].join("/"));
        let scope = scope.parse::<ResourceId>().map(|id| id.to_string()).ok()?;
        return match &s[pos + 3..] {
            [] => Some(Route::LockList { scope }),
            [name] => Some(Route::Lock { scope, name: name.to_string() }),
            _ => None,
        };
    }
    // Diagnostic settings, like locks, hang off a resource's id.
    if let Some(pos) = (0..s.len()).rev().find(|&i| {
        eq(s[i], "providers")
            && s.get(i + 1).is_some_and(|n| eq(n, "Microsoft.Insights"))
            && s.get(i + 2).is_some_and(|n| eq(n, "diagnosticSettings"))
    }) && pos > 0
    {
        let scope = format!("/{}", s[..pos].join("/")).parse::<ResourceId>().map(|id| id.to_string()).ok()?;
        return match &s[pos + 3..] {
            [] => Some(Route::DiagnosticSettingList { scope }),
            [name] => Some(Route::DiagnosticSetting { scope, name: name.to_string() }),
            _ => None,
        };
    }
    if let [scope @ .., providers, namespace, permissions] = s.as_slice()
        && eq(providers, "providers")
        && eq(namespace, "Microsoft.Authorization")
        && eq(permissions, "permissions")
    {
        let scope = format!("/{}", scope.join("/")).parse::<ResourceId>().map(|id| id.to_string()).ok()?;
        return Some(Route::Permissions { scope });
    }
    match s.as_slice() {
        [one] if eq(one, "subscriptions") => return Some(Route::SubscriptionList),
        [one] if eq(one, "tenants") => return Some(Route::TenantList),
        _ => {}
    }
    if s.len() < 2 || !eq(s[0], "subscriptions") {
        return None;
    }
    let sub = s[1].to_string();
    let rest = &s[2..];
    let lower: Vec<String> = rest.iter().map(|x| x.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    match l.as_slice() {
        [] => Some(Route::Subscription(sub)),
        ["providers"] => Some(Route::ProviderList(sub)),
        ["providers", _] => Some(Route::Provider { subscription: sub, namespace: rest[1].to_string() }),
        ["providers", _, "register"] => {
            Some(Route::ProviderRegister { subscription: sub, namespace: rest[1].to_string() })
        }
        ["providers", _, "unregister"] => {
            Some(Route::ProviderUnregister { subscription: sub, namespace: rest[1].to_string() })
        }
        ["providers", "microsoft.storage", "checknameavailability"] => Some(Route::CheckStorageName(sub)),
        ["providers", "microsoft.storage", "storageaccounts"] => {
            Some(Route::StorageAccountList { subscription: sub, group: None })
        }
        ["resourcegroups", _, "providers", "microsoft.storage", "storageaccounts"] => {
            Some(Route::StorageAccountList { subscription: sub, group: Some(rest[1].to_string()) })
        }
        ["resourcegroups", _, "providers", "microsoft.storage", "storageaccounts", _] => Some(Route::StorageAccount(
            ResourceId::resource(&sub, rest[1], "Microsoft.Storage", "storageAccounts", rest[5]),
        )),
        ["providers", "microsoft.storage", "locations", _, "asyncoperations", _] => {
            Some(Route::StorageOperation { subscription: sub, id: rest[5].to_string() })
        }
        ["resources"] => Some(Route::ResourceList { subscription: sub, group: None }),
        ["resourcegroups", _, "resources"] => {
            Some(Route::ResourceList { subscription: sub, group: Some(rest[1].to_string()) })
        }
        ["providers", "microsoft.keyvault", "managedhsms"]
        | ["resourcegroups", _, "providers", "microsoft.keyvault", "managedhsms"] => {
            Some(Route::ManagedHsmList { subscription: sub, deleted: false })
        }
        ["providers", "microsoft.keyvault", "deletedmanagedhsms"] => {
            Some(Route::ManagedHsmList { subscription: sub, deleted: true })
        }
        ["resourcegroups", _] => Some(Route::ResourceGroup(ResourceId::resource_group(&sub, rest[1]))),
        ["resourcegroups", _, "moveresources"] => Some(Route::MoveResources(ResourceId::resource_group(&sub, rest[1]))),
        ["providers", "microsoft.databoxedge", "databoxedgedevices"] => {
            Some(Route::DeviceList { subscription: sub, group: None })
        }
        ["resourcegroups", _, "providers", "microsoft.databoxedge", "databoxedgedevices"] => {
            Some(Route::DeviceList { subscription: sub, group: Some(rest[1].to_string()) })
        }
        ["resourcegroups", _, "providers", "microsoft.databoxedge", "databoxedgedevices", _] => Some(Route::Device(
            ResourceId::resource(&sub, rest[1], "Microsoft.DataBoxEdge", "dataBoxEdgeDevices", rest[5]),
        )),
        ["resourcegroups", _, "providers", "microsoft.databoxedge", "databoxedgedevices", _, action]
            if *action == "getextendedinformation" || *action == "updateextendedinformation" =>
        {
            let canonical = if *action == "getextendedinformation" {
                "getExtendedInformation"
            } else {
                "updateExtendedInformation"
            };
            Some(Route::DeviceAction(
                ResourceId::resource(&sub, rest[1], "Microsoft.DataBoxEdge", "dataBoxEdgeDevices", rest[5]),
                canonical.to_string(),
            ))
        }
        ["providers", "microsoft.keyvault", "checknameavailability"] => Some(Route::CheckVaultName(sub)),
        ["providers", "microsoft.keyvault", "vaults"] => Some(Route::VaultList { subscription: sub, group: None }),
        ["resourcegroups", _, "providers", "microsoft.keyvault", "vaults"] => {
            Some(Route::VaultList { subscription: sub, group: Some(rest[1].to_string()) })
        }
        ["resourcegroups", _, "providers", "microsoft.keyvault", "vaults", _] => {
            Some(Route::Vault(ResourceId::resource(&sub, rest[1], "Microsoft.KeyVault", "vaults", rest[5])))
        }
        ["resourcegroups", _, "providers", "microsoft.keyvault", "vaults", _, "accesspolicies", kind] => {
            Some(Route::VaultAccessPolicies(
                ResourceId::resource(&sub, rest[1], "Microsoft.KeyVault", "vaults", rest[5]),
                kind.to_string(),
            ))
        }
        ["providers", "microsoft.keyvault", "deletedvaults"] => Some(Route::DeletedVaultList(sub)),
        ["providers", "microsoft.keyvault", "locations", _, "deletedvaults", _] => {
            Some(Route::DeletedVault { subscription: sub, location: rest[3].to_string(), name: rest[5].to_string() })
        }
        ["providers", "microsoft.keyvault", "locations", _, "deletedvaults", _, "purge"] => {
            Some(Route::PurgeDeletedVault {
                subscription: sub,
                location: rest[3].to_string(),
                name: rest[5].to_string(),
            })
        }
        ["providers", "microsoft.keyvault", "locations", _, "operationresults", _] => {
            Some(Route::OperationResult { subscription: sub, location: rest[3].to_string(), id: rest[5].to_string() })
        }
        _ => None,
    }
}

/// The ARM operation (action) a request performs, the scope it is checked at, and whether
/// it only reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub name: String,
    pub scope: String,
    pub is_read: bool,
}

fn crud(resource_type: &str, method: &Method) -> (String, bool) {
    match *method {
        Method::GET | Method::HEAD => (format!("{resource_type}/read"), true),
        Method::DELETE => (format!("{resource_type}/delete"), false),
        _ => (format!("{resource_type}/write"), false),
    }
}

pub fn operation(route: &Route, method: &Method) -> Operation {
    let op = |name: String, scope: String, is_read: bool| Operation { name, scope, is_read };
    match route {
        Route::SubscriptionList => op("Microsoft.Resources/subscriptions/read".into(), "/".into(), true),
        Route::TenantList => op("Microsoft.Resources/tenants/read".into(), "/".into(), true),
        Route::Subscription(s) => {
            op("Microsoft.Resources/subscriptions/read".into(), format!("/subscriptions/{s}"), true)
        }
        Route::ProviderList(s) | Route::Provider { subscription: s, .. } => {
            op("Microsoft.Resources/subscriptions/providers/read".into(), format!("/subscriptions/{s}"), true)
        }
        Route::ProviderRegister { subscription, namespace } => {
            op(format!("{namespace}/register/action"), format!("/subscriptions/{subscription}"), false)
        }
        Route::ProviderUnregister { subscription, namespace } => {
            op(format!("{namespace}/unregister/action"), format!("/subscriptions/{subscription}"), false)
        }
        Route::StorageAccount(id) => {
            let (name, r) = crud(storage::TYPE, method);
            op(name, id.to_string(), r)
        }
        Route::StorageAccountList { subscription, group } => {
            let scope = match group {
                Some(g) => ResourceId::resource_group(subscription, g).to_string(),
                None => ResourceId::subscription(subscription).to_string(),
            };
            op(format!("{}/read", storage::TYPE), scope, true)
        }
        Route::CheckStorageName(s) => {
            op("Microsoft.Storage/checknameavailability/read".into(), format!("/subscriptions/{s}"), true)
        }
        Route::StorageOperation { subscription, .. } => op(
            "Microsoft.Storage/locations/asyncoperations/read".into(),
            format!("/subscriptions/{subscription}"),
            true,
        ),
        Route::DiagnosticSetting { scope, .. } => {
            let (name, r) = crud("Microsoft.Insights/diagnosticSettings", method);
            op(name, scope.clone(), r)
        }
        Route::DiagnosticSettingList { scope } => {
            op("Microsoft.Insights/diagnosticSettings/read".into(), scope.clone(), true)
        }
        Route::ResourceList { subscription, group: None } => op(
            "Microsoft.Resources/subscriptions/resources/read".into(),
            format!("/subscriptions/{subscription}"),
            true,
        ),
        Route::ResourceList { subscription, group: Some(g) } => op(
            "Microsoft.Resources/subscriptions/resourceGroups/resources/read".into(),
            ResourceId::resource_group(subscription, g).to_string(),
            true,
        ),
        Route::ManagedHsmList { subscription, deleted } => op(
            if *deleted { "Microsoft.KeyVault/deletedManagedHSMs/read" } else { "Microsoft.KeyVault/managedHSMs/read" }
                .into(),
            format!("/subscriptions/{subscription}"),
            true,
        ),
        Route::ResourceGroup(id) => {
            let (name, r) = crud("Microsoft.Resources/subscriptions/resourceGroups", method);
            op(name, id.to_string(), r)
        }
        Route::MoveResources(id) => {
            op("Microsoft.Resources/subscriptions/resourceGroups/moveResources/action".into(), id.to_string(), false)
        }
        Route::Device(id) | Route::Vault(id) => {
            let (name, r) = crud(&id.resource_type(), method);
            op(name, id.to_string(), r)
        }
        Route::DeviceAction(id, action) => {
            op(format!("Microsoft.DataBoxEdge/dataBoxEdgeDevices/{action}/action"), id.to_string(), false)
        }
        Route::DeviceList { subscription, group } | Route::VaultList { subscription, group } => {
            let ty = if matches!(route, Route::DeviceList { .. }) {
                "Microsoft.DataBoxEdge/dataBoxEdgeDevices"
            } else {
                "Microsoft.KeyVault/vaults"
            };
            let scope = match group {
                Some(g) => ResourceId::resource_group(subscription, g).to_string(),
                None => ResourceId::subscription(subscription).to_string(),
            };
            op(format!("{ty}/read"), scope, true)
        }
        Route::CheckVaultName(s) => {
            op("Microsoft.KeyVault/checkNameAvailability/action".into(), format!("/subscriptions/{s}"), true)
        }
        Route::VaultAccessPolicies(id, _) => {
            op("Microsoft.KeyVault/vaults/accessPolicies/write".into(), id.to_string(), false)
        }
        Route::DeletedVaultList(s) => {
            op("Microsoft.KeyVault/deletedVaults/read".into(), format!("/subscriptions/{s}"), true)
        }
        Route::DeletedVault { subscription, .. } => {
            op("Microsoft.KeyVault/locations/deletedVaults/read".into(), format!("/subscriptions/{subscription}"), true)
        }
        Route::PurgeDeletedVault { subscription, .. } => op(
            "Microsoft.KeyVault/locations/deletedVaults/purge/action".into(),
            format!("/subscriptions/{subscription}"),
            false,
        ),
        Route::OperationResult { subscription, .. } => op(
            "Microsoft.KeyVault/locations/operationResults/read".into(),
            format!("/subscriptions/{subscription}"),
            true,
        ),
        Route::Lock { scope, .. } => {
            let (name, r) = crud("Microsoft.Authorization/locks", method);
            op(name, scope.clone(), r)
        }
        Route::LockList { scope } => op("Microsoft.Authorization/locks/read".into(), scope.clone(), true),
        Route::Permissions { scope } => op("Microsoft.Authorization/permissions/read".into(), scope.clone(), true),
    }
}

/// The operation name for fault matching, without authenticating.
pub fn operation_name(req: &Req) -> String {
    match route(&req.segments) {
        Some(r) => operation(&r, &req.method).name,
        None => format!("{} {}", req.method, req.path()),
    }
}

/// A long-running operation's first answer: `202 Accepted` with the URL to poll in `Location` and a
/// `Retry-After` of a second (ARM's asynchronous operations pattern, as the vault purge and the storage account
/// create specs describe it).
pub fn accepted(location: String) -> Resp {
    Resp::empty(StatusCode::ACCEPTED).with_header("location", location).with_header("retry-after", "1")
}

/// A long-running operation's record, kept under `kind` by the request that started it; `404 OperationNotFound`
/// for an id no request made.
pub fn operation_record<T: serde::de::DeserializeOwned>(ctx: &ArmCtx<'_>, kind: &str, id: &str) -> Result<T, ArmError> {
    ctx.app
        .store
        .get(kind, id)?
        .ok_or_else(|| ArmError::not_found("OperationNotFound", format!("The operation '{id}' was not found.")))
}

/// Per-request context handed to resource handlers.
pub struct ArmCtx<'a> {
    pub app: &'a App,
    pub req: &'a Req,
    pub claims: Claims,
    pub correlation_id: String,
    pub now: OffsetDateTime,
    pub operation: Operation,
}

impl ArmCtx<'_> {
    pub fn body<T: serde::de::DeserializeOwned>(&self) -> Result<T, ArmError> {
        self.req.json().map_err(ArmError::invalid_body)
    }

    /// The principal, for `systemData`.
    pub fn caller(&self) -> &str {
        &self.claims.oid
    }

    /// Appends the activity entry for this request's mutation to `tx`.
    pub fn record(
        &self,
        tx: &mut crate::store::Tx<'_>,
        resource_id: &str,
        status: StatusCode,
    ) -> Result<u64, ArmError> {
        Ok(activity::append(tx, self, resource_id, status, "Succeeded")?)
    }

    pub fn page_size(&self) -> usize {
        self.req.query("$top").and_then(|t| t.parse().ok()).filter(|n: &usize| *n > 0).unwrap_or(100)
    }

    /// One page of `items` and the `nextLink` for the rest, continuing with `$skiptoken`.
    pub fn page(&self, items: Vec<Value>) -> Value {
        let skip: usize = self.req.query("$skiptoken").and_then(|t| t.parse().ok()).unwrap_or(0);
        let top = self.page_size();
        let total = items.len();
        let page: Vec<Value> = items.into_iter().skip(skip).take(top).collect();
        let mut out = json!({ "value": page });
        if skip + top < total {
            out["nextLink"] = json!(self.next_link(&(skip + top).to_string()));
        }
        out
    }

    /// A page read by key (see [`crate::store::Store::page`]): `next` is the last key served when more follow, and
    /// becomes the `$skiptoken` of the `nextLink`. Clients treat the token as opaque, as ARM's are.
    pub fn page_after(&self, items: Vec<Value>, next: Option<&str>) -> Value {
        let mut out = json!({ "value": items });
        if let Some(next) = next {
            out["nextLink"] = json!(self.next_link(next));
        }
        out
    }

    /// This request's URL continued at `skiptoken`: the same `api-version`, `$top` and every other parameter
    /// (`$filter`, `$expand`), so the next page answers the same question.
    fn next_link(&self, skiptoken: &str) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("api-version", self.req.query("api-version").unwrap_or_default());
        for (k, v) in &self.req.query {
            if !matches!(k.as_str(), "api-version" | "$top" | "$skiptoken") {
                query.append_pair(k, v);
            }
        }
        query.append_pair("$top", &self.page_size().to_string()).append_pair("$skiptoken", skiptoken);
        format!("https://management.azure.com{}?{}", self.req.path(), query.finish())
    }

    pub fn subscription(&self, id: &str) -> Result<Subscription, ArmError> {
        self.app.store.get(tenancy::SUBSCRIPTION, &id.to_ascii_lowercase())?.ok_or_else(|| subscription_not_found(id))
    }

    pub fn resource_group(&self, subscription: &str, name: &str) -> Result<ResourceGroup, ArmError> {
        self.app.store.get(tenancy::RESOURCE_GROUP, &ResourceGroup::key(subscription, name))?.ok_or_else(|| {
            ArmError::not_found("ResourceGroupNotFound", format!("Resource group '{name}' could not be found."))
        })
    }

    pub fn system_data(&self, created: Option<&Value>) -> Value {
        system_data(self.now, self.caller(), created)
    }
}

/// `systemData` for a write by `caller` at `now`, keeping the creation fields of `created`.
pub fn system_data(now: OffsetDateTime, caller: &str, created: Option<&Value>) -> Value {
    let now = crate::clock::arm_time(now);
    let mut sd = json!({
        "createdBy": caller,
        "createdByType": "Application",
        "createdAt": now,
        "lastModifiedBy": caller,
        "lastModifiedByType": "Application",
        "lastModifiedAt": now,
    });
    if let Some(prev) = created {
        for k in ["createdBy", "createdByType", "createdAt"] {
            if let Some(v) = prev.get(k) {
                sd[k] = v.clone();
            }
        }
    }
    sd
}

fn subscription_not_found(id: &str) -> ArmError {
    ArmError::not_found("SubscriptionNotFound", format!("The subscription '{id}' could not be found."))
}

fn authenticate(app: &App, req: &Req) -> Result<Claims, ArmError> {
    let challenge = |desc: &str| {
        format!(
            "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\", error_description=\"{desc}\""
        )
    };
    let Some(token) = req.bearer() else {
        return Err(ArmError::new(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        )
        .with_header(
            "www-authenticate",
            challenge("The authentication failed because of missing 'Authorization' header."),
        ));
    };
    let now = OffsetDateTime::now_utc();
    app.tokens
        .verify(token, now.unix_timestamp(), AUDIENCES)
        .map_err(|e| {
            let (code, message) = match &e {
                TokenError::Expired(exp) => (
                    "ExpiredAuthenticationToken",
                    format!(
                        "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                        OffsetDateTime::from_unix_timestamp(*exp)
                            .map(crate::clock::arm_time_seconds)
                            .unwrap_or_default(),
                        crate::clock::arm_time_seconds(now)
                    ),
                ),
                TokenError::WrongAudience(aud) => (
                    "InvalidAuthenticationTokenAudience",
                    format!(
                        "The access token has been obtained for wrong audience or resource '{aud}'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'."
                    ),
                ),
                _ => (
                    "InvalidAuthenticationToken",
                    "The access token is invalid.".to_string(),
                ),
            };
            ArmError::new(StatusCode::UNAUTHORIZED, code, message)
                .with_header("www-authenticate", challenge(&e.to_string()))
        })
}

fn subscription_of(route: &Route) -> Option<String> {
    match route {
        Route::SubscriptionList | Route::TenantList => None,
        Route::Lock { scope, .. }
        | Route::LockList { scope }
        | Route::Permissions { scope }
        | Route::DiagnosticSetting { scope, .. }
        | Route::DiagnosticSettingList { scope } => scope.parse::<ResourceId>().ok().map(|id| id.subscription),
        Route::Subscription(s)
        | Route::ProviderList(s)
        | Route::Provider { subscription: s, .. }
        | Route::ProviderRegister { subscription: s, .. }
        | Route::ProviderUnregister { subscription: s, .. }
        | Route::StorageAccountList { subscription: s, .. }
        | Route::CheckStorageName(s)
        | Route::StorageOperation { subscription: s, .. }
        | Route::ResourceList { subscription: s, .. }
        | Route::ManagedHsmList { subscription: s, .. }
        | Route::CheckVaultName(s)
        | Route::DeletedVaultList(s)
        | Route::DeviceList { subscription: s, .. }
        | Route::VaultList { subscription: s, .. }
        | Route::DeletedVault { subscription: s, .. }
        | Route::PurgeDeletedVault { subscription: s, .. }
        | Route::OperationResult { subscription: s, .. } => Some(s.clone()),
        Route::ResourceGroup(id)
        | Route::MoveResources(id)
        | Route::Device(id)
        | Route::DeviceAction(id, _)
        | Route::Vault(id)
        | Route::StorageAccount(id)
        | Route::VaultAccessPolicies(id, _) => Some(id.subscription.clone()),
    }
}

/// Handles one ARM request.
pub fn handle(app: &App, req: &Req) -> Resp {
    let correlation_id = req
        .header("x-ms-correlation-request-id")
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let request_id = uuid::Uuid::new_v4().to_string();
    let resp = match handle_inner(app, req, &correlation_id) {
        Ok(resp) => resp,
        Err(e) => {
            tracing::info!(status = %e.status(), code = %e.code(), path = %req.path(), "ARM request failed");
            e.to_resp()
        }
    };
    resp.with_header("x-ms-correlation-request-id", &correlation_id).with_header("x-ms-request-id", &request_id)
}

fn handle_inner(app: &App, req: &Req, correlation_id: &str) -> Result<Resp, ArmError> {
    let Some(route) = route(&req.segments) else {
        return Err(ArmError::not_found(
            "InvalidResourceType",
            format!("The resource type or path '{}' is not served by local-azure's ARM.", req.path()),
        ));
    };
    if req.query("api-version").is_none_or(str::is_empty) {
        return Err(ArmError::bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    }
    let claims = authenticate(app, req)?;
    let operation = operation(&route, &req.method);
    if let Some(sub) = subscription_of(&route) {
        let found: Option<Subscription> = app.store.get(tenancy::SUBSCRIPTION, &sub.to_ascii_lowercase())?;
        let found = found.ok_or_else(|| subscription_not_found(&sub))?;
        if !found.tenant_id.eq_ignore_ascii_case(&claims.tid) {
            return Err(ArmError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationTokenTenant",
                format!(
                    "The access token is from the wrong issuer 'https://sts.windows.net/{}/'. It must match the tenant 'https://sts.windows.net/{}/' associated with this subscription.",
                    claims.tid, found.tenant_id
                ),
            ));
        }
    }
    // The tenant-level lists answer with what the caller may see instead of refusing; the permissions API answers
    // every caller about itself.
    if !matches!(route, Route::SubscriptionList | Route::TenantList | Route::Permissions { .. }) {
        authz::authorize(app, &claims.oid, &operation.name, &operation.scope, operation.is_read)?;
    }
    if let Some((subscription, namespace)) = registration_needed(&route, &req.method) {
        resources::require_registered(app, &subscription, namespace)?;
    }
    let ctx = ArmCtx { app, req, claims, correlation_id: correlation_id.to_string(), now: app.clock.now(), operation };
    let result = dispatch(&ctx, &route);
    match &result {
        Ok(resp) => tracing::info!(
            operation = %ctx.operation.name,
            scope = %ctx.operation.scope,
            principal = %ctx.claims.oid,
            status = resp.status.as_u16(),
            "ARM request"
        ),
        Err(e) if !ctx.operation.is_read => {
            // Failed mutations are recorded too (status Failed), outside the rolled-back write.
            let _ = app.store.write(|tx| activity::append(tx, &ctx, &ctx.operation.scope, e.status(), "Failed"));
        }
        Err(_) => {}
    }
    result
}

/// The subscription and provider namespace a request writes a resource of: ARM refuses such a write while the
/// namespace is not registered in the subscription (`409 MissingSubscriptionRegistration`).
fn registration_needed(route: &Route, method: &Method) -> Option<(String, &'static str)> {
    if !matches!(*method, Method::PUT | Method::PATCH) {
        return None;
    }
    match route {
        Route::Device(id) => Some((id.subscription.clone(), "Microsoft.DataBoxEdge")),
        Route::Vault(id) | Route::VaultAccessPolicies(id, _) => Some((id.subscription.clone(), "Microsoft.KeyVault")),
        Route::StorageAccount(id) => Some((id.subscription.clone(), "Microsoft.Storage")),
        Route::DiagnosticSetting { scope, .. } => {
            scope.parse::<ResourceId>().ok().map(|id| (id.subscription, "Microsoft.Insights"))
        }
        _ => None,
    }
}

fn dispatch(ctx: &ArmCtx<'_>, route: &Route) -> Result<Resp, ArmError> {
    let m = &ctx.req.method;
    let not_allowed = || {
        ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The HTTP method '{m}' is not supported at '{}'.", ctx.req.path()),
        )
    };
    match (route, m.clone()) {
        (Route::SubscriptionList, Method::GET) => resources::list_subscriptions(ctx),
        (Route::TenantList, Method::GET) => resources::list_tenants(ctx),
        (Route::ProviderList(s), Method::GET) => resources::list_providers(ctx, s),
        (Route::Provider { subscription, namespace }, Method::GET) => {
            resources::get_provider(ctx, subscription, namespace)
        }
        (Route::ProviderRegister { subscription, namespace }, Method::POST) => {
            resources::register_provider(ctx, subscription, namespace)
        }
        (Route::ProviderUnregister { subscription, namespace }, Method::POST) => {
            resources::unregister_provider(ctx, subscription, namespace)
        }
        (Route::CheckStorageName(_), Method::POST) => storage::check_name(ctx),
        (Route::StorageAccount(id), Method::GET) => storage::get(ctx, id),
        (Route::StorageAccount(id), Method::PUT) => storage::put(ctx, id),
        (Route::StorageAccount(id), Method::DELETE) => storage::delete(ctx, id),
        (Route::StorageAccountList { subscription, group }, Method::GET) => {
            storage::list(ctx, subscription, group.as_deref())
        }
        (Route::StorageOperation { id, .. }, Method::GET) => storage::operation(ctx, id),
        (Route::DiagnosticSetting { scope, name }, Method::GET) => diagnostics::get(ctx, scope, name),
        (Route::DiagnosticSetting { scope, name }, Method::PUT) => diagnostics::put(ctx, scope, name),
        (Route::DiagnosticSetting { scope, name }, Method::DELETE) => diagnostics::delete(ctx, scope, name),
        (Route::DiagnosticSettingList { scope }, Method::GET) => diagnostics::list(ctx, scope),
        (Route::ResourceList { subscription, group }, Method::GET) => {
            resources::list_resources(ctx, subscription, group.as_deref())
        }
        (Route::ManagedHsmList { subscription, .. }, Method::GET) => resources::empty_list(ctx, subscription),
        (Route::Subscription(s), Method::GET) => {
            Ok(Resp::json(StatusCode::OK, &resources::subscription_json(&ctx.subscription(s)?)))
        }
        (Route::ResourceGroup(id), Method::GET) => {
            let rg = ctx.resource_group(&id.subscription, id.name())?;
            Ok(Resp::json(StatusCode::OK, &resource_group_json(&rg)))
        }
        // `az group exists` and the SDKs' check_existence: 204 or 404, no body.
        (Route::ResourceGroup(id), Method::HEAD) => match ctx.resource_group(&id.subscription, id.name()) {
            Ok(_) => Ok(Resp::empty(StatusCode::NO_CONTENT)),
            Err(_) => Ok(Resp::empty(StatusCode::NOT_FOUND)),
        },
        (Route::ResourceGroup(id), Method::PUT) => tenancy::put_resource_group(ctx, id),
        (Route::MoveResources(id), Method::POST) => moves::move_resources(ctx, id),
        (Route::Device(id), Method::GET) => devices::get(ctx, id),
        (Route::Device(id), Method::PUT) => devices::put(ctx, id),
        (Route::Device(id), Method::PATCH) => devices::patch(ctx, id),
        (Route::Device(id), Method::DELETE) => devices::delete(ctx, id),
        (Route::DeviceAction(id, action), Method::POST) => devices::action(ctx, id, action),
        (Route::DeviceList { subscription, group }, Method::GET) => devices::list(ctx, subscription, group.as_deref()),
        (Route::CheckVaultName(_), Method::POST) => vaults::check_name(ctx),
        (Route::Vault(id), Method::GET) => vaults::get(ctx, id),
        (Route::Vault(id), Method::PUT) => vaults::put(ctx, id),
        (Route::Vault(id), Method::PATCH) => vaults::patch(ctx, id),
        (Route::Vault(id), Method::DELETE) => vaults::delete(ctx, id),
        (Route::VaultAccessPolicies(id, kind), Method::PUT) => vaults::update_access_policies(ctx, id, kind),
        (Route::VaultList { subscription, group }, Method::GET) => vaults::list(ctx, subscription, group.as_deref()),
        (Route::DeletedVaultList(sub), Method::GET) => vaults::list_deleted(ctx, sub),
        (Route::DeletedVault { subscription, location, name }, Method::GET) => {
            vaults::get_deleted(ctx, subscription, location, name)
        }
        (Route::PurgeDeletedVault { subscription, location, name }, Method::POST) => {
            vaults::purge(ctx, subscription, location, name)
        }
        (Route::OperationResult { id, .. }, Method::GET) => vaults::operation_result(ctx, id),
        (Route::Lock { scope, name }, Method::GET) => locks::get(ctx, scope, name),
        (Route::Lock { scope, name }, Method::PUT) => locks::put(ctx, scope, name),
        (Route::Lock { scope, name }, Method::DELETE) => locks::delete(ctx, scope, name),
        (Route::LockList { scope }, Method::GET) => locks::list(ctx, scope),
        (Route::Permissions { scope }, Method::GET) => authz::permissions(ctx.app, &ctx.claims.oid, scope),
        _ => Err(not_allowed()),
    }
}

pub fn resource_group_json(rg: &ResourceGroup) -> Value {
    json!({
        "id": ResourceId::resource_group(&rg.subscription_id, &rg.name).to_string(),
        "name": rg.name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": rg.location,
        "tags": rg.tags,
        "properties": { "provisioningState": "Succeeded" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()
    }

    #[test]
    fn routes() {
        assert!(matches!(
            route(&segs("/subscriptions/s/resourcegroups/rg/providers/microsoft.keyvault/VAULTS/v")),
            Some(Route::Vault(_))
        ));
        assert_eq!(
            route(&segs(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v/providers/Microsoft.Authorization/locks/l"
            )),
            Some(Route::Lock {
                scope: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v".into(),
                name: "l".into()
            })
        );
        assert_eq!(
            route(&segs("/subscriptions/s/providers/Microsoft.KeyVault/locations/westus/deletedVaults/v/purge")),
            Some(Route::PurgeDeletedVault { subscription: "s".into(), location: "westus".into(), name: "v".into() })
        );
        assert_eq!(
            route(&segs(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d/providers/Microsoft.Authorization/permissions"
            )),
            Some(Route::Permissions {
                scope: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d".into()
            })
        );
        let r = route(&segs("/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d/updateExtendedInformation")).unwrap();
        assert_eq!(
            operation(&r, &Method::POST).name,
            "Microsoft.DataBoxEdge/dataBoxEdgeDevices/updateExtendedInformation/action"
        );
    }
}
