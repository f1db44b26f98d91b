//! CIK secrets in a device's vault, through the official `azure_security_keyvault_secrets::SecretClient` with its
//! default safety settings (challenge-resource verification on).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use azure_core::credentials::TokenCredential;
use azure_core::http::RequestContent;
use azure_security_keyvault_secrets::models::{SecretAttributes, SetSecretParameters};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};

use super::models::StoredCik;
use super::traits::CikStore;
use super::{AzureError, HttpStack};
use crate::activation_key::Cik;

/// The content type CIK secrets carry, so an operator browsing the vault knows what the value is.
pub const CIK_CONTENT_TYPE: &str = "application/octet-stream; encoding=base64";

/// Vault clients kept at most; past it the cache starts over (a sweep touches every vault once per run).
const MAX_CACHED_VAULTS: usize = 512;

#[derive(Clone)]
pub struct VaultSecrets {
    credential: Arc<dyn TokenCredential>,
    stack: HttpStack,
    /// One `SecretClient` per vault: it keeps the vault's authentication challenge, so only the first call to a
    /// vault pays the unauthenticated round trip that discovers it.
    clients: Arc<Mutex<HashMap<String, Arc<SecretClient>>>>,
}

impl std::fmt::Debug for VaultSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSecrets").field("retry", &self.stack.retry).finish_non_exhaustive()
    }
}

impl VaultSecrets {
    /// Like the other clients, built from a credential and the shared stack; its endpoints are the vaults' own
    /// URIs, given per call (each vault is a host of its own), so it takes no endpoint here.
    pub fn new(credential: Arc<dyn TokenCredential>, stack: &HttpStack) -> Self {
        VaultSecrets { credential, stack: stack.clone(), clients: Default::default() }
    }

    fn client(&self, vault_uri: &str) -> Result<Arc<SecretClient>, AzureError> {
        let key = vault_uri.trim_end_matches('/').to_ascii_lowercase();
        let mut clients = self.clients.lock().expect("not poisoned: no code panics while holding it");
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let options = SecretClientOptions { client_options: self.stack.client_options(), ..Default::default() };
        let client = Arc::new(
            SecretClient::new(vault_uri, self.credential.clone(), Some(options))
                .map_err(|e| AzureError::from_core("open vault", e))?,
        );
        if clients.len() >= MAX_CACHED_VAULTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }
}

#[async_trait::async_trait]
impl CikStore for VaultSecrets {
    /// Stores `cik` as a new version of secret `name`; returns that version.
    async fn set_cik(&self, vault_uri: &str, name: &str, cik: &Cik) -> Result<String, AzureError> {
        let parameters = SetSecretParameters {
            value: Some(cik.to_secret_value().to_string()),
            content_type: Some(CIK_CONTENT_TYPE.to_string()),
            secret_attributes: Some(SecretAttributes { enabled: Some(true), ..Default::default() }),
            ..Default::default()
        };
        let content: RequestContent<SetSecretParameters> =
            parameters.try_into().map_err(|e| AzureError::from_core("set CIK", e))?;
        let response = self.client(vault_uri)?.set_secret(name, content, None).await;
        let secret = response
            .map_err(|e| AzureError::from_core("set CIK", e))?
            .into_model()
            .map_err(|e| AzureError::from_core("set CIK", e))?;
        version_of(secret.id.as_deref())
            .ok_or_else(|| AzureError::new("set CIK", None, None, "the vault returned no version"))
    }

