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
//! Background work (the recovery sweep, run inside [`in_background`]) also keeps out of a reserve: it is admitted
//! only while more than `reserve` of the bucket (the share of the largest `remaining` seen) would be left, so
//! whatever else reads in the subscription — the customer's portal, Terraform, pipelines, and edgevault's own
//! activations and recoveries, which never wait for the reserve — finds tokens in it. ARM reports two buckets
//! (docs: learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling): the caller's
//! (`…-subscription-reads`) and the subscription's across every caller (`…-subscription-global-reads`, 15 × the
//! caller's); the pacer goes by the lower. When the sweep stands at the reserve with nothing in flight, one request
//! (a probe) learns how far the bucket has refilled. Probes are spaced by how fast it refills, which no header says:
//! the interval halves after a probe that found tokens above the reserve and doubles after one that found none,
//! between [`RESERVE_PROBE_MIN`] and [`RESERVE_PROBE`]. So the sweep takes the refill as it comes (a fixed second
//! between probes lost every token a full bucket could not hold: with ARM's 300-token bucket refilling at 300/s and
//! a 20 % reserve, 60 a second), and a probe finding nothing takes at most one token of the reserve.
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
/// The longest background work standing at the reserve waits before it sends one request to learn what is left.
pub const RESERVE_PROBE: Duration = Duration::from_secs(1);
/// The shortest: the interval a bucket refilling faster than background work can use settles at.
pub const RESERVE_PROBE_MIN: Duration = Duration::from_millis(20);
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

    /// ARM's headers for the requests of this kind still allowed: the caller's bucket, and the subscription's
    /// across every caller.
    fn remaining_headers(self) -> [HeaderName; 2] {
        match self {
            Kind::Reads => [
                HeaderName::from_static("x-ms-ratelimit-remaining-subscription-reads"),
                HeaderName::from_static("x-ms-ratelimit-remaining-subscription-global-reads"),
            ],
            Kind::Writes => [
                HeaderName::from_static("x-ms-ratelimit-remaining-subscription-writes"),
                HeaderName::from_static("x-ms-ratelimit-remaining-subscription-global-writes"),
            ],
            Kind::Deletes => [
                HeaderName::from_static("x-ms-ratelimit-remaining-subscription-deletes"),
                HeaderName::from_static("x-ms-ratelimit-remaining-subscription-global-deletes"),
            ],
        }
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
    /// The most ever reported left: the bucket's size, as near as the answers tell (a bucket starts full).
    capacity: u64,
    /// When background work standing at the reserve may send its next probe.
    probe_at: Option<Instant>,
    /// The interval between probes (`None`: not yet probed, [`RESERVE_PROBE_MIN`]).
    probe_every: Option<Duration>,
    /// The reserve's floor (tokens) when the probe in flight was sent.
    probing: Option<u64>,
}

#[derive(Debug, PartialEq)]
enum Admission {
    Go,
    ClosedUntil(Instant),
    Full,
    /// Background work stands at the reserve until something ends or the probe is due.
    Reserved(Instant),
}

impl Window {
    #[cfg(test)]
    fn admit(&mut self, now: Instant) -> Admission {
        self.admit_with(now, None)
    }

    /// `reserve`: for background work, the share of the bucket (0..1) it must leave.
    fn admit_with(&mut self, now: Instant, reserve: Option<f64>) -> Admission {
        if let Some(until) = self.closed_until {
            if now < until {
                return Admission::ClosedUntil(until);
            }
            self.closed_until = None;
        }
        if let (Some(share), Some(left)) = (reserve.filter(|r| *r > 0.0), self.remaining) {
            let floor = (self.capacity as f64 * share).ceil() as u64;
            if left <= floor + self.in_flight {
                let every = self.probe_every.unwrap_or(RESERVE_PROBE_MIN);
                match self.probe_at {
                    _ if self.in_flight > 0 => return Admission::Reserved(now + every),
                    Some(at) if now < at => return Admission::Reserved(at),
                    _ => {
                        // Until the probe's answer sets the next one (an answer lost still frees the next).
                        self.probe_at = Some(now + every);
                        self.probing = Some(floor);
                    }
                }
            }
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
            None => {
                self.remaining = remaining;
                self.capacity = self.capacity.max(remaining.unwrap_or(0));
            }
        }
        if let Some(floor) = self.probing.take() {
            let every = self.probe_every.unwrap_or(RESERVE_PROBE_MIN);
            let every = match self.remaining.is_some_and(|left| left > floor) {
                true => (every / 2).max(RESERVE_PROBE_MIN),
                false => (every * 2).min(RESERVE_PROBE),
            };
            self.probe_every = Some(every);
            self.probe_at = Some(now + every);
        }
    }

    fn is_idle(&self, now: Instant) -> bool {
        self.in_flight == 0 && self.remaining.is_none() && self.closed_until.is_none_or(|t| t <= now)
    }
}

/// What marks a task's requests as background work: the share of each bucket it leaves to everyone else.
#[derive(Debug, Clone, Copy)]
struct Background {
    reserve: f64,
}

tokio::task_local! {
    static BACKGROUND: Background;
}

/// Runs `work` as background work: its requests keep out of the last `reserve_percent` % of every ARM bucket they
/// meet, so other readers of the subscription (and edgevault's own activations and recoveries) are not throttled
/// because of it. The mark holds for everything `work` polls in its own task.
pub async fn in_background<F: std::future::Future>(reserve_percent: u8, work: F) -> F::Output {
    BACKGROUND.scope(Background { reserve: f64::from(reserve_percent.min(100)) / 100.0 }, work).await
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
        let reserve = BACKGROUND.try_with(|b| b.reserve).ok();
        loop {
            // Registered before looking, so an end between the look and the wait is not missed.
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let admission = self.windows().entry(scope.clone()).or_default().admit_with(Instant::now(), reserve);
            match admission {
                Admission::Go => return Slot { pacer: self, scope: scope.clone() },
                Admission::ClosedUntil(until) => tokio::time::sleep_until(until).await,
                Admission::Full => ended.await,
                Admission::Reserved(probe) => {
                    tokio::select! {
                        _ = ended => {}
                        _ = tokio::time::sleep_until(probe) => {}
                    }
                }
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
        let remaining = self
            .scope
            .kind
            .remaining_headers()
            .iter()
            .filter_map(|h| headers.get_optional_str(h).and_then(|v| v.trim().parse::<u64>().ok()))
            .min();
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
