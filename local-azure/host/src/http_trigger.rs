//! `httpTrigger`: route templates, auth levels, and the `Data.req` / `Outputs.res` mapping.
//!
//! A request to `/<routePrefix>/<route>` becomes, as in the real host's non-forwarding mode:
//!
//! - `Data.<binding>` = `{Url, Method, Query, Headers, Params, Identities, Body}` (azure-functions-host
//!   `src/WebJobs.Script/Extensions/HttpRequestExtensions.cs`, `GetRequestAsJObject`): `Query` an object whose
//!   repeated keys are joined with commas, `Headers` values as arrays, `Params` the route values with every optional
//!   parameter the request left out present as `null` (`FunctionInvocationMiddleware.PopulateRouteData`,
//!   `src/WebJobs.Script.WebHost/Middleware/`), `Identities` the request's claims identities, and `Body` only when
//!   the request's `Content-Length` is more than 0 (a string; base64 for octet-stream and multipart bodies).
//! - `Metadata` = the HTTP extension's binding data (azure-webjobs-sdk-extensions
//!   `src/WebJobs.Extensions.Http/HttpTriggerAttributeBindingProvider.cs`, `GetRequestBindingData`): the JSON
//!   body's top-level fields, then every query parameter but `code`, then the route values, then `Query` and
//!   `Headers` (objects of strings) unless a field already took those names; encoded by [`crate::binding_data`].
//!
//! The handler's `http` output (`statusCode`, `body`, `headers`) becomes the response; a failed invocation is a bare
//! `500`, as the real host answers.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::app::{AuthLevel, FunctionDef, OutputBinding, Trigger};
use crate::binding_data::{BindingData, BindingValue};
use crate::http::{Reply, Request};
use crate::invoke::Invocation;

/// A route template: literals, `{param}`, trailing `{param?}` and a final catch-all `{*rest}`.
/// Constraints (`{id:int}`) are accepted and not enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param { name: String, optional: bool },
    CatchAll { name: String },
}

impl RouteTemplate {
    pub fn parse(text: &str) -> Result<RouteTemplate, String> {
        let trimmed = text.trim_matches('/');
        let mut segments = Vec::new();
        for part in trimmed.split('/').filter(|s| !s.is_empty()) {
            if let Some(inner) = part.strip_prefix('{') {
                let inner = inner.strip_suffix('}').ok_or_else(|| format!("segment `{part}` has no closing `}}`"))?;
                let (catch_all, inner) = match inner.strip_prefix('*') {
                    Some(rest) => (true, rest),
                    None => (false, inner),
                };
                let (inner, optional) = match inner.strip_suffix('?') {
                    Some(rest) => (rest, true),
                    None => (inner, false),
                };
                let name = inner.split([':', '=']).next().unwrap_or_default();
                if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    return Err(format!("`{part}` is not a valid route parameter"));
                }
                if segments.iter().any(|s| matches!(s, Segment::Param { name: n, .. } | Segment::CatchAll { name: n } if n.eq_ignore_ascii_case(name))) {
                    return Err(format!("parameter `{name}` appears twice"));
                }
                segments.push(if catch_all {
                    Segment::CatchAll { name: name.to_string() }
                } else {
                    Segment::Param { name: name.to_string(), optional }
                });
            } else if part.contains(['{', '}']) {
                return Err(format!("segment `{part}` mixes text and parameters, which local-azure does not support"));
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        // Optional parameters and catch-alls only make sense at the end, as in ASP.NET routing.
        for (i, s) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let rest_optional = segments[i..].iter().all(|s| matches!(s, Segment::Param { optional: true, .. }));
            match s {
                Segment::CatchAll { .. } if !last => return Err("a catch-all parameter must be last".into()),
                Segment::Param { optional: true, .. } if !rest_optional => {
                    return Err("an optional parameter may only be followed by optional parameters".into());
                }
                _ => {}
            }
        }
        Ok(RouteTemplate { text: trimmed.to_string(), segments })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Matches decoded path segments (after the route prefix); literals compare case-insensitively. An optional
    /// parameter the path does not reach is `None`, as `PopulateRouteData` adds it with a null value.
    pub fn matches(&self, path: &[String]) -> Option<BTreeMap<String, Option<String>>> {
        let mut params = BTreeMap::new();
        let mut i = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(lit) => {
                    if !path.get(i).is_some_and(|p| p.eq_ignore_ascii_case(lit)) {
                        return None;
                    }
                }
                Segment::Param { name, optional } => match path.get(i) {
                    Some(value) => {
                        params.insert(name.clone(), Some(value.clone()));
                    }
                    None if *optional => {
                        params.insert(name.clone(), None);
                    }
                    None => return None,
                },
                Segment::CatchAll { name } => {
                    params.insert(name.clone(), Some(path[i.min(path.len())..].join("/")));
                    return Some(params);
                }
            }
            i += 1;
        }
        (i >= path.len()).then_some(params)
    }

    /// More literal segments first, so `items/new` wins over `items/{id}` as in ASP.NET routing.
    fn precedence(&self) -> (usize, usize) {
        let literals = self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count();
        (usize::MAX - literals, self.segments.len())
    }
}