    /// Reads secret `name` (a given version, or the latest); `None` if it does not exist.
    async fn get_cik(
        &self,
        vault_uri: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<StoredCik>, AzureError> {
        let options = azure_security_keyvault_secrets::models::SecretClientGetSecretOptions {
            secret_version: version.map(str::to_string),
            ..Default::default()
        };
        let secret = match self.client(vault_uri)?.get_secret(name, Some(options)).await {
            Ok(response) => response.into_model().map_err(|e| AzureError::from_core("get CIK", e))?,
            Err(err) => {
                let err = AzureError::from_core("get CIK", err);
                return if err.is_not_found() { Ok(None) } else { Err(err) };
            }
        };
        let value = secret.value.as_deref().unwrap_or_default();
        let cik = Cik::from_secret_value(value).map_err(|e| AzureError::new("get CIK", None, None, e.to_string()))?;
        let enabled = secret.attributes.as_ref().and_then(|a| a.enabled).unwrap_or(true);
        let version = version_of(secret.id.as_deref()).unwrap_or_default();
        Ok(Some(StoredCik { cik, version, enabled }))
    }

    /// The names of the vault's enabled secrets (Get Secrets: "only the base secret identifier and its attributes
    /// are provided in the response"; needs the `list` permission), all pages.
    async fn secret_names(&self, vault_uri: &str) -> Result<Vec<String>, AzureError> {
        use futures::TryStreamExt;
        let pager = self
            .client(vault_uri)?
            .list_secret_properties(None)
            .map_err(|e| AzureError::from_core("list secrets", e))?;
        let items: Vec<_> = pager.try_collect().await.map_err(|e| AzureError::from_core("list secrets", e))?;
        Ok(items
            .into_iter()
            .filter(|item| item.attributes.as_ref().and_then(|a| a.enabled).unwrap_or(true))
            .filter_map(|item| name_of(item.id.as_deref()))
            .collect())
    }
}

impl VaultSecrets {
    /// Reads the current value of secret `name`; `None` when it does not exist. Only `edgevault-cli device
    /// recovery-secrets` calls it, on a client built with the operator's own credential: edgevault's identity never
    /// reads a device's secrets (its policy could, for the CIK; this is not that path). The value stays wrapped in
    /// [`Secret`](azure_core::credentials::Secret), whose `Debug` hides it.
    pub async fn read_secret(
        &self,
        vault_uri: &str,
        name: &str,
    ) -> Result<Option<azure_core::credentials::Secret>, AzureError> {
        match self.client(vault_uri)?.get_secret(name, None).await {
            Ok(response) => {
                let secret = response.into_model().map_err(|e| AzureError::from_core("get secret", e))?;
                Ok(Some(azure_core::credentials::Secret::new(secret.value.unwrap_or_default())))
            }
            Err(err) => {
                let err = AzureError::from_core("get secret", err);
                if err.is_not_found() { Ok(None) } else { Err(err) }
            }
        }
    }

    /// Writes secret `name` as a new version (the device's own secrets, written with the device's identity by
    /// `edgevault-cli device sync-secrets`); returns the version.
    pub async fn set_secret(&self, vault_uri: &str, name: &str, value: &str) -> Result<String, AzureError> {
        let parameters = SetSecretParameters { value: Some(value.to_string()), ..Default::default() };
        let content: RequestContent<SetSecretParameters> =
            parameters.try_into().map_err(|e| AzureError::from_core("set secret", e))?;
        let secret = self
            .client(vault_uri)?
            .set_secret(name, content, None)
            .await
            .map_err(|e| AzureError::from_core("set secret", e))?
            .into_model()
            .map_err(|e| AzureError::from_core("set secret", e))?;
        version_of(secret.id.as_deref())
            .ok_or_else(|| AzureError::new("set secret", None, None, "the vault returned no version"))
    }

    /// Reads secret `name`'s current value; `None` if it does not exist. The value is the caller's to guard.
    pub async fn get_secret_value(&self, vault_uri: &str, name: &str) -> Result<Option<String>, AzureError> {
        match self.client(vault_uri)?.get_secret(name, None).await {
            Ok(response) => {
                let secret = response.into_model().map_err(|e| AzureError::from_core("get secret", e))?;
                Ok(secret.value)
            }
            Err(err) => {
                let err = AzureError::from_core("get secret", err);
                if err.is_not_found() { Ok(None) } else { Err(err) }
            }
        }
    }
}

/// The name segment of a secret id `https://<vault>/secrets/<name>[/<version>]`.
pub fn name_of(id: Option<&str>) -> Option<String> {
    let id = id?.trim_end_matches('/');
    let after = id.split("/secrets/").nth(1)?;
    after.split('/').next().filter(|n| !n.is_empty()).map(str::to_string)
}

/// The version segment of a secret id `https://<vault>/secrets/<name>/<version>`.
pub fn version_of(id: Option<&str>) -> Option<String> {
    let id = id?.trim_end_matches('/');
    let mut segments = id.rsplit('/');
    let version = segments.next()?;
    let _name = segments.next()?;
    (segments.next()? == "secrets").then(|| version.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_comes_from_the_secret_id() {
        assert_eq!(
            name_of(Some("https://v.vault.azure.net/secrets/BMCDefaultUserPassword")).as_deref(),
            Some("BMCDefaultUserPassword")
        );
        assert_eq!(name_of(Some("https://v.vault.azure.net/secrets/a/123")).as_deref(), Some("a"));
        assert_eq!(name_of(Some("https://v.vault.azure.net/keys/a")), None);
    }

    #[test]
    fn version_comes_from_the_secret_id() {
        let id = "https://myvault.vault.azure.net/secrets/ase-cik-1/4387e9f3d6e14c459867679a90fd0f79";
        assert_eq!(version_of(Some(id)).as_deref(), Some("4387e9f3d6e14c459867679a90fd0f79"));
        assert_eq!(version_of(Some("https://myvault.vault.azure.net/secrets/only-name")), None);
        assert_eq!(version_of(None), None);
    }
}
