//! Invocation overhead: the handler alone (placeholder settings, so nothing can reach Azure) under a loopback load
//! generator, one case per trigger type on inputs that need no Azure call; then the real work paths against a
//! local-azure with no injected latency.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::load::{self, Load, LoadResult};
use crate::{Row, invocations};

pub struct Case {
    pub name: &'static str,
    pub function: &'static str,
    pub body: Value,
    pub status: u16,
}

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "ArmEvents: subscription validation",
            function: "ArmEvents",
            body: invocations::validation(),
            status: 200,
        },
        Case {
            name: "ArmEvents: ARM event ignored (vault write)",
            function: "ArmEvents",
            body: invocations::ignored_event(),
            status: 200,
        },
        Case {
            name: "ArmEvents: malformed event → 400",
            function: "ArmEvents",
            body: invocations::malformed_event(),
            status: 400,
        },
        Case {
            name: "ActivationKeyApi: POST, bad vault name → 400",
            function: "ActivationKeyApi",
            body: invocations::api_post_bad_vault_name(),
            status: 200,
        },
        Case {
            name: "ActivationKeyApi: POST, body not JSON → 400",
            function: "ActivationKeyApi",
            body: invocations::api_post_malformed_body(),
            status: 200,
        },
        Case {
            name: "ActivationKeyApi: GET, unknown operation → 404",
            function: "ActivationKeyApi",
            body: invocations::api_get("https://x", "forged"),
            status: 200,
        },
        Case {
            name: "ResourceCreated: wrong command kind → 400",
            function: "ResourceCreated",
            body: invocations::worker_wrong_kind(),
            status: 400,
        },
        Case {
            name: "RecoverySweep: IsPastDue not a boolean → 400",
            function: "RecoverySweep",
            body: invocations::timer_malformed(),
            status: 400,
        },
    ]
}

pub struct Options {
    pub duration: Duration,
    pub connections: usize,
    pub client_threads: usize,
}

fn measure(
    addr: SocketAddr,
    function: &str,
    body: &Value,
    status: u16,
    connections: usize,
    duration: Duration,
    threads: usize,
) -> anyhow::Result<LoadResult> {
    let result = load::run(&Load {
        addr,
        path: format!("/{function}"),
        body: Bytes::from(body.to_string()),
        expect_status: status,
        connections,
        duration,
        max_requests: u64::MAX,
        threads,
    })?;
    anyhow::ensure!(result.unexpected == 0, "{function}: {} answers with an unexpected status", result.unexpected);
    Ok(result)
}

