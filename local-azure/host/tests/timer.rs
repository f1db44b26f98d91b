//! Timer triggers: the admin API runs them now, the injected clock drives the schedule, one run at a time.

mod common;

use std::time::Duration;

use common::TestApp;
use local_azure_host::HostEvent;
use serde_json::json;

fn app() -> TestApp {
    TestApp::new()
        .timer("Tick", "%TickSchedule%")
        .timer("SlowSweep", "0 0 * * * *")
        .http("EchoHttp", "anonymous", "echo", &["get"])
        .setting("TickSchedule", "0 */5 * * * *")
}

#[tokio::test]
async fn the_admin_api_runs_a_timer_now_with_the_documented_payload() {
    let mut t = app().start().await;
    let url = t.url("/admin/functions/Tick");
    let anonymous = t.http.post(&url).json(&json!({"input": ""})).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let function_key = t.host.function_key("Tick").unwrap();
    let with_function_key =
        t.http.post(&url).header("x-functions-key", function_key).json(&json!({"input": ""})).send().await.unwrap();
    assert_eq!(with_function_key.status(), 401, "the admin API wants the master key");
    let accepted = t
        .http
        .post(&url)
        .header("x-functions-key", t.host.master_key())
        .json(&json!({"input": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    assert!(t.wait_finished("Tick").await);
    let received = t.received("Tick");
    assert_eq!(received.len(), 1);
    let request = &received[0]["request"];
    assert_eq!(
        request["Data"]["timer"],
        json!({"Schedule": {"AdjustForDST": true}, "ScheduleStatus": null, "IsPastDue": false}),
        "the admin API's run gets only a stored status, and nothing is stored yet"
    );
    assert_eq!(request["Metadata"]["sys"]["MethodName"], "Tick");
    assert_eq!(request["Metadata"]["sys"]["UtcNow"], "2026-11-28T12:03:00Z");

    let unknown = t
        .http
        .post(t.url("/admin/functions/Nope"))
        .header("x-functions-key", t.host.master_key())
        .json(&json!({"input": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let http = t
        .http
        .post(t.url("/admin/functions/EchoHttp"))
        .header("x-functions-key", t.host.master_key())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(http.status(), 400, "HTTP functions are invoked through their route");
}

#[tokio::test]
async fn the_schedule_fires_when_the_clock_moves_and_records_its_status() {
    let mut t = app().start().await;
    // 12:03 → 12:04:59: nothing is due yet.
    t.clock.advance(Duration::from_secs(119));
    // 12:05:00: the first occurrence.
    t.clock.advance(Duration::from_secs(1));
    t.wait_for("Tick run finished", |e| matches!(e, HostEvent::TimerRunFinished { function } if function == "Tick"))
        .await;
    let received = t.received("Tick");
    assert_eq!(received.len(), 1, "exactly one run for one occurrence");
    // With useMonitor the listener starts with a status even before anything is stored (TimerListener.StartAsync):
    // default(DateTime) as Last and LastUpdated, the first occurrence as Next.
    assert_eq!(
        received[0]["request"]["Data"]["timer"]["ScheduleStatus"],
        json!({"Last": "0001-01-01T00:00:00+00:00", "Next": "2026-11-28T12:05:00+00:00",
               "LastUpdated": "0001-01-01T00:00:00+00:00"})
    );
    assert_eq!(received[0]["request"]["Data"]["timer"]["IsPastDue"], false);
    assert_eq!(received[0]["request"]["Metadata"]["sys"]["UtcNow"], "2026-11-28T12:05:00Z");

    // 12:10:00: the second run sees what the first recorded.
    t.clock.advance(Duration::from_secs(300));
    t.wait_for("Tick run finished", |e| matches!(e, HostEvent::TimerRunFinished { function } if function == "Tick"))
        .await;
    let received = t.received("Tick");
    assert_eq!(received.len(), 2);
    let status = &received[1]["request"]["Data"]["timer"]["ScheduleStatus"];
    assert_eq!(status["Last"], "2026-11-28T12:05:00+00:00");
    assert_eq!(status["Next"], "2026-11-28T12:10:00+00:00");
    assert_eq!(status["LastUpdated"], "2026-11-28T12:05:00+00:00", "the invocation time, as Last");
    assert_eq!(t.host.timer_skips("Tick"), Some(0));
}

#[tokio::test]
async fn a_run_still_going_is_not_started_twice() {
    let mut t = app().start().await;
    let master = t.host.master_key();
    let run_now = |t: &common::Started| {
        t.http.post(t.url("/admin/functions/SlowSweep")).header("x-functions-key", master.clone()).json(&json!({}))
    };
    assert_eq!(run_now(&t).send().await.unwrap().status(), 202);
    t.wait_for(
        "SlowSweep started",
        |e| matches!(e, HostEvent::InvocationStarted { function, .. } if function == "SlowSweep"),
    )
    .await;
    // While it runs: the admin API and the schedule (13:00) both find it busy.
    assert_eq!(run_now(&t).send().await.unwrap().status(), 202);
    t.wait_for("admin run skipped", |e| matches!(e, HostEvent::TimerSkipped { function } if function == "SlowSweep"))
        .await;
    t.clock.advance(Duration::from_secs(57 * 60));
    t.wait_for(
        "scheduled run skipped",
        |e| matches!(e, HostEvent::TimerSkipped { function } if function == "SlowSweep"),
    )
    .await;
    assert_eq!(t.host.timer_skips("SlowSweep"), Some(2));
    t.release_slow().await;
    t.wait_for(
        "SlowSweep finished",
        |e| matches!(e, HostEvent::TimerRunFinished { function } if function == "SlowSweep"),
    )
    .await;
    assert_eq!(t.received("SlowSweep").len(), 1, "the busy function was invoked once");

    // The next occurrence (14:00) runs, and is past due because 13:00 was missed.
    t.release_slow().await;
    t.clock.advance(Duration::from_secs(60 * 60));
    t.wait_for(
        "SlowSweep finished",
        |e| matches!(e, HostEvent::TimerRunFinished { function } if function == "SlowSweep"),
    )
    .await;
    let received = t.received("SlowSweep");
    assert_eq!(received.len(), 2);
    assert_eq!(received[1]["request"]["Data"]["timer"]["IsPastDue"], true);
}

#[tokio::test]
async fn without_use_monitor_there_is_never_a_status() {
    let mut t = TestApp::new()
        .function(
            "Unmonitored",
            json!([{"type": "timerTrigger", "direction": "in", "name": "timer", "schedule": "0 */5 * * * *",
                    "useMonitor": false}]),
        )
        .start()
        .await;
    t.clock.advance(Duration::from_secs(120));
    t.wait_for("run finished", |e| matches!(e, HostEvent::TimerRunFinished { function } if function == "Unmonitored"))
        .await;
    assert_eq!(t.received("Unmonitored")[0]["request"]["Data"]["timer"]["ScheduleStatus"], json!(null));
}
