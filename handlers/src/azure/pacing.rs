//! Pacing against Azure's throttling, shared by every request of every client (a per-try policy under the retry
//! policy).
//!
//! ARM throttles per subscription and per kind of request (reads, writes, deletes) with a token bucket. Every answer
//! says how many requests of its kind are left (`x-ms-ratelimit-remaining-subscription-reads` …); beyond them ARM
//! answers `429` with a `Retry-After` in whole seconds. Without pacing, the sweep's inspections in flight emptied the
//! bucket in a few milliseconds, and each of them then got its own `429` and waited on its own.
//!
//! A window per scope (host, subscription, kind) keeps what Azure said last:
//! - after a `429`, nothing of that scope is sent until its `Retry-After` has passed (the others in flight would only
//!   be refused too), and then a single request goes first to learn how much the bucket holds again;
//! - while Azure reports `remaining` requests left, at most `remaining` are in flight, so the last tokens are not
//!   raced for by more requests than they can serve.
//!
//! A scope without those headers (Key Vault, Service Bus, local-azure unthrottled) is held back only after a `429`
//! of its own, and its window is dropped once idle, so memory stays flat however many vaults a sweep touches. No crate offers this for
//! the azure_core pipeline; it is small and tested below.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use azure_core::http::headers::{HeaderName, Headers};
use azure_core::http::policies::{Policy, PolicyResult, get_retry_after};
use azure_core::http::{Context, Method, Request, StatusCode};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::retry::RETRY_AFTER_HEADERS;

/// How long a `429` without a usable `Retry-After` closes its scope (ARM's smallest answer).
const DEFAULT_THROTTLE: Duration = Duration::from_secs(1);
/// Beyond this many windows, idle ones are forgotten (a sweep over many throttled vaults must not grow the map).
const MAX_WINDOWS: usize = 1024;

/// What a request is paced with: its host, its subscription (ARM's unit of throttling) and its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Scope {
    host: String,
    subscription: Option<String>,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Reads,
    Writes,
    Deletes,
}

impl Kind {
    fn of(method: Method) -> Kind {
        match method {
            Method::Get | Method::Head => Kind::Reads,
            Method::Delete => Kind::Deletes,
            _ => Kind::Writes,
        }
    }

    /// ARM's header for the requests of this kind still allowed.
    fn remaining_header(self) -> HeaderName {
        HeaderName::from_static(match self {
            Kind::Reads => "x-ms-ratelimit-remaining-subscription-reads",
            Kind::Writes => "x-ms-ratelimit-remaining-subscription-writes",
            Kind::Deletes => "x-ms-ratelimit-remaining-subscription-deletes",
        })
    }
}

impl Scope {
    fn of(request: &Request) -> Scope {
        let url = request.url();
        let mut segments = url.path_segments().into_iter().flatten();
        let subscription = segments
            .by_ref()
            .find(|s| s.eq_ignore_ascii_case("subscriptions"))
            .and_then(|_| segments.next())
            .map(str::to_ascii_lowercase);
        Scope { host: url.host_str().unwrap_or_default().to_string(), subscription, kind: Kind::of(request.method()) }
    }
}

/// What Azure said last about one scope, and what is in flight in it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Window {
    closed_until: Option<Instant>,
    remaining: Option<u64>,
    in_flight: u64,
}

#[derive(Debug, PartialEq)]
enum Admission {
    Go,
    ClosedUntil(Instant),
    Full,
}

impl Window {
    fn admit(&mut self, now: Instant) -> Admission {
        if let Some(until) = self.closed_until {
            if now < until {
                return Admission::ClosedUntil(until);
            }
            self.closed_until = None;
        }
        // `max(1)`: with nothing reported left, one request at a time finds out whether the bucket has refilled.
        if self.remaining.is_some_and(|left| self.in_flight >= left.max(1)) {
            return Admission::Full;
        }
        self.in_flight += 1;
        Admission::Go
    }

    /// A `429` closes the window for `throttled`; any other answer reports what is left (nothing reported: no limit).
    fn answered(&mut self, now: Instant, throttled: Option<Duration>, remaining: Option<u64>) {
        match throttled {
            Some(wait) => {
                let until = now + wait;
                self.closed_until = Some(self.closed_until.map_or(until, |t| t.max(until)));
                self.remaining = Some(0);
            }
            None => self.remaining = remaining,
        }
    }

    fn is_idle(&self, now: Instant) -> bool {
        self.in_flight == 0 && self.remaining.is_none() && self.closed_until.is_none_or(|t| t <= now)
    }
}

#[derive(Debug, Default)]
pub struct Pacer {
    windows: Mutex<HashMap<Scope, Window>>,
    /// Woken whenever a request of any scope ends, so the ones waiting for room look again.
    ended: Notify,
}

impl Pacer {
    pub fn new() -> Arc<Self> {
        Arc::new(Pacer::default())
    }

    fn windows(&self) -> MutexGuard<'_, HashMap<Scope, Window>> {
        // A panic elsewhere while holding the lock leaves counts that are still usable.
        self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn admit(&self, scope: &Scope) -> Slot<'_> {
        loop {
            // Registered before looking, so an end between the look and the wait is not missed.
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let admission = self.windows().entry(scope.clone()).or_default().admit(Instant::now());
            match admission {
                Admission::Go => return Slot { pacer: self, scope: scope.clone() },
                Admission::ClosedUntil(until) => tokio::time::sleep_until(until).await,
                Admission::Full => ended.await,
            }
        }
    }
}

/// A request admitted and not yet ended; dropping it (answered, failed or cancelled) frees its place.
struct Slot<'a> {
    pacer: &'a Pacer,
    scope: Scope,
}

impl Slot<'_> {
    fn answered(&self, status: StatusCode, headers: &Headers) {
        let throttled = (status == StatusCode::TooManyRequests).then(|| {
            get_retry_after(headers, azure_core::time::OffsetDateTime::now_utc, &RETRY_AFTER_HEADERS)
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or(DEFAULT_THROTTLE)
        });
        let remaining =
            headers.get_optional_str(&self.scope.kind.remaining_header()).and_then(|v| v.trim().parse().ok());
        let mut windows = self.pacer.windows();
        if let Some(window) = windows.get_mut(&self.scope) {
            window.answered(Instant::now(), throttled, remaining);
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut windows = self.pacer.windows();
        if let Some(window) = windows.get_mut(&self.scope) {
            window.in_flight = window.in_flight.saturating_sub(1);
            if window.is_idle(now) {
                windows.remove(&self.scope);
            }
        }
        if windows.len() > MAX_WINDOWS {
            windows.retain(|_, w| w.in_flight > 0 || w.closed_until.is_some_and(|t| t > now));
        }
        drop(windows);
        self.pacer.ended.notify_waiters();
    }
}

#[async_trait::async_trait]
impl Policy for Pacer {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        let slot = self.admit(&Scope::of(request)).await;
        let result = next[0].send(ctx, request, &next[1..]).await;
        if let Ok(response) = &result {
            slot.answered(response.status(), response.headers());
        }
        result
    }
}

#[cfg(test)]
mod tests;
