//! Managed identities and the App Service form of the managed-identity endpoint.
//!
//! The Functions platform hands an app `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`; the client
//! calls `GET <endpoint>?api-version=2019-08-01&resource=<aud>[&client_id=|principal_id=|object_id=]`
//! with `X-IDENTITY-HEADER`. `azure_identity`'s `ManagedIdentityCredential` sends `object_id`
//! for a user-assigned object id, the platform documents `principal_id`; both are accepted.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::App;
use crate::http::{Req, Resp};
use crate::store::{StoreError, Tx};
use crate::token::Claims;

/// Token lifetime; App Service hands out tokens valid for about a day.
///
/// Tokens live on the wall clock, not on local-azure's movable clock: the clock stands in for the time resources
/// age (retention, purge dates, message locks), and a client's token cache runs on real time. Were tokens on the
/// movable clock, a client that cached one before a test moved the clock a day ahead would keep sending a token
/// local-azure calls expired, where in Azure the client would have refreshed it as time passed. So clients cache a
/// token for its real lifetime, as against Azure, and fetch it once, not once per request.
pub const TOKEN_LIFETIME_SECONDS: i64 = 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    pub object_id: String,
    pub client_id: String,
    pub tenant_id: String,
    pub display_name: String,
    /// The resource owning a system-assigned identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// A user's sign-in name: a principal with one is a user (an operator), and its tokens say so (`idtyp: user`,
    /// `name`, `upn`), as Entra ID's access tokens for users do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
}

pub const PRINCIPAL: &str = "principal";
/// Indexes from a principal's client id and from its owning resource to its object id: token requests name the
/// identity either way, and there is one principal per device.
const BY_CLIENT_ID: &str = "principal-by-client";
const BY_RESOURCE: &str = "principal-by-resource";

/// Writes a principal and its index entries. Every principal write goes through here.
pub fn put_principal(tx: &mut Tx<'_>, p: &Principal) -> Result<(), StoreError> {
    delete_principal(tx, &p.object_id)?;
    tx.put(PRINCIPAL, &p.object_id.to_ascii_lowercase(), p)?;
    tx.put(BY_CLIENT_ID, &p.client_id.to_ascii_lowercase(), &p.object_id)?;
    if let Some(r) = &p.resource_id {
        tx.put(BY_RESOURCE, &r.to_ascii_lowercase(), &p.object_id)?;
    }
    Ok(())
}

/// Removes a principal and its index entries.
pub fn delete_principal(tx: &mut Tx<'_>, object_id: &str) -> Result<(), StoreError> {
    if let Some(old) = tx.get::<Principal>(PRINCIPAL, &object_id.to_ascii_lowercase())? {
        tx.delete(BY_CLIENT_ID, &old.client_id.to_ascii_lowercase())?;
        if let Some(r) = &old.resource_id {
            tx.delete(BY_RESOURCE, &r.to_ascii_lowercase())?;
        }
    }
    tx.delete(PRINCIPAL, &object_id.to_ascii_lowercase())?;
    Ok(())
}

/// Builds the indexes from the principals, for a data directory written before they existed.
pub fn build_principal_index(tx: &mut Tx<'_>) -> Result<(), StoreError> {
    tx.delete_prefix(BY_CLIENT_ID, "")?;
    tx.delete_prefix(BY_RESOURCE, "")?;
    for (_, p) in tx.list_keys::<Principal>(PRINCIPAL, "")? {
        put_principal(tx, &p)?;
    }
    Ok(())
}

/// The principal an index entry points at.
fn via(app: &App, index: &str, key: &str) -> Result<Option<Principal>, StoreError> {
    match app.store.get::<String>(index, &key.to_ascii_lowercase())? {
        Some(oid) => get_principal(app, &oid),
        None => Ok(None),
    }
}

pub fn get_principal(app: &App, object_id: &str) -> Result<Option<Principal>, StoreError> {
    app.store.get(PRINCIPAL, &object_id.to_ascii_lowercase())
}

fn find_principal(app: &App, req: &Req) -> Result<Option<Principal>, StoreError> {
    if let Some(oid) = req.query("principal_id").or_else(|| req.query("object_id")) {
        return get_principal(app, oid);
    }
    if let Some(client_id) = req.query("client_id") {
        return via(app, BY_CLIENT_ID, client_id);
    }
    if let Some(res_id) = req.query("mi_res_id").or_else(|| req.query("msi_res_id")) {
        return via(app, BY_RESOURCE, res_id);
    }
    get_principal(app, crate::config::APP_PRINCIPAL_ID)
}

fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    Resp::json(
        status,
        &json!({ "statusCode": status.as_u16(), "message": message, "correlationId": uuid::Uuid::new_v4().to_string(), "error": code }),
    )
}

/// Issues a token for `principal` with audience `resource`, valid for `lifetime` seconds of wall-clock time.
pub fn issue_token(app: &App, principal: &Principal, resource: &str, lifetime: i64) -> (String, i64) {
    let now = crate::token::wall_now();
    let exp = now + lifetime;
    let claims = Claims {
        aud: resource.to_string(),
        iss: format!("https://sts.windows.net/{}/", principal.tenant_id),
        iat: now,
        nbf: now,
        exp,
        oid: principal.object_id.clone(),
        tid: principal.tenant_id.clone(),
        sub: principal.object_id.clone(),
        appid: principal.client_id.clone(),
        idtyp: if principal.user_principal_name.is_some() { "user" } else { "app" }.into(),
        xms_mirid: principal.resource_id.clone(),
        uti: uuid::Uuid::new_v4().simple().to_string(),
        ver: "1.0".into(),
        name: principal.user_principal_name.as_ref().map(|_| principal.display_name.clone()),
        upn: principal.user_principal_name.clone(),
        scp: None,
    };
    (app.tokens.issue(&claims), exp)
}

pub fn handle(app: &App, req: &Req) -> Resp {
    if req.method != http::Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "Only GET is supported");
    }
    match req.header("x-identity-header") {
        Some(h) if constant_time_eq(h.as_bytes(), app.identity_header.as_bytes()) => {}
        Some(_) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_request",
                "The X-IDENTITY-HEADER value is not valid for this app",
            );
        }
        None => {
            return error(StatusCode::UNAUTHORIZED, "invalid_request", "Required header X-IDENTITY-HEADER is missing");
        }
    }
    match req.query("api-version") {
        Some("2019-08-01") => {}
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("api-version '{}' is not supported; use 2019-08-01", other.unwrap_or("")),
            );
        }
    }
    let Some(resource) = req.query("resource").filter(|r| !r.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "Required query parameter 'resource' is missing");
    };
    let principal = match find_principal(app, req) {
        Ok(Some(p)) => p,
        Ok(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "No managed identity found for the specified identity parameter",
            );
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e.to_string()),
    };
    let (token, exp) = issue_token(app, &principal, resource, TOKEN_LIFETIME_SECONDS);
    tracing::debug!(principal = %principal.object_id, resource, "issued managed identity token");
    Resp::json(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "expires_on": exp.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": principal.client_id,
        }),
    )
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
