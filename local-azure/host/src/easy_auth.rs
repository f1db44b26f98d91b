//! App Service Authentication ("Easy Auth") with Microsoft Entra ID, as the platform runs it in front of a function
//! app whose `authsettingsV2` say `requireAuthentication: true`, `unauthenticatedClientAction: Return401`.
//!
//! What the platform does, from its documentation, and what this module does the same way:
//! - it validates the bearer token a client sends (signature, lifetime, and an audience among
//!   `validation.allowedAudiences`) and answers `401` itself when there is none or it does not hold, so the app is
//!   never called ("Authentication and authorization in Azure App Service", `overview-authentication-authorization`;
//!   `Return401` in the `authsettingsV2` reference, `Microsoft.Web/sites/config`);
//! - it passes the caller to the app in headers — `X-MS-CLIENT-PRINCIPAL` (Base64 JSON `{auth_typ, claims: [{typ,
//!   val}], name_typ, role_typ}`), `X-MS-CLIENT-PRINCIPAL-ID`, `-NAME`, `-IDP` — and "external requests aren't
//!   allowed to set these headers, so they're present only if set by App Service"
//!   (`configure-authentication-user-identities`): every such header a client sent is removed first, as is every
//!   `X-MS-TOKEN-*` header. The `Authorization` header goes on to the app unchanged.
//! - the claims go through the default claims mapping (`oid` → `…/identity/claims/objectidentifier`, `sub` →
//!   `…/claims/nameidentifier`, `upn`, `tid`, `scp` likewise), so names differ from the token's.
//!
//! The Functions host then turns `X-MS-CLIENT-PRINCIPAL` into the first of the request's claims identities when
//! the site's authentication is enabled (`WEBSITE_AUTH_ENABLED`; azure-functions-host
//! `test/WebJobs.Script.Tests.Integration/WebHostEndToEnd/SamplesEndToEndTests_CSharp.cs`,
//! `HttpTrigger_Identities_*`: with it on the header's identity comes first; with it off a client-sent header is
//! ignored), which [`identity`] builds for `Data.req.Identities`.
//!
//! Where local-azure differs: tokens are checked by a [`TokenValidator`] the embedding process supplies (local-azure's
//! own issuer; its tokens are HMAC-signed, so there is no OpenID metadata document to fetch keys from), and a
//! refusal says why in `WWW-Authenticate` (RFC 6750 `error_description`) and in the body.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::http::{Reply, Request};

/// Checks a token's signature and lifetime and returns its claims (the JWT payload); `Err` says what is wrong.
/// The audience is [`EasyAuth`]'s to check.
pub trait TokenValidator: Send + Sync + 'static {
    fn validate(&self, token: &str) -> Result<Map<String, Value>, String>;
}

/// The authentication settings of the site (`authsettingsV2` with the Entra ID provider).
#[derive(Clone)]
pub struct EasyAuth {
    /// `identityProviders.azureActiveDirectory.validation.allowedAudiences`.
    pub allowed_audiences: Vec<String>,
    /// `globalValidation.excludedPaths`: requests under these paths pass without a token.
    pub excluded_paths: Vec<String>,
    pub validator: Arc<dyn TokenValidator>,
}

impl std::fmt::Debug for EasyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EasyAuth")
            .field("allowed_audiences", &self.allowed_audiences)
            .field("excluded_paths", &self.excluded_paths)
            .finish_non_exhaustive()
    }
}

/// The identity provider name Easy Auth reports for Entra ID.
pub const IDP: &str = "aad";
pub const PRINCIPAL_HEADER: &str = "x-ms-client-principal";
const NAME_TYPE: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name";
const ROLE_TYPE: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role";

/// The default inbound claims mapping for the claims that have one.
fn mapped_type(claim: &str) -> &str {
    match claim {
        "oid" => "http://schemas.microsoft.com/identity/claims/objectidentifier",
        "tid" => "http://schemas.microsoft.com/identity/claims/tenantid",
        "sub" => "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
        "upn" => "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
        "scp" => "http://schemas.microsoft.com/identity/claims/scope",
        "roles" => ROLE_TYPE,
        other => other,
    }
}