/// Finds the HTTP function for `path` (segments after the prefix) and `method`.
fn route<'a>(
    functions: &'a [FunctionDef],
    path: &[String],
    method: &str,
) -> Option<(&'a FunctionDef, BTreeMap<String, Option<String>>)> {
    let mut candidates: Vec<_> = functions
        .iter()
        .filter_map(|f| match &f.trigger {
            Trigger::Http { route, methods, .. } => Some((f, route, methods)),
            _ => None,
        })
        .collect();
    candidates.sort_by_key(|(_, route, _)| route.precedence());
    candidates.into_iter().find_map(|(f, route, methods)| {
        let allowed = methods.as_ref().is_none_or(|m| m.iter().any(|m| m.eq_ignore_ascii_case(method)));
        if !allowed {
            return None;
        }
        route.matches(path).map(|params| (f, params))
    })
}

/// The key a request presents: `code` in the query string or the `x-functions-key` header.
pub fn presented_key(request: &Request) -> Option<String> {
    request.header("x-functions-key").map(str::to_string).or_else(|| request.query_value("code"))
}

/// Serves an HTTP-trigger request whose path starts with the route prefix; `None` when no function matches.
pub(crate) async fn handle(shared: &Shared, request: &Request, path: &[String]) -> Option<Reply> {
    let (def, params) = route(&shared.app.functions, path, &request.method)?;
    let Trigger::Http { binding, auth_level, .. } = &def.trigger else { unreachable!("route() only picks HTTP") };
    // The key and what it grants (`AuthenticationLevelHandler`); the handler sees it as a claims identity.
    let key = presented_key(request).and_then(|k| shared.keys.authorization(&def.name, &k));
    // `AuthUtility.PrincipalHasAuthLevelClaim`: the key's level must be at least the function's, in the order
    // Function < System < Admin (`AuthorizationLevel`).
    let rank = |level: &str| match level {
        "Admin" => 3,
        "System" => 2,
        _ => 1,
    };
    let granted = key.as_ref().map_or(0, |(level, _)| rank(level));
    let authorised = match auth_level {
        AuthLevel::Anonymous => true,
        AuthLevel::Function => granted >= 1,
        AuthLevel::Admin => granted >= 3,
    };
    if !authorised {
        tracing::info!(function = %def.name, "HTTP request refused: missing or wrong function key");
        return Some(Reply::status(401));
    }
    // The real host forwards only functions whose sole bindings are the HTTP trigger and the `http` output.
    let forwardable = def.outputs.len() == 1 && matches!(def.outputs[0], OutputBinding::Http { .. });
    if shared.app.host.enable_forwarding_http_request && forwardable {
        return Some(match shared.invoker.forward(&def.name, request).await {
            Ok(reply) => reply,
            Err(err) => {
                tracing::warn!(function = %def.name, "the forwarded request failed; answering 500: {err}");
                Reply::status(500)
            }
        });
    }
    let mut input = build_input(binding, request, &params, key.as_ref().map(|(level, name)| (*level, name.as_str())));
    // With the site's authentication on, the host makes the platform's principal header the first identity
    // (`crate::easy_auth`); Easy Auth has already replaced any such header a client sent.
    if shared.easy_auth.is_some()
        && let Some(identity) = request.header(crate::easy_auth::PRINCIPAL_HEADER).and_then(crate::easy_auth::identity)
        && let Some(Value::Array(identities)) =
            input.data.get_mut(binding.as_str()).and_then(|r| r.get_mut("Identities"))
    {
        // Without a key the only identity is the principal's; with one, the key's identity follows it.
        if key.is_none() {
            identities.clear();
        }
        identities.insert(0, identity);
    }
    let outcome = shared.invoker.invoke(&def.name, input).await;
    let outcome = match outcome {
        Ok(o) if o.succeeded() => o,
        Ok(o) => {
            tracing::warn!(function = %def.name, status = o.status, "the invocation failed; answering 500");
            return Some(Reply::status(500));
        }
        Err(err) => {
            tracing::warn!(function = %def.name, "the invocation failed; answering 500: {err}");
            return Some(Reply::status(500));
        }
    };
    let output_name = def.outputs.iter().find_map(|o| match o {
        OutputBinding::Http { name } => Some(name.as_str()),
        _ => None,
    });
    Some(match output_name.and_then(|name| outcome.output(name)) {
        Some(value) if !value.is_null() => response_from_output(value),
        // No response set: the real host answers with an empty success.
        _ => Reply::status(204),
    })
}

