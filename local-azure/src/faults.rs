//! Fault injection per service and operation.
//!
//! A rule names a service (`arm`, `keyvault`, `identity`, `servicebus`, or `*`), optionally
//! an operation glob (`Microsoft.KeyVault/vaults/*`, `secrets/get`), an HTTP method and a path
//! regex, and an action: added latency, `429` with `Retry-After`, an error status, a dropped
//! connection, or a rate limit (a token bucket answering ARM's `429` beyond N requests per second).
//! It fires for the next `count` matching requests and/or with a `probability`.
//!
//! Rules are stored durably and served from memory: every request is matched against them, so
//! matching must not read the store, and counting a firing must not write it. `fired` is kept in
//! memory; only rules with a `count` persist it (at most `count` writes), because "the next N"
//! must hold across a restart while a plain counter may restart from its last stored value.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::arm::authz::glob_match;
use crate::http::{Outcome, Req, Resp};
use crate::store::{Store, StoreError};

pub const FAULT: &str = "fault";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum FaultAction {
    /// Delay the request, then handle it normally.
    #[serde(rename_all = "camelCase")]
    Latency { ms: u64 },
    /// `429 Too Many Requests` with `Retry-After`.
    #[serde(rename_all = "camelCase")]
    Throttle { retry_after_seconds: u64 },
    /// An error status (typically 500/503) with the service's error body.
    #[serde(rename_all = "camelCase")]
    Error {
        status: u16,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        retry_after_seconds: Option<u64>,
    },
    /// Close the connection without answering.
    Drop,
    /// At most `perSecond` matching requests per second per caller (principal and subscription, as ARM
    /// counts) and operation type (reads, writes — a POST action is one — and deletes, each a bucket of its own, as
    /// ARM's are), with `burst` in reserve (default: one second's worth); beyond it, `429` with `Retry-After`.
    /// Only the refused requests count as firings. `per: "subscription"` makes one bucket of the subscription for
    /// every caller: ARM's global subscription limit (15 × a caller's, shared by all; learn.microsoft.com
    /// azure-resource-manager/management/request-limits-and-throttling), reported in
    /// `x-ms-ratelimit-remaining-subscription-global-reads`/`-writes`.
    #[serde(rename_all = "camelCase")]
    RateLimit {
        per_second: f64,
        #[serde(default)]
        burst: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        per: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    #[serde(default)]
    pub id: String,
    pub service: String,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path_regex: Option<String>,
    pub action: FaultAction,
    /// Fire for the next N matching requests, then stop.
    #[serde(default)]
    pub count: Option<u64>,
    /// Fire with this probability (0..=1) for each matching request.
    #[serde(default)]
    pub probability: Option<f64>,
    #[serde(default)]
    pub fired: u64,
    #[serde(default)]
    pub created_seq: u64,
}

impl FaultRule {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(re) = &self.path_regex {
            regex::Regex::new(re).map_err(|e| format!("pathRegex: {e}"))?;
        }
        if let Some(p) = self.probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err("probability must be between 0 and 1".into());
        }
        if let FaultAction::Error { status, .. } = &self.action
            && StatusCode::from_u16(*status).is_err()
        {
            return Err(format!("invalid status {status}"));
        }
        if let FaultAction::RateLimit { per_second, burst, per } = &self.action {
            if per.as_deref().is_some_and(|p| !matches!(p, "principal" | "subscription")) {
                return Err("rateLimit: per must be \"principal\" (the default) or \"subscription\"".into());
            }
            if !(per_second.is_finite() && *per_second > 0.0) {
                return Err("rateLimit: perSecond must be above 0".into());
            }
            if burst.is_some_and(|b| !(b.is_finite() && b >= 1.0)) {
                return Err("rateLimit: burst must be at least 1".into());
            }
        }
        Ok(())
    }

    fn exhausted(&self) -> bool {
        self.count.is_some_and(|c| self.fired >= c)
    }

    fn matches(&self, path: Option<&regex::Regex>, service: &str, operation: &str, req: &Req) -> bool {
        (self.service == "*" || self.service.eq_ignore_ascii_case(service))
            && self.operation.as_deref().is_none_or(|p| glob_match(p, operation))
            && self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(req.method.as_str()))
            && path.is_none_or(|re| re.is_match(&req.path()))
    }
}

fn roll() -> f64 {
    let mut buf = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf);
    f64::from(u32::from_le_bytes(buf)) / f64::from(u32::MAX)
}

