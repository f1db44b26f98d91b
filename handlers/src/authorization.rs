//! Who is calling the API, and whether they may act on a device.
//!
//! **Who.** App Service Authentication (Easy Auth) validates the caller's Entra ID token before the request reaches
//! the Functions host, and the host hands the handler the caller as the first of `Data.req.Identities`: a claims
//! identity of type `aad` made from the platform's `X-MS-CLIENT-PRINCIPAL` header. The handler reads the caller
//! from there and from nowhere else: the host builds that identity only when the site's authentication is on
//! (azure-functions-host `SamplesEndToEndTests_CSharp.HttpTrigger_Identities_BlocksSpoofedEasyAuthIdentity`), whereas
//! a raw `X-MS-CLIENT-PRINCIPAL` header in `Headers` is the client's own invention whenever it is off. The caller's
//! bearer token (Easy Auth passes the `Authorization` header through) must name the same object id; it is used for
//! one thing, the on-behalf-of exchange, and never logged or answered ([`BearerToken`] has no `Display`).
//!
//! **Whether.** [`require_permission`] asks ARM, as the caller, for the caller's permissions at the device
//! (`azure::on_behalf_of`) and evaluates them as Azure RBAC documents: an action is allowed when some entry's
//! `actions` match it and the same entry's `notActions` do not; `*` matches any run of characters, case-insensitively
//! (https://learn.microsoft.com/azure/role-based-access-control/role-definitions#actions). Nothing is cached: a
//! revoked role assignment stops working on the caller's next request, as soon as ARM stops reporting it (Azure
//! documents up to 10 minutes for a role assignment change to take effect everywhere). `docs/AUTHORIZATION.md` has
//! the reasoning.

use crate::azure::AzureError;
use crate::azure::models::{BearerToken, Permission};
use crate::deps::Deps;
use crate::resource_id::ResourceId;
use crate::triggers::HttpRequest;

/// Needed to request a device's activation key or read its status (which carries the key): the right to change
/// the device — Stack Edge asks Contributor on the resource for its own activation key.
pub const ACTIVATE: &str = "Microsoft.DataBoxEdge/dataBoxEdgeDevices/write";
/// Needed to see a device's state without any of its secrets (a fleet view, say).
pub const READ: &str = "Microsoft.DataBoxEdge/dataBoxEdgeDevices/read";

/// The identity provider name App Service Authentication gives Microsoft Entra ID.
const ENTRA_ID: &str = "aad";
/// The object id claim after Easy Auth's default claims mapping (the token's `oid`).
const OBJECT_ID_CLAIM: &str = "http://schemas.microsoft.com/identity/claims/objectidentifier";

/// An authenticated caller: who (object id, display name) and the token to act on their behalf with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub object_id: String,
    pub name: String,
    token: BearerToken,
}

/// Why a caller may not do what it asked.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// No authenticated caller, or a token that cannot be used on the caller's behalf: `401`.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller lacks `permission` at `scope`: `403`, naming the permission.
    #[error("{caller} does not have the permission {permission} on {scope}")]
    Forbidden { caller: String, permission: String, scope: String },
    /// edgevault cannot check (no API app registration configured): `500`, nothing done.
    #[error("{0}")]
    NotConfigured(String),
    /// ARM or Entra ID could not answer; whether to retry is the error's to say.
    #[error(transparent)]
    Azure(AzureError),
}

impl Caller {
    /// For tests and callers that already hold a verified principal.
    pub fn new(object_id: impl Into<String>, name: impl Into<String>, token: BearerToken) -> Self {
        Caller { object_id: object_id.into(), name: name.into(), token }
    }

    /// `Ada Lovelace (0f3c…)`: how logs, alerts and answers name the caller.
    pub fn label(&self) -> String {
        format!("{} ({})", self.name, self.object_id)
    }

    /// The caller of an HTTP request, as App Service Authentication and the Functions host present it.
    pub fn from_request(request: &HttpRequest) -> Result<Caller, Denied> {
        let unauthenticated = |why: &str| Denied::Unauthenticated(why.to_string());
        let identity = request
            .identities
            .iter()
            .find(|i| {
                i["AuthenticationType"].as_str().is_some_and(|t| t.eq_ignore_ascii_case(ENTRA_ID))
                    && i["IsAuthenticated"].as_bool() == Some(true)
            })
            .ok_or_else(|| {
                unauthenticated(
                    "no authenticated Entra ID caller: sign in and send Authorization: Bearer <a token for this API>",
                )
            })?;
        let claim = |kind: &str| {
            identity["Claims"].as_array().and_then(|claims| {
                claims.iter().find(|c| c["Type"].as_str() == Some(kind)).and_then(|c| c["Value"].as_str())
            })
        };
        let object_id = claim(OBJECT_ID_CLAIM)
            .or_else(|| claim("oid"))
            .filter(|oid| !oid.is_empty())
            .ok_or_else(|| unauthenticated("the authenticated caller has no object id (oid) claim"))?
            .to_string();
        let name = claim("name").or_else(|| identity["Name"].as_str()).unwrap_or(&object_id).to_string();
        let token = bearer(request).ok_or_else(|| unauthenticated("the request carries no bearer token"))?;
        // Easy Auth made the identity from this token; a mismatch means one of them did not come from it.
        if token_object_id(&token).is_none_or(|oid| !oid.eq_ignore_ascii_case(&object_id)) {
            return Err(unauthenticated("the bearer token is not the authenticated caller's"));
        }
        Ok(Caller { object_id, name, token })
    }
}