/// The claims identities the host's authentication leaves on a request: with a key, the `WebJobsAuthLevel` identity
/// (`AuthenticationLevelHandler`, azure-functions-host `src/WebJobs.Script.WebHost/Security/Authentication/Keys/`);
/// without one, ASP.NET Core's empty, unauthenticated identity. Json.NET serializes them with
/// `ReferenceLoopHandling.Ignore` (`GetUserIdentitiesAsJArray`), which leaves out each claim's `Subject`, the
/// identity itself.
pub fn identities(key: Option<(&str, &str)>) -> Value {
    let claim = |kind: &str, value: &str| {
        json!({
            "Issuer": "LOCAL AUTHORITY",
            "OriginalIssuer": "LOCAL AUTHORITY",
            "Properties": {},
            "Type": format!("http://schemas.microsoft.com/2017/07/functions/claims/{kind}"),
            "Value": value,
            "ValueType": "http://www.w3.org/2001/XMLSchema#string",
        })
    };
    let (authentication_type, claims) = match key {
        Some((level, name)) => (
            json!("WebJobsAuthLevel"),
            json!([claim("authlevel", level), claim("invoke", "true"), claim("keyid", name)]),
        ),
        None => (Value::Null, json!([])),
    };
    json!([{
        "AuthenticationType": authentication_type,
        "IsAuthenticated": key.is_some(),
        "Actor": null,
        "BootstrapContext": null,
        "Claims": claims,
        "Label": null,
        "Name": null,
        "NameClaimType": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "RoleClaimType": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
    }])
}

/// `Data.<binding>` and the binding data of an HTTP request. `key` is the authorization level and key name the
/// presented key carries, if any.
pub fn build_input(
    binding: &str,
    request: &Request,
    params: &BTreeMap<String, Option<String>>,
    key: Option<(&str, &str)>,
) -> Invocation {
    let mut headers: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in &request.headers {
        let name = title_case(name);
        match headers.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            Some((_, values)) => values.push(value.clone()),
            None => headers.push((name, vec![value.clone()])),
        }
    }
    // `StringValues.ToString()`: repeated query keys (and header values, for the binding data) joined by commas.
    let mut query: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in request.query_pairs() {
        match query.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&k)) {
            Some((_, values)) => values.push(v),
            None => query.push((k, vec![v])),
        }
    }
    let joined = |pairs: &[(String, Vec<String>)]| -> Map<String, Value> {
        pairs.iter().map(|(k, v)| (k.clone(), Value::String(v.join(",")))).collect()
    };
    let query_object = joined(&query);
    let host = request.header("host").unwrap_or("localhost");
    let url = match &request.raw_query {
        Some(q) if !q.is_empty() => format!("http://{host}{}?{q}", request.raw_path),
        _ => format!("http://{host}{}", request.raw_path),
    };
    let content_length = request.header("content-length").and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    let mut req = json!({
        "Url": url,
        "Method": request.method,
        "Query": query_object,
        "Headers": headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<_, _>>(),
        "Params": params,
        "Identities": identities(key),
    });
    let mut binding_data = BindingData::new();
    // A chunked request has no ContentLength, so the host reads no body for it.
    if content_length > 0 {
        let body = if is_octet_or_multipart(request.header("content-type")) {
            // A byte[] in a JObject: Json.NET writes it as base64.
            Value::String(base64::engine::general_purpose::STANDARD.encode(&request.body))
        } else {
            Value::String(String::from_utf8_lossy(&request.body).into_owned())
        };
        req["Body"] = body;
        binding_data.apply_json_fields(&String::from_utf8_lossy(&request.body));
    }
    for (k, v) in &query {
        if !k.eq_ignore_ascii_case("code") {
            binding_data.set(k, BindingValue::Text(v.join(",")));
        }
    }
    for (name, value) in params {
        binding_data.set(name, BindingValue::text(value.clone()));
    }
    if !binding_data.contains("Query") {
        binding_data.set("Query", BindingValue::Object(Value::Object(query_object)));
    }
    if !binding_data.contains("Headers") {
        binding_data.set("Headers", BindingValue::Object(Value::Object(joined(&headers))));
    }
    Invocation { data: Map::from_iter([(binding.to_string(), req)]), binding_data, trigger_text: None }
}

