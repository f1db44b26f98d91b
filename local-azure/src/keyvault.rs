//! Key Vault data plane at `https://<vault>.vault.azure.net`: secrets.
//!
//! Unauthenticated requests get the `401` challenge the official clients use to discover the
//! token audience (`resource="https://vault.azure.net"`, which `SecretClient` checks against the
//! vault's host). Access policies are enforced per principal (`oid`) and permission. A vault that
//! does not exist or is soft-deleted answers `404 VaultNotFound` here; through the proxy its
//! host is refused at `CONNECT` time instead, the closest thing to the DNS failure Azure gives.

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::App;
use crate::arm::vaults::{self, Vault};
use crate::http::{Req, Resp};
use crate::store::{StoreError, Tx};
use crate::token::{Claims, TokenError};

pub const SECRET: &str = "secret";
pub const AUDIENCE: &str = "https://vault.azure.net";
const DEFAULT_MAX_RESULTS: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// An error Key Vault itself would answer.
    #[error("{status} {code}: {message}")]
    Api {
        status: StatusCode,
        code: &'static str,
        message: String,
        /// `innererror.code` (e.g. `AccessDenied`).
        inner: Option<&'static str>,
        /// The `WWW-Authenticate` challenge on 401.
        challenge: Option<String>,
    },
    /// local-azure's own storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl KvError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        KvError::Api { status, code, message: message.into(), inner: None, challenge: None }
    }

    fn with_inner(mut self, code: &'static str) -> Self {
        if let KvError::Api { inner, .. } = &mut self {
            *inner = Some(code);
        }
        self
    }

    fn with_challenge(mut self, value: String) -> Self {
        if let KvError::Api { challenge, .. } = &mut self {
            *challenge = Some(value);
        }
        self
    }

    pub fn status(&self) -> StatusCode {
        match self {
            KvError::Api { status, .. } => *status,
            KvError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn to_resp(&self) -> Resp {
        match self {
            KvError::Api { status, code, message, inner, challenge } => {
                let mut error = json!({ "code": code, "message": message });
                if let Some(inner) = inner {
                    error["innererror"] = json!({ "code": inner });
                }
                let mut resp = Resp::json(*status, &json!({ "error": error }));
                if let Some(c) = challenge {
                    resp = resp.with_header("www-authenticate", c);
                }
                resp
            }
            KvError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                Resp::json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({ "error": { "code": "InternalServerError", "message": "The service encountered an internal error." } }),
                )
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVersion {
    pub version: String,
    pub value: String,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub tags: Option<Map<String, Value>>,
    pub enabled: bool,
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub nbf: Option<i64>,
    pub created: i64,
    pub updated: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedSecret {
    pub deleted_date: i64,
    pub scheduled_purge_date: i64,
}

/// A secret with all its versions, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretDoc {
    pub name: String,
    pub versions: Vec<SecretVersion>,
    #[serde(default)]
    pub deleted: Option<DeletedSecret>,
}

pub(crate) fn secret_key(vault: &str, name: &str) -> String {
    format!("{}/{}", vault.to_ascii_lowercase(), name.to_ascii_lowercase())
}

/// Removes every secret of a vault (vault purge).
pub fn purge_vault_data(tx: &mut Tx<'_>, vault: &str) -> Result<(), StoreError> {
    tx.delete_prefix(SECRET, &format!("{}/", vault.to_ascii_lowercase()))?;
    Ok(())
}

/// The vault name addressed by a `<vault>.vault.azure.net` host.
pub fn vault_name_of_host(host: &str) -> Option<&str> {
    host.strip_suffix(".vault.azure.net").filter(|n| !n.is_empty() && !n.contains('.'))
}

struct Ctx<'a> {
    app: &'a App,
    req: &'a Req,
    vault: Vault,
    claims: Claims,
    now: i64,
}

impl Ctx<'_> {
    fn base(&self) -> String {
        format!("https://{}.vault.azure.net", self.vault.name.to_ascii_lowercase())
    }

    fn recovery_level(&self) -> &'static str {
        if self.vault.purge_protection() { "Recoverable" } else { "Recoverable+Purgeable" }
    }

    fn attributes(&self, v: &SecretVersion) -> Value {
        let mut a = json!({
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.updated,
            "recoveryLevel": self.recovery_level(),
            "recoverableDays": self.vault.retention_days(),
        });
        if let Some(exp) = v.exp {
            a["exp"] = json!(exp);
        }
        if let Some(nbf) = v.nbf {
            a["nbf"] = json!(nbf);
        }
        a
    }

    fn bundle(&self, doc: &SecretDoc, v: &SecretVersion, with_value: bool) -> Value {
        let mut b = json!({
            "id": format!("{}/secrets/{}/{}", self.base(), doc.name, v.version),
            "attributes": self.attributes(v),
        });
        if with_value {
            b["value"] = json!(v.value);
        }
        if let Some(ct) = &v.content_type {
            b["contentType"] = json!(ct);
        }
        if let Some(tags) = &v.tags {
            b["tags"] = json!(tags);
        }
        b
    }

    fn item(&self, doc: &SecretDoc, v: &SecretVersion, versioned: bool) -> Value {
        let mut b = self.bundle(doc, v, false);
        if !versioned {
            b["id"] = json!(format!("{}/secrets/{}", self.base(), doc.name));
        }
        b
    }

    fn deleted_bundle(&self, doc: &SecretDoc) -> Value {
        let latest = doc.versions.last();
        let mut b = latest.map(|v| self.bundle(doc, v, false)).unwrap_or_else(|| json!({}));
        if let Some(d) = &doc.deleted {
            b["recoveryId"] = json!(format!("{}/deletedsecrets/{}", self.base(), doc.name));
            b["deletedDate"] = json!(d.deleted_date);
            b["scheduledPurgeDate"] = json!(d.scheduled_purge_date);
        }
        b
    }

    /// Enforces the vault's access policies for `permission` on secrets.
    fn require(&self, permission: &str) -> Result<(), KvError> {
        // Data-plane role assignments are not emulated: an RBAC vault grants nothing.
        if self.vault.properties.get("enableRbacAuthorization").and_then(Value::as_bool) == Some(true) {
            return Err(KvError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "Caller is not authorized to perform action on resource. If role assignments were recently changed, please wait several minutes for role assignments to become effective. Caller: appid={};oid={} Vault: {};location={}",
                    self.claims.appid, self.claims.oid, self.vault.name, self.vault.location
                ),
            )
            .with_inner("ForbiddenByRbac"));
        }
        let allowed = self.vault.access_policies().iter().any(|p| {
            let oid = p.get("objectId").and_then(Value::as_str).unwrap_or_default();
            let tid = p.get("tenantId").and_then(Value::as_str).unwrap_or_default();
            oid.eq_ignore_ascii_case(&self.claims.oid)
                && tid.eq_ignore_ascii_case(&self.claims.tid)
                && p.pointer("/permissions/secrets").and_then(Value::as_array).is_some_and(|perms| {
                    perms
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|x| x.eq_ignore_ascii_case(permission) || x.eq_ignore_ascii_case("all"))
                })
        });
        if allowed {
            return Ok(());
        }
        Err(KvError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "The user, group or application 'appid={};oid={};iss=https://sts.windows.net/{}/' does not have secrets {permission} permission on key vault '{};location={}'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                self.claims.appid, self.claims.oid, self.claims.tid, self.vault.name, self.vault.location
            ),
        )
        .with_inner("AccessDenied"))
    }

    fn load(&self, name: &str) -> Result<Option<SecretDoc>, KvError> {
        Ok(self.app.store.get(SECRET, &secret_key(&self.vault.name, name))?)
    }

    fn page(&self, items: Vec<Value>, path: &str) -> Value {
        let skip: usize = self.req.query("$skiptoken").and_then(|t| t.parse().ok()).unwrap_or(0);
        let max: usize =
            self.req.query("maxresults").and_then(|t| t.parse().ok()).filter(|n| *n > 0).unwrap_or(DEFAULT_MAX_RESULTS);
        let total = items.len();
        let page: Vec<Value> = items.into_iter().skip(skip).take(max).collect();
        let next = (skip + max < total).then(|| {
            let q = form_urlencoded::Serializer::new(String::new())
                .append_pair("api-version", self.req.query("api-version").unwrap_or_default())
                .append_pair("$skiptoken", &(skip + max).to_string())
                .append_pair("maxresults", &max.to_string())
                .finish();
            format!("{}{path}?{q}", self.base())
        });
        json!({ "value": page, "nextLink": next })
    }
}

