//! A thin typed Resource Manager client on the `azure_core` pipeline, for the operations edgevault needs and no
//! GA Rust crate offers: Stack Edge devices and their extended information, Key Vault vaults (including name
//! checks, recovery and deleted vaults), and management locks. Long-running operations are polled per the ARM async
//! pattern (`Azure-AsyncOperation`, then `Location`, honouring `Retry-After`).

use std::time::Duration;

use azure_core::http::{Context, Method, Pipeline, RawResponse, Request, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use std::sync::Arc;

use azure_core::credentials::TokenCredential;

use super::models::{
    AccessPolicy, DeletedVault, Device, DiagnosticSetting, ExtendedInfo, ExtendedInfoPatch, Lock, LockProperties,
    NameAvailability, Page, Provider, StorageAccount, Vault,
};
use super::traits::{AuditLogs, Devices, Locks, Vaults};
use super::{ARM_SCOPE, AzureError, HttpStack, pipeline};
use crate::resource_id::ResourceId;

pub const DEVICES_API: &str = "2023-12-01";
pub const VAULTS_API: &str = "2024-11-01";
pub const LOCKS_API: &str = "2020-05-01";
/// `Resources_List` (resources.json, Microsoft.Resources 2021-04-01).
pub const RESOURCES_API: &str = "2021-04-01";
pub const STORAGE_API: &str = "2023-05-01";
pub const DIAGNOSTIC_SETTINGS_API: &str = "2021-05-01-preview";
pub const PROVIDERS_API: &str = "2021-04-01";

/// The vault list's page size asked for (`$top`; the spec sets no maximum, the service may give fewer).
const VAULT_PAGE: u32 = 1000;
/// How many times a long-running operation is polled before edgevault gives up and lets the message be retried.
const MAX_POLLS: u32 = 120;
/// The poll interval when the service gives no `Retry-After`.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The first wait for a vault still provisioning; it doubles up to `DEFAULT_POLL_INTERVAL`.
const FIRST_PROVISIONING_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct ArmClient {
    endpoint: Url,
    pipeline: Pipeline,
}

impl ArmClient {
    /// `endpoint` is `https://management.azure.com` in every environment that matters; it is a parameter so
    /// sovereign clouds work too. Requests carry tokens for ARM from `credential`, over the shared `stack`.
    pub fn new(endpoint: &str, credential: Arc<dyn TokenCredential>, stack: &HttpStack) -> Result<Self, AzureError> {
        let endpoint = Url::parse(endpoint)
            .map_err(|e| AzureError::new("configure ARM", None, None, format!("invalid endpoint `{endpoint}`: {e}")))?;
        Ok(ArmClient { endpoint, pipeline: pipeline(credential, ARM_SCOPE, stack) })
    }
}

#[async_trait::async_trait]
impl Devices for ArmClient {
    async fn get_device(&self, id: &ResourceId) -> Result<Option<Device>, AzureError> {
        self.get_optional("get device", &id.to_string(), DEVICES_API).await
    }

    /// Turns on the device's system-assigned identity (idempotent: ARM keeps the existing principal).
    async fn enable_identity(&self, id: &ResourceId) -> Result<Device, AzureError> {
        let body = json!({"identity": {"type": "SystemAssigned"}});
        self.send("enable device identity", Method::Patch, &id.to_string(), DEVICES_API, Some(&body)).await
    }

    /// One page of the devices in a subscription; pass the previous page's `next_link` to continue.
    async fn list_devices(&self, subscription: &str, next_link: Option<&str>) -> Result<Page<Device>, AzureError> {
        let path = format!("/subscriptions/{subscription}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices");
        self.page("list devices", &path, DEVICES_API, next_link).await
    }

    /// Replaces the device's tags (ARM PATCH semantics for `tags`: the object given is the new set).
    async fn set_device_tags(
        &self,
        id: &ResourceId,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Result<Device, AzureError> {
        let body = json!({"tags": tags});
        self.send("update device tags", Method::Patch, &id.to_string(), DEVICES_API, Some(&body)).await
    }

    async fn get_extended_info(&self, id: &ResourceId) -> Result<ExtendedInfo, AzureError> {
        let path = format!("{id}/getExtendedInformation");
        self.send("get extended information", Method::Post, &path, DEVICES_API, Some(&json!({}))).await
    }

    async fn update_extended_info(
        &self,
        id: &ResourceId,
        patch: &ExtendedInfoPatch,
    ) -> Result<ExtendedInfo, AzureError> {
        let path = format!("{id}/updateExtendedInformation");
        self.send("update extended information", Method::Post, &path, DEVICES_API, Some(patch)).await
    }
}

#[async_trait::async_trait]
impl Vaults for ArmClient {
    async fn check_vault_name(&self, subscription: &str, name: &str) -> Result<NameAvailability, AzureError> {
        let path = format!("/subscriptions/{subscription}/providers/Microsoft.KeyVault/checkNameAvailability");
        let body = json!({"name": name, "type": "Microsoft.KeyVault/vaults"});
        self.send("check vault name", Method::Post, &path, VAULTS_API, Some(&body)).await
    }

    async fn get_vault(&self, id: &ResourceId) -> Result<Option<Vault>, AzureError> {
        self.get_optional("get vault", &id.to_string(), VAULTS_API).await
    }

    /// Creates or updates a vault and waits until it is provisioned.
    async fn put_vault(&self, id: &ResourceId, vault: &Vault) -> Result<Vault, AzureError> {
        self.put_vault_body("create vault", id, &serde_json::to_value(vault).expect("serializable")).await
    }

    /// Recovers a soft-deleted vault (`createMode: recover`); Key Vault restores it with its secrets and policies.
    async fn recover_vault(&self, id: &ResourceId, location: &str, tenant_id: &str) -> Result<Vault, AzureError> {
        let body = json!({
            "location": location,
            "properties": {"tenantId": tenant_id, "sku": {"family": "A", "name": "standard"}, "createMode": "recover"}
        });
        self.put_vault_body("recover vault", id, &body).await
    }

    /// One page of the vaults in a resource group.
    async fn list_vaults(
        &self,
        subscription: &str,
        resource_group: &str,
        next_link: Option<&str>,
    ) -> Result<Page<Vault>, AzureError> {
        let path = format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.KeyVault/vaults"
        );
        self.page("list vaults", &path, VAULTS_API, next_link).await
    }

    /// `Vaults_ListBySubscription` (keyvault.json, 2024-11-01), at the largest page the service gives (`$top`):
    /// the fewer pages, the fewer ARM calls a sweep pays for them.
    async fn list_subscription_vaults(
        &self,
        subscription: &str,
        next_link: Option<&str>,
    ) -> Result<Page<Vault>, AzureError> {
        let path = format!("/subscriptions/{subscription}/providers/Microsoft.KeyVault/vaults");
        match next_link {
            Some(_) => self.page("list vaults", &path, VAULTS_API, next_link).await,
            None => {
                let mut url = self.url(&path, VAULTS_API)?;
                url.query_pairs_mut().append_pair("$top", &VAULT_PAGE.to_string());
                self.get_url("list vaults", url).await
            }
        }
    }

    /// `Resources_List` with `$filter=tagName eq '…' and tagValue eq '…'` (resources.json 2021-04-01: a tag filter
    /// cannot be combined with a type filter, so the type is checked here), every page.
    async fn find_tagged_vaults(
        &self,
        subscription: &str,
        name: &str,
        value: &str,
    ) -> Result<Vec<ResourceId>, AzureError> {
        #[derive(serde::Deserialize)]
        struct Generic {
            id: String,
            #[serde(rename = "type", default)]
            kind: String,
        }
        let quote = |s: &str| s.replace('\'', "''");
        let mut url = self.url(&format!("/subscriptions/{subscription}/resources"), RESOURCES_API)?;
        url.query_pairs_mut()
            .append_pair("$filter", &format!("tagName eq '{}' and tagValue eq '{}'", quote(name), quote(value)));
        let mut found = Vec::new();
        let mut next: Option<Url> = Some(url);
        while let Some(url) = next.take() {
            let page: Page<Generic> = self.get_url("list tagged vaults", url).await?;
            found.extend(
                page.value
                    .into_iter()
                    .filter(|r| r.kind.eq_ignore_ascii_case("Microsoft.KeyVault/vaults"))
                    .filter_map(|r| r.id.parse::<ResourceId>().ok())
                    .filter(|id| id.is_type(crate::resource_id::VAULT_TYPE)),
            );
            next = page.next_link.as_deref().map(|link| self.absolute(link)).transpose()?;
        }
        Ok(found)
    }

    /// Adds access policies to a vault (`accessPolicies/add`), leaving the others alone.
    async fn add_access_policies(&self, id: &ResourceId, policies: &[AccessPolicy]) -> Result<(), AzureError> {
        let path = format!("{id}/accessPolicies/add");
        let body = json!({"properties": {"accessPolicies": policies}});
        let _: Value = self.send("add access policies", Method::Put, &path, VAULTS_API, Some(&body)).await?;
        Ok(())
    }

    /// Removes access policies (`accessPolicies/remove`: the listed permissions of each principal; a policy left
    /// with none is removed).
    async fn remove_access_policies(&self, id: &ResourceId, policies: &[AccessPolicy]) -> Result<(), AzureError> {
        let path = format!("{id}/accessPolicies/remove");
        let body = json!({"properties": {"accessPolicies": policies}});
        let _: Value = self.send("remove access policies", Method::Put, &path, VAULTS_API, Some(&body)).await?;
        Ok(())
    }

    async fn set_vault_tags(
        &self,
        id: &ResourceId,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vault, AzureError> {
        let body = json!({"tags": tags});
        self.send("update vault tags", Method::Patch, &id.to_string(), VAULTS_API, Some(&body)).await
    }

    async fn delete_vault(&self, id: &ResourceId) -> Result<(), AzureError> {
        self.send_empty("delete vault", Method::Delete, &id.to_string(), VAULTS_API).await
    }

    async fn get_deleted_vault(
        &self,
        subscription: &str,
        location: &str,
        name: &str,
    ) -> Result<Option<DeletedVault>, AzureError> {
        let path = format!(
            "/subscriptions/{subscription}/providers/Microsoft.KeyVault/locations/{location}/deletedVaults/{name}"
        );
        self.get_optional("get deleted vault", &path, VAULTS_API).await
    }

    /// One page of the soft-deleted vaults in a subscription.
    async fn list_deleted_vaults(
        &self,
        subscription: &str,
        next_link: Option<&str>,
    ) -> Result<Page<DeletedVault>, AzureError> {
        let path = format!("/subscriptions/{subscription}/providers/Microsoft.KeyVault/deletedVaults");
        self.page("list deleted vaults", &path, VAULTS_API, next_link).await
    }
}

#[async_trait::async_trait]
impl Locks for ArmClient {
    async fn get_lock(&self, scope: &ResourceId, name: &str) -> Result<Option<Lock>, AzureError> {
        let path = format!("{scope}/providers/Microsoft.Authorization/locks/{name}");
        self.get_optional("get lock", &path, LOCKS_API).await
    }

    async fn put_lock(&self, scope: &ResourceId, name: &str, notes: &str) -> Result<Lock, AzureError> {
        let path = format!("{scope}/providers/Microsoft.Authorization/locks/{name}");
        let body = Lock {
            properties: LockProperties { level: "CanNotDelete".into(), notes: Some(notes.to_string()) },
            ..Default::default()
        };
        self.send("create lock", Method::Put, &path, LOCKS_API, Some(&body)).await
    }

    /// `ManagementLocks_ListAtSubscriptionLevel` (Microsoft.Authorization/stable/2020-05-01/locks.json).
    async fn list_locks(&self, subscription: &str, next_link: Option<&str>) -> Result<Page<Lock>, AzureError> {
        let path = format!("/subscriptions/{subscription}/providers/Microsoft.Authorization/locks");
        self.page("list locks", &path, LOCKS_API, next_link).await
    }

    async fn delete_lock(&self, scope: &ResourceId, name: &str) -> Result<(), AzureError> {
        let path = format!("{scope}/providers/Microsoft.Authorization/locks/{name}");
        match self.send_empty("delete lock", Method::Delete, &path, LOCKS_API).await {
            Err(err) if err.is_not_found() => Ok(()),
            other => other,
        }
    }
}

impl ArmClient {
    async fn put_vault_body(
        &self,
        operation: &'static str,
        id: &ResourceId,
        body: &Value,
    ) -> Result<Vault, AzureError> {
        let path = id.to_string();
        let vault: Vault = self.send(operation, Method::Put, &path, VAULTS_API, Some(body)).await?;
        // Vault PUT answers at once but may still be registering DNS; the ARM contract is to wait for a terminal
        // provisioning state before relying on the data plane.
        let mut vault = vault;
        // Vault PUTs carry no `Retry-After`; a short backoff finds a vault that is ready within a fraction of a
        // second without rounding every creation up to a whole poll interval.
        let mut wait = FIRST_PROVISIONING_POLL;
        for _ in 0..MAX_POLLS {
            match vault.properties.provisioning_state.as_deref() {
                None | Some("Succeeded") => return Ok(vault),
                Some(state) if state.eq_ignore_ascii_case("Failed") => {
                    return Err(AzureError::new(
                        operation,
                        None,
                        Some("ProvisioningFailed".into()),
                        "vault provisioning failed",
                    ));
                }
                Some(_) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(DEFAULT_POLL_INTERVAL);
                    vault = self.get_vault(id).await?.ok_or_else(|| {
                        AzureError::new(operation, Some(404), None, "the vault disappeared while provisioning")
                    })?;
                }
            }
        }
        Err(AzureError::new(operation, None, None, "the vault did not finish provisioning"))
    }
}

/// Audit logging: `Microsoft.Storage` (storage.json 2023-05-01: `StorageAccounts_CheckNameAvailability`,
/// `_GetProperties`, `_Create`, a long-running PUT answering `202` and a `Location` to poll), `Microsoft.Insights`
/// (diagnosticsSettings_API.json 2021-05-01-preview) and `Providers_Get` (resources.json).
#[async_trait::async_trait]
impl AuditLogs for ArmClient {
    async fn get_provider(&self, subscription: &str, namespace: &str) -> Result<Option<Provider>, AzureError> {
        let path = format!("/subscriptions/{subscription}/providers/{namespace}");
        self.get_optional("get provider", &path, PROVIDERS_API).await
    }

    async fn check_storage_name(&self, subscription: &str, name: &str) -> Result<NameAvailability, AzureError> {
        let path = format!("/subscriptions/{subscription}/providers/Microsoft.Storage/checkNameAvailability");
        let body = json!({"name": name, "type": "Microsoft.Storage/storageAccounts"});
        self.send("check storage account name", Method::Post, &path, STORAGE_API, Some(&body)).await
    }

    async fn get_storage_account(&self, id: &ResourceId) -> Result<Option<StorageAccount>, AzureError> {
        self.get_optional("get storage account", &id.to_string(), STORAGE_API).await
    }

    async fn put_storage_account(
        &self,
        id: &ResourceId,
        account: &StorageAccount,
    ) -> Result<StorageAccount, AzureError> {
        self.send("create storage account", Method::Put, &id.to_string(), STORAGE_API, Some(account)).await
    }

    async fn get_diagnostic_setting(
        &self,
        scope: &ResourceId,
        name: &str,
    ) -> Result<Option<DiagnosticSetting>, AzureError> {
        let path = format!("{scope}/providers/Microsoft.Insights/diagnosticSettings/{name}");
        self.get_optional("get diagnostic setting", &path, DIAGNOSTIC_SETTINGS_API).await
    }

    async fn put_diagnostic_setting(
        &self,
        scope: &ResourceId,
        name: &str,
        setting: &DiagnosticSetting,
    ) -> Result<DiagnosticSetting, AzureError> {
        let path = format!("{scope}/providers/Microsoft.Insights/diagnosticSettings/{name}");
        self.send("put diagnostic setting", Method::Put, &path, DIAGNOSTIC_SETTINGS_API, Some(setting)).await
    }
}

impl ArmClient {
    // --- plumbing -----------------------------------------------------------------------------------------------

    fn url(&self, path: &str, api_version: &str) -> Result<Url, AzureError> {
        let mut url = self.endpoint.clone();
        url.set_path(path);
        url.query_pairs_mut().append_pair("api-version", api_version);
        Ok(url)
    }

    /// ARM `nextLink`s and polling URLs are absolute; only ones on the configured endpoint are followed, so a
    /// tampered link cannot send the bearer token elsewhere.
    fn absolute(&self, link: &str) -> Result<Url, AzureError> {
        let url = Url::parse(link).map_err(|e| AzureError::new("follow link", None, None, format!("bad link: {e}")))?;
        if url.host_str() != self.endpoint.host_str() || url.scheme() != "https" {
            return Err(AzureError::new(
                "follow link",
                None,
                None,
                format!("refusing to follow {url} off the ARM endpoint"),
            ));
        }
        Ok(url)
    }

    async fn get_optional<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        api_version: &str,
    ) -> Result<Option<T>, AzureError> {
        match self.send(operation, Method::Get, path, api_version, None::<&()>).await {
            Ok(value) => Ok(Some(value)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The first page of a list at `path`, or the page `next_link` points at.
    async fn page<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        api_version: &str,
        next_link: Option<&str>,
    ) -> Result<Page<T>, AzureError> {
        match next_link {
            Some(link) => self.get_url(operation, self.absolute(link)?).await,
            None => self.send(operation, Method::Get, path, api_version, None::<&()>).await,
        }
    }

    async fn get_url<T: DeserializeOwned>(&self, operation: &'static str, url: Url) -> Result<T, AzureError> {
        let response = self.execute(operation, Request::new(url, Method::Get)).await?;
        parse(operation, &response)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        api_version: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, AzureError> {
        let response = self.send_raw(operation, method, path, api_version, body).await?;
        let response = self.wait_for_completion(operation, response).await?;
        parse(operation, &response)
    }

    async fn send_empty(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        api_version: &str,
    ) -> Result<(), AzureError> {
        self.send::<Value>(operation, method, path, api_version, None::<&()>).await.map(drop)
    }

    async fn send_raw(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        api_version: &str,
        body: Option<&impl Serialize>,
    ) -> Result<RawResponse, AzureError> {
        let mut request = Request::new(self.url(path, api_version)?, method);
        request.insert_header("accept", "application/json");
        if let Some(body) = body {
            request.insert_header("content-type", "application/json");
            request.set_body(serde_json::to_vec(body).expect("request bodies serialize"));
        }
        self.execute(operation, request).await
    }

    async fn execute(&self, operation: &'static str, mut request: Request) -> Result<RawResponse, AzureError> {
        self.pipeline.send(&Context::new(), &mut request, None).await.map_err(|e| AzureError::from_core(operation, e))
    }

    /// Follows the ARM async pattern for a `201`/`202` answer; returns the final response.
    async fn wait_for_completion(
        &self,
        operation: &'static str,
        response: RawResponse,
    ) -> Result<RawResponse, AzureError> {
        let status = u16::from(response.status());
        if status != 201 && status != 202 {
            return Ok(response);
        }
        let header = |name: &str| {
            response
                .headers()
                .get_optional_str(&azure_core::http::headers::HeaderName::from(name.to_string()))
                .map(str::to_string)
        };
        let async_operation = header("azure-asyncoperation");
        let location = header("location");
        let Some(link) = async_operation.clone().or(location.clone()) else {
            return Ok(response);
        };
        let mut wait = retry_after(&response);
        for _ in 0..MAX_POLLS {
            tokio::time::sleep(wait).await;
            let poll = self.execute(operation, Request::new(self.absolute(&link)?, Method::Get)).await?;
            wait = retry_after(&poll);
            let poll_status = u16::from(poll.status());
            if async_operation.is_some() {
                let body: Value = serde_json::from_slice(poll.body()).unwrap_or_default();
                match body["status"].as_str().unwrap_or("InProgress") {
                    "Succeeded" => return Ok(response),
                    "Failed" | "Canceled" => {
                        let (code, message) = (body["error"]["code"].as_str(), body["error"]["message"].as_str());
                        return Err(AzureError::new(
                            operation,
                            Some(200),
                            code.map(str::to_string),
                            message.unwrap_or("the operation failed"),
                        ));
                    }
                    _ => continue,
                }
            }
            if poll_status != 202 {
                return Ok(poll);
            }
        }
        Err(AzureError::new(operation, None, None, "the long-running operation did not finish in time"))
    }
}

fn retry_after(response: &RawResponse) -> Duration {
    response
        .headers()
        .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(60)))
        .unwrap_or(DEFAULT_POLL_INTERVAL)
}

fn parse<T: DeserializeOwned>(operation: &'static str, response: &RawResponse) -> Result<T, AzureError> {
    let body: &[u8] = response.body();
    let body = if body.is_empty() { b"null".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| {
        AzureError::new(operation, Some(u16::from(response.status())), None, format!("unexpected response body: {e}"))
    })
}
