//! local-azure's clock: wall time plus an offset that tests move forward.
//!
//! The clock governs everything time-dependent (token expiry, soft-delete retention, purge
//! dates), so a test can age a vault by 91 days without sleeping. The offset is persisted so a
//! restart does not travel back in time.

use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

#[derive(Debug)]
pub struct Clock {
    offset_seconds: AtomicI64,
    /// Tells sleepers (the embedded Functions host's timers) that time jumped.
    moved: tokio::sync::watch::Sender<i64>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::with_offset(0)
    }
}

impl Clock {
    pub fn with_offset(offset_seconds: i64) -> Self {
        Clock { offset_seconds: AtomicI64::new(offset_seconds), moved: tokio::sync::watch::Sender::new(offset_seconds) }
    }

    /// Changes whenever the offset does.
    pub fn moves(&self) -> tokio::sync::watch::Receiver<i64> {
        self.moved.subscribe()
    }

    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + time::Duration::seconds(self.offset())
    }

    pub fn offset(&self) -> i64 {
        self.offset_seconds.load(Ordering::SeqCst)
    }

    pub fn set_offset(&self, seconds: i64) {
        self.offset_seconds.store(seconds, Ordering::SeqCst);
        self.moved.send_replace(seconds);
    }
}

/// RFC 3339 with seven fractional digits, the way ARM writes timestamps (the Functions host's `UtcNow` form).
pub fn arm_time(t: OffsetDateTime) -> String {
    local_azure_host::clock::utc_7(t)
}

/// RFC 3339 to the second, the way Key Vault's ARM deleted-vault dates look.
pub fn arm_time_seconds(t: OffsetDateTime) -> String {
    format!("{}Z", local_azure_host::clock::iso_seconds(t))
}

pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_arm() {
        let t = time::macros::datetime!(2020-01-01 12:00:00.5 UTC);
        assert_eq!(arm_time(t), "2020-01-01T12:00:00.5000000Z");
        assert_eq!(arm_time_seconds(t), "2020-01-01T12:00:00Z");
        assert_eq!(parse_time("2020-01-01T12:00:00.5000000Z"), Some(t));
    }

    #[test]
    fn offset_moves_now() {
        let clock = Clock::with_offset(3600);
        let delta = clock.now() - OffsetDateTime::now_utc();
        assert!(delta.whole_seconds() >= 3599);
    }
}
