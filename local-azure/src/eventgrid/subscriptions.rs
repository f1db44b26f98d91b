//! Event subscriptions: where events go, which ones, in which schema, with what retry policy; and the
//! validation handshake that must succeed before anything is delivered.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schema::Schema;

pub const SUBSCRIPTION: &str = "egsub";
/// Events accepted for a subscription and not yet delivered: `egpending/<subscription>/<activity sequence>`.
pub const PENDING: &str = "egpending";
/// Events that could not be delivered: `egdead/<subscription>/<activity sequence>`.
pub const DEAD_LETTER: &str = "egdead";

fn default_attempts() -> u32 {
    30
}
fn default_ttl() -> u64 {
    1440
}
fn default_retry_delay() -> u64 {
    1000
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedFilter {
    /// `StringIn`, `StringNotIn`, `StringBeginsWith`, `StringEndsWith`, `StringContains`.
    pub operator_type: String,
    /// A field of the Event Grid schema event: `data.operationName`, `subject`, `eventType`, …
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default)]
    pub subject_begins_with: Option<String>,
    #[serde(default)]
    pub subject_ends_with: Option<String>,
    /// `None`: every event type.
    #[serde(default)]
    pub included_event_types: Option<Vec<String>>,
    #[serde(default)]
    pub is_subject_case_sensitive: bool,
    #[serde(default)]
    pub advanced_filters: Vec<AdvancedFilter>,
}

fn lookup<'a>(event: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(event, |v, k| v.get(k))
}

impl Filter {
    /// Whether an Event Grid schema event passes (string comparisons ignore case, as Event Grid's do).
    pub fn matches(&self, event: &Value) -> bool {
        let subject = event["subject"].as_str().unwrap_or_default();
        let fold = |s: &str| if self.is_subject_case_sensitive { s.to_string() } else { s.to_ascii_lowercase() };
        if let Some(p) = self.subject_begins_with.as_deref().filter(|p| !p.is_empty())
            && !fold(subject).starts_with(&fold(p))
        {
            return false;
        }
        if let Some(p) = self.subject_ends_with.as_deref().filter(|p| !p.is_empty())
            && !fold(subject).ends_with(&fold(p))
        {
            return false;
        }
        let event_type = event["eventType"].as_str().unwrap_or_default();
        if let Some(types) = &self.included_event_types
            && !types.iter().any(|t| t.eq_ignore_ascii_case(event_type))
        {
            return false;
        }
        self.advanced_filters.iter().all(|f| {
            let value = lookup(event, &f.key).and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
            let mut values = f.values.iter().map(|v| v.to_ascii_lowercase());
            match f.operator_type.as_str() {
                "StringIn" => values.any(|v| v == value),
                "StringNotIn" => values.all(|v| v != value),
                "StringBeginsWith" => values.any(|v| value.starts_with(&v)),
                "StringEndsWith" => values.any(|v| value.ends_with(&v)),
                "StringContains" => values.any(|v| value.contains(&v)),
                _ => false,
            }
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        const KNOWN: &[&str] = &["StringIn", "StringNotIn", "StringBeginsWith", "StringEndsWith", "StringContains"];
        match self.advanced_filters.iter().find(|f| !KNOWN.contains(&f.operator_type.as_str())) {
            Some(f) => {
                Err(format!("advanced filter operator '{}' is not supported (use one of {KNOWN:?})", f.operator_type))
            }
            None => Ok(()),
        }
    }
}

/// An event subscription (admin API shape).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventSubscription {
    pub name: String,
    /// A loopback `http(s)` webhook URL.
    pub endpoint: String,
    /// The system topic: events of resources under this scope (default: the default subscription).
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub schema: Schema,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default = "default_attempts")]
    pub max_delivery_attempts: u32,
    #[serde(default = "default_ttl")]
    pub event_ttl_minutes: u64,
    /// The first retry waits this long; each next one twice as long (capped at a minute).
    #[serde(default = "default_retry_delay")]
    pub retry_delay_ms: u64,
    /// `Succeeded` once the endpoint passed validation, `Failed` otherwise.
    #[serde(default)]
    pub provisioning_state: String,
    #[serde(default)]
    pub validation_error: Option<String>,
    /// The last activity-log sequence number looked at.
    #[serde(default)]
    pub cursor: u64,
    #[serde(default)]
    pub delivered_count: u64,
    #[serde(default)]
    pub dead_lettered_count: u64,
}

impl EventSubscription {
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err("name: 1-64 letters, digits and hyphens".into());
        }
        let url = self.endpoint.to_ascii_lowercase();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or("endpoint must be an http(s) URL")?;
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return Err("endpoint must be a loopback URL (127.0.0.1 or localhost): there is no internet here".into());
        }
        if self.max_delivery_attempts == 0 || self.max_delivery_attempts > 30 {
            return Err("maxDeliveryAttempts must be between 1 and 30".into());
        }
        if self.event_ttl_minutes == 0 || self.event_ttl_minutes > 1440 {
            return Err("eventTtlMinutes must be between 1 and 1440".into());
        }
        self.filter.validate()
    }

    /// The wait before retry number `attempts` (1 = the first retry).
    pub fn backoff_ms(&self, attempts: u32) -> i64 {
        let factor = 1u64 << attempts.saturating_sub(1).min(16);
        self.retry_delay_ms.saturating_mul(factor).min(60_000) as i64
    }
}

/// An accepted event waiting for (re)delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    pub sequence: u64,
    /// The Event Grid schema event (converted at delivery for CloudEvents subscriptions).
    pub event: Value,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub published_ms: i64,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_http_status: Option<u16>,
}

pub fn pending_key(subscription: &str, sequence: u64) -> String {
    format!("{subscription}/{sequence:020}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters() {
        let event = json!({"subject": "/subscriptions/s/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/v", "eventType": "Microsoft.Resources.ResourceWriteSuccess", "data": {"operationName": "Microsoft.KeyVault/vaults/write"}});
        let mut f =
            Filter { subject_begins_with: Some("/subscriptions/s/resourcegroups/rg".into()), ..Default::default() };
        assert!(f.matches(&event));
        f.is_subject_case_sensitive = true;
        assert!(!f.matches(&event));
        let f = Filter {
            included_event_types: Some(vec!["Microsoft.Resources.ResourceDeleteSuccess".into()]),
            ..Default::default()
        };
        assert!(!f.matches(&event));
        let f = Filter {
            subject_ends_with: Some("/v".into()),
            advanced_filters: vec![AdvancedFilter {
                operator_type: "StringIn".into(),
                key: "data.operationName".into(),
                values: vec!["microsoft.keyvault/vaults/write".into()],
            }],
            ..Default::default()
        };
        assert!(f.matches(&event));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s: EventSubscription =
            serde_json::from_value(json!({"name": "a", "endpoint": "http://127.0.0.1:1/x", "retryDelayMs": 100}))
                .unwrap();
        assert_eq!((s.backoff_ms(1), s.backoff_ms(2), s.backoff_ms(3)), (100, 200, 400));
        assert_eq!(s.backoff_ms(30), 60_000);
        assert!(s.validate().is_ok());
        let remote = EventSubscription { endpoint: "https://example.com/hook".into(), ..s };
        assert!(remote.validate().is_err());
    }
}