fn secret_not_found(name: &str) -> KvError {
    KvError::new(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        format!(
            "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

fn version_not_found(name: &str, version: &str) -> KvError {
    KvError::new(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        format!(
            "A secret with (name/id) {name}/{version} was not found in this key vault. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

fn deleted_not_found(name: &str) -> KvError {
    KvError::new(StatusCode::NOT_FOUND, "SecretNotFound", format!("Deleted Secret not found: {name}"))
}

fn valid_secret_name(name: &str) -> Result<(), KvError> {
    if (1..=127).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(())
    } else {
        Err(KvError::new(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            format!("The request URI contains an invalid name: {name}"),
        ))
    }
}

fn challenge(tenant: &str) -> String {
    format!("Bearer authorization=\"https://login.microsoftonline.com/{tenant}\", resource=\"{AUDIENCE}\"")
}

fn unauthorized(tenant: &str, message: &str) -> KvError {
    KvError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message).with_challenge(challenge(tenant))
}

/// The operation name a request performs (`secrets/get`, …), for fault matching.
pub fn operation_name(req: &Req) -> String {
    let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let first = s.first().map(|x| x.to_ascii_lowercase()).unwrap_or_default();
    let op = match (&req.method, first.as_str(), s.len()) {
        (&Method::PUT, "secrets", 2) => "set",
        (&Method::GET, "secrets", 1) => "list",
        (&Method::GET, "secrets", 3) if s[2].eq_ignore_ascii_case("versions") => "listversions",
        (&Method::GET, "secrets", _) => "get",
        (&Method::PATCH, "secrets", _) => "update",
        (&Method::DELETE, "secrets", _) => "delete",
        (&Method::GET, "deletedsecrets", 1) => "listdeleted",
        (&Method::GET, "deletedsecrets", _) => "getdeleted",
        (&Method::DELETE, "deletedsecrets", _) => "purge",
        (&Method::POST, "deletedsecrets", _) => "recover",
        _ => "unknown",
    };
    format!("secrets/{op}")
}

pub fn handle(app: &App, vault_name: &str, req: &Req) -> Resp {
    match handle_inner(app, vault_name, req) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(vault = vault_name, status = %e.status(), error = %e, "Key Vault request failed");
            e.to_resp()
        }
    }
    .with_header("x-ms-keyvault-service-version", "1.9.0.0")
    .with_header("x-ms-request-id", uuid::Uuid::new_v4().to_string())
}

fn handle_inner(app: &App, vault_name: &str, req: &Req) -> Result<Resp, KvError> {
    let now = app.clock.now();
    // A soft-deleted vault answers the same before and after its purge date: not here.
    let vault = vaults::by_name(app, vault_name)?.filter(|v| v.deleted.is_none()).ok_or_else(|| {
        KvError::new(
            StatusCode::NOT_FOUND,
            "VaultNotFound",
            format!("The vault '{vault_name}' does not exist (or is soft-deleted)."),
        )
    })?;
    let tenant = vault.tenant_id().to_string();
    let Some(token) = req.bearer() else {
        return Err(unauthorized(&tenant, "AKV10000: Request is missing a Bearer or PoP token."));
    };
    let claims = app.tokens.verify(token, crate::token::wall_now(), &[AUDIENCE]).map_err(|e| {
        let msg = match e {
            TokenError::Expired(_) => "AKV10012: Token has expired.".to_string(),
            TokenError::WrongAudience(aud) => {
                format!("AKV10022: Invalid audience. Expected {AUDIENCE}, found: {aud}.")
            }
            TokenError::BadSignature => "AKV10031: Token signature is invalid.".to_string(),
            _ => "AKV10001: Token is malformed.".to_string(),
        };
        unauthorized(&tenant, &msg)
    })?;
    if !claims.tid.eq_ignore_ascii_case(&tenant) {
        return Err(unauthorized(
            &tenant,
            &format!(
                "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{tenant}/, found https://sts.windows.net/{}/.",
                claims.tid
            ),
        ));
    }
    if req.query("api-version").is_none_or(str::is_empty) {
        return Err(KvError::new(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The 'api-version' query parameter is missing.",
        ));
    }
    if let Some(max) = req.query("maxresults")
        && !max.parse::<usize>().is_ok_and(|n| (1..=DEFAULT_MAX_RESULTS).contains(&n))
    {
        return Err(KvError::new(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            format!("Invalid value '{max}' for maxresults: it must be between 1 and {DEFAULT_MAX_RESULTS}."),
        ));
    }
    let ctx = Ctx { app, req, vault, claims, now: now.unix_timestamp() };
    expire_secrets(&ctx)?;
    let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let lower: Vec<String> = s.iter().map(|x| x.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let resp = match (&req.method, l.as_slice()) {
        (&Method::PUT, ["secrets", _]) => set(&ctx, s[1]),
        (&Method::GET, ["secrets"]) => list(&ctx),
        (&Method::GET, ["secrets", _, "versions"]) => list_versions(&ctx, s[1]),
        (&Method::GET, ["secrets", _]) => get(&ctx, s[1], None),
        (&Method::GET, ["secrets", _, _]) => get(&ctx, s[1], Some(s[2])),
        (&Method::PATCH, ["secrets", _]) => update(&ctx, s[1], None),
        (&Method::PATCH, ["secrets", _, _]) => update(&ctx, s[1], Some(s[2])),
        (&Method::DELETE, ["secrets", _]) => delete(&ctx, s[1]),
        (&Method::GET, ["deletedsecrets"]) => list_deleted(&ctx),
        (&Method::GET, ["deletedsecrets", _]) => get_deleted(&ctx, s[1]),
        (&Method::DELETE, ["deletedsecrets", _]) => purge(&ctx, s[1]),
        (&Method::POST, ["deletedsecrets", _, "recover"]) => recover(&ctx, s[1]),
        _ => Err(KvError::new(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            format!("The request '{} {}' is not supported by local-azure.", req.method, req.path()),
        )),
    }?;
    tracing::info!(vault = %ctx.vault.name, operation = %operation_name(req), principal = %ctx.claims.oid, status = resp.status.as_u16(), "Key Vault request");
    Ok(resp)
}

/// Deleted secrets whose scheduled purge date has passed are gone, as in Azure.
fn expire_secrets(ctx: &Ctx<'_>) -> Result<(), KvError> {
    let prefix = format!("{}/", ctx.vault.name.to_ascii_lowercase());
    let docs: Vec<SecretDoc> = ctx.app.store.list(SECRET, &prefix)?;
    let due: Vec<&SecretDoc> =
        docs.iter().filter(|d| d.deleted.as_ref().is_some_and(|x| x.scheduled_purge_date <= ctx.now)).collect();
    if !due.is_empty() {
        ctx.app.store.write(|tx| -> Result<(), StoreError> {
            for d in due {
                tx.delete(SECRET, &secret_key(&ctx.vault.name, &d.name))?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetBody {
    value: Option<String>,
    content_type: Option<String>,
    tags: Option<Map<String, Value>>,
    attributes: Option<AttrBody>,
}

#[derive(Debug, Deserialize)]
struct AttrBody {
    enabled: Option<bool>,
    exp: Option<i64>,
    nbf: Option<i64>,
}

fn bad_body(e: serde_json::Error) -> KvError {
    KvError::new(StatusCode::BAD_REQUEST, "BadParameter", format!("The request body is not valid: {e}"))
}

fn set(ctx: &Ctx<'_>, name: &str) -> Result<Resp, KvError> {
    valid_secret_name(name)?;
    ctx.require("set")?;
    let body: SetBody = ctx.req.json().map_err(bad_body)?;
    let Some(value) = body.value else {
        return Err(KvError::new(StatusCode::BAD_REQUEST, "BadParameter", "Property 'value' is required."));
    };
    let version = uuid::Uuid::new_v4().simple().to_string();
    let attrs = body.attributes.as_ref();
    let new = SecretVersion {
        version,
        value,
        content_type: body.content_type,
        tags: body.tags,
        enabled: attrs.and_then(|a| a.enabled).unwrap_or(true),
        exp: attrs.and_then(|a| a.exp),
        nbf: attrs.and_then(|a| a.nbf),
        created: ctx.now,
        updated: ctx.now,
    };
    let key = secret_key(&ctx.vault.name, name);
    let doc = ctx.app.store.write(|tx| -> Result<SecretDoc, KvError> {
        let mut doc = tx.get::<SecretDoc>(SECRET, &key)?.unwrap_or(SecretDoc {
            name: name.to_string(),
            versions: vec![],
            deleted: None,
        });
        if doc.deleted.is_some() {
            return Err(KvError::new(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."),
            ));
        }
        doc.versions.push(new.clone());
        tx.put(SECRET, &key, &doc)?;
        Ok(doc)
    })?;
    Ok(Resp::json(StatusCode::OK, &ctx.bundle(&doc, &new, true)))
}

fn live(ctx: &Ctx<'_>, name: &str) -> Result<SecretDoc, KvError> {
    ctx.load(name)?.filter(|d| d.deleted.is_none() && !d.versions.is_empty()).ok_or_else(|| secret_not_found(name))
}

fn get(ctx: &Ctx<'_>, name: &str, version: Option<&str>) -> Result<Resp, KvError> {
    ctx.require("get")?;
    let doc = live(ctx, name)?;
    let v = match version {
        Some(ver) => doc
            .versions
            .iter()
            .find(|v| v.version.eq_ignore_ascii_case(ver))
            .ok_or_else(|| version_not_found(name, ver))?,
        None => doc.versions.last().ok_or_else(|| secret_not_found(name))?,
    };
    if !v.enabled {
        return Err(KvError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation get is not allowed on a disabled secret.",
        )
        .with_inner("SecretDisabled"));
    }
    Ok(Resp::json(StatusCode::OK, &ctx.bundle(&doc, v, true)))
}

fn list(ctx: &Ctx<'_>) -> Result<Resp, KvError> {
    ctx.require("list")?;
    let prefix = format!("{}/", ctx.vault.name.to_ascii_lowercase());
    let docs: Vec<SecretDoc> = ctx.app.store.list(SECRET, &prefix)?;
    let items = docs
        .iter()
        .filter(|d| d.deleted.is_none())
        .filter_map(|d| d.versions.last().map(|v| ctx.item(d, v, false)))
        .collect();
    Ok(Resp::json(StatusCode::OK, &ctx.page(items, "/secrets")))
}

fn list_versions(ctx: &Ctx<'_>, name: &str) -> Result<Resp, KvError> {
    ctx.require("list")?;
    let docs = ctx.load(name)?.filter(|d| d.deleted.is_none());
    let items = docs.map(|d| d.versions.iter().map(|v| ctx.item(&d, v, true)).collect()).unwrap_or_default();
    Ok(Resp::json(StatusCode::OK, &ctx.page(items, &format!("/secrets/{name}/versions"))))
}

fn update(ctx: &Ctx<'_>, name: &str, version: Option<&str>) -> Result<Resp, KvError> {
    ctx.require("set")?;
    let body: SetBody = ctx.req.json().map_err(bad_body)?;
    let key = secret_key(&ctx.vault.name, name);
    let (doc, idx) = ctx.app.store.write(|tx| -> Result<(SecretDoc, usize), KvError> {
        let mut doc = tx
            .get::<SecretDoc>(SECRET, &key)?
            .filter(|d| d.deleted.is_none() && !d.versions.is_empty())
            .ok_or_else(|| secret_not_found(name))?;
        let idx = match version {
            Some(ver) => doc
                .versions
                .iter()
                .position(|v| v.version.eq_ignore_ascii_case(ver))
                .ok_or_else(|| version_not_found(name, ver))?,
            None => doc.versions.len() - 1,
        };
        let v = &mut doc.versions[idx];
        if let Some(ct) = body.content_type {
            v.content_type = Some(ct);
        }
        if let Some(tags) = body.tags {
            v.tags = Some(tags);
        }
        if let Some(a) = body.attributes {
            if let Some(e) = a.enabled {
                v.enabled = e;
            }
            if a.exp.is_some() {
                v.exp = a.exp;
            }
            if a.nbf.is_some() {
                v.nbf = a.nbf;
            }
        }
        v.updated = ctx.now;
        tx.put(SECRET, &key, &doc)?;
        Ok((doc, idx))
    })?;
    Ok(Resp::json(StatusCode::OK, &ctx.bundle(&doc, &doc.versions[idx], false)))
}

fn delete(ctx: &Ctx<'_>, name: &str) -> Result<Resp, KvError> {
    ctx.require("delete")?;
    let key = secret_key(&ctx.vault.name, name);
    let retention = ctx.vault.retention_days();
    let doc = ctx.app.store.write(|tx| -> Result<SecretDoc, KvError> {
        let mut doc = tx
            .get::<SecretDoc>(SECRET, &key)?
            .filter(|d| d.deleted.is_none() && !d.versions.is_empty())
            .ok_or_else(|| secret_not_found(name))?;
        doc.deleted = Some(DeletedSecret { deleted_date: ctx.now, scheduled_purge_date: ctx.now + retention * 86_400 });
        tx.put(SECRET, &key, &doc)?;
        Ok(doc)
    })?;
    Ok(Resp::json(StatusCode::OK, &ctx.deleted_bundle(&doc)))
}

fn deleted(ctx: &Ctx<'_>, name: &str) -> Result<SecretDoc, KvError> {
    ctx.load(name)?.filter(|d| d.deleted.is_some()).ok_or_else(|| deleted_not_found(name))
}

fn get_deleted(ctx: &Ctx<'_>, name: &str) -> Result<Resp, KvError> {
    ctx.require("list")?;
    let doc = deleted(ctx, name)?;
    Ok(Resp::json(StatusCode::OK, &ctx.deleted_bundle(&doc)))
}

fn list_deleted(ctx: &Ctx<'_>) -> Result<Resp, KvError> {
    ctx.require("list")?;
    let prefix = format!("{}/", ctx.vault.name.to_ascii_lowercase());
    let docs: Vec<SecretDoc> = ctx.app.store.list(SECRET, &prefix)?;
    let items = docs
        .iter()
        .filter(|d| d.deleted.is_some())
        .map(|d| {
            let mut b = ctx.deleted_bundle(d);
            b["id"] = json!(format!("{}/secrets/{}", ctx.base(), d.name));
            b
        })
        .collect();
    Ok(Resp::json(StatusCode::OK, &ctx.page(items, "/deletedsecrets")))
}

fn recover(ctx: &Ctx<'_>, name: &str) -> Result<Resp, KvError> {
    ctx.require("recover")?;
    let key = secret_key(&ctx.vault.name, name);
    let doc = ctx.app.store.write(|tx| -> Result<SecretDoc, KvError> {
        let mut doc = tx
            .get::<SecretDoc>(SECRET, &key)?
            .filter(|d| d.deleted.is_some())
            .ok_or_else(|| deleted_not_found(name))?;
        doc.deleted = None;
        tx.put(SECRET, &key, &doc)?;
        Ok(doc)
    })?;
    let latest = doc.versions.last().ok_or_else(|| secret_not_found(name))?;
    Ok(Resp::json(StatusCode::OK, &ctx.bundle(&doc, latest, false)))
}

fn purge(ctx: &Ctx<'_>, name: &str) -> Result<Resp, KvError> {
    ctx.require("purge")?;
    if ctx.vault.purge_protection() {
        return Err(KvError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.",
        ));
    }
    deleted(ctx, name)?;
    let key = secret_key(&ctx.vault.name, name);
    ctx.app.store.write(|tx| -> Result<(), KvError> {
        tx.delete(SECRET, &key)?;
        Ok(())
    })?;
    Ok(Resp::empty(StatusCode::NO_CONTENT))
}
