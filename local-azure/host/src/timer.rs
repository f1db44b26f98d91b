//! `timerTrigger`: six-field NCRONTAB schedules and the per-function scheduler.
//!
//! The schedule language is NCRONTAB as the Functions host uses it: `{second} {minute} {hour} {day} {month}
//! {day-of-week}`, each field `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a comma list of those;
//! months and weekdays also by three-letter name, weekdays `0`–`6` from Sunday. Unlike Vixie cron, a day must match
//! both the day-of-month and the day-of-week field (NCrontab checks them one after the other). It is parsed here
//! rather than with a cron crate because those follow Vixie cron's OR rule and number weekdays differently, and
//! the schedule must fire exactly when the real host would.
//!
//! One run at a time per function: an occurrence that comes due while the previous run is still going is skipped
//! (counted, announced as [`HostEvent::TimerSkipped`]) and the next run that does start is marked past due.
//!
//! `ScheduleStatus` follows the timer extension's listener (azure-webjobs-sdk-extensions
//! `src/WebJobs.Extensions/Extensions/Timers/Listener/TimerListener.cs`): with `useMonitor` (the default) the
//! listener starts with the stored status or, when none is stored yet, one whose `Last` and `LastUpdated` are
//! `default(DateTime)` and whose `Next` is the first occurrence, so even the first run has a status. After each run
//! it stores `Last` = `LastUpdated` = the invocation time and `Next` = the occurrence after it. The admin API's runs
//! get only the stored status (`TimerTriggerBinding.BindAsync`). The dates are local `DateTime`s, which Json.NET
//! writes with the machine's offset, `+00:00` on Azure.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};
use time::{Date, OffsetDateTime, Time};

use crate::HostEvent;
use crate::clock::{Clock, Zone, json_net};
use crate::invoke::{Invocation, Invoker};

/// A parsed NCRONTAB expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 6 {
            return Err(format!(
                "expected six fields `{{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}}`, found {}",
                fields.len()
            ));
        }
        Ok(Schedule {
            text: fields.join(" "),
            seconds: field(fields[0], "second", 0, 59, &[])?,
            minutes: field(fields[1], "minute", 0, 59, &[])?,
            hours: field(fields[2], "hour", 0, 23, &[])?,
            days: field(fields[3], "day", 1, 31, &[])?,
            months: field(fields[4], "month", 1, 12, &MONTHS)?,
            weekdays: field(fields[5], "day-of-week", 0, 6, &WEEKDAYS)?,
        })
    }

    /// The first occurrence strictly after `after` (UTC, whole seconds), or `None` when the schedule can never fire
    /// (e.g. 30 February) within the next five years.
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let after = after.to_offset(time::UtcOffset::UTC);
        let mut t = after.replace_nanosecond(0).ok()? + time::Duration::SECOND;
        let horizon = after.year() + 5;
        while t.year() <= horizon {
            if !has(self.months, t.month() as u8 as u32) {
                let (year, month) = if t.month() == time::Month::December {
                    (t.year() + 1, time::Month::January)
                } else {
                    (t.year(), t.month().next())
                };
                t = Date::from_calendar_date(year, month, 1).ok()?.with_time(Time::MIDNIGHT).assume_utc();
                continue;
            }
            if !has(self.days, t.day() as u32) || !has(self.weekdays, t.weekday().number_days_from_sunday() as u32) {
                t = t.date().next_day()?.with_time(Time::MIDNIGHT).assume_utc();
                continue;
            }
            if !has(self.hours, t.hour() as u32) {
                t = t.replace_time(Time::from_hms(t.hour(), 0, 0).ok()?) + time::Duration::HOUR;
                continue;
            }
            if !has(self.minutes, t.minute() as u32) {
                t = t.replace_time(Time::from_hms(t.hour(), t.minute(), 0).ok()?) + time::Duration::MINUTE;
                continue;
            }
            if !has(self.seconds, t.second() as u32) {
                t += time::Duration::SECOND;
                continue;
            }
            return Some(t);
        }
        None
    }
}

fn has(mask: u64, value: u32) -> bool {
    mask & (1 << value) != 0
}

