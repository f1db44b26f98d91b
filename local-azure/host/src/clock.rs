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

/// `2026-11-28T12:00:00` in UTC: the date and time to the second that every form below starts with.
pub fn iso_seconds(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second())
}

/// `2026-11-28T12:00:00.1234567Z`: seven fractional digits, the way ARM and Service Bus write timestamps.
pub fn utc_7(t: OffsetDateTime) -> String {
    format!("{}.{:07}Z", iso_seconds(t), t.nanosecond() / 100)
}

/// How Json.NET writes a `DateTime` (or `DateTimeOffset`): which zone suffix the value carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// `DateTimeKind.Utc`: `…Z`.
    Utc,
    /// `DateTimeKind.Local` or a `DateTimeOffset`, on a machine whose local time is UTC (Azure's default): `…+00:00`.
    Local,
    /// `DateTimeKind.Unspecified`: no suffix.
    Unspecified,
}

/// Json.NET's ISO form (`IsoDateTimeConverter` default, `DateTimeUtils.WriteDateTimeString`): the fraction of a
/// second appears only when it is not zero, with its trailing zeros trimmed (`…T12:00:00.12Z`, `…T12:00:00Z`).
pub fn json_net(t: OffsetDateTime, zone: Zone) -> String {
    let mut text = iso_seconds(t);
    let ticks = t.nanosecond() / 100;
    if ticks != 0 {
        let digits = format!("{ticks:07}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push_str(match zone {
        Zone::Utc => "Z",
        Zone::Local => "+00:00",
        Zone::Unspecified => "",
    });
    text
}

/// A date the host passes through `DateTime.Parse(value.ToString())` (ScriptInvocationContextExtensions
/// `GetHttpScriptInvocationContextValue`): the culture's short text has whole seconds, so the fraction is lost.
pub fn json_net_whole_seconds(t: OffsetDateTime, zone: Zone) -> String {
    json_net(t.replace_nanosecond(0).unwrap_or(t), zone)
}

/// `Convert.ToString(DateTime, CultureInfo.InvariantCulture)`: `11/28/2026 11:58:31`.
pub fn invariant_text(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:02}/{:02}/{:04} {:02}:{:02}:{:02}", t.month() as u8, t.day(), t.year(), t.hour(), t.minute(), t.second())
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
        assert_eq!(iso_seconds(t), "2026-11-28T11:00:00");
        assert_eq!(json_net(t, Zone::Utc), "2026-11-28T11:00:00.0109123Z");
        assert_eq!(json_net(datetime!(2026-11-28 11:00:00.12 UTC), Zone::Utc), "2026-11-28T11:00:00.12Z");
        assert_eq!(json_net(datetime!(2026-11-28 11:00 UTC), Zone::Local), "2026-11-28T11:00:00+00:00");
        assert_eq!(json_net_whole_seconds(t, Zone::Unspecified), "2026-11-28T11:00:00");
        assert_eq!(invariant_text(datetime!(2026-11-28 09:05:03.5 UTC)), "11/28/2026 09:05:03");
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