/// A rule as served: the stored rule (with its live `fired`), its compiled path regex and, for a rate limit, one
/// token bucket per caller.
struct Active {
    rule: FaultRule,
    path: Option<regex::Regex>,
    buckets: HashMap<String, Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// ARM throttles "per subscription, per service principal, and per operation type" (reads, writes, deletes), each
/// type its own bucket (learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling,
/// "Regional throttling and token bucket algorithm"). The type is the method's: a POST action is a write, even one
/// that only reads (`listKeys`, `getExtendedInformation`): its answers decrement
/// `x-ms-ratelimit-remaining-subscription-writes` (Azure/azure-rest-api-specs#6363, Azure/azure-sdk-for-java#1389).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperationKind {
    Reads,
    Writes,
    Deletes,
}

impl OperationKind {
    fn of(method: &http::Method) -> Self {
        match *method {
            http::Method::GET | http::Method::HEAD => OperationKind::Reads,
            http::Method::DELETE => OperationKind::Deletes,
            _ => OperationKind::Writes,
        }
    }

    fn word(self) -> &'static str {
        match self {
            OperationKind::Reads => "read",
            OperationKind::Writes => "write",
            OperationKind::Deletes => "delete",
        }
    }

    /// The header that reports what is left of this type's bucket (`global`: the subscription's, every caller's).
    fn remaining_header(self, global: bool) -> &'static str {
        match (self, global) {
            (OperationKind::Reads, false) => "x-ms-ratelimit-remaining-subscription-reads",
            (OperationKind::Writes, false) => "x-ms-ratelimit-remaining-subscription-writes",
            (OperationKind::Deletes, false) => "x-ms-ratelimit-remaining-subscription-deletes",
            (OperationKind::Reads, true) => "x-ms-ratelimit-remaining-subscription-global-reads",
            (OperationKind::Writes, true) => "x-ms-ratelimit-remaining-subscription-global-writes",
            (OperationKind::Deletes, true) => "x-ms-ratelimit-remaining-subscription-global-deletes",
        }
    }
}

impl Active {
    fn new(rule: FaultRule) -> Active {
        let path = rule.path_regex.as_deref().and_then(|re| regex::Regex::new(re).ok());
        Active { rule, path, buckets: HashMap::new() }
    }
}

/// What a refused request needs for its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttled {
    pub retry_after_seconds: u64,
    /// The operation type refused: "read", "write" or "delete", as ARM's message names it.
    pub operations: &'static str,
    pub subscription: String,
    pub principal: String,
}

/// The action that answers the request instead of the service.
#[derive(Debug, Clone, PartialEq)]
pub enum Terminal {
    Action(FaultAction),
    Throttled(Throttled),
}

