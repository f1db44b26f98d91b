//! The broker: queue operations as single store transactions, and the wake-ups that let receivers long-poll.
//!
//! Every operation first applies what time did to the queue ([`Message::tidy`]) inside the same transaction, so a
//! lock that lapsed a moment ago (or because a test moved the clock) is seen as lapsed by the very next request. A
//! background ticker does the same for queues nobody is asking about and wakes their waiting receivers.
//!
//! Sessions: the REST protocol has no session receiver, so on a session-enabled queue a peek-lock only hands out a
//! message whose session has no locked message, and within a session the lowest sequence number first. That gives
//! each session one consumer at a time, in order, to plain REST receivers (what the Functions host stand-in needs).

use std::collections::{BTreeMap, HashMap, HashSet};
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

/// One queue's messages, mirrored in memory so an operation costs a walk over small structs rather than reading
/// and parsing every stored document. The store stays the source of truth: every change is committed before the
/// mirror counts it as done, and a failed commit drops the mirror (it is reloaded on next use).
#[derive(Default)]
struct QueueState {
    loaded: bool,
    active: BTreeMap<i64, Message>,
    dead: BTreeMap<i64, Message>,
}

impl QueueState {
    fn sub(&self, sub: SubQueue) -> &BTreeMap<i64, Message> {
        match sub {
            SubQueue::Active => &self.active,
            SubQueue::DeadLetter => &self.dead,
        }
    }
}

/// A change to apply to the store (the mirror is already changed).
enum Change {
    Put(SubQueue, Box<Message>),
    Delete(SubQueue, i64),
}

/// The broker: per-queue mirrors and wake-ups for long-polling receivers. Its locks are std mutexes held only
/// inside synchronous operations (run off the async workers), never across an await.
#[derive(Default)]
pub struct Broker {
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    queues: Mutex<HashMap<String, Arc<Mutex<QueueState>>>>,
    ticks: std::sync::atomic::AtomicU64,
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

    fn state(&self, queue_key: &str) -> Arc<Mutex<QueueState>> {
        let mut map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(queue_key.to_string()).or_default().clone()
    }

    /// Runs `f` on the queue's mirror (loaded from the store on first use), holding the queue's lock, so operations
    /// on one queue are serialised and the mirror follows the store's order.
    fn with_queue<R>(
        &self,
        store: &Store,
        queue_key: &str,
        f: impl FnOnce(&mut QueueState) -> Result<R, BrokerError>,
    ) -> Result<R, BrokerError> {
        let state = self.state(queue_key);
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.loaded {
            let load = |sub| -> Result<BTreeMap<i64, Message>, StoreError> {
                let msgs: Vec<Message> = store.list(super::queue::MESSAGE, &message_prefix(queue_key, sub))?;
                Ok(msgs.into_iter().map(|m| (m.sequence_number, m)).collect())
            };
            st.active = load(SubQueue::Active)?;
            st.dead = load(SubQueue::DeadLetter)?;
            st.loaded = true;
        }
        let result = f(&mut st);
        if let Err(BrokerError::Store(_)) = &result {
            // The mirror may be ahead of what committed.
            *st = QueueState::default();
        }
        result
    }

    /// Forgets a queue's mirror (after it was deleted).
    fn forget(&self, queue_key: &str) {
        self.queues.lock().unwrap_or_else(|e| e.into_inner()).remove(queue_key);
    }

