//! A small HTTP/1.1 load generator on hyper: N keep-alive connections on loopback, each sending the same request
//! back to back until a duration or a request count is reached; every latency is kept (µs) for exact percentiles.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone)]
pub struct Load {
    pub addr: SocketAddr,
    pub path: String,
    pub body: Bytes,
    pub expect_status: u16,
    pub connections: usize,
    pub duration: Duration,
    pub max_requests: u64,
    /// Worker threads of the generator's runtime (1 = current-thread), so it leaves the rest of the machine to the
    /// server.
    pub threads: usize,
}

#[derive(Debug, Clone)]
pub struct LoadResult {
    pub requests: u64,
    pub unexpected: u64,
    pub elapsed: Duration,
    /// Sorted latencies in µs.
    pub latencies_us: Vec<u64>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    pub fn percentile_us(&self, p: f64) -> u64 {
        percentile(&self.latencies_us, p)
    }
}

/// The value at quantile `p` (0..=1) of sorted `values` (nearest rank).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn run(load: &Load) -> anyhow::Result<LoadResult> {
    let runtime = if load.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(load.threads).enable_all().build()?
    };
    runtime.block_on(run_async(load))
}

async fn run_async(load: &Load) -> anyhow::Result<LoadResult> {
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + load.duration;
    let mut tasks = Vec::new();
    for _ in 0..load.connections {
        let load = load.clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move { connection(load, sent, deadline).await }));
    }
    let mut result = LoadResult { requests: 0, unexpected: 0, elapsed: Duration::ZERO, latencies_us: Vec::new() };
    for task in tasks {
        let (latencies, unexpected) = task.await??;
        result.requests += latencies.len() as u64;
        result.unexpected += unexpected;
        result.latencies_us.extend(latencies);
    }
    result.elapsed = started.elapsed();
    result.latencies_us.sort_unstable();
    Ok(result)
}

async fn connection(load: Load, sent: Arc<AtomicU64>, deadline: Instant) -> anyhow::Result<(Vec<u64>, u64)> {
    let stream = tokio::net::TcpStream::connect(load.addr).await.context("connecting")?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(4096);
    let mut unexpected = 0;
    let uri = format!("http://{}{}", load.addr, load.path);
    while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < load.max_requests {
        sender.ready().await?;
        let request = hyper::Request::post(&uri)
            .header("host", load.addr.to_string())
            .header("content-type", "application/json")
            .header("x-azure-functions-invocationid", "00000000-0000-4000-8000-0000000bench")
            .body(Full::new(load.body.clone()))?;
        let t = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        latencies.push(t.elapsed().as_micros() as u64);
        if status != load.expect_status {
            unexpected += 1;
        }
    }
    Ok((latencies, unexpected))
}

#[cfg(test)]
mod tests {
    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(super::percentile(&v, 0.5), 50);
        assert_eq!(super::percentile(&v, 0.99), 99);
        assert_eq!(super::percentile(&v, 1.0), 100);
        assert_eq!(super::percentile(&[], 0.5), 0);
    }
}