/// Everything the matching rules do to one request.
#[derive(Debug, Default)]
pub struct Firing {
    pub latency: Duration,
    pub terminal: Option<Terminal>,
    /// Headers for the answer (ARM's remaining-requests count under a rate limit).
    pub headers: Vec<(&'static str, String)>,
    /// Rules with a `count` that fired: their `fired` must be stored before answering.
    pub to_persist: Vec<FaultRule>,
}

/// The rules, in memory (see the module documentation).
pub struct Faults {
    rules: Mutex<Vec<Active>>,
}

impl Faults {
    pub fn load(store: &Store) -> Result<Faults, StoreError> {
        let mut rules: Vec<FaultRule> = store.list(FAULT, "")?;
        rules.sort_by_key(|r| r.created_seq);
        Ok(Faults { rules: Mutex::new(rules.into_iter().map(Active::new).collect()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Active>> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rules with their current `fired` counts, in creation order (the order they are matched in).
    pub fn list(&self) -> Vec<FaultRule> {
        self.lock().iter().map(|a| a.rule.clone()).collect()
    }

    /// Stores a (validated) rule, numbered after the existing ones, then serves it; returns it as stored.
    pub fn add(&self, store: &Store, mut rule: FaultRule) -> Result<FaultRule, StoreError> {
        rule.created_seq = self.lock().last().map_or(0, |a| a.rule.created_seq) + 1;
        store.write(|tx| tx.put(FAULT, &rule.id, &rule))?;
        let mut rules = self.lock();
        let at = rules.partition_point(|a| a.rule.created_seq <= rule.created_seq);
        rules.insert(at, Active::new(rule.clone()));
        Ok(rule)
    }

    pub fn remove(&self, store: &Store, id: &str) -> Result<bool, StoreError> {
        let removed = store.write(|tx| tx.delete(FAULT, id))?;
        self.lock().retain(|a| a.rule.id != id);
        Ok(removed)
    }

    pub fn clear(&self, store: &Store) -> Result<usize, StoreError> {
        let n = store.write(|tx| tx.delete_prefix(FAULT, ""))?;
        self.lock().clear();
        Ok(n)
    }

    /// Stores the `fired` counts of counted rules that fired, never lowering a stored count (firings may be
    /// persisted out of order) and never bringing back a rule removed meanwhile.
    pub fn persist(store: &Store, fired: &[FaultRule]) -> Result<(), StoreError> {
        store.write(|tx| -> Result<(), StoreError> {
            for r in fired {
                if let Some(stored) = tx.get::<FaultRule>(FAULT, &r.id)?
                    && stored.fired < r.fired
                {
                    tx.put(FAULT, &r.id, r)?;
                }
            }
            Ok(())
        })
    }

    /// The rules that fire for this request, counted in memory.
    pub fn fire(&self, service: &str, operation: &str, req: &Req) -> Firing {
        let mut firing = Firing::default();
        let now = Instant::now();
        let mut rules = self.lock();
        for active in rules.iter_mut() {
            let r = &active.rule;
            if r.exhausted() || !r.matches(active.path.as_ref(), service, operation, req) {
                continue;
            }
            let action = if let FaultAction::RateLimit { per_second, burst, per } = &r.action {
                let (per_second, burst) = (*per_second, *burst);
                let caller = Caller::of(req);
                let global = per.as_deref() == Some("subscription");
                let capacity = burst.unwrap_or(per_second).max(1.0);
                let kind = OperationKind::of(&req.method);
                let bucket_key = if global {
                    format!("{}/{kind:?}", caller.subscription)
                } else {
                    format!("{}/{}/{kind:?}", caller.principal, caller.subscription)
                };
                let bucket = active.buckets.entry(bucket_key).or_insert(Bucket { tokens: capacity, at: now });
                bucket.tokens =
                    (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_second).min(capacity);
                bucket.at = now;
                let header = kind.remaining_header(global);
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    if service == "arm" {
                        firing.headers.push((header, (bucket.tokens.floor() as u64).to_string()));
                    }
                    continue;
                }
                // ARM answers in whole seconds: the time until the bucket holds a token again, rounded up.
                let wait = ((1.0 - bucket.tokens) / per_second).ceil().max(1.0) as u64;
                if service == "arm" {
                    firing.headers.push((header, "0".into()));
                }
                Terminal::Throttled(Throttled {
                    retry_after_seconds: wait,
                    operations: kind.word(),
                    subscription: caller.subscription,
                    principal: caller.principal,
                })
            } else {
                if r.probability.is_some_and(|p| roll() >= p) {
                    continue;
                }
                Terminal::Action(r.action.clone())
            };
            active.rule.fired += 1;
            let r = &active.rule;
            tracing::info!(fault = %r.id, service, operation, "fault injected");
            if r.count.is_some() {
                firing.to_persist.push(r.clone());
            }
            match action {
                Terminal::Action(FaultAction::Latency { ms }) => firing.latency += Duration::from_millis(ms),
                other => {
                    if firing.terminal.is_none() {
                        firing.terminal = Some(other);
                    }
                }
            }
        }
        firing
    }
}

/// Who a request counts against under a rate limit: the token's principal (read without verifying it: the
/// service verifies it afterwards) and the subscription in the path, as ARM counts per principal and subscription.
struct Caller {
    principal: String,
    subscription: String,
}

impl Caller {
    fn of(req: &Req) -> Caller {
        let principal = req
            .bearer()
            .and_then(|t| t.split('.').nth(1))
            .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
            .and_then(|c| c.get("oid").and_then(|o| o.as_str()).map(str::to_ascii_lowercase))
            .unwrap_or_default();
        let subscription = req
            .segments
            .iter()
            .position(|s| s.eq_ignore_ascii_case("subscriptions"))
            .and_then(|i| req.segments.get(i + 1))
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_default();
        Caller { principal, subscription }
    }
}

/// The response (or dropped connection) a terminal fault produces, in the service's error shape.
pub fn outcome(service: &str, terminal: &Terminal) -> Outcome {
    let action = match terminal {
        Terminal::Action(action) => action,
        Terminal::Throttled(t) => return Outcome::Respond(throttled(service, t)),
    };
    let (status, code, retry_after) = match action {
        FaultAction::Drop => return Outcome::Drop,
        FaultAction::Latency { .. } | FaultAction::RateLimit { .. } => return Outcome::Drop,
        FaultAction::Throttle { retry_after_seconds } => {
            (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests".to_string(), Some(*retry_after_seconds))
        }
        FaultAction::Error { status, code, retry_after_seconds } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = code.clone().unwrap_or_else(|| match status {
                StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable".into(),
                StatusCode::GATEWAY_TIMEOUT => "GatewayTimeout".into(),
                _ => "InternalServerError".into(),
            });
            (status, code, *retry_after_seconds)
        }
    };
    let message = format!("Injected fault ({service}): {code}");
    if service == "servicebus" {
        let mut resp = crate::servicebus::rest::error(status, &message);
        if let Some(s) = retry_after {
            resp = resp.with_header("retry-after", s.to_string());
        }
        return Outcome::Respond(resp);
    }
    let body = if service == "identity" {
        json!({ "statusCode": status.as_u16(), "message": message })
    } else {
        json!({ "error": { "code": code, "message": message } })
    };
    let mut resp = Resp::json(status, &body);
    if let Some(s) = retry_after {
        resp = resp.with_header("retry-after", s.to_string());
    }
    Outcome::Respond(resp)
}

/// A request refused by a rate limit, in the service's own words: ARM's `SubscriptionRequestsThrottled`, Key
/// Vault's `Throttled`; always with `Retry-After` in seconds.
fn throttled(service: &str, t: &Throttled) -> Resp {
    let status = StatusCode::TOO_MANY_REQUESTS;
    let wait = t.retry_after_seconds;
    let resp = match service {
        "arm" => Resp::json(
            status,
            &json!({ "error": {
                "code": "SubscriptionRequestsThrottled",
                "message": format!(
                    "Number of '{}' requests for subscription '{}' actor '{}' exceeded. Please try again after '{wait}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling",
                    t.operations, t.subscription, t.principal
                ),
            }}),
        ),
        "servicebus" => crate::servicebus::rest::error(status, "The request was throttled (local-azure rate limit)."),
        "identity" => {
            Resp::json(status, &json!({ "statusCode": 429, "message": "Too many requests (local-azure rate limit)." }))
        }
        _ => Resp::json(
            status,
            &json!({ "error": { "code": "Throttled", "message": "Request was not processed because too many requests were received (local-azure rate limit)." } }),
        ),
    };
    resp.with_header("retry-after", wait.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_json_shape() {
        let a: FaultAction = serde_json::from_value(json!({"type":"throttle","retryAfterSeconds":2})).unwrap();
        assert_eq!(a, FaultAction::Throttle { retry_after_seconds: 2 });
        let d: FaultAction = serde_json::from_value(json!({"type":"drop"})).unwrap();
        assert_eq!(d, FaultAction::Drop);
        let e: FaultAction = serde_json::from_value(json!({"type":"error","status":503})).unwrap();
        assert!(matches!(e, FaultAction::Error { status: 503, .. }));
        let r: FaultAction = serde_json::from_value(json!({"type":"rateLimit","perSecond":5})).unwrap();
        assert_eq!(r, FaultAction::RateLimit { per_second: 5.0, burst: None, per: None });
    }

    fn rule(action: FaultAction) -> FaultRule {
        FaultRule {
            id: "r".into(),
            service: "arm".into(),
            operation: None,
            method: None,
            path_regex: None,
            action,
            count: None,
            probability: None,
            fired: 0,
            created_seq: 0,
        }
    }

    fn get(path: &str) -> Req {
        Req::new(http::Method::GET, "management.azure.com", path, http::HeaderMap::new(), bytes::Bytes::new())
    }

    #[test]
    fn rate_limit_refuses_beyond_the_bucket_per_subscription() {
        let faults = Faults {
            rules: Mutex::new(vec![Active::new(rule(FaultAction::RateLimit {
                per_second: 0.001,
                burst: Some(2.0),
                per: None,
            }))]),
        };
        let a = get("/subscriptions/A/resourceGroups/rg?api-version=1");
        for remaining in ["1", "0"] {
            let f = faults.fire("arm", "op", &a);
            assert!(f.terminal.is_none());
            assert_eq!(f.headers, [("x-ms-ratelimit-remaining-subscription-reads", remaining.to_string())]);
        }
        let refused = faults.fire("arm", "op", &a);
        let Some(Terminal::Throttled(t)) = &refused.terminal else { panic!("not throttled: {refused:?}") };
        assert_eq!(t.subscription, "a");
        assert!(t.retry_after_seconds >= 999, "a token every 1000 s: {}", t.retry_after_seconds);
        assert_eq!(faults.list()[0].fired, 1, "only the refusal counts");
        assert!(faults.fire("arm", "op", &get("/subscriptions/B?api-version=1")).terminal.is_none(), "another bucket");
        assert!(faults.fire("keyvault", "op", &a).terminal.is_none(), "another service");
        let Outcome::Respond(resp) = outcome("arm", refused.terminal.as_ref().unwrap()) else { panic!("dropped") };
        assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS);
        let retry_after = resp.headers.get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(retry_after, Some(t.retry_after_seconds.to_string()));
    }

    #[test]
    fn reads_writes_and_deletes_are_buckets_of_their_own_and_a_post_action_is_a_write() {
        let faults = Faults {
            rules: Mutex::new(vec![Active::new(rule(FaultAction::RateLimit {
                per_second: 0.001,
                burst: Some(1.0),
                per: None,
            }))]),
        };
        let path = "/subscriptions/A/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d";
        let with = |method: http::Method, path: &str| {
            Req::new(method, "management.azure.com", path, http::HeaderMap::new(), bytes::Bytes::new())
        };
        let action = format!("{path}/getExtendedInformation?api-version=1");
        let first = faults.fire("arm", "op", &with(http::Method::POST, &action));
        assert!(first.terminal.is_none());
        assert_eq!(first.headers, [("x-ms-ratelimit-remaining-subscription-writes", "0".to_string())]);
        let read = faults.fire("arm", "op", &with(http::Method::GET, &format!("{path}?api-version=1")));
        assert!(read.terminal.is_none(), "the writes bucket is empty, the reads bucket is not");
        let delete = faults.fire("arm", "op", &with(http::Method::DELETE, &format!("{path}?api-version=1")));
        assert_eq!(delete.headers, [("x-ms-ratelimit-remaining-subscription-deletes", "0".to_string())]);
        let put = faults.fire("arm", "op", &with(http::Method::PUT, &format!("{path}?api-version=1")));
        let Some(Terminal::Throttled(t)) = &put.terminal else { panic!("a PUT is a write too: {put:?}") };
        assert_eq!(t.operations, "write");
    }

    #[test]
    fn a_subscription_wide_rate_limit_is_one_bucket_for_every_caller() {
        let faults = Faults {
            rules: Mutex::new(vec![Active::new(rule(FaultAction::RateLimit {
                per_second: 0.001,
                burst: Some(1.0),
                per: Some("subscription".into()),
            }))]),
        };
        let token = |oid: &str| {
            let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"oid\":\"{oid}\"}}"));
            format!("Bearer e30.{claims}.sig")
        };
        let as_caller = |oid: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("authorization", token(oid).parse().unwrap());
            Req::new(
                http::Method::GET,
                "management.azure.com",
                "/subscriptions/A?api-version=1",
                headers,
                bytes::Bytes::new(),
            )
        };
        let first = faults.fire("arm", "op", &as_caller("one"));
        assert!(first.terminal.is_none());
        assert_eq!(first.headers, [("x-ms-ratelimit-remaining-subscription-global-reads", "0".to_string())]);
        assert!(faults.fire("arm", "op", &as_caller("two")).terminal.is_some(), "another caller, the same bucket");
        let unknown = FaultAction::RateLimit { per_second: 1.0, burst: None, per: Some("everyone".into()) };
        assert!(rule(unknown).validate().is_err());
    }

    #[test]
    fn counted_rules_fire_n_times_and_ask_to_be_stored() {
        let mut r = rule(FaultAction::Drop);
        r.count = Some(2);
        let faults = Faults { rules: Mutex::new(vec![Active::new(r)]) };
        let req = get("/subscriptions/A?api-version=1");
        assert_eq!(faults.fire("arm", "op", &req).to_persist.len(), 1);
        assert_eq!(faults.fire("arm", "op", &req).to_persist[0].fired, 2);
        let third = faults.fire("arm", "op", &req);
        assert!(third.terminal.is_none() && third.to_persist.is_empty(), "exhausted");
        let mut latency = rule(FaultAction::Latency { ms: 5 });
        latency.id = "s".into();
        let faults = Faults { rules: Mutex::new(vec![Active::new(latency)]) };
        let f = faults.fire("arm", "op", &req);
        assert_eq!((f.latency, f.to_persist.len()), (Duration::from_millis(5), 0), "uncounted: memory only");
        assert_eq!(faults.list()[0].fired, 1);
    }
}
