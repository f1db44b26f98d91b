//! The broker: queue operations as single store transactions, and the wake-ups that let receivers long-poll.
//!
//! Every operation first applies what time did to the queue ([`Message::tidy`]) inside the same transaction, so a
//! lock that lapsed a moment ago (or because a test moved the clock) is seen as lapsed by the very next request. A
//! background ticker does the same for queues nobody is asking about and wakes their waiting receivers.
//!
//! Sessions: the REST protocol has no session receiver, so on a session-enabled queue a peek-lock only hands out a
//! message whose session has no locked message, and within a session the lowest sequence number first. That gives
//! each session one consumer at a time, in order, to plain REST receivers (what the Functions host stand-in needs).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::queue::{
    DEDUP, Message, Namespace, QUEUE, QueueConfig, SubQueue, Tidy, from_ms, message_key, message_prefix, rfc1123,
};
use crate::store::{Store, StoreError, Tx};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("The messaging entity '{0}' could not be found.")]
    EntityNotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue. Reference:{0}"
    )]
    LockLost(String),
    #[error("No message was found with the specified MessageId or LockToken: {0}")]
    MessageNotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a received message leaves the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveMode {
    PeekLock,
    ReceiveAndDelete,
}

/// What to do with a locked message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Complete,
    Abandon,
    Renew,
}

