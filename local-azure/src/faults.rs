//! Fault injection per service and operation.
//!
//! A rule names a service (`arm`, `keyvault`, `identity`, `servicebus`, or `*`), optionally
//! an operation glob (`Microsoft.KeyVault/vaults/*`, `secrets/get`), an HTTP method and a path
//! regex, and an action: added latency, `429` with `Retry-After`, an error status, or a dropped
//! connection. It fires for the next `count` matching requests and/or with a `probability`.
//! Rules are stored durably like all other state.

use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::App;
use crate::arm::authz::glob_match;
use crate::http::{Outcome, Req, Resp};
use crate::store::StoreError;

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
        Ok(())
    }

    fn exhausted(&self) -> bool {
        self.count.is_some_and(|c| self.fired >= c)
    }

    fn matches(&self, service: &str, operation: &str, req: &Req) -> bool {
        (self.service == "*" || self.service.eq_ignore_ascii_case(service))
            && self.operation.as_deref().is_none_or(|p| glob_match(p, operation))
            && self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(req.method.as_str()))
            && self
                .path_regex
                .as_deref()
                .is_none_or(|re| regex::Regex::new(re).is_ok_and(|re| re.is_match(&req.path())))
    }
}

fn roll() -> f64 {
    let mut buf = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf);
    f64::from(u32::from_le_bytes(buf)) / f64::from(u32::MAX)
}

/// Faults that fire for this request: the total latency to add and the terminal action, if any.
pub fn fire(
    app: &App,
    service: &str,
    operation: &str,
    req: &Req,
) -> Result<(Duration, Option<FaultAction>), StoreError> {
    let rules: Vec<FaultRule> = app.store.list(FAULT, "")?;
    let candidates: Vec<FaultRule> = rules
        .into_iter()
        .filter(|r| !r.exhausted() && r.matches(service, operation, req))
        .filter(|r| r.probability.is_none_or(|p| roll() < p))
        .collect();
    if candidates.is_empty() {
        return Ok((Duration::ZERO, None));
    }
    // Count the firing durably so "next N requests" holds across concurrent requests.
    let fired: Vec<FaultRule> = app.store.write(|tx| -> Result<Vec<FaultRule>, StoreError> {
        let mut out = Vec::new();
        for c in &candidates {
            if let Some(mut r) = tx.get::<FaultRule>(FAULT, &c.id)?
                && !r.exhausted()
            {
                r.fired += 1;
                tx.put(FAULT, &r.id, &r)?;
                out.push(r);
            }
        }
        Ok(out)
    })?;
    let mut latency = Duration::ZERO;
    let mut terminal = None;
    for r in fired {
        tracing::info!(fault = %r.id, service, operation, "fault injected");
        match r.action {
            FaultAction::Latency { ms } => latency += Duration::from_millis(ms),
            other => {
                if terminal.is_none() {
                    terminal = Some(other);
                }
            }
        }
    }
    Ok((latency, terminal))
}

/// The response (or dropped connection) a terminal fault produces, in the service's error shape.
pub fn outcome(service: &str, action: &FaultAction) -> Outcome {
    let (status, code, retry_after) = match action {
        FaultAction::Drop => return Outcome::Drop,
        FaultAction::Latency { .. } => return Outcome::Drop,
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
    }
}
