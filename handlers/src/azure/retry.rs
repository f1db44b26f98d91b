//! The retry policy every client uses: exponential backoff with jitter for failures the service says nothing about,
//! and exactly the service's `Retry-After` when it gives one.
//!
//! azure_core's own exponential policy sleeps `max(Retry-After, its backoff)`, and its backoff starts at twice the
//! initial delay: with the production settings a `429 Retry-After: 1` from ARM waited 1.6–1.9 s, then 3.2 s. While
//! ARM throttles, every request in flight is one of those, so the allowed rate went unused for most of each second
//! (the sweep's 10,000-device run took 1.105 × the rate's bound). Azure's guidance, and the .NET and Python SDKs,
//! wait what the service asks; this policy does the same, and leaves the rest of azure_core's retry loop (which
//! statuses, which headers, the attempt count and the total time) as it is.

use std::time::Duration as StdDuration;

use azure_core::http::StatusCode;
use azure_core::http::headers::{HeaderName, RETRY_AFTER, RETRY_AFTER_MS, X_MS_RETRY_AFTER_MS};
use azure_core::http::policies::{RetryHeaders, RetryPolicy};
use azure_core::time::Duration;

use super::RetrySettings;

/// The headers that carry a service's wait, in azure_core's order: `x-ms-retry-after-ms`, `retry-after-ms`
/// (milliseconds), then the standard `Retry-After` (seconds or an HTTP date).
pub const RETRY_AFTER_HEADERS: [HeaderName; 3] = [X_MS_RETRY_AFTER_MS, RETRY_AFTER_MS, RETRY_AFTER];

/// The longest a request keeps being retried, counted from its first answer (azure_core's default).
const MAX_TOTAL_ELAPSED: Duration = Duration::seconds(60);

#[derive(Debug, Clone)]
pub struct ServerPacedRetry {
    settings: RetrySettings,
    headers: RetryHeaders,
}

impl ServerPacedRetry {
    pub fn new(settings: RetrySettings) -> Self {
        let headers = RetryHeaders { retry_headers: RETRY_AFTER_HEADERS.to_vec() };
        ServerPacedRetry { settings, headers }
    }

    /// The wait before retry `retry` (1 for the first): the initial delay doubled per retry, capped at the maximum,
    /// plus up to a quarter more at random so clients that failed together do not retry together.
    fn backoff(&self, retry: u32, jitter: f64) -> StdDuration {
        let base = self.settings.initial_delay_ms.saturating_mul(1u64 << retry.saturating_sub(1).min(20));
        let capped = base.min(self.settings.max_delay_ms);
        StdDuration::from_millis(capped + (capped as f64 * 0.25 * jitter) as u64)
    }

    /// What a retry waits: the service's `Retry-After` when given (capped at the maximum delay, so a malformed or
    /// hostile value cannot park an invocation for hours), the backoff otherwise.
    fn delay(&self, retry: u32, retry_after: Option<Duration>, jitter: f64) -> StdDuration {
        let cap = StdDuration::from_millis(self.settings.max_delay_ms);
        match retry_after.and_then(|d| StdDuration::try_from(d).ok()) {
            Some(asked) => asked.min(cap),
            None => self.backoff(retry, jitter),
        }
    }
}

#[async_trait::async_trait]
impl RetryPolicy for ServerPacedRetry {
    fn is_expired(&self, since_first_answer: Duration, retry_count: u32) -> bool {
        retry_count >= self.settings.max_retries || since_first_answer >= MAX_TOTAL_ELAPSED
    }

    fn retry_headers(&self) -> Option<&RetryHeaders> {
        Some(&self.headers)
    }

    /// Empty: azure_core's defaults (408, 429, 500, 502, 503, 504).
    fn retry_status_codes(&self) -> &[StatusCode] {
        &[]
    }

    fn sleep_duration(&self, retry_count: u32) -> Duration {
        Duration::try_from(self.backoff(retry_count, fastrand::f64())).unwrap_or(Duration::ZERO)
    }

    async fn wait(&self, retry_count: u32, retry_after: Option<Duration>) {
        tokio::time::sleep(self.delay(retry_count, retry_after, fastrand::f64())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ServerPacedRetry {
        ServerPacedRetry::new(RetrySettings { max_retries: 6, initial_delay_ms: 800, max_delay_ms: 60_000 })
    }

    #[test]
    fn a_retry_after_is_waited_exactly_not_raised_to_the_backoff() {
        let p = policy();
        for retry in 1..=6 {
            assert_eq!(p.delay(retry, Some(Duration::seconds(1)), 0.99), StdDuration::from_secs(1));
        }
        assert_eq!(p.delay(1, Some(Duration::milliseconds(250)), 0.5), StdDuration::from_millis(250));
    }

    #[test]
    fn a_huge_retry_after_is_capped_at_the_maximum_delay() {
        assert_eq!(policy().delay(1, Some(Duration::hours(5)), 0.0), StdDuration::from_secs(60));
    }

    #[test]
    fn without_retry_after_the_backoff_doubles_from_the_initial_delay_with_bounded_jitter() {
        let p = policy();
        assert_eq!(p.delay(1, None, 0.0), StdDuration::from_millis(800));
        assert_eq!(p.delay(2, None, 0.0), StdDuration::from_millis(1600));
        assert_eq!(p.delay(3, None, 0.0), StdDuration::from_millis(3200));
        assert_eq!(p.delay(1, None, 1.0), StdDuration::from_millis(1000));
        assert_eq!(p.delay(40, None, 0.0), StdDuration::from_secs(60), "capped, and no overflow");
    }

    #[test]
    fn expires_after_the_configured_retries_or_a_minute() {
        let p = policy();
        assert!(!p.is_expired(Duration::seconds(1), 5));
        assert!(p.is_expired(Duration::seconds(1), 6));
        assert!(p.is_expired(Duration::seconds(60), 0));
    }
}