fn field(text: &str, what: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let upper = s.to_ascii_uppercase();
        if let Some(index) = names.iter().position(|n| *n == upper) {
            return Ok(min + index as u32);
        }
        let n: u32 = s.parse().map_err(|_| format!("{what} `{s}` is not a number"))?;
        if n < min || n > max {
            return Err(format!("{what} {n} is out of range {min}-{max}"));
        }
        Ok(n)
    };
    let mut mask = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().map_err(|_| format!("{what} step `{step}` is not a number"))?;
                if step == 0 {
                    return Err(format!("{what} step must be at least 1"));
                }
                (range, Some(step))
            }
            None => (item, None),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("{what} range {a}-{b} is backwards"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `a/n` means "from a to the end, every n"; a lone value is just that value.
            (a, if step.is_some() { max } else { a })
        };
        let mut v = low;
        while v <= high {
            mask |= 1 << v;
            v += step.unwrap_or(1);
        }
    }
    Ok(mask)
}

/// What a timer function last recorded: the `ScheduleStatus` the next run receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleStatus {
    pub last: OffsetDateTime,
    pub next: OffsetDateTime,
    pub last_updated: OffsetDateTime,
}

impl ScheduleStatus {
    /// The status a listener starts with when none is stored: `default(DateTime).ToLocalTime()` for `Last` and
    /// `LastUpdated`.
    pub fn initial(next: OffsetDateTime) -> ScheduleStatus {
        let never = time::macros::datetime!(0001-01-01 0:00 UTC);
        ScheduleStatus { last: never, next, last_updated: never }
    }

    fn to_json(self) -> Value {
        json!({
            "Last": json_net(self.last, Zone::Local),
            "Next": json_net(self.next, Zone::Local),
            "LastUpdated": json_net(self.last_updated, Zone::Local),
        })
    }

    fn from_json(v: &Value) -> Option<ScheduleStatus> {
        let parse = |field: &str| {
            OffsetDateTime::parse(v[field].as_str()?, &time::format_description::well_known::Rfc3339).ok()
        };
        Some(ScheduleStatus { last: parse("Last")?, next: parse("Next")?, last_updated: parse("LastUpdated")? })
    }
}

/// Why a timer run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunReason {
    /// The schedule came due at this occurrence.
    Schedule(OffsetDateTime),
    /// `runOnStartup`, or a recorded `Next` that passed while the host was down.
    Startup { past_due: bool },
    /// `POST /admin/functions/<Name>`.
    Admin,
}

/// Per-function timer state: the run guard, the recorded schedule status and counters.
pub struct TimerState {
    pub function: String,
    binding: String,
    schedule: Schedule,
    use_monitor: bool,
    running: Arc<tokio::sync::Mutex<()>>,
    /// The stored status (`None` until the first listener run records one).
    status: std::sync::Mutex<Option<ScheduleStatus>>,
    /// The first occurrence after the host started: `Next` of the status a listener starts with.
    first_next: std::sync::Mutex<Option<OffsetDateTime>>,
    /// Set when an occurrence was skipped; the next run that starts is past due.
    behind: AtomicBool,
    skipped: AtomicU64,
    /// Where `status` is persisted (the real host keeps it in storage so it survives restarts).
    status_file: Option<PathBuf>,
}

impl TimerState {
    pub fn new(
        function: &str,
        binding: &str,
        schedule: Schedule,
        use_monitor: bool,
        state_dir: Option<&std::path::Path>,
    ) -> TimerState {
        let status_file = state_dir.map(|d| d.join("timers").join(format!("{function}.json")));
        let status = status_file
            .as_ref()
            .filter(|_| use_monitor)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| ScheduleStatus::from_json(&v));
        TimerState {
            function: function.to_string(),
            binding: binding.to_string(),
            schedule,
            use_monitor,
            running: Arc::new(tokio::sync::Mutex::new(())),
            status: std::sync::Mutex::new(status),
            first_next: std::sync::Mutex::new(None),
            behind: AtomicBool::new(false),
            skipped: AtomicU64::new(0),
            status_file,
        }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::SeqCst)
    }

    pub fn status(&self) -> Option<ScheduleStatus> {
        *self.status.lock().expect("timer status lock")
    }

    fn record(&self, status: ScheduleStatus) {
        *self.status.lock().expect("timer status lock") = Some(status);
        if let Some(path) = &self.status_file {
            let write = path
                .parent()
                .map(std::fs::create_dir_all)
                .unwrap_or(Ok(()))
                .and_then(|_| std::fs::write(path, status.to_json().to_string()));
            if let Err(err) = write {
                tracing::warn!(function = %self.function, path = %path.display(), "cannot persist timer status: {err}");
            }
        }
    }

    /// The `Data.<binding>` value for a run: the listener's status for its own runs, only the stored one for the
    /// admin API's.
    fn data(&self, past_due: bool, reason: RunReason) -> Value {
        let status = if !self.use_monitor {
            None
        } else if reason == RunReason::Admin {
            self.status()
        } else {
            self.status().or_else(|| {
                let first = *self.first_next.lock().expect("timer first-next lock");
                first.map(ScheduleStatus::initial)
            })
        };
        timer_info(status, past_due)
    }
}