/// Per-queue wake-ups for long-polling receivers. Holds no lock across an await.
#[derive(Default)]
pub struct Broker {
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Broker {
    pub fn notifier(&self, queue_key: &str) -> Arc<Notify> {
        let mut map = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(queue_key.to_string()).or_default().clone()
    }

    pub fn wake(&self, queue_key: &str) {
        self.notifier(queue_key).notify_waiters();
    }

    pub fn wake_all(&self) {
        let all: Vec<Arc<Notify>> = self.wakers.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for n in all {
            n.notify_waiters();
        }
    }
}

pub fn namespace(store: &Store, name: &str) -> Result<Option<Namespace>, StoreError> {
    store.get(super::queue::NAMESPACE, &name.to_ascii_lowercase())
}

pub fn queue(store: &Store, queue_key: &str) -> Result<Option<QueueConfig>, StoreError> {
    store.get(QUEUE, queue_key)
}

fn load_queue(tx: &Tx<'_>, queue_key: &str) -> Result<QueueConfig, BrokerError> {
    tx.get::<QueueConfig>(QUEUE, queue_key)?.ok_or_else(|| BrokerError::EntityNotFound(queue_key.to_string()))
}

/// Applies time to every message of a sub-queue and returns the survivors in sequence order.
fn tidy_sub(tx: &mut Tx<'_>, q: &QueueConfig, sub: SubQueue, now_ms: i64) -> Result<Vec<Message>, StoreError> {
    let key = q.key();
    let mut out = Vec::new();
    for mut m in tx.list::<Message>(super::queue::MESSAGE, &message_prefix(&key, sub))? {
        match m.tidy(now_ms, q.max_delivery_count, q.dead_lettering_on_message_expiration) {
            Tidy::Unchanged => out.push(m),
            Tidy::Updated => {
                tx.put(super::queue::MESSAGE, &message_key(&key, sub, m.sequence_number), &m)?;
                out.push(m);
            }
            Tidy::DeadLetter(reason, description) => {
                tracing::info!(queue = %key, sequence = m.sequence_number, reason, "message dead-lettered");
                move_to_dead_letter(tx, &key, m, reason, description)?;
            }
            Tidy::Drop => {
                tracing::info!(queue = %key, sequence = m.sequence_number, "message expired");
                tx.delete(super::queue::MESSAGE, &message_key(&key, sub, m.sequence_number))?;
            }
        }
    }
    Ok(out)
}

fn move_to_dead_letter(
    tx: &mut Tx<'_>,
    queue_key: &str,
    mut m: Message,
    reason: &str,
    description: &str,
) -> Result<(), StoreError> {
    tx.delete(super::queue::MESSAGE, &message_key(queue_key, SubQueue::Active, m.sequence_number))?;
    m.dead_letter(reason, description);
    tx.put(super::queue::MESSAGE, &message_key(queue_key, SubQueue::DeadLetter, m.sequence_number), &m)
}

/// Enqueues `messages` atomically (all or none). Duplicates of a `MessageId` seen within the detection window are
/// accepted and dropped, as Azure does. Returns how many were stored.
pub fn send(store: &Store, now_ms: i64, queue_key: &str, messages: Vec<Message>) -> Result<usize, BrokerError> {
    store.write(|tx| -> Result<usize, BrokerError> {
        let mut q = load_queue(tx, queue_key)?;
        let mut stored = 0;
        for mut m in messages {
            if q.requires_session && m.session_id.as_deref().is_none_or(str::is_empty) {
                return Err(BrokerError::BadRequest(format!(
                    "The SessionId was not set on a message, and it cannot be sent to the entity '{}'. Entities that have session support enabled can only receive messages that have the SessionId set.",
                    q.name
                )));
            }
            if q.requires_duplicate_detection {
                let dkey = format!("{queue_key}/{}", m.message_id);
                let window = (q.duplicate_detection_window_seconds as i64) * 1000;
                if tx.get::<i64>(DEDUP, &dkey)?.is_some_and(|seen| now_ms < seen + window) {
                    tracing::info!(queue = %queue_key, message_id = %m.message_id, "duplicate dropped");
                    continue;
                }
                tx.put(DEDUP, &dkey, &now_ms)?;
            }
            q.last_sequence_number += 1;
            m.sequence_number = q.last_sequence_number;
            if m.scheduled && m.enqueued_ms <= now_ms {
                m.scheduled = false;
            }
            if !m.scheduled {
                m.enqueued_ms = now_ms;
            }
            let queue_ttl = q.default_message_ttl_seconds.map(|s| s as i64 * 1000);
            m.ttl_ms = match (m.ttl_ms, queue_ttl) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            m.delivery_count = 0;
            m.lock_token = None;
            m.locked_until_ms = None;
            m.dead_lettered = false;
            tx.put(super::queue::MESSAGE, &message_key(queue_key, SubQueue::Active, m.sequence_number), &m)?;
            stored += 1;
        }
        tx.put(QUEUE, queue_key, &q)?;
        Ok(stored)
    })
}

/// Takes the next receivable message: locked for `PeekLock`, removed for `ReceiveAndDelete`.
pub fn receive(
    store: &Store,
    now_ms: i64,
    queue_key: &str,
    sub: SubQueue,
    mode: ReceiveMode,
) -> Result<Option<(Message, QueueConfig)>, BrokerError> {
    store.write(|tx| -> Result<Option<(Message, QueueConfig)>, BrokerError> {
        let q = load_queue(tx, queue_key)?;
        let messages = tidy_sub(tx, &q, sub, now_ms)?;
        let sessions_apply = q.requires_session && sub == SubQueue::Active;
        let locked_sessions: HashSet<&str> = if sessions_apply {
            messages.iter().filter(|m| m.is_locked(now_ms)).filter_map(|m| m.session_id.as_deref()).collect()
        } else {
            HashSet::new()
        };
        let pick = messages.iter().find(|m| {
            m.is_available(now_ms)
                && !(sessions_apply && m.session_id.as_deref().is_some_and(|s| locked_sessions.contains(s)))
        });
        let Some(mut m) = pick.cloned() else { return Ok(None) };
        m.delivery_count += 1;
        let key = message_key(queue_key, sub, m.sequence_number);
        match mode {
            ReceiveMode::PeekLock => {
                m.lock_token = Some(uuid::Uuid::new_v4().to_string());
                m.locked_until_ms = Some(now_ms + q.lock_duration_seconds as i64 * 1000);
                tx.put(super::queue::MESSAGE, &key, &m)?;
            }
            ReceiveMode::ReceiveAndDelete => {
                tx.delete(super::queue::MESSAGE, &key)?;
            }
        }
        Ok(Some((m, q)))
    })
}

/// Completes, abandons or renews the lock of the message locked with `lock_token`. `id` (MessageId or
/// SequenceNumber) only tells "lock lost" (`410`: the message is still there) from "no such message" (`404`).
pub fn settle(
    store: &Store,
    now_ms: i64,
    queue_key: &str,
    sub: SubQueue,
    id: &str,
    lock_token: &str,
    action: Settle,
) -> Result<Option<Message>, BrokerError> {
    store.write(|tx| -> Result<Option<Message>, BrokerError> {
        let q = load_queue(tx, queue_key)?;
        let messages = tidy_sub(tx, &q, sub, now_ms)?;
        let Some(mut m) = messages
            .iter()
            .find(|m| m.lock_token.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(lock_token)) && m.is_locked(now_ms))
            .cloned()
        else {
            let exists = messages.iter().any(|m| m.message_id == id || m.sequence_number.to_string() == id);
            return Err(if exists {
                BrokerError::LockLost(lock_token.to_string())
            } else {
                BrokerError::MessageNotFound(id.to_string())
            });
        };
        if m.message_id != id && m.sequence_number.to_string() != id {
            return Err(BrokerError::MessageNotFound(id.to_string()));
        }
        let key = message_key(queue_key, sub, m.sequence_number);
        match action {
            Settle::Complete => {
                tx.delete(super::queue::MESSAGE, &key)?;
                Ok(None)
            }
            Settle::Abandon => {
                if sub == SubQueue::Active && m.delivery_count >= q.max_delivery_count {
                    tracing::info!(queue = %queue_key, sequence = m.sequence_number, "message dead-lettered after abandon");
                    move_to_dead_letter(
                        tx,
                        queue_key,
                        m,
                        "MaxDeliveryCountExceeded",
                        "Message could not be consumed after maximum delivery attempts.",
                    )?;
                    return Ok(None);
                }
                m.lock_token = None;
                m.locked_until_ms = None;
                tx.put(super::queue::MESSAGE, &key, &m)?;
                Ok(None)
            }
            Settle::Renew => {
                m.locked_until_ms = Some(now_ms + q.lock_duration_seconds as i64 * 1000);
                tx.put(super::queue::MESSAGE, &key, &m)?;
                Ok(Some(m))
            }
        }
    })
}