impl EasyAuth {
    /// Authenticates `request` in place: the platform's headers a client sent are removed, then either the
    /// caller's headers are added or the `401` to answer instead is returned.
    pub fn authenticate(&self, request: &mut Request) -> Result<(), Reply> {
        request.headers.retain(|(name, _)| {
            let name = name.to_ascii_lowercase();
            !name.starts_with(PRINCIPAL_HEADER) && !name.starts_with("x-ms-token-")
        });
        if self
            .excluded_paths
            .iter()
            .any(|p| request.raw_path.to_ascii_lowercase().starts_with(&p.to_ascii_lowercase()))
        {
            return Ok(());
        }
        let token = match request.header("authorization").map(str::trim) {
            Some(value) if value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ") => {
                value[7..].trim().to_string()
            }
            Some(_) => return Err(refuse("the Authorization header is not a bearer token")),
            None => return Err(refuse("no bearer token: send Authorization: Bearer <an Entra ID token for this API>")),
        };
        let claims = self.validator.validate(&token).map_err(|reason| refuse(&reason))?;
        let aud = claims.get("aud").and_then(Value::as_str).unwrap_or_default();
        if !self.allowed_audiences.iter().any(|a| a.trim_end_matches('/') == aud.trim_end_matches('/')) {
            return Err(refuse(&format!(
                "the token's audience '{aud}' is not an allowed audience of this app ({})",
                self.allowed_audiences.join(", ")
            )));
        }
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
        let id = text("oid").or_else(|| text("sub")).unwrap_or_default();
        let sign_in_name =
            text("upn").or_else(|| text("preferred_username")).or_else(|| text("name")).unwrap_or_else(|| id.clone());
        let mut mapped: Vec<Value> = Vec::new();
        for (name, value) in &claims {
            let values: Vec<String> = match value {
                Value::String(s) => vec![s.clone()],
                Value::Array(items) => {
                    items.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect()
                }
                other => vec![other.to_string()],
            };
            for v in values {
                mapped.push(json!({"typ": mapped_type(name), "val": v}));
            }
        }
        mapped.push(json!({"typ": NAME_TYPE, "val": sign_in_name}));
        let principal = json!({"auth_typ": IDP, "claims": mapped, "name_typ": NAME_TYPE, "role_typ": ROLE_TYPE});
        let encoded = base64::engine::general_purpose::STANDARD.encode(principal.to_string());
        request.headers.push((PRINCIPAL_HEADER.into(), encoded));
        request.headers.push(("x-ms-client-principal-id".into(), id));
        request.headers.push(("x-ms-client-principal-name".into(), sign_in_name));
        request.headers.push(("x-ms-client-principal-idp".into(), IDP.into()));
        Ok(())
    }
}

fn refuse(reason: &str) -> Reply {
    let quoted = reason.replace('\\', "\\\\").replace('"', "'");
    let mut reply = Reply::json(401, &json!({"error": {"code": "Unauthorized", "message": reason}}));
    reply.headers.push((
        "WWW-Authenticate".into(),
        format!("Bearer realm=\"edgevault\", error=\"invalid_token\", error_description=\"{quoted}\""),
    ));
    tracing::info!(reason, "Easy Auth refused a request");
    reply
}