/// `Data.<binding>` of a timer run: the extension's `TimerInfo` as `JObject.FromObject` writes it.
pub fn timer_info(status: Option<ScheduleStatus>, past_due: bool) -> Value {
    json!({
        "Schedule": {"AdjustForDST": true},
        "ScheduleStatus": status.map(ScheduleStatus::to_json),
        "IsPastDue": past_due,
    })
}

/// Starts a run unless one is going; returns whether it started. The run itself continues in the background.
pub fn try_run(state: &Arc<TimerState>, invoker: &Arc<Invoker>, clock: &Arc<dyn Clock>, reason: RunReason) -> bool {
    let Ok(guard) = state.running.clone().try_lock_owned() else {
        state.skipped.fetch_add(1, Ordering::SeqCst);
        if matches!(reason, RunReason::Schedule(_)) {
            state.behind.store(true, Ordering::SeqCst);
        }
        tracing::warn!(function = %state.function, ?reason, "timer run skipped: the previous run is still going");
        invoker.emit(HostEvent::TimerSkipped { function: state.function.clone() });
        return false;
    };
    let past_due = match reason {
        RunReason::Schedule(_) => state.behind.swap(false, Ordering::SeqCst),
        RunReason::Startup { past_due } => past_due,
        RunReason::Admin => false,
    };
    let data = state.data(past_due, reason);
    // `InvokeJobFunction`: the invocation time is now, or the scheduled `Next` when the timer fired a little early.
    let invoked_at = match reason {
        RunReason::Schedule(occurrence) => clock.now().max(occurrence),
        _ => clock.now(),
    };
    let (state, invoker) = (state.clone(), invoker.clone());
    tokio::spawn(async move {
        let outcome = invoker.invoke(&state.function, Invocation::of(&state.binding, data)).await;
        if let Err(err) = &outcome {
            tracing::warn!(function = %state.function, "timer invocation failed: {err}");
        }
        // Timers are not retried; the status moves on whatever the outcome, as in the real host. The admin API's
        // runs go around the listener and record nothing.
        if reason != RunReason::Admin
            && state.use_monitor
            && let Some(next) = state.schedule.next_after(invoked_at)
        {
            state.record(ScheduleStatus { last: invoked_at, next, last_updated: invoked_at });
        }
        // Released before announcing, so whoever reacts to the event can start the next run.
        drop(guard);
        invoker.emit(HostEvent::TimerRunFinished { function: state.function.clone() });
    });
    true
}