/// Applies time to every queue whose messages it changes; returns the keys of the queues that changed, whose
/// receivers should look again.
pub fn tick(store: &Store, now_ms: i64) -> Result<Vec<String>, BrokerError> {
    let mut changed = Vec::new();
    for q in store.list::<QueueConfig>(QUEUE, "")? {
        let key = q.key();
        let stale = [SubQueue::Active, SubQueue::DeadLetter].into_iter().try_fold(false, |acc, sub| {
            let msgs: Vec<Message> = store.list(super::queue::MESSAGE, &message_prefix(&key, sub))?;
            Ok::<bool, StoreError>(
                acc || msgs.into_iter().any(|mut m| {
                    m.tidy(now_ms, q.max_delivery_count, q.dead_lettering_on_message_expiration) != Tidy::Unchanged
                }),
            )
        })?;
        if stale {
            store.write(|tx| -> Result<(), BrokerError> {
                let q = load_queue(tx, &key)?;
                tidy_sub(tx, &q, SubQueue::Active, now_ms)?;
                tidy_sub(tx, &q, SubQueue::DeadLetter, now_ms)?;
                Ok(())
            })?;
            changed.push(key);
        }
    }
    // Forget MessageIds older than the longest window, so the detection history stays bounded.
    let longest = store.list::<QueueConfig>(QUEUE, "")?.iter().map(|q| q.duplicate_detection_window_seconds).max();
    if let Some(window) = longest {
        let cutoff = now_ms - window as i64 * 1000;
        let old: Vec<(String, i64)> =
            store.list_keys::<i64>(DEDUP, "")?.into_iter().filter(|(_, seen)| *seen < cutoff).collect();
        if !old.is_empty() {
            store.write(|tx| -> Result<(), StoreError> {
                for (k, _) in &old {
                    tx.delete(DEDUP, k)?;
                }
                Ok(())
            })?;
        }
    }
    Ok(changed)
}

/// Message counts of a queue, as the admin API shows them.
pub fn counts(store: &Store, now_ms: i64, q: &QueueConfig) -> Result<Value, StoreError> {
    let key = q.key();
    let (mut active, mut scheduled, mut locked) = (0u64, 0u64, 0u64);
    for mut m in store.list::<Message>(super::queue::MESSAGE, &message_prefix(&key, SubQueue::Active))? {
        match m.tidy(now_ms, q.max_delivery_count, q.dead_lettering_on_message_expiration) {
            Tidy::DeadLetter(..) | Tidy::Drop => continue,
            _ => {}
        }
        match m.state(now_ms) {
            "scheduled" => scheduled += 1,
            "locked" => locked += 1,
            _ => active += 1,
        }
    }
    let dead = store.list::<Message>(super::queue::MESSAGE, &message_prefix(&key, SubQueue::DeadLetter))?.len();
    Ok(
        json!({ "activeMessageCount": active, "scheduledMessageCount": scheduled, "lockedMessageCount": locked, "deadLetterMessageCount": dead }),
    )
}

/// A message as the admin API shows it (peek, no lock).
pub fn peek_json(m: &Message, now_ms: i64) -> Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(&m.body).unwrap_or_default();
    let body = match String::from_utf8(bytes) {
        Ok(text) => json!(text),
        Err(_) => json!({ "base64": m.body }),
    };
    json!({
        "sequenceNumber": m.sequence_number,
        "messageId": m.message_id,
        "sessionId": m.session_id,
        "correlationId": m.correlation_id,
        "label": m.label,
        "contentType": m.content_type,
        "state": m.state(now_ms),
        "deliveryCount": m.delivery_count,
        "enqueuedTimeUtc": rfc1123(from_ms(m.enqueued_ms)),
        "lockedUntilUtc": m.locked_until_ms.filter(|_| m.is_locked(now_ms)).map(|t| rfc1123(from_ms(t))),
        "expiresAtUtc": m.ttl_ms.map(|t| rfc1123(from_ms(m.enqueued_ms.saturating_add(t)))),
        "deadLetterReason": m.properties.get("DeadLetterReason").filter(|_| m.dead_lettered),
        "properties": m.properties,
        "body": body,
    })
}
