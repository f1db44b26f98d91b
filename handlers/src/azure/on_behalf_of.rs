//! Asking ARM what a caller may do, as the caller.
//!
//! The caller's token (issued for edgevault's API, validated by App Service Authentication) is exchanged for an ARM
//! token on the caller's behalf — the OAuth 2.0 on-behalf-of flow of the Microsoft identity platform
//! (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow): `POST
//! {authority}/{tenant}/oauth2/v2.0/token` with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`,
//! `assertion=<the caller's token>`, `scope=https://management.azure.com/user_impersonation`,
//! `requested_token_use=on_behalf_of`. The API's app registration authenticates with no secret: the function app's
//! managed identity is a federated identity credential of it ("Configure an application to trust a managed
//! identity"), so the client assertion is the identity's token for `api://AzureADTokenExchange`.
//!
//! With that token ARM answers `GET {scope}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01`
//! (`Permissions_ListForResource`, azure-rest-api-specs `…/Microsoft.Authorization/stable/2022-04-01/
//! authorization-RoleDefinitionsCalls.json`): every role assignment of the caller at or above the scope, groups
//! included, as `actions` / `notActions`.
//!
//! An exchanged token is kept in memory, keyed by a SHA-256 of the caller's token, until five minutes before it
//! expires: it says who the caller is, not what they may do, so keeping it delays no revocation — the permissions
//! are asked of ARM on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use azure_core::http::{Context, Method, Pipeline, RawResponse, Request, Url};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::models::{BearerToken, Page, Permission};
use super::traits::CallerPermissions;
use super::{AzureError, HttpStack, unauthenticated_pipeline};
use crate::resource_id::ResourceId;

pub const PERMISSIONS_API: &str = "2022-04-01";
/// The delegated scope of ARM an exchanged token carries.
pub const ARM_USER_IMPERSONATION: &str = "https://management.azure.com/user_impersonation";
/// The audience of a managed identity's token used as a federated client assertion.
pub const TOKEN_EXCHANGE_SCOPE: &str = "api://AzureADTokenExchange/.default";
/// An exchanged token is not used in its last minutes, so it cannot expire on the way to ARM.
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// At most this many exchanged tokens are kept; past it the cache starts again empty (callers are few).
const MAX_CACHED: usize = 10_000;
/// Pages of the permissions answer followed at most (one per role assignment; ARM sends them in one page).
const MAX_PAGES: usize = 20;

#[derive(Debug)]
pub struct OnBehalfOf {
    pipeline: Pipeline,
    token_url: Url,
    arm: Url,
    client_id: String,
    /// The managed identity whose token is the client assertion.
    credential: Arc<dyn TokenCredential>,
    cache: Mutex<HashMap<[u8; 32], (BearerToken, Instant)>>,
}

/// The token endpoint's refusal (`{"error", "error_description"}`).
#[derive(Debug, Deserialize, Default)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