/// The token in `Authorization: Bearer …`, or the one the platform's token store put in
/// `X-MS-TOKEN-AAD-ACCESS-TOKEN` for a signed-in session.
fn bearer(request: &HttpRequest) -> Option<BearerToken> {
    let from_header = request.header("authorization").and_then(|value| {
        let value = value.trim();
        (value.len() > 7 && value[..7].eq_ignore_ascii_case("bearer ")).then(|| value[7..].trim().to_string())
    });
    from_header
        .or_else(|| request.header("x-ms-token-aad-access-token").map(str::to_string))
        .filter(|t| !t.is_empty())
        .map(BearerToken::new)
}

/// The `oid` a JWT's payload names. Not a validation (Easy Auth validated it, ARM will again): a consistency check.
fn token_object_id(token: &BearerToken) -> Option<String> {
    use base64::Engine;
    let payload = token.secret().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["oid"].as_str().map(str::to_string)
}

/// Whether ARM's permission entries allow `action`: some entry's `actions` match it and none of that entry's
/// `notActions` do.
pub fn permits(permissions: &[Permission], action: &str) -> bool {
    permissions
        .iter()
        .any(|p| p.actions.iter().any(|a| wildcard(a, action)) && !p.not_actions.iter().any(|n| wildcard(n, action)))
}