/// Fires `state`'s schedule for occurrences after `start` until `shutdown` flips to true. `start` is taken by the
/// caller when the host starts, not when this task first runs, so a clock moved right after startup is not missed.
pub async fn run_schedule(
    state: Arc<TimerState>,
    invoker: Arc<Invoker>,
    clock: Arc<dyn Clock>,
    start: OffsetDateTime,
    run_on_startup: bool,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    *state.first_next.lock().expect("timer first-next lock") = state.schedule.next_after(start);
    // A recorded `Next` that passed while the host was down is a missed run: the real host runs it at once, past due.
    let missed = state.use_monitor && state.status().is_some_and(|s| s.next <= start);
    if run_on_startup || missed {
        try_run(&state, &invoker, &clock, RunReason::Startup { past_due: missed });
    }
    let mut from = start;
    loop {
        let Some(next) = state.schedule.next_after(from) else {
            tracing::warn!(function = %state.function, schedule = %state.schedule, "the schedule never fires again");
            return;
        };
        tracing::debug!(function = %state.function, next = %json_net(next, Zone::Local), "next timer occurrence");
        tokio::select! {
            _ = clock.sleep_until(next) => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        // A clock moved far ahead fires once for everything it jumped over, not once per occurrence.
        let now = clock.now();
        if state.schedule.next_after(next).is_some_and(|after| after <= now) {
            state.behind.store(true, Ordering::SeqCst);
        }
        try_run(&state, &invoker, &clock, RunReason::Schedule(next));
        from = next.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn next(expr: &str, after: OffsetDateTime) -> OffsetDateTime {
        Schedule::parse(expr).unwrap().next_after(after).unwrap()
    }

    #[test]
    fn every_five_minutes() {
        let t = datetime!(2026-11-28 12:03:17 UTC);
        assert_eq!(next("0 */5 * * * *", t), datetime!(2026-11-28 12:05:00 UTC));
        assert_eq!(next("0 */5 * * * *", datetime!(2026-11-28 12:05:00 UTC)), datetime!(2026-11-28 12:10:00 UTC));
    }

    #[test]
    fn hourly_daily_and_seconds() {
        let t = datetime!(2026-11-28 23:59:59.5 UTC);
        assert_eq!(next("0 0 * * * *", t), datetime!(2026-11-29 0:00 UTC));
        assert_eq!(next("30 0 9 * * *", t), datetime!(2026-11-29 9:00:30 UTC));
        assert_eq!(next("*/15 * * * * *", datetime!(2026-11-28 12:00:14 UTC)), datetime!(2026-11-28 12:00:15 UTC));
        assert_eq!(next("5,10 * * * * *", datetime!(2026-11-28 12:00:10 UTC)), datetime!(2026-11-28 12:01:05 UTC));
    }

    #[test]
    fn weekdays_names_and_month_rollover() {
        // 2026-11-28 is a Saturday.
        let sat = datetime!(2026-11-28 12:00 UTC);
        assert_eq!(next("0 30 9 * * 1-5", sat), datetime!(2026-11-30 9:30 UTC));
        assert_eq!(next("0 30 9 * * MON-FRI", sat), datetime!(2026-11-30 9:30 UTC));
        assert_eq!(next("0 0 0 * * SUN", sat), datetime!(2026-11-29 0:00 UTC));
        assert_eq!(next("0 0 0 1 JAN *", sat), datetime!(2027-01-01 0:00 UTC));
        assert_eq!(next("0 0 12 31 * *", sat), datetime!(2026-12-31 12:00 UTC));
        assert_eq!(next("0 0 0 29 2 *", sat), datetime!(2028-02-29 0:00 UTC));
    }

    #[test]
    fn day_of_month_and_week_must_both_match() {
        // NCrontab ANDs the two day fields: the next Friday the 13th, not every Friday and every 13th.
        assert_eq!(next("0 0 0 13 * FRI", datetime!(2026-11-28 0:00 UTC)), datetime!(2027-08-13 0:00 UTC));
    }

    #[test]
    fn steps_from_a_start_value() {
        assert_eq!(next("0 10/20 * * * *", datetime!(2026-11-28 12:31 UTC)), datetime!(2026-11-28 12:50 UTC));
        assert_eq!(next("0 0 8-18/4 * * *", datetime!(2026-11-28 13:00 UTC)), datetime!(2026-11-28 16:00 UTC));
    }

    #[test]
    fn rejects_what_ncrontab_rejects() {
        for (expr, needle) in [
            ("0 */5 * * *", "six fields"),
            ("60 * * * * *", "second 60"),
            ("0 0 24 * * *", "hour 24"),
            ("0 0 0 0 * *", "day 0"),
            ("0 0 0 * 13 *", "month 13"),
            ("0 0 0 * * 7", "day-of-week 7"),
            ("0 */0 * * * *", "at least 1"),
            ("0 5-1 * * * *", "backwards"),
            ("0 x * * * *", "not a number"),
        ] {
            let err = Schedule::parse(expr).unwrap_err();
            assert!(err.contains(needle), "{expr}: {err}");
        }
    }

    #[test]
    fn impossible_dates_never_fire() {
        assert_eq!(Schedule::parse("0 0 0 30 FEB *").unwrap().next_after(datetime!(2026-01-01 0:00 UTC)), None);
    }

    #[test]
    fn status_round_trips_in_the_hosts_format() {
        let s = ScheduleStatus {
            last: datetime!(2026-11-28 11:00 UTC),
            next: datetime!(2026-11-28 13:00 UTC),
            last_updated: datetime!(2026-11-28 11:00:00.0109123 UTC),
        };
        let v = s.to_json();
        assert_eq!(
            v,
            json!({"Last": "2026-11-28T11:00:00+00:00", "Next": "2026-11-28T13:00:00+00:00",
                   "LastUpdated": "2026-11-28T11:00:00.0109123+00:00"})
        );
        assert_eq!(ScheduleStatus::from_json(&v), Some(s));
        // A listener's first status: `default(DateTime)` made local.
        assert_eq!(
            ScheduleStatus::initial(datetime!(2026-11-28 13:00 UTC)).to_json(),
            json!({"Last": "0001-01-01T00:00:00+00:00", "Next": "2026-11-28T13:00:00+00:00",
                   "LastUpdated": "0001-01-01T00:00:00+00:00"})
        );
    }
}
