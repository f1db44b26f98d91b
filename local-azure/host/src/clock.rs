//! The host's clock, injected so tests move time instead of waiting for it.
//!
//! Timer schedules are the only thing the host times by the calendar; they sleep through
//! [`Clock::sleep_until`], which a [`ManualClock`] completes the moment a test moves time past the deadline.
//! Timeouts on network calls deliberately stay on tokio's clock: they bound real waiting, not calendar time.

use std::future::Future;
use std::pin::Pin;

use time::OffsetDateTime;
use tokio::sync::watch;

pub type SleepFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
    /// Completes once `now() >= deadline`.
    fn sleep_until(&self, deadline: OffsetDateTime) -> SleepFuture<'_>;
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn sleep_until(&self, deadline: OffsetDateTime) -> SleepFuture<'_> {
        Box::pin(async move {
            // Re-check after waking: a long sleep can end early or late when the wall clock is adjusted.
            loop {
                let remaining = deadline - OffsetDateTime::now_utc();
                if remaining <= time::Duration::ZERO {
                    return;
                }
                let capped = remaining.min(time::Duration::minutes(10));
                tokio::time::sleep(capped.unsigned_abs()).await;
            }
        })
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<OffsetDateTime>,
}

impl ManualClock {
    pub fn new(start: OffsetDateTime) -> Self {
        ManualClock { now: watch::Sender::new(start) }
    }

    pub fn set(&self, now: OffsetDateTime) {
        self.now.send_replace(now);
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.now.send_modify(|now| *now += by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: OffsetDateTime) -> SleepFuture<'_> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock, and the clock outlives this borrow.
            let _ = rx.wait_for(|now| *now >= deadline).await;
        })
    }
}

/// `2026-11-28T12:00:00.1234567Z`: the host's `UtcNow` and Service Bus timestamps.
pub fn utc_7(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

/// `2026-11-28T11:00:00+00:00` (seconds) or with seven fractional digits: the timer's `ScheduleStatus` form.
pub fn offset_form(t: OffsetDateTime, fraction: bool) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if fraction { format!("{base}.{:07}+00:00", t.nanosecond() / 100) } else { format!("{base}+00:00") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use time::macros::datetime;

    #[test]
    fn formats() {
        let t = datetime!(2026-11-28 11:00:00.0109123 UTC);
        assert_eq!(utc_7(t), "2026-11-28T11:00:00.0109123Z");
        assert_eq!(offset_form(t, false), "2026-11-28T11:00:00+00:00");
        assert_eq!(offset_form(t, true), "2026-11-28T11:00:00.0109123+00:00");
    }

    #[tokio::test]
    async fn manual_sleep_completes_when_time_is_moved() {
        let clock = std::sync::Arc::new(ManualClock::new(datetime!(2026-01-01 0:00 UTC)));
        let waiter = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(datetime!(2026-01-01 1:00 UTC)).await })
        };
        clock.advance(Duration::from_secs(1800));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        clock.advance(Duration::from_secs(1800));
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