    /// Enqueues `messages` atomically (all or none). Duplicates of a `MessageId` seen within the detection window
    /// are accepted and dropped, as Azure does. Returns how many were stored.
    pub fn send(
        &self,
        store: &Store,
        now_ms: i64,
        queue_key: &str,
        messages: Vec<Message>,
    ) -> Result<usize, BrokerError> {
        self.with_queue(store, queue_key, |st| {
            let stored = store.write(|tx| -> Result<Vec<Message>, BrokerError> {
                let mut q = load_queue(tx, queue_key)?;
                let mut stored = Vec::new();
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
                    tx.put(
                        super::queue::MESSAGE,
                        &message_key(queue_key, SubQueue::Active, m.sequence_number),
                        &m,
                    )?;
                    stored.push(m);
                }
                tx.put(QUEUE, queue_key, &q)?;
                Ok(stored)
            })?;
            let n = stored.len();
            for m in stored {
                st.active.insert(m.sequence_number, m);
            }
            Ok(n)
        })
    }

    /// Takes the next receivable message: locked for `PeekLock`, removed for `ReceiveAndDelete`.
    pub fn receive(
        &self,
        store: &Store,
        now_ms: i64,
        queue_key: &str,
        sub: SubQueue,
        mode: ReceiveMode,
    ) -> Result<Option<(Message, QueueConfig)>, BrokerError> {
        let q = queue(store, queue_key)?.ok_or_else(|| BrokerError::EntityNotFound(queue_key.to_string()))?;
        self.with_queue(store, queue_key, |st| {
            let mut changes = tidy(st, &q, now_ms);
            let Some(mut m) = pick(st.sub(sub), &q, sub, now_ms) else {
                commit(store, queue_key, &changes)?;
                return Ok(None);
            };
            m.delivery_count += 1;
            match mode {
                ReceiveMode::PeekLock => {
                    m.lock_token = Some(uuid::Uuid::new_v4().to_string());
                    m.locked_until_ms = Some(now_ms + q.lock_duration_seconds as i64 * 1000);
                    changes.push(Change::Put(sub, Box::new(m.clone())));
                }
                ReceiveMode::ReceiveAndDelete => changes.push(Change::Delete(sub, m.sequence_number)),
            }
            commit(store, queue_key, &changes)?;
            mirror(st, changes);
            Ok(Some((m, q)))
        })
    }

    /// Completes, abandons or renews the lock of the message locked with `lock_token`. `id` (MessageId or
    /// SequenceNumber) must name that message; it also tells "lock lost" (`410`: the message is still there) from
    /// "no such message" (`404`).
    #[allow(clippy::too_many_arguments)]
    pub fn settle(
        &self,
        store: &Store,
        now_ms: i64,
        queue_key: &str,
        sub: SubQueue,
        id: &str,
        lock_token: &str,
        action: Settle,
    ) -> Result<Option<Message>, BrokerError> {
        let q = queue(store, queue_key)?.ok_or_else(|| BrokerError::EntityNotFound(queue_key.to_string()))?;
        self.with_queue(store, queue_key, |st| {
            let mut changes = tidy(st, &q, now_ms);
            let messages = st.sub(sub);
            let Some(mut m) = messages
                .values()
                .find(|m| {
                    m.lock_token.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(lock_token)) && m.is_locked(now_ms)
                })
                .cloned()
            else {
                let exists = messages.values().any(|m| m.message_id == id || m.sequence_number.to_string() == id);
                commit(store, queue_key, &changes)?;
                mirror(st, changes);
                return Err(if exists {
                    BrokerError::LockLost(lock_token.to_string())
                } else {
                    BrokerError::MessageNotFound(id.to_string())
                });
            };
            if m.message_id != id && m.sequence_number.to_string() != id {
                commit(store, queue_key, &changes)?;
                mirror(st, changes);
                return Err(BrokerError::MessageNotFound(id.to_string()));
            }
            let renewed = match action {
                Settle::Complete => {
                    changes.push(Change::Delete(sub, m.sequence_number));
                    None
                }
                Settle::Abandon => {
                    m.lock_token = None;
                    m.locked_until_ms = None;
                    if sub == SubQueue::Active && m.delivery_count >= q.max_delivery_count {
                        tracing::info!(queue = %queue_key, sequence = m.sequence_number, "message dead-lettered after abandon");
                        dead_letter_changes(&mut changes, m, MAX_DELIVERY.0, MAX_DELIVERY.1);
                    } else {
                        changes.push(Change::Put(sub, Box::new(m)));
                    }
                    None
                }
                Settle::Renew => {
                    m.locked_until_ms = Some(now_ms + q.lock_duration_seconds as i64 * 1000);
                    changes.push(Change::Put(sub, Box::new(m.clone())));
                    Some(m)
                }
            };
            commit(store, queue_key, &changes)?;
            mirror(st, changes);
            Ok(renewed)
        })
    }

    /// Applies time to every queue; returns the keys of the queues that changed, whose receivers should look again.
    pub fn tick(&self, store: &Store, now_ms: i64) -> Result<Vec<String>, BrokerError> {
        let mut changed = Vec::new();
        let queues = store.list::<QueueConfig>(QUEUE, "")?;
        for q in &queues {
            let key = q.key();
            let any = self.with_queue(store, &key, |st| {
                let changes = tidy(st, q, now_ms);
                let any = !changes.is_empty();
                commit(store, &key, &changes)?;
                mirror(st, changes);
                Ok(any)
            })?;
            if any {
                changed.push(key);
            }
        }
        // Now and then, forget MessageIds older than the longest window, so the detection history stays bounded.
        let tick = self.ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if tick.is_multiple_of(240)
            && let Some(window) = queues.iter().map(|q| q.duplicate_detection_window_seconds).max()
        {
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
    pub fn counts(&self, store: &Store, now_ms: i64, q: &QueueConfig) -> Result<Value, BrokerError> {
        self.with_queue(store, &q.key(), |st| {
            let (mut active, mut scheduled, mut locked) = (0u64, 0u64, 0u64);
            for m in st.active.values() {
                match m.clone().tidy(now_ms, q.max_delivery_count, q.dead_lettering_on_message_expiration) {
                    Tidy::DeadLetter(..) | Tidy::Drop => continue,
                    _ => {}
                }
                match m.state(now_ms) {
                    "scheduled" => scheduled += 1,
                    "locked" => locked += 1,
                    _ => active += 1,
                }
            }
            Ok(json!({ "activeMessageCount": active, "scheduledMessageCount": scheduled, "lockedMessageCount": locked, "deadLetterMessageCount": st.dead.len() }))
        })
    }

    /// Up to `limit` messages of a sub-queue, without locking.
    pub fn peek(
        &self,
        store: &Store,
        queue_key: &str,
        sub: SubQueue,
        limit: usize,
    ) -> Result<Vec<Message>, BrokerError> {
        self.with_queue(store, queue_key, |st| Ok(st.sub(sub).values().take(limit).cloned().collect()))
    }

    /// Removes every message of a sub-queue; returns how many.
    pub fn purge(&self, store: &Store, queue_key: &str, sub: SubQueue) -> Result<usize, BrokerError> {
        self.with_queue(store, queue_key, |st| {
            let n = store.write(|tx| tx.delete_prefix(super::queue::MESSAGE, &message_prefix(queue_key, sub)))?;
            match sub {
                SubQueue::Active => st.active.clear(),
                SubQueue::DeadLetter => st.dead.clear(),
            }
            Ok(n)
        })
    }

    /// Deletes a queue and its messages.
    pub fn delete_queue(&self, store: &Store, queue_key: &str) -> Result<(), BrokerError> {
        self.with_queue(store, queue_key, |st| {
            store.write(|tx| -> Result<(), StoreError> {
                tx.delete_prefix(super::queue::MESSAGE, &format!("{queue_key}/"))?;
                tx.delete(QUEUE, queue_key)?;
                Ok(())
            })?;
            *st = QueueState::default();
            Ok(())
        })?;
        self.forget(queue_key);
        Ok(())
    }
}

const MAX_DELIVERY: (&str, &str) =
    ("MaxDeliveryCountExceeded", "Message could not be consumed after maximum delivery attempts.");

fn dead_letter_changes(changes: &mut Vec<Change>, mut m: Message, reason: &str, description: &str) {
    changes.push(Change::Delete(SubQueue::Active, m.sequence_number));
    m.dead_letter(reason, description);
    changes.push(Change::Put(SubQueue::DeadLetter, Box::new(m)));
}

/// Applies time to the mirror's messages and returns the changes for the store. Changes later in the list win.
fn tidy(st: &mut QueueState, q: &QueueConfig, now_ms: i64) -> Vec<Change> {
    let mut changes = Vec::new();
    for sub in [SubQueue::Active, SubQueue::DeadLetter] {
        // Only locks, schedules and lifetimes change with time.
        for m in st.sub(sub).values().filter(|m| m.lock_token.is_some() || m.scheduled || m.ttl_ms.is_some()) {
            let mut m = m.clone();
            match m.tidy(now_ms, q.max_delivery_count, q.dead_lettering_on_message_expiration) {
                Tidy::Unchanged => {}
                Tidy::Updated => changes.push(Change::Put(sub, Box::new(m))),
                Tidy::DeadLetter(reason, description) => {
                    tracing::info!(queue = %q.key(), sequence = m.sequence_number, reason, "message dead-lettered");
                    dead_letter_changes(&mut changes, m, reason, description);
                }
                Tidy::Drop => {
                    tracing::info!(queue = %q.key(), sequence = m.sequence_number, "message expired");
                    changes.push(Change::Delete(sub, m.sequence_number));
                }
            }
        }
    }
    let taken = std::mem::take(&mut changes);
    let replay: Vec<Change> = taken
        .iter()
        .map(|c| match c {
            Change::Put(s, m) => Change::Put(*s, m.clone()),
            Change::Delete(s, n) => Change::Delete(*s, *n),
        })
        .collect();
    mirror(st, replay);
    taken
}

/// Applies changes to the mirror.
fn mirror(st: &mut QueueState, changes: Vec<Change>) {
    for c in changes {
        match c {
            Change::Put(SubQueue::Active, m) => {
                st.active.insert(m.sequence_number, *m);
            }
            Change::Put(SubQueue::DeadLetter, m) => {
                st.dead.insert(m.sequence_number, *m);
            }
            Change::Delete(SubQueue::Active, n) => {
                st.active.remove(&n);
            }
            Change::Delete(SubQueue::DeadLetter, n) => {
                st.dead.remove(&n);
            }
        }
    }
}

/// Writes changes in one transaction (none: no transaction).
fn commit(store: &Store, queue_key: &str, changes: &[Change]) -> Result<(), BrokerError> {
    if changes.is_empty() {
        return Ok(());
    }
    store.write(|tx| -> Result<(), StoreError> {
        for c in changes {
            match c {
                Change::Put(sub, m) => {
                    tx.put(super::queue::MESSAGE, &message_key(queue_key, *sub, m.sequence_number), m.as_ref())?
                }
                Change::Delete(sub, n) => {
                    tx.delete(super::queue::MESSAGE, &message_key(queue_key, *sub, *n))?;
                }
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// The first message a receiver may take now: available by the time rules and, on a session queue, from a session
/// with no locked message.
fn pick(messages: &BTreeMap<i64, Message>, q: &QueueConfig, sub: SubQueue, now_ms: i64) -> Option<Message> {
    let sessions_apply = q.requires_session && sub == SubQueue::Active;
    let locked_sessions: HashSet<&str> = if sessions_apply {
        messages.values().filter(|m| m.is_locked(now_ms)).filter_map(|m| m.session_id.as_deref()).collect()
    } else {
        HashSet::new()
    };
    messages
        .values()
        .find(|m| {
            m.is_available(now_ms)
                && !(sessions_apply && m.session_id.as_deref().is_some_and(|s| locked_sessions.contains(s)))
        })
        .cloned()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(requires_session: bool) -> (tempfile::TempDir, Store, Broker, String) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let q = QueueConfig {
            namespace: "ns".into(),
            name: "q".into(),
            max_delivery_count: 2,
            lock_duration_seconds: 30,
            requires_duplicate_detection: true,
            duplicate_detection_window_seconds: 600,
            requires_session,
            default_message_ttl_seconds: None,
            dead_lettering_on_message_expiration: false,
            last_sequence_number: 0,
        };
        store.write(|tx| tx.put(QUEUE, &q.key(), &q)).unwrap();
        (dir, store, Broker::default(), q.key())
    }

    fn msg(id: &str, session: &str) -> Message {
        Message { message_id: id.into(), session_id: Some(session.into()), ..Default::default() }
    }

    #[test]
    fn sessions_hand_out_one_locked_message_each_in_order() {
        let (_dir, store, broker, key) = setup(true);
        let sent = broker.send(&store, 0, &key, vec![msg("a1", "A"), msg("a2", "A"), msg("b1", "B"), msg("a1", "A")]);
        assert_eq!(sent.unwrap(), 3, "the duplicate a1 is dropped");
        let take = |now| broker.receive(&store, now, &key, SubQueue::Active, ReceiveMode::PeekLock).unwrap();
        let (a1, _) = take(0).unwrap();
        let (b1, _) = take(0).unwrap();
        assert_eq!((a1.message_id.as_str(), b1.message_id.as_str()), ("a1", "b1"));
        assert!(take(0).is_none());
        let lock = a1.lock_token.clone().unwrap();
        broker.settle(&store, 0, &key, SubQueue::Active, "a1", &lock, Settle::Complete).unwrap();
        assert_eq!(take(0).unwrap().0.message_id, "a2");
        // The mirror and the store agree: a fresh broker over the same store sees the same state.
        let fresh = Broker::default();
        let q = queue(&store, &key).unwrap().unwrap();
        assert_eq!(fresh.counts(&store, 0, &q).unwrap(), broker.counts(&store, 0, &q).unwrap());
    }

    #[test]
    fn lapsed_locks_redeliver_then_dead_letter() {
        let (_dir, store, broker, key) = setup(false);
        broker.send(&store, 0, &key, vec![msg("m", "s")]).unwrap();
        let take = |now| broker.receive(&store, now, &key, SubQueue::Active, ReceiveMode::PeekLock).unwrap();
        let (first, _) = take(0).unwrap();
        assert_eq!(first.delivery_count, 1);
        let lost = broker.settle(
            &store,
            30_000,
            &key,
            SubQueue::Active,
            "m",
            first.lock_token.as_deref().unwrap(),
            Settle::Complete,
        );
        assert!(matches!(lost, Err(BrokerError::LockLost(_))));
        let (second, _) = take(30_000).unwrap();
        assert_eq!(second.delivery_count, 2);
        assert!(take(60_000).is_none(), "dead-lettered after the second lapse");
        assert_eq!(
            broker.peek(&store, &key, SubQueue::DeadLetter, 10).unwrap()[0].properties["DeadLetterReason"],
            "MaxDeliveryCountExceeded"
        );
    }
}
