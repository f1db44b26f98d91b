//! Microsoft Entra ID's token endpoint, for the one grant a service calls on a user's behalf: the OAuth 2.0
//! on-behalf-of flow (`POST https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`), and the app
//! registrations it checks.
//!
//! What the Microsoft identity platform documents ("Microsoft identity platform and OAuth 2.0 On-Behalf-Of flow",
//! https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow), as served here:
//! - the form fields `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, `client_id`, `assertion` (the token
//!   the API received, issued for that API), `scope` (`<resource>/<scope>` or `<resource>/.default`) and
//!   `requested_token_use=on_behalf_of`;
//! - the client authenticates with `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//!   and a `client_assertion`: here, as with a managed identity configured as a federated identity credential
//!   ("Configure an application to trust a managed identity", https://learn.microsoft.com/entra/workload-id/
//!   workload-identity-federation-config-app-trust-managed-identity), the app's managed-identity token for the
//!   audience `api://AzureADTokenExchange`, whose subject the app registration trusts. Client secrets are not
//!   served: edgevault keeps none;
//! - the answer `{token_type, scope, expires_in, ext_expires_in, access_token}`: a token for the user (`oid`,
//!   `name`, `upn`) whose `appid` is the API's and whose `scp` is the delegated scope;
//! - refusals as `{"error", "error_description": "AADSTS…: …", "error_codes": […]}` with `400` (`invalid_grant`,
//!   `invalid_request`, `unsupported_grant_type`) or `401` (`invalid_client`).
//!
//! The assertion is checked as Entra ID checks it: signature, expiry and audience (the app's client id or one of
//! its identifier URIs); an app-only token cannot be exchanged (the flow is for delegated user tokens).

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::App;
use crate::config;
use crate::http::{Req, Resp};
use crate::store::{Store, StoreError};
use crate::token::{Claims, TokenError};

pub const HOST: &str = "login.microsoftonline.com";
pub const APPLICATION: &str = "application";
/// The audience of a managed identity's token used as a federated client assertion.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Entra ID issues access tokens for 60–90 minutes; an on-behalf-of token here lives an hour of wall-clock time.
const OBO_LIFETIME_SECONDS: i64 = 3600;

/// An app registration: what a token for it may name as audience, and the managed identities it trusts as
/// client credentials (its federated identity credentials, by the identity's object id: the `sub` of its tokens).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    pub app_id: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub identifier_uris: Vec<String>,
    #[serde(default)]
    pub federated_subjects: Vec<String>,
}

impl Application {
    /// Whether a token with audience `aud` was issued for this application.
    fn is_audience(&self, aud: &str) -> bool {
        let aud = aud.trim_end_matches('/');
        aud.eq_ignore_ascii_case(&self.app_id) || self.identifier_uris.iter().any(|u| u.trim_end_matches('/') == aud)
    }
}

/// The edgevault API's registration, trusting the function app's identity; written once per data directory.
pub fn seed_defaults(store: &Store) -> Result<(), StoreError> {
    store.write(|tx| {
        if tx.get::<bool>("meta", "entra-seeded")?.is_some() {
            return Ok(());
        }
        let app = Application {
            app_id: config::API_CLIENT_ID.into(),
            display_name: "edgevault API".into(),
            identifier_uris: vec![config::API_AUDIENCE.into()],
            federated_subjects: vec![config::APP_PRINCIPAL_ID.into()],
        };
        tx.put(APPLICATION, &app.app_id.to_ascii_lowercase(), &app)?;
        tx.put("meta", "entra-seeded", &true)
    })
}

/// The registration a token's audience names, if any.
pub fn application_for_audience(app: &App, aud: &str) -> Result<Option<Application>, StoreError> {
    let all: Vec<Application> = app.store.list(APPLICATION, "")?;
    Ok(all.into_iter().find(|a| a.is_audience(aud)))
}

fn refusal(status: StatusCode, error: &str, code: u32, description: &str) -> Resp {
    Resp::json(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
            "timestamp": crate::clock::arm_time(time::OffsetDateTime::now_utc()),
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
        }),
    )
}

/// Serves `login.microsoftonline.com`.
pub fn handle(app: &App, req: &Req) -> Resp {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match (&req.method, segs.as_slice()) {
        (&Method::POST, [tenant, "oauth2", "v2.0", "token"]) => token(app, req, tenant),
        _ => refusal(
            StatusCode::NOT_FOUND,
            "invalid_request",
            900_561,
            &format!("local-azure serves only POST /{{tenant}}/oauth2/v2.0/token, not {} {}", req.method, req.path()),
        ),
    }
}

