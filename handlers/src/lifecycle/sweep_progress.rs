//! Sweep progress in the record store (table [`TABLE`]), so that the status and the fleet page can show the current
//! sweep, and the timer can tell whether one is still running ([`running`]).
//!
//! Pages run at once on many instances, so no row is ever read, changed and written back: each writer has its own
//! row, and [`current`] adds them up when asked.
//! - One row per sweep start: partition [`STARTS`], row = the sweep id ([`record_start`], by the timer): the slot,
//!   when it was started, the subscriptions it covers.
//! - One row per page: partition = the sweep id, row = subscription and page index ([`record_page`], when the page
//!   is done): devices inspected, findings by kind, whether it was the subscription's last page, when. A page done
//!   twice (a crash, a replay) writes the same row again, so nothing is counted twice.
//!
//! Progress is a report, never a condition of the work: a write that fails is logged and the page stands (failing
//! it would make Service Bus redo every inspection for a row). A sweep whose last row was lost is never seen done,
//! and counts as stale after [`STALE_AFTER`] like one whose pages died.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::Error;
use super::finding::Finding;
use crate::deps::Deps;
use crate::messages::SweepPage;

/// The record store's table of sweep progress.
pub const TABLE: &str = "sweeps";
/// The partition of the start rows (sweep ids never take this form: they start with `sweep-`).
pub const STARTS: &str = "starts";
/// A sweep not done with nothing written for this long is taken for dead (its pages dead-lettered, or its last
/// row lost): a page lasts seconds, and Service Bus gives up on one after 10 deliveries with a 1-minute lock
/// (`infra/modules/servicebus.bicep`), about 10 minutes.
pub const STALE_AFTER: time::Duration = time::Duration::minutes(15);
/// Sweeps older than this are removed when a sweep starts (at most [`PRUNE_PER_START`] of them each time, so the
/// timer stays fast): only the current or last sweep is ever shown.
pub const RETENTION: time::Duration = time::Duration::days(7);
const PRUNE_PER_START: usize = 2;

/// The current (or last) sweep, added up from its rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepProgress {
    pub id: String,
    pub started_at: Option<String>,
    pub done: bool,
    pub pages: usize,
    pub devices: usize,
    pub findings: BTreeMap<String, usize>,
}

/// A sweep start's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartRow {
    id: String,
    /// The schedule slot (the sweep id's time), RFC 3339.
    slot: String,
    /// When the timer started it, RFC 3339.
    started_at: String,
    /// Subscription ids, as in `EDGEVAULT_SUBSCRIPTIONS`.
    subscriptions: Vec<String>,
}

/// A page's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageRow {
    subscription: String,
    page: u32,
    devices: usize,
    findings: BTreeMap<String, usize>,
    errors: usize,
    /// The subscription's last page: no next page was sent.
    last: bool,
    /// When the page was done, RFC 3339.
    at: String,
}

fn format(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn parse(t: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t, &Rfc3339).ok()
}

/// A page's row key: the subscription, then the page index zero-padded so a partition lists in page order.
fn page_row(subscription: &str, page: u32) -> String {
    format!("{}-{page:08}", subscription.to_ascii_lowercase())
}

/// Records that sweep `id` (slot `slot`) started over `subscriptions`; a failure is logged.
pub async fn record_start(deps: &Deps, id: &str, slot: OffsetDateTime, subscriptions: &[String]) {
    let row = StartRow {
        id: id.to_string(),
        slot: format(slot),
        started_at: format(deps.now()),
        subscriptions: subscriptions.to_vec(),
    };
    let value = serde_json::to_value(&row).unwrap_or_default();
    if let Err(err) = deps.records.put(TABLE, STARTS, id, &value).await {
        tracing::warn!(sweep_id = id, "could not record the sweep's start (its progress will not be shown): {err}");
    }
}

/// What a page found, as its row records it.
#[derive(Debug, Clone, Copy)]
pub struct PageDone<'a> {
    pub devices: usize,
    pub findings: &'a BTreeMap<Finding, usize>,
    pub errors: usize,
    /// No next page was sent: the subscription is done.
    pub last: bool,
}

/// Records that `work` is done; a failure is logged, never returned (see the module's notes).
pub async fn record_page(deps: &Deps, work: &SweepPage, done: PageDone<'_>) {
    let subscription = work.subscription.subscription().to_string();
    let row = PageRow {
        page: work.page,
        devices: done.devices,
        findings: done.findings.iter().map(|(kind, n)| (kind_name(kind), *n)).collect(),
        errors: done.errors,
        last: done.last,
        at: format(deps.now()),
        subscription: subscription.clone(),
    };
    let value = serde_json::to_value(&row).unwrap_or_default();
    if let Err(err) = deps.records.put(TABLE, &work.sweep_id, &page_row(&subscription, work.page), &value).await {
        tracing::warn!(sweep_id = %work.sweep_id, page = work.page, "could not record the page's progress: {err}");
    }
}

/// A finding's name as the messages and the API spell it (`LockMissing`).
fn kind_name(kind: &Finding) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| format!("{kind:?}"))
}

/// The current sweep, or the last one: the latest start (by slot), its pages added up. `None` before any sweep.
pub async fn current(deps: &Deps) -> Result<Option<SweepProgress>, Error> {
    Ok(latest(deps).await?.map(|status| status.progress))
}

/// A sweep's progress and when it last moved.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub progress: SweepProgress,
    /// The start or the latest page, whichever came last (`None` when neither has a time that parses).
    pub last_activity: Option<OffsetDateTime>,
}

impl Status {
    /// Running: not done, and something moved within [`STALE_AFTER`] of `now`.
    pub fn is_running(&self, now: OffsetDateTime) -> bool {
        !self.progress.done && self.last_activity.is_some_and(|t| now - t < STALE_AFTER)
    }
}