impl OnBehalfOf {
    pub fn new(
        authority_host: &str,
        tenant_id: &str,
        client_id: &str,
        arm_endpoint: &str,
        credential: Arc<dyn TokenCredential>,
        stack: &HttpStack,
    ) -> Result<Self, AzureError> {
        let bad = |what: &str, e: String| AzureError::new("configure on-behalf-of", None, None, format!("{what}: {e}"));
        let token_url = Url::parse(&format!("{}/{tenant_id}/oauth2/v2.0/token", authority_host.trim_end_matches('/')))
            .map_err(|e| bad("authority", e.to_string()))?;
        let arm = Url::parse(arm_endpoint).map_err(|e| bad("ARM endpoint", e.to_string()))?;
        Ok(OnBehalfOf {
            pipeline: unauthenticated_pipeline(stack),
            token_url,
            arm,
            client_id: client_id.to_string(),
            credential,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// An ARM token for the holder of `caller_token`, from the cache or the token endpoint.
    async fn arm_token(&self, caller_token: &BearerToken) -> Result<BearerToken, AzureError> {
        const OPERATION: &str = "exchange the caller's token";
        let key: [u8; 32] = Sha256::digest(caller_token.secret().as_bytes()).into();
        if let Some((token, until)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && *until > Instant::now()
        {
            return Ok(token.clone());
        }
        let assertion = self
            .credential
            .get_token(&[TOKEN_EXCHANGE_SCOPE], None)
            .await
            .map_err(|e| AzureError::from_core("get the managed identity's client assertion", e))?;
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("client_id", &self.client_id)
            .append_pair("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            .append_pair("client_assertion", assertion.token.secret())
            .append_pair("assertion", caller_token.secret())
            .append_pair("scope", ARM_USER_IMPERSONATION)
            .append_pair("requested_token_use", "on_behalf_of")
            .finish();
        let mut request = Request::new(self.token_url.clone(), Method::Post);
        request.insert_header("content-type", "application/x-www-form-urlencoded");
        request.insert_header("accept", "application/json");
        request.set_body(body.into_bytes());
        let response = self.send(OPERATION, request).await.map_err(|err| match err.status {
            // The caller's token was refused (expired, not for this API, an app's): the caller's to fix.
            Some(400) if err.code.as_deref() == Some("invalid_grant") => AzureError { status: Some(401), ..err },
            _ => err,
        })?;
        let answer: TokenAnswer = serde_json::from_slice(response.body())
            .map_err(|e| AzureError::new(OPERATION, Some(200), None, format!("unexpected token answer: {e}")))?;
        let token = BearerToken::new(answer.access_token);
        let lifetime = Duration::from_secs(answer.expires_in).saturating_sub(EXPIRY_MARGIN);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        cache.retain(|_, (_, until)| *until > now);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        if !lifetime.is_zero() {
            cache.insert(key, (token.clone(), now + lifetime));
        }
        Ok(token)
    }

    /// Sends `request`; a refusal keeps its status and the endpoint's `error` / `error_description` (OAuth's
    /// shape) or ARM's `{"error": {"code", "message"}}` — neither ever holds a token.
    async fn send(&self, operation: &'static str, mut request: Request) -> Result<RawResponse, AzureError> {
        self.pipeline.send(&Context::new(), &mut request, None).await.map_err(|e| {
            if let azure_core::error::ErrorKind::HttpResponse { status, raw_response: Some(raw), .. } = e.kind() {
                let oauth: OAuthError = serde_json::from_slice(raw.body()).unwrap_or_default();
                if !oauth.error.is_empty() {
                    let status = Some(u16::from(*status));
                    return AzureError::new(operation, status, Some(oauth.error), oauth.error_description);
                }
            }
            AzureError::from_core(operation, e)
        })
    }
}

#[async_trait::async_trait]
impl CallerPermissions for OnBehalfOf {
    async fn permissions_at(
        &self,
        caller_token: &BearerToken,
        scope: &ResourceId,
    ) -> Result<Vec<Permission>, AzureError> {
        const OPERATION: &str = "read the caller's permissions";
        let token = self.arm_token(caller_token).await?;
        let mut url = self.arm.clone();
        url.set_path(&format!("{scope}/providers/Microsoft.Authorization/permissions"));
        url.query_pairs_mut().append_pair("api-version", PERMISSIONS_API);
        let mut permissions = Vec::new();
        for _ in 0..MAX_PAGES {
            let mut request = Request::new(url.clone(), Method::Get);
            request.insert_header("accept", "application/json");
            request.insert_header("authorization", format!("Bearer {}", token.secret()));
            let response = self.send(OPERATION, request).await?;
            let page: Page<Permission> = serde_json::from_slice(response.body())
                .map_err(|e| AzureError::new(OPERATION, Some(200), None, format!("unexpected answer: {e}")))?;
            permissions.extend(page.value);
            match page.next_link {
                // Only links on the ARM endpoint are followed: the caller's token goes nowhere else.
                Some(link) => {
                    url = Url::parse(&link)
                        .ok()
                        .filter(|u| u.host_str() == self.arm.host_str() && u.scheme() == self.arm.scheme())
                        .ok_or_else(|| AzureError::new(OPERATION, None, None, "a nextLink off the ARM endpoint"))?;
                }
                None => return Ok(permissions),
            }
        }
        Err(AzureError::new(OPERATION, None, None, format!("more than {MAX_PAGES} pages of permissions")))
    }
}