fn token(app: &App, req: &Req, tenant: &str) -> Resp {
    let form: Vec<(String, String)> = form_urlencoded::parse(&req.body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let bad = |code, description: &str| refusal(StatusCode::BAD_REQUEST, "invalid_request", code, description);
    match field("grant_type") {
        Some(JWT_BEARER) => {}
        Some(other) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70_003,
                &format!(
                    "The app requested an unsupported grant type '{other}'; local-azure serves on-behalf-of only."
                ),
            );
        }
        None => return bad(900_144, "The request body must contain the following parameter: 'grant_type'."),
    }
    if field("requested_token_use") != Some("on_behalf_of") {
        return bad(900_144, "The request body must contain 'requested_token_use' with the value 'on_behalf_of'.");
    }
    let (Some(client_id), Some(assertion), Some(scope)) = (field("client_id"), field("assertion"), field("scope"))
    else {
        return bad(900_144, "The request body must contain the parameters 'client_id', 'assertion' and 'scope'.");
    };
    let now = crate::token::wall_now();
    // The client: a registered application authenticating with a federated managed-identity assertion.
    let registered: Option<Application> =
        app.store.get(APPLICATION, &client_id.to_ascii_lowercase()).unwrap_or_default();
    let Some(client) = registered else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700_016,
            &format!("Application with identifier '{client_id}' was not found in the directory."),
        );
    };
    if field("client_assertion_type") != Some(CLIENT_ASSERTION_TYPE) || field("client_assertion").is_none() {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'; \
             local-azure accepts a federated client assertion only.",
        );
    }
    match app.tokens.verify(field("client_assertion").unwrap_or_default(), now, &[TOKEN_EXCHANGE_AUDIENCE]) {
        Ok(credential) if client.federated_subjects.iter().any(|s| s.eq_ignore_ascii_case(&credential.sub)) => {}
        Ok(credential) => {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                70_021,
                &format!(
                    "No matching federated identity record found for presented assertion subject '{}' of application '{client_id}'.",
                    credential.sub
                ),
            );
        }
        Err(e) => {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                700_024,
                &format!("Client assertion is not valid: {e}."),
            );
        }
    }
    // The user's token, which must have been issued for this application.
    let user = match app.tokens.verify_any_audience(assertion, now) {
        Err(TokenError::Expired(exp)) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                500_133,
                &format!("Assertion is not within its valid time range: it expired at {exp}."),
            );
        }
        Err(e) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                50_013,
                &format!("Assertion failed validation: {e}."),
            );
        }
        Ok(claims) => claims,
    };
    if !client.is_audience(&user.aud) {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            50_013,
            &format!("Assertion audience '{}' does not match the client application '{client_id}'.", user.aud),
        );
    }
    if user.idtyp != "user" {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            50_013,
            "The assertion is an application token; the on-behalf-of flow exchanges a user's token.",
        );
    }
    if !tenant.eq_ignore_ascii_case(&user.tid) && !matches!(tenant, "organizations" | "common") {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90_002,
            &format!("Tenant '{tenant}' is not the tenant '{}' of the assertion.", user.tid),
        );
    }
    // `https://management.azure.com/user_impersonation` or `https://management.azure.com/.default`.
    let first = scope.split(' ').next().unwrap_or_default();
    let Some((resource, delegated)) = first.rsplit_once('/').filter(|(r, _)| r.contains("://")) else {
        return bad(70_011, &format!("The provided value for the input parameter 'scope' is not valid: '{scope}'."));
    };
    let delegated = if delegated == ".default" { "user_impersonation" } else { delegated };
    let exp = now + OBO_LIFETIME_SECONDS;
    let claims = Claims {
        aud: resource.to_string(),
        iss: format!("https://sts.windows.net/{}/", user.tid),
        iat: now,
        nbf: now,
        exp,
        oid: user.oid.clone(),
        tid: user.tid.clone(),
        sub: user.sub.clone(),
        appid: client.app_id.clone(),
        idtyp: "user".into(),
        xms_mirid: None,
        uti: uuid::Uuid::new_v4().simple().to_string(),
        ver: "1.0".into(),
        name: user.name.clone(),
        upn: user.upn.clone(),
        scp: Some(delegated.to_string()),
    };
    tracing::info!(user = %user.oid, client = %client.app_id, resource, "issued an on-behalf-of token");
    Resp::json(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "scope": format!("{resource}/{delegated}"),
            "expires_in": OBO_LIFETIME_SECONDS,
            "ext_expires_in": OBO_LIFETIME_SECONDS,
            "access_token": app.tokens.issue(&claims),
        }),
    )
}