/// `Utility.IsMediaTypeOctetOrMultipart`: such bodies go to the handler as bytes (base64 in JSON).
fn is_octet_or_multipart(content_type: Option<&str>) -> bool {
    let media = content_type.and_then(|c| c.split(';').next()).map(|m| m.trim().to_ascii_lowercase());
    media.is_some_and(|m| m == "application/octet-stream" || m.starts_with("multipart/"))
}

/// `content-type` → `Content-Type`: hyper lower-cases names, the real host passes them as clients usually send them.
fn title_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Maps the `http` output (`statusCode`, `body`, `headers`) to a response.
pub fn response_from_output(value: &Value) -> Reply {
    // A handler may send the whole response object JSON-encoded in a string.
    let decoded;
    let value = match value {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(inner @ Value::Object(_)) => {
                decoded = inner;
                &decoded
            }
            _ => return Reply { status: 200, headers: vec![], body: Bytes::from(text.clone()) },
        },
        other => other,
    };
    let status = match value.get("statusCode").or_else(|| value.get("status")) {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .filter(|s| (100..600).contains(s))
    .unwrap_or(200);
    let mut headers: Vec<(String, String)> = value
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let body = match value.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(other) => {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                headers.push(("Content-Type".into(), "application/json".into()));
            }
            Bytes::from(other.to_string())
        }
    };
    Reply { status, headers, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<String> {
        path.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()
    }

    #[test]
    fn routes_with_optional_and_catch_all_params() {
        let r = RouteTemplate::parse("activation-keys/{operationId?}").unwrap();
        assert_eq!(r.matches(&segs("activation-keys")), Some(BTreeMap::from([("operationId".to_string(), None)])));
        assert_eq!(
            r.matches(&segs("Activation-Keys/3f2c")),
            Some(BTreeMap::from([("operationId".to_string(), Some("3f2c".to_string()))]))
        );
        assert_eq!(r.matches(&segs("activation-keys/3f2c/extra")), None);
        assert_eq!(r.matches(&segs("other")), None);
        let r = RouteTemplate::parse("items/{id:int}").unwrap();
        assert_eq!(r.matches(&segs("items/7")).unwrap()["id"].as_deref(), Some("7"));
        assert_eq!(r.matches(&segs("items")), None);
        let r = RouteTemplate::parse("files/{*path}").unwrap();
        assert_eq!(r.matches(&segs("files/a/b")).unwrap()["path"].as_deref(), Some("a/b"));
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(RouteTemplate::parse("a/{x?}/b").is_err());
        assert!(RouteTemplate::parse("a/{*x}/b").is_err());
        assert!(RouteTemplate::parse("a/{x}/{x}").is_err());
        assert!(RouteTemplate::parse("a/{x").is_err());
        assert!(RouteTemplate::parse("a/b{x}").is_err());
    }

    #[test]
    fn output_mapping() {
        let r = response_from_output(&json!({"statusCode": 202, "body": {"a": 1}, "headers": {"Location": "/x"}}));
        assert_eq!(r.status, 202);
        assert_eq!(r.body, Bytes::from("{\"a\":1}"));
        assert!(r.headers.contains(&("Location".to_string(), "/x".to_string())));
        assert!(r.headers.contains(&("Content-Type".to_string(), "application/json".to_string())));
        let r = response_from_output(&json!({"statusCode": "404", "body": "nope"}));
        assert_eq!((r.status, r.body), (404, Bytes::from("nope")));
        let r = response_from_output(&json!("{\"statusCode\":201}"));
        assert_eq!(r.status, 201);
    }

    #[test]
    fn header_names_are_title_cased() {
        assert_eq!(title_case("content-type"), "Content-Type");
        assert_eq!(title_case("x-ms-client-request-id"), "X-Ms-Client-Request-Id");
    }
}
