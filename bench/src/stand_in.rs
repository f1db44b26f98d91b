//! local-azure's own throughput, so tests and benchmarks are never bound by the stand-in: ARM GETs of one device
//! and Service Bus send / receive-and-delete on a plain queue, each with N keep-alive clients through its proxy (TLS
//! terminated by local-azure, as every Azure client reaches it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgevault_tests::local_azure::{ARM, ARM_AUDIENCE, LocalAzure};
use serde_json::json;

use crate::Row;
use crate::load::percentile;

const CLIENTS: usize = 16;

async fn hammer<F, Fut>(duration: Duration, clients: usize, max: u64, call: F) -> anyhow::Result<(u64, f64, Vec<u64>)>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let call = call.clone();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline && count.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                call().await?;
                latencies.push(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort_unstable();
    Ok((all.len() as u64, started.elapsed().as_secs_f64(), all))
}

pub fn run(duration: Duration) -> anyhow::Result<Vec<Row>> {
    let la = LocalAzure::start()?;
    let operator = la.principal("bench-operator", &["*"])?;
    let arm_token = la.token(&operator, ARM_AUDIENCE)?;
    let sb_token = la.token(la.var("EDGEVAULT_PRINCIPAL_ID"), "https://servicebus.azure.net")?;
    let device = format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/bench-get", la.resource_group_id());
    let (status, body) = la.arm(
        &arm_token,
        "PUT",
        &device,
        Some(json!({"location": la.var("AZURE_LOCATION"), "sku": {"name": "Edge"}, "properties": {}})),
    )?;
    anyhow::ensure!(status == 200 || status == 201, "create device: {status} {body}");
    la.admin_post("/admin/servicebus/queues", json!({"namespace": "edgevault", "name": "bench"}))?;
    let ca = std::fs::read(la.var("SSL_CERT_FILE"))?;
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(la.var("HTTPS_PROXY"))?)
        .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
        .timeout(Duration::from_secs(60))
        .build()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let queue = "https://edgevault.servicebus.windows.net/bench/messages";
    let get_url = format!("{ARM}{device}?api-version=2023-12-01");
    let (gets, get_s, get_lat) = runtime.block_on({
        let (client, token) = (client.clone(), arm_token.clone());
        hammer(duration, CLIENTS, u64::MAX, move || {
            let request = client.get(&get_url).bearer_auth(&token);
            async move {
                let r = request.send().await?;
                anyhow::ensure!(r.status() == 200, "GET device: {}", r.status());
                r.bytes().await?;
                Ok(())
            }
        })
    })?;
    let (sends, send_s, send_lat) = runtime.block_on({
        let (client, token) = (client.clone(), sb_token.clone());
        hammer(duration, CLIENTS, u64::MAX, move || {
            let request = client
                .post(queue)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(r#"{"kind":"bench","payload":"0123456789abcdef0123456789abcdef"}"#);
            async move {
                let r = request.send().await?;
                anyhow::ensure!(r.status() == 201, "send: {}", r.status());
                Ok(())
            }
        })
    })?;
    // Receive-and-delete exactly what was sent (no empty long polls).
    let (receives, receive_s, receive_lat) = runtime.block_on({
        let (client, token) = (client.clone(), sb_token.clone());
        hammer(Duration::from_secs(600), CLIENTS, sends, move || {
            let request = client.delete(format!("{queue}/head?timeout=5")).bearer_auth(&token);
            async move {
                let r = request.send().await?;
                anyhow::ensure!(r.status() == 200, "receive: {}", r.status());
                r.bytes().await?;
                Ok(())
            }
        })
    })?;
    let line = |what: &str, n: u64, s: f64, lat: &[u64]| {
        println!(
            "  {what:<36} {:>8.0}/s  p50 {:>6} µs  p99 {:>6} µs  ({n} in {s:.2} s, {CLIENTS} clients)",
            n as f64 / s,
            percentile(lat, 0.5),
            percentile(lat, 0.99)
        );
        format!("{:.0}/s (p50 {} µs, p99 {} µs)", n as f64 / s, percentile(lat, 0.5), percentile(lat, 0.99))
    };
    println!("local-azure throughput (through its proxy, TLS, {CLIENTS} keep-alive clients, client on 1 thread)");
    let g = line("ARM GET device", gets, get_s, &get_lat);
    let s = line("Service Bus send", sends, send_s, &send_lat);
    let r = line("Service Bus receive-and-delete", receives, receive_s, &receive_lat);
    Ok(vec![
        Row::new("local-azure", "ARM GET device", g, "", None),
        Row::new("local-azure", "Service Bus send (durable, fsync)", s, "", None),
        Row::new("local-azure", "Service Bus receive-and-delete", r, "", None),
    ])
}
