//! Queues and messages as stored, and the time-driven state of a message.
//!
//! A message is one document, `sbmsg/<namespace>/<queue>/<a|d>/<sequence>` (`a`: the queue, `d`: its dead-letter
//! sub-queue), so a queue lists in sequence order. Times are unix milliseconds of local-azure's clock: scheduled
//! enqueue, expiry and lock lapse all follow the clock a test moves, as well as real time passing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

pub const NAMESPACE: &str = "sbns";
pub const QUEUE: &str = "sbqueue";
pub const MESSAGE: &str = "sbmsg";
pub const DEDUP: &str = "sbdup";

/// The dead-letter sub-queue's path segment, as clients write it.
pub const DEAD_LETTER_SEGMENT: &str = "$DeadLetterQueue";

fn default_max_delivery() -> u32 {
    10
}
fn default_lock() -> u64 {
    30
}
fn default_dup_window() -> u64 {
    600
}

/// A Service Bus namespace: `<name>.servicebus.windows.net`, placed in a resource group so grants apply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub subscription_id: String,
    #[serde(default)]
    pub resource_group: String,
}

impl Namespace {
    /// The ARM id grants are checked against.
    pub fn scope(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ServiceBus/namespaces/{}",
            self.subscription_id, self.resource_group, self.name
        )
    }
}

/// A queue's settings (the Azure property names, durations in seconds) and its sequence counter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueConfig {
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    #[serde(default = "default_max_delivery")]
    pub max_delivery_count: u32,
    #[serde(default = "default_lock")]
    pub lock_duration_seconds: u64,
    #[serde(default)]
    pub requires_duplicate_detection: bool,
    #[serde(default = "default_dup_window")]
    pub duplicate_detection_window_seconds: u64,
    #[serde(default)]
    pub requires_session: bool,
    /// `None`: messages live until received (Azure's TimeSpan.MaxValue).
    #[serde(default)]
    pub default_message_ttl_seconds: Option<u64>,
    /// Expired messages go to the dead-letter queue (`TTLExpiredException`) instead of vanishing.
    #[serde(default)]
    pub dead_lettering_on_message_expiration: bool,
    /// The last sequence number handed out.
    #[serde(default)]
    pub last_sequence_number: i64,
}

impl QueueConfig {
    pub fn key(&self) -> String {
        queue_key(&self.namespace, &self.name)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !valid_entity_name(&self.name) {
            return Err(format!(
                "queue name '{}' is not valid: 1-260 letters, digits, '.', '-', '_' (starting and ending with a letter or digit)",
                self.name
            ));
        }
        if self.max_delivery_count == 0 {
            return Err("maxDeliveryCount must be at least 1".into());
        }
        if !(5..=300).contains(&self.lock_duration_seconds) {
            return Err("lockDurationSeconds must be between 5 and 300".into());
        }
        if !(20..=7 * 86_400).contains(&self.duplicate_detection_window_seconds) {
            return Err("duplicateDetectionWindowSeconds must be between 20 seconds and 7 days".into());
        }
        Ok(())
    }
}

pub fn queue_key(namespace: &str, queue: &str) -> String {
    format!("{}/{}", namespace.to_ascii_lowercase(), queue.to_ascii_lowercase())
}

pub fn valid_entity_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    !name.is_empty()
        && name.len() <= 260
        && name.chars().all(ok_char)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The queue itself or its dead-letter sub-queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubQueue {
    Active,
    DeadLetter,
}

impl SubQueue {
    pub fn tag(self) -> &'static str {
        match self {
            SubQueue::Active => "a",
            SubQueue::DeadLetter => "d",
        }
    }
}

/// Key prefix of a sub-queue's messages.
pub fn message_prefix(queue_key: &str, sub: SubQueue) -> String {
    format!("{queue_key}/{}/", sub.tag())
}

pub fn message_key(queue_key: &str, sub: SubQueue, seq: i64) -> String {
    format!("{queue_key}/{}/{seq:020}", sub.tag())
}

/// One message as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub sequence_number: i64,
    pub message_id: String,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub reply_to_session_id: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub partition_key: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    /// Base64: bodies are opaque bytes.
    pub body: String,
    /// Custom properties as their JSON values (header text is JSON: strings quoted).
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// When the message entered (or, if scheduled, will enter) the queue.
    pub enqueued_ms: i64,
    /// Set while a scheduled message waits for `enqueued_ms`.
    #[serde(default)]
    pub scheduled: bool,
    /// Effective time to live (the message's, capped by the queue's default).
    #[serde(default)]
    pub ttl_ms: Option<i64>,
    /// Deliveries so far (a receive makes it one more).
    #[serde(default)]
    pub delivery_count: u32,
    #[serde(default)]
    pub lock_token: Option<String>,
    #[serde(default)]
    pub locked_until_ms: Option<i64>,
    #[serde(default)]
    pub dead_lettered: bool,
}

/// What happened to a message as time passed.
#[derive(Debug, Clone, PartialEq)]
pub enum Tidy {
    Unchanged,
    /// Changed in place (a lock lapsed, a scheduled message arrived).
    Updated,
    /// Moved to the dead-letter queue with this reason and description.
    DeadLetter(&'static str, &'static str),
    /// Expired without dead-lettering: gone.
    Drop,
}

