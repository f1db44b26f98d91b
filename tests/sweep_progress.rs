//! The sweep's progress in the record store, through local-azure: the real handler sweeps a seeded fleet with drift
//! page by page (as the host delivers `sweep-pages`), and `lifecycle::sweep_progress::current`, run here with the
//! handler's settings against the same Table service, adds the rows up exactly. A second slot while the first
//! sweep runs is skipped.

use edgevault::config::Config;
use edgevault::deps::Deps;
use edgevault::lifecycle::sweep_progress::{self, SweepProgress};
use edgevault_tests::fleet::{self, Kind};
use edgevault_tests::scenario::world;

#[test]
fn a_sweep_over_a_drifted_fleet_reads_back_done_with_every_page_device_and_finding_and_no_overlap() {
    const DEVICES: usize = 230;
    let w = world(&[]);
    for (name, value) in w.la.handler_env() {
        // SAFETY: the only test of this binary; the threads that exist (local-azure's log readers) read no
        // environment.
        unsafe { std::env::set_var(name, value) };
    }
    let rg = w.la.resource_group_id();
    fleet::seed(&w.la, &rg, "sp", 0..DEVICES).unwrap();

    // The timer fires for 13:00, and again for 13:05 before any page ran: that slot is skipped.
    let timer = edgevault_tests::fixture("triggers/timer.json").unwrap();
    let (status, first) = w.handler.invoke("RecoverySweep", &timer).unwrap();
    assert_eq!((status, &first["ReturnValue"]["sweepId"]), (200, &"sweep-2026-11-28T13:00:00Z".into()), "{first}");
    let mut later = timer.clone();
    later["Data"]["timer"]["ScheduleStatus"]["Next"] = "2026-11-28T13:05:00+00:00".into();
    let (status, skipped) = w.handler.invoke("RecoverySweep", &later).unwrap();
    assert_eq!(status, 200, "{skipped}");
    assert_eq!(skipped["ReturnValue"]["skipped"], true, "{skipped}");
    assert_eq!(skipped["ReturnValue"]["running"], "sweep-2026-11-28T13:00:00Z", "{skipped}");

    // The pages, delivered as the host would (the helper's own timer call is the 13:00 slot again: a duplicate).
    let (_, pages) = w.sweep();
    assert_eq!(pages.len(), 3, "230 devices in ARM's pages of 100: {pages:?}");
    // What each device is found with: its kind's drift only. The seed gives every live vault its audit logging as
    // edgevault makes it, so the vaults whose audit setting this sweep reads (one in `AUDIT_CHECK_EVERY`, by device
    // and slot: `audit::due`) are found with it.
    let mut expected_findings = std::collections::BTreeMap::<String, usize>::new();
    let mut audited = 0;
    for i in 0..DEVICES {
        let device: edgevault::resource_id::ResourceId = fleet::device_id(&rg, "sp", i).parse().unwrap();
        audited += usize::from(
            fleet::kind(i) != Kind::SoftDeleted
                && edgevault::lifecycle::audit::due(&device, "sweep-2026-11-28T13:00:00Z"),
        );
        let found = match fleet::kind(i) {
            Kind::Healthy => "Healthy",
            Kind::LockMissing => "LockMissing",
            Kind::SoftDeleted => "VaultSoftDeleted",
        };
        *expected_findings.entry(found.to_string()).or_default() += 1;
    }
    assert!(audited > 0, "some live vaults' audit settings are read by this sweep");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let progress = runtime.block_on(async {
        // The handler's settings (the port is the only one the handler's environment lacks: the test sets it).
        let config = Config::from_lookup(|name| {
            std::env::var(name).ok().or_else(|| (name == edgevault::config::PORT_VAR).then(|| "0".to_string()))
        })
        .unwrap();
        let deps = Deps::from_settings(&config.settings).unwrap();
        sweep_progress::current(&deps).await.unwrap()
    });
    let progress = progress.expect("the sweep's start was recorded");
    let expected = SweepProgress {
        id: "sweep-2026-11-28T13:00:00Z".into(),
        started_at: progress.started_at.clone(),
        done: true,
        pages: 3,
        devices: DEVICES,
        findings: expected_findings,
    };
    assert_eq!(progress, expected);
    assert!(progress.started_at.as_ref().is_some_and(|t| t.starts_with("20")), "{progress:?}");

    // Done, so the next slot starts.
    let (status, next) = w.handler.invoke("RecoverySweep", &later).unwrap();
    assert_eq!((status, &next["ReturnValue"]["sweepId"]), (200, &"sweep-2026-11-28T13:05:00Z".into()), "{next}");
}