/// `elapsed_us` of every "invocation done" line: the handler's own time from parsed request to built reply.
fn handler_elapsed_us(log: &[String], skip: usize) -> Vec<u64> {
    let mut v: Vec<u64> = log[skip.min(log.len())..]
        .iter()
        .filter(|l| l.contains("invocation done"))
        .filter_map(|l| l.split("elapsed_us=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

pub fn run(options: &Options) -> anyhow::Result<Vec<Row>> {
    // RUST_LOG=info as in production: every invocation writes its "invocation done" line to stderr (collected here
    // as the host would).
    let handler = edgevault_tests::Handler::start()?;
    let addr: SocketAddr = ([127, 0, 0, 1], handler.port).into();
    let mut rows = Vec::new();
    println!("invocation overhead, handler with placeholder settings (no Azure reachable), RUST_LOG=info");
    println!(
        "  {:<50} {:>9} {:>9} {:>9} {:>9} | {:>10} {:>9} {:>9}",
        "case", "c1 p50µs", "c1 p99µs", "hnd p50", "hnd p99", "cN inv/s", "p50µs", "p99µs"
    );
    let mut worst_p99 = 0;
    let mut min_rate = f64::MAX;
    for case in cases() {
        // Warm-up (connections, allocator, page cache).
        measure(addr, case.function, &case.body, case.status, 1, Duration::from_millis(200), 1)?;
        let skip = handler.log().len();
        let serial = measure(addr, case.function, &case.body, case.status, 1, options.duration, 1)?;
        let inner = handler_elapsed_us(&handler.log(), skip);
        let loaded = measure(
            addr,
            case.function,
            &case.body,
            case.status,
            options.connections,
            options.duration,
            options.client_threads,
        )?;
        let (p50, p99) = (serial.percentile_us(0.5), serial.percentile_us(0.99));
        println!(
            "  {:<50} {:>9} {:>9} {:>9} {:>9} | {:>10.0} {:>9} {:>9}",
            case.name,
            p50,
            p99,
            load::percentile(&inner, 0.5),
            load::percentile(&inner, 0.99),
            loaded.per_second(),
            loaded.percentile_us(0.5),
            loaded.percentile_us(0.99)
        );
        worst_p99 = worst_p99.max(p99);
        if case.function == "ArmEvents" || case.function == "ActivationKeyApi" {
            min_rate = min_rate.min(loaded.per_second());
        }
        rows.push(Row::new(
            "invocation",
            case.name,
            format!("p50 {p50} µs, p99 {p99} µs (1 conn); {:.0}/s (c{})", loaded.per_second(), options.connections),
            "p99 ≤ 1 ms, ≥ 10,000/s",
            Some(
                p99 <= 1000
                    && (loaded.per_second() >= 10_000.0 || !matches!(case.function, "ArmEvents" | "ActivationKeyApi")),
            ),
        ));
    }
    println!(
        "  (c1 = one keep-alive connection, sequential; hnd = the handler's own elapsed_us log field for the same run;"
    );
    println!(
        "   c{} = {} connections, load generator on {} thread(s) of the same 2 cores)",
        options.connections, options.connections, options.client_threads
    );
    rows.push(Row::new(
        "invocation",
        "worst p99 (1 conn) over the no-Azure cases",
        format!("{worst_p99} µs"),
        "≤ 1 ms",
        Some(worst_p99 <= 1000),
    ));
    rows.push(Row::new(
        "invocation",
        "lowest ingress rate (ArmEvents, ActivationKeyApi)",
        format!("{min_rate:.0}/s"),
        "≥ 10,000/s",
        Some(min_rate >= 10_000.0),
    ));
    Ok(rows)
}

/// The real work paths against a local-azure with no injected latency (so what is measured is the handler plus
/// local-azure on the same 2 cores): an ARM event that enqueues a command (one Service Bus send through the proxy),
/// the status API for a device (the caller's permissions, asked on their behalf, then ARM reads), and `ResourceCreated` for a device that has its identity (ARM reads).
pub fn run_real(duration: Duration) -> anyhow::Result<Vec<Row>> {
    use edgevault_tests::local_azure::{API_AUDIENCE, ARM_AUDIENCE, LocalAzure};
    let la = LocalAzure::start()?;
    let handler = edgevault_tests::Handler::start_with(&la.handler_env())?;
    let addr: SocketAddr = ([127, 0, 0, 1], handler.port).into();
    let operator = la.principal("bench-operator", &["*"])?;
    let token = la.token(&operator, ARM_AUDIENCE)?;
    let id = format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/bench-real", la.resource_group_id());
    let body = serde_json::json!({"location": la.var("AZURE_LOCATION"), "sku": {"name": "Edge"},
        "identity": {"type": "SystemAssigned"}, "properties": {}});
    let (status, answer) = la.arm(&token, "PUT", &id, Some(body))?;
    anyhow::ensure!(status == 200 || status == 201, "create device: {status} {answer}");
    let device: edgevault::resource_id::ResourceId = id.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let operation = edgevault_tests::scenario::operation_id(&device);
    let created = edgevault::messages::Command::from(edgevault::messages::ResourceCreated {
        device: device.clone(),
        cause: "bench".into(),
    });
    let message = serde_json::json!({
        "Data": {"message": created.to_json()},
        "Metadata": {"MessageId": created.message_id(), "DeliveryCount": 1, "SessionId": created.session_id(),
                     "SequenceNumber": 1, "EnqueuedTimeUtc": "2026-11-28T12:00:00Z"}});
    let cases = [
        (
            "ArmEvents: device written → 1 Service Bus send",
            "ArmEvents",
            invocations::device_write_event(&la.resource_group_id(), "bench-real", "bench-event-1"),
        ),
        (
            "ActivationKeyApi: GET status (permissions as the caller + 2 ARM reads)",
            "ActivationKeyApi",
            edgevault_tests::signed_in_with(
                &invocations::unsigned_get("http://127.0.0.1:7071", &operation),
                &operator,
                &la.token(&operator, API_AUDIENCE)?,
            ),
        ),
        ("ResourceCreated: identity present (2 ARM reads)", "ResourceCreated", message),
    ];
    println!("real work paths against local-azure (no injected latency; local-azure on the same 2 cores)");
    let mut rows = Vec::new();
    for (name, function, body) in cases {
        measure(addr, function, &body, 200, 1, Duration::from_millis(300), 1)?;
        let serial = measure(addr, function, &body, 200, 1, duration, 1)?;
        let loaded = measure(addr, function, &body, 200, 8, duration, 1)?;
        println!(
            "  {name:<50} 1 conn: p50 {:>6} µs p99 {:>6} µs ({:.0}/s) | 8 conns: {:.0}/s p50 {} µs p99 {} µs",
            serial.percentile_us(0.5),
            serial.percentile_us(0.99),
            serial.per_second(),
            loaded.per_second(),
            loaded.percentile_us(0.5),
            loaded.percentile_us(0.99)
        );
        rows.push(Row::new(
            "invocation (local-azure)",
            name,
            format!(
                "p50 {} µs, p99 {} µs (1 conn); {:.0}/s (8 conns)",
                serial.percentile_us(0.5),
                serial.percentile_us(0.99),
                loaded.per_second()
            ),
            "",
            None,
        ));
    }
    Ok(rows)
}