/// The latest sweep's status.
pub async fn latest(deps: &Deps) -> Result<Option<Status>, Error> {
    let starts = deps.records.list(TABLE, Some(STARTS)).await?;
    let latest = starts
        .into_iter()
        .filter_map(|r| serde_json::from_value::<StartRow>(r.value).ok())
        .max_by(|a, b| (parse(&a.slot), &a.id).cmp(&(parse(&b.slot), &b.id)));
    let Some(start) = latest else { return Ok(None) };
    let rows = deps.records.list(TABLE, Some(&start.id)).await?;
    let pages: Vec<PageRow> = rows.into_iter().filter_map(|r| serde_json::from_value(r.value).ok()).collect();
    Ok(Some(aggregate(&start, &pages)))
}

/// Adds up a sweep's page rows: done when every subscription of the start has its last page recorded.
fn aggregate(start: &StartRow, pages: &[PageRow]) -> Status {
    let mut findings = BTreeMap::new();
    for page in pages {
        for (kind, n) in &page.findings {
            *findings.entry(kind.clone()).or_default() += n;
        }
    }
    let done =
        start.subscriptions.iter().all(|s| pages.iter().any(|p| p.last && p.subscription.eq_ignore_ascii_case(s)));
    let last_activity = pages.iter().filter_map(|p| parse(&p.at)).chain(parse(&start.started_at)).max();
    Status {
        progress: SweepProgress {
            id: start.id.clone(),
            started_at: Some(start.started_at.clone()),
            done,
            pages: pages.len(),
            devices: pages.iter().map(|p| p.devices).sum(),
            findings,
        },
        last_activity,
    }
}

/// Removes the rows of sweeps that started more than [`RETENTION`] before `now` (a few per call); failures are
/// logged. The latest sweep is always kept.
pub async fn prune(deps: &Deps, now: OffsetDateTime) {
    let result: Result<usize, Error> = async {
        let starts = deps.records.list(TABLE, Some(STARTS)).await?;
        let mut old: Vec<StartRow> = starts
            .into_iter()
            .filter_map(|r| serde_json::from_value::<StartRow>(r.value).ok())
            .filter(|s| parse(&s.slot).is_some_and(|slot| now - slot > RETENTION))
            .collect();
        old.sort_by(|a, b| a.slot.cmp(&b.slot));
        let mut removed = 0;
        for start in old.into_iter().take(PRUNE_PER_START) {
            for row in deps.records.list(TABLE, Some(&start.id)).await? {
                deps.records.delete(TABLE, &start.id, &row.row).await?;
            }
            deps.records.delete(TABLE, STARTS, &start.id).await?;
            removed += 1;
        }
        Ok(removed)
    }
    .await;
    if let Err(err) = result {
        tracing::warn!("could not remove old sweeps' progress: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(subscriptions: &[&str]) -> StartRow {
        StartRow {
            id: "sweep-2026-11-28T13:00:00Z".into(),
            slot: "2026-11-28T13:00:00Z".into(),
            started_at: "2026-11-28T13:00:01Z".into(),
            subscriptions: subscriptions.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn page(subscription: &str, page: u32, devices: usize, findings: &[(&str, usize)], last: bool) -> PageRow {
        PageRow {
            subscription: subscription.into(),
            page,
            devices,
            findings: findings.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            errors: 0,
            last,
            at: format!("2026-11-28T13:0{page}:30Z"),
        }
    }

    #[test]
    fn a_sweep_is_done_when_every_subscription_recorded_its_last_page_and_the_counts_add_up() {
        let s = start(&["a", "b"]);
        let mut pages = vec![
            page("a", 0, 100, &[("Healthy", 90), ("LockMissing", 10)], false),
            page("a", 1, 20, &[("Healthy", 20)], true),
        ];
        let status = aggregate(&s, &pages);
        assert!(!status.progress.done, "b has not finished");
        pages.push(page("b", 0, 5, &[("Healthy", 4), ("VaultSoftDeleted", 1)], true));
        let status = aggregate(&s, &pages);
        let expected = SweepProgress {
            id: s.id.clone(),
            started_at: Some(s.started_at.clone()),
            done: true,
            pages: 3,
            devices: 125,
            findings: BTreeMap::from([
                ("Healthy".to_string(), 114),
                ("LockMissing".to_string(), 10),
                ("VaultSoftDeleted".to_string(), 1),
            ]),
        };
        assert_eq!(status.progress, expected);
        assert_eq!(status.last_activity, parse("2026-11-28T13:01:30Z"));
    }

    #[test]
    fn a_sweep_not_done_runs_until_nothing_moved_for_the_stale_limit() {
        let s = start(&["a"]);
        let status = aggregate(&s, &[page("a", 0, 100, &[], false)]);
        let last = parse("2026-11-28T13:00:30Z").unwrap();
        assert!(status.is_running(last + time::Duration::minutes(14)));
        assert!(!status.is_running(last + STALE_AFTER), "a sweep that died does not block the next one");
        let done = aggregate(&s, &[page("a", 0, 100, &[], true)]);
        assert!(!done.is_running(last), "a finished sweep is not running");
    }

    #[test]
    fn progress_serialises_as_the_status_and_the_fleet_page_show_it() {
        let status = aggregate(&start(&["a"]), &[page("a", 0, 3, &[("Healthy", 3)], true)]);
        assert_eq!(
            serde_json::to_value(&status.progress).unwrap(),
            serde_json::json!({"id": "sweep-2026-11-28T13:00:00Z", "startedAt": "2026-11-28T13:00:01Z", "done": true,
                               "pages": 1, "devices": 3, "findings": {"Healthy": 3}})
        );
    }
}