/// The claims identity the Functions host makes of an `X-MS-CLIENT-PRINCIPAL` header, serialized as Json.NET
/// writes a `ClaimsIdentity` (see `http_trigger::identities`); `None` when the header does not decode.
pub fn identity(header: &str) -> Option<Value> {
    let decoded = base64::engine::general_purpose::STANDARD.decode(header.trim()).ok()?;
    let principal: Value = serde_json::from_slice(&decoded).ok()?;
    let name_type = principal["name_typ"].as_str().unwrap_or(NAME_TYPE).to_string();
    let role_type = principal["role_typ"].as_str().unwrap_or(ROLE_TYPE).to_string();
    let claims: Vec<Value> = principal["claims"]
        .as_array()?
        .iter()
        .map(|c| {
            json!({
                "Issuer": "LOCAL AUTHORITY",
                "OriginalIssuer": "LOCAL AUTHORITY",
                "Properties": {},
                "Type": c["typ"],
                "Value": c["val"],
                "ValueType": "http://www.w3.org/2001/XMLSchema#string",
            })
        })
        .collect();
    let name =
        claims.iter().find(|c| c["Type"] == name_type.as_str()).map(|c| c["Value"].clone()).unwrap_or(Value::Null);
    Some(json!({
        "AuthenticationType": principal["auth_typ"],
        "IsAuthenticated": true,
        "Actor": null,
        "BootstrapContext": null,
        "Claims": claims,
        "Label": null,
        "Name": name,
        "NameClaimType": name_type,
        "RoleClaimType": role_type,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<Map<String, Value>, String>);
    impl TokenValidator for Fixed {
        fn validate(&self, _token: &str) -> Result<Map<String, Value>, String> {
            self.0.clone()
        }
    }

    fn easy_auth(result: Result<Value, &str>) -> EasyAuth {
        EasyAuth {
            allowed_audiences: vec!["api://edgevault".into()],
            excluded_paths: vec!["/runtime/webhooks/eventgrid".into()],
            validator: Arc::new(Fixed(result.map(|v| v.as_object().cloned().unwrap()).map_err(str::to_string))),
        }
    }

    fn request(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            raw_path: "/api/activation-keys/x".into(),
            raw_query: None,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: Default::default(),
        }
    }

    #[test]
    fn a_valid_token_becomes_the_principal_headers_and_forged_ones_are_dropped() {
        let claims =
            json!({"aud": "api://edgevault", "oid": "o-1", "name": "Ada", "upn": "ada@contoso.test", "tid": "t"});
        let mut req = request(&[
            ("authorization", "Bearer abc"),
            ("x-ms-client-principal-id", "forged"),
            ("x-ms-token-aad-access-token", "x"),
        ]);
        easy_auth(Ok(claims)).authenticate(&mut req).unwrap();
        assert_eq!(req.header("x-ms-client-principal-id"), Some("o-1"));
        assert_eq!(req.header("x-ms-client-principal-name"), Some("ada@contoso.test"));
        assert_eq!(req.header("x-ms-client-principal-idp"), Some("aad"));
        assert_eq!(req.headers.iter().filter(|(k, _)| k == "x-ms-client-principal-id").count(), 1);
        assert!(req.header("x-ms-token-aad-access-token").is_none());
        let identity = identity(req.header(PRINCIPAL_HEADER).unwrap()).unwrap();
        assert_eq!(identity["AuthenticationType"], "aad");
        assert_eq!(identity["Name"], "ada@contoso.test");
        let oid = identity["Claims"].as_array().unwrap().iter().find(|c| c["Type"] == mapped_type("oid")).unwrap();
        assert_eq!(oid["Value"], "o-1");
    }

    #[test]
    fn missing_invalid_and_wrong_audience_tokens_are_refused_with_a_reason() {
        let no_token = easy_auth(Ok(json!({}))).authenticate(&mut request(&[])).unwrap_err();
        assert_eq!(no_token.status, 401);
        let bad = easy_auth(Err("the token signature is invalid"))
            .authenticate(&mut request(&[("authorization", "Bearer x")]))
            .unwrap_err();
        assert!(String::from_utf8_lossy(&bad.body).contains("signature"));
        assert!(bad.headers.iter().any(|(k, v)| k == "WWW-Authenticate" && v.contains("invalid_token")));
        let wrong = easy_auth(Ok(json!({"aud": "https://management.azure.com/"})))
            .authenticate(&mut request(&[("authorization", "Bearer x")]))
            .unwrap_err();
        assert!(String::from_utf8_lossy(&wrong.body).contains("audience"));
    }

    #[test]
    fn excluded_paths_pass_without_a_token_but_lose_forged_headers() {
        let mut req = request(&[("x-ms-client-principal", "forged")]);
        req.raw_path = "/runtime/webhooks/eventgrid".into();
        easy_auth(Err("unused")).authenticate(&mut req).unwrap();
        assert!(req.header(PRINCIPAL_HEADER).is_none());
    }
}