impl Message {
    pub fn is_locked(&self, now_ms: i64) -> bool {
        self.lock_token.is_some() && self.locked_until_ms.is_some_and(|t| t > now_ms)
    }

    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.ttl_ms.is_some_and(|ttl| self.enqueued_ms.saturating_add(ttl) <= now_ms)
    }

    /// Receivable now (by the time rules; sessions are the receiver's business).
    pub fn is_available(&self, now_ms: i64) -> bool {
        !self.scheduled && !self.is_locked(now_ms) && (self.dead_lettered || !self.is_expired(now_ms))
    }

    /// Applies what time did since the last look: lapsed locks count as a failed delivery (dead-letter after
    /// `max_delivery`), scheduled messages arrive, expired ones leave.
    pub fn tidy(&mut self, now_ms: i64, max_delivery: u32, dead_letter_expired: bool) -> Tidy {
        let mut changed = false;
        if self.lock_token.is_some() && !self.is_locked(now_ms) {
            self.lock_token = None;
            self.locked_until_ms = None;
            changed = true;
            if !self.dead_lettered && self.delivery_count >= max_delivery {
                return Tidy::DeadLetter(
                    "MaxDeliveryCountExceeded",
                    "Message could not be consumed after maximum delivery attempts.",
                );
            }
        }
        if self.scheduled && self.enqueued_ms <= now_ms {
            self.scheduled = false;
            changed = true;
        }
        if !self.dead_lettered && !self.scheduled && self.lock_token.is_none() && self.is_expired(now_ms) {
            return if dead_letter_expired {
                Tidy::DeadLetter("TTLExpiredException", "The message expired and was dead lettered.")
            } else {
                Tidy::Drop
            };
        }
        if changed { Tidy::Updated } else { Tidy::Unchanged }
    }

    /// Marks the message dead-lettered; the reason travels as custom properties, as Azure does.
    pub fn dead_letter(&mut self, reason: &str, description: &str) {
        self.dead_lettered = true;
        self.lock_token = None;
        self.locked_until_ms = None;
        self.scheduled = false;
        self.properties.insert("DeadLetterReason".into(), Value::String(reason.into()));
        self.properties.insert("DeadLetterErrorDescription".into(), Value::String(description.into()));
    }

    pub fn state(&self, now_ms: i64) -> &'static str {
        if self.dead_lettered {
            "deadLettered"
        } else if self.scheduled {
            "scheduled"
        } else if self.is_locked(now_ms) {
            "locked"
        } else {
            "active"
        }
    }
}

pub fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// RFC 1123 (`Sat, 28 Nov 2026 12:00:00 GMT`): how the REST protocol and HTTP write dates.
pub fn rfc1123(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[t.weekday().number_days_from_monday() as usize],
        t.day(),
        MONTHS[t.month() as usize - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Reads RFC 1123 (with `GMT`/`UTC` or an offset) and, leniently, RFC 3339.
pub fn parse_date(text: &str) -> Option<OffsetDateTime> {
    use time::format_description::well_known::{Rfc2822, Rfc3339};
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc2822).or_else(|_| OffsetDateTime::parse(text, &Rfc3339)) {
        return Some(t);
    }
    let stripped = text.strip_suffix("GMT").or_else(|| text.strip_suffix("UTC"))?;
    OffsetDateTime::parse(&format!("{}+0000", stripped), &Rfc2822).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        let t = time::macros::datetime!(2026-11-28 12:00:05 UTC);
        assert_eq!(rfc1123(t), "Sat, 28 Nov 2026 12:00:05 GMT");
        assert_eq!(parse_date("Sat, 28 Nov 2026 12:00:05 GMT"), Some(t));
        assert_eq!(parse_date("2026-11-28T12:00:05Z"), Some(t));
        assert_eq!(parse_date("nonsense"), None);
    }

    #[test]
    fn lapsed_lock_counts_and_dead_letters_at_max() {
        let mut m = Message {
            delivery_count: 1,
            lock_token: Some("t".into()),
            locked_until_ms: Some(100),
            ..Default::default()
        };
        assert_eq!(m.tidy(50, 2, false), Tidy::Unchanged);
        assert_eq!(m.tidy(100, 2, false), Tidy::Updated);
        assert!(m.is_available(100));
        m.delivery_count = 2;
        m.lock_token = Some("u".into());
        m.locked_until_ms = Some(200);
        assert!(matches!(m.tidy(200, 2, false), Tidy::DeadLetter("MaxDeliveryCountExceeded", _)));
    }

    #[test]
    fn scheduling_and_expiry() {
        let mut m = Message { enqueued_ms: 1000, scheduled: true, ttl_ms: Some(500), ..Default::default() };
        assert!(!m.is_available(999));
        assert_eq!(m.tidy(999, 10, true), Tidy::Unchanged);
        assert_eq!(m.tidy(1000, 10, true), Tidy::Updated);
        assert!(m.is_available(1000));
        assert!(matches!(m.tidy(1500, 10, true), Tidy::DeadLetter("TTLExpiredException", _)));
        assert_eq!(m.tidy(1500, 10, false), Tidy::Drop);
    }

    #[test]
    fn entity_names() {
        assert!(valid_entity_name("resource-created"));
        assert!(!valid_entity_name("-x"));
        assert!(!valid_entity_name("a/b"));
    }
}