/// `*` matches any run of characters; comparison ignores case, as ARM's does.
fn wildcard(pattern: &str, action: &str) -> bool {
    let (pattern, action) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else { return pattern == action };
    if parts.len() == 1 {
        return pattern == action;
    }
    let Some(mut rest) = action.strip_prefix(first) else { return false };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// The one authorisation check of the API: `Ok` when `caller` holds `permission` (an ARM action such as
/// [`ACTIVATE`]) at `scope` (a device, or any ARM scope), as ARM itself reports it to the caller. Every decision
/// is logged with the caller's object id and name; nothing is cached, so a revoked assignment stops working on
/// the next request.
pub async fn require_permission(
    deps: &Deps,
    caller: &Caller,
    scope: &ResourceId,
    permission: &str,
) -> Result<(), Denied> {
    let answer = deps.permissions.permissions_at(&caller.token, scope).await;
    let denied = match answer {
        Ok(permissions) if permits(&permissions, permission) => None,
        Ok(_) => Some(forbidden(caller, scope, permission)),
        // The token could not be exchanged on the caller's behalf (expired meanwhile, another tenant's).
        Err(err) if err.status == Some(401) => {
            Some(Denied::Unauthenticated(format!("your token cannot be used on your behalf: {}", err.message)))
        }
        // ARM knows no such subscription or group for the caller: no rights there.
        Err(err) if matches!(err.status, Some(403 | 404)) => Some(forbidden(caller, scope, permission)),
        Err(err) if err.code.as_deref() == Some(NOT_CONFIGURED) => Some(Denied::NotConfigured(err.message)),
        Err(err) => return Err(Denied::Azure(err)),
    };
    let allowed = denied.is_none();
    tracing::info!(caller_id = %caller.object_id, caller_name = %caller.name, %scope, permission, allowed, "authorisation");
    denied.map_or(Ok(()), Err)
}

fn forbidden(caller: &Caller, scope: &ResourceId, permission: &str) -> Denied {
    Denied::Forbidden { caller: caller.label(), permission: permission.to_string(), scope: scope.to_string() }
}

/// The error code of [`NotConfigured`].
pub const NOT_CONFIGURED: &str = "AuthorizationNotConfigured";

/// Stands in for the permissions client when the API's app registration is not configured: every check fails
/// closed, saying what to set.
#[derive(Debug)]
pub struct NotConfigured;

#[async_trait::async_trait]
impl crate::azure::traits::CallerPermissions for NotConfigured {
    async fn permissions_at(&self, _: &BearerToken, _: &ResourceId) -> Result<Vec<Permission>, AzureError> {
        Err(AzureError::new(
            "read the caller's permissions",
            Some(500),
            Some(NOT_CONFIGURED.into()),
            format!(
                "{} is not set: edgevault cannot check a caller's rights, so the API refuses every request (see \
                 infra/README.md)",
                crate::config::settings::API_CLIENT_ID
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::fake::{FakeAzure, settings};
    use serde_json::json;

    fn token_for(oid: &str) -> String {
        use base64::Engine;
        let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.sig", b64(json!({"alg": "none"})), b64(json!({"oid": oid, "aud": "api://edgevault"})))
    }

    fn request(identities: serde_json::Value, authorization: Option<String>) -> HttpRequest {
        let mut headers = json!({});
        if let Some(value) = authorization {
            headers["Authorization"] = json!([value]);
        }
        serde_json::from_value(
            json!({"Url": "http://h/api/x", "Method": "GET", "Headers": headers, "Identities": identities}),
        )
        .unwrap()
    }

    fn easy_auth_identity(oid: &str) -> serde_json::Value {
        json!([{"AuthenticationType": "aad", "IsAuthenticated": true, "Name": "ada@contoso.test",
                "Claims": [{"Type": OBJECT_ID_CLAIM, "Value": oid}, {"Type": "name", "Value": "Ada"}]}])
    }

    #[test]
    fn the_caller_comes_from_the_hosts_entra_identity_and_its_own_token() {
        let caller =
            Caller::from_request(&request(easy_auth_identity("o-1"), Some(format!("Bearer {}", token_for("o-1")))))
                .unwrap();
        assert_eq!((caller.object_id.as_str(), caller.name.as_str()), ("o-1", "Ada"));
        assert!(!format!("{caller:?}").contains(&token_for("o-1")), "Debug never shows the token");

        let key_only = json!([{"AuthenticationType": "WebJobsAuthLevel", "IsAuthenticated": true, "Claims": []}]);
        for (identities, auth) in [
            (key_only, Some(format!("Bearer {}", token_for("o-1")))),
            (easy_auth_identity("o-1"), None),
            (easy_auth_identity("o-1"), Some(format!("Bearer {}", token_for("someone-else")))),
        ] {
            assert!(matches!(Caller::from_request(&request(identities, auth)), Err(Denied::Unauthenticated(_))));
        }
    }

    #[test]
    fn permissions_follow_rbac_wildcards_and_not_actions() {
        let entry = |actions: &[&str], not: &[&str]| Permission {
            actions: actions.iter().map(|a| a.to_string()).collect(),
            not_actions: not.iter().map(|a| a.to_string()).collect(),
        };
        assert!(permits(&[entry(&["*"], &[])], ACTIVATE));
        assert!(permits(&[entry(&["Microsoft.DataBoxEdge/*"], &[])], ACTIVATE));
        assert!(permits(&[entry(&["microsoft.databoxedge/databoxedgedevices/WRITE"], &[])], ACTIVATE));
        assert!(!permits(&[entry(&["*/read"], &[])], ACTIVATE));
        assert!(permits(&[entry(&["*/read"], &[])], READ));
        assert!(!permits(&[entry(&["*"], &["Microsoft.DataBoxEdge/*/write"])], ACTIVATE));
        // A notActions entry takes away from its own assignment only; another one may still allow it.
        assert!(permits(
            &[entry(&["*"], &["Microsoft.DataBoxEdge/*"]), entry(&["Microsoft.DataBoxEdge/*"], &[])],
            ACTIVATE
        ));
        assert!(!permits(&[], READ));
        assert!(wildcard("Microsoft.*/dataBoxEdgeDevices/*", ACTIVATE));
        assert!(!wildcard("Microsoft.KeyVault/*", ACTIVATE));
    }

    #[tokio::test]
    async fn require_permission_asks_arm_as_the_caller_per_scope() {
        let azure = FakeAzure::new();
        let deps = azure.deps(settings());
        let a = azure.add_device("a", true);
        let b = azure.add_device("b", true);
        let caller = Caller::new("o-1", "Ada", BearerToken::new(token_for("o-1")));
        azure.grant(&caller_token(&caller), &a, &[ACTIVATE], &[]);
        assert!(require_permission(&deps, &caller, &a, ACTIVATE).await.is_ok());
        match require_permission(&deps, &caller, &b, ACTIVATE).await {
            Err(Denied::Forbidden { permission, scope, caller: who }) => {
                assert_eq!(permission, ACTIVATE);
                assert_eq!(scope, b.to_string());
                assert!(who.contains("Ada") && who.contains("o-1"));
            }
            other => panic!("{other:?}"),
        }
    }

    fn caller_token(caller: &Caller) -> BearerToken {
        caller.token.clone()
    }
}
