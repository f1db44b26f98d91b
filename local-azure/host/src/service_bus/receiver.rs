//! The `serviceBusTrigger` receive loops: competing peek-lock receivers per function (sessions included), each
//! message invoked, its lock renewed while the handler works, then completed or abandoned.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use super::{ReceivedMessage, ServiceBusClient};
use crate::HostEvent;
use crate::app::ServiceBusOptions;
use crate::invoke::Invoker;

/// How long one peek-lock request waits on an empty queue (the REST API's `timeout` parameter).
pub const RECEIVE_TIMEOUT_SECS: u64 = 30;

/// The receive loops of one `serviceBusTrigger` function.
pub struct Receiver {
    pub function: String,
    pub binding: String,
    pub queue: String,
    pub client: Arc<ServiceBusClient>,
    pub invoker: Arc<Invoker>,
    /// `isSessionsEnabled` on the trigger.
    pub sessions: bool,
    pub options: ServiceBusOptions,
    /// Set while receiving fails, so one outage is one warning rather than one per worker per retry.
    pub failing: std::sync::atomic::AtomicBool,
}

impl Receiver {
    /// Runs the competing receivers until `shutdown` flips to true: one per invocation the processor may run at once.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let concurrency = self.options.concurrency(self.sessions);
        tracing::info!(function = %self.function, concurrency, sessions = self.sessions, "Service Bus receivers start");
        let workers: Vec<_> = (0..concurrency)
            .map(|worker| {
                let this = self.clone();
                let shutdown = shutdown.clone();
                let span = tracing::info_span!("receiver", function = %self.function, queue = %self.queue, worker);
                tokio::spawn(this.receive_loop(shutdown).instrument(span))
            })
            .collect();
        for worker in workers {
            let _ = worker.await;
        }
    }

    async fn receive_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let received = tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                r = self.client.peek_lock(&self.queue, RECEIVE_TIMEOUT_SECS) => r,
            };
            if received.is_ok() && self.failing.swap(false, Ordering::SeqCst) {
                tracing::info!("receiving from the queue works again");
            }
            match received {
                Ok(None) => backoff = Duration::from_millis(500),
                Ok(Some(message)) => {
                    backoff = Duration::from_millis(500);
                    self.handle(message).await;
                }
                Err(err) => {
                    if self.failing.swap(true, Ordering::SeqCst) {
                        tracing::debug!(retry_in_ms = backoff.as_millis() as u64, "peek-lock failed: {err}");
                    } else {
                        tracing::warn!(
                            retry_in_ms = backoff.as_millis() as u64,
                            "peek-lock failed (retrying with backoff): {err}"
                        );
                    }
                    tokio::select! {
                        _ = crate::stopped(&mut shutdown) => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn handle(&self, message: ReceivedMessage) {
        let message_id = message.broker.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!("message", message_id = %message_id,
            delivery_count = message.broker.delivery_count.unwrap_or(1), session_id = message.broker.session_id.as_deref().unwrap_or(""));
        async {
            let renewal = tokio::spawn(renew_until_cancelled(
                self.client.clone(),
                self.queue.clone(),
                message.clone(),
                self.options.max_auto_lock_renewal,
            ));
            let input = message.invocation(&self.binding, Some(&self.client), self.sessions);
            let outcome = self.invoker.invoke(&self.function, input).await;
            renewal.abort();
            let succeeded = match &outcome {
                Ok(o) => o.succeeded(),
                Err(err) => {
                    tracing::warn!("invocation failed: {err}");
                    false
                }
            };
            let settle = if !succeeded {
                self.client.abandon(&self.queue, &message.broker).await
            } else if self.options.auto_complete_messages {
                self.client.complete(&self.queue, &message.broker).await
            } else {
                tracing::info!("autoCompleteMessages is off: the message stays locked until its lock expires");
                Ok(())
            };
            match settle {
                Ok(()) => {
                    tracing::info!(completed = succeeded && self.options.auto_complete_messages, "message settled")
                }
                Err(err) if err.is_lock_lost() => {
                    tracing::warn!("the lock was lost before settling; the broker redelivers: {err}")
                }
                Err(err) => tracing::warn!("settling the message failed: {err}"),
            }
            self.invoker.emit(HostEvent::MessageSettled {
                function: self.function.clone(),
                message_id: message_id.clone(),
                completed: succeeded && self.options.auto_complete_messages,
            });
        }
        .instrument(span)
        .await
    }
}

/// Renews the message lock at half its remaining time until cancelled or `max_total` has passed.
async fn renew_until_cancelled(
    client: Arc<ServiceBusClient>,
    queue: String,
    message: ReceivedMessage,
    max_total: Duration,
) {
    let started = tokio::time::Instant::now();
    let mut remaining = message.lock_remaining().unwrap_or(Duration::from_secs(60));
    loop {
        let wait = (remaining / 2).max(Duration::from_millis(500));
        if started.elapsed() + wait > max_total {
            return;
        }
        tokio::time::sleep(wait).await;
        match client.renew_lock(&queue, &message.broker).await {
            Ok(Some(left)) => {
                remaining = left;
                tracing::debug!("message lock renewed");
            }
            Ok(None) => tracing::debug!("message lock renewed"),
            Err(err) => {
                tracing::warn!("renewing the message lock failed: {err}");
                if err.is_lock_lost() {
                    return;
                }
            }
        }
    }
}
