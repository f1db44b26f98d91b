//! Cold start: `spawn` of the release binary to the first answered invocation, and the resident memory once it
//! has answered (idle), for the `edgevault` handler (placeholder settings: every Azure endpoint a closed loopback
//! port, no network) and for the floor, `warp-floor`. Readiness is event-driven: the "listening on" line on the
//! child's stderr, then one invocation over a fresh connection; no polling.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::procfs::{self, median};
use crate::{Row, invocations};

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub ms: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

fn once(binary: &std::path::Path, handler: bool, body: &str) -> anyhow::Result<Sample> {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if handler {
        for (k, v) in edgevault_tests::PLACEHOLDER_SETTINGS {
            command.env(k, v);
        }
    }
    let started = Instant::now();
    let mut child = command.spawn().context("spawning")?;
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    let port = loop {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            let _ = child.kill();
            bail!("{} exited before listening", binary.display());
        }
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.trim().rsplit(':').next().unwrap_or_default().parse::<u16>()?;
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stderr.read_to_end(&mut sink);
    });
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    write!(
        stream,
        "POST /ArmEvents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !answer.starts_with(b"HTTP/1.1 200") {
        let _ = child.kill();
        bail!("unexpected answer: {}", String::from_utf8_lossy(&answer));
    }
    let (rss_kib, hwm_kib) = procfs::memory_kib(child.id()).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    Ok(Sample { ms, rss_kib, hwm_kib })
}

pub fn run(runs: usize) -> anyhow::Result<Vec<Row>> {
    let handler = edgevault_tests::binary("edgevault")?;
    let floor = edgevault_tests::binary("warp-floor")?;
    let body = invocations::validation().to_string();
    // One discarded run of each warms the page cache.
    once(&handler, true, &body)?;
    once(&floor, false, &body)?;
    let (mut h, mut f) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        h.push(once(&handler, true, &body)?);
        f.push(once(&floor, false, &body)?);
    }
    let stats = |samples: &[Sample]| {
        let mut ms: Vec<f64> = samples.iter().map(|s| s.ms).collect();
        let mut rss: Vec<f64> = samples.iter().map(|s| s.rss_kib as f64 / 1024.0).collect();
        let mut hwm: Vec<f64> = samples.iter().map(|s| s.hwm_kib as f64 / 1024.0).collect();
        let max_ms = ms.iter().cloned().fold(0.0, f64::max);
        (median(&mut ms), max_ms, median(&mut rss), median(&mut hwm))
    };
    let (hm, hmax, hr, hh) = stats(&h);
    let (fm, fmax, fr, fh) = stats(&f);
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len() as f64 / 1048576.0).unwrap_or(0.0);
    println!("cold start ({runs} runs each, interleaved)");
    println!(
        "  edgevault : median {hm:.2} ms (max {hmax:.2}), idle RSS {hr:.1} MiB, HWM {hh:.1} MiB, binary {:.1} MiB",
        size(&handler)
    );
    println!(
        "  warp-floor: median {fm:.2} ms (max {fmax:.2}), idle RSS {fr:.1} MiB, HWM {fh:.1} MiB, binary {:.1} MiB",
        size(&floor)
    );
    println!("  ratio edgevault / floor: time {:.2}x, RSS {:.2}x", hm / fm, hr / fr);
    Ok(vec![
        Row::new(
            "cold start",
            "edgevault spawn → first answer, median",
            format!("{hm:.2} ms"),
            "≤ 10 ms",
            Some(hm <= 10.0),
        ),
        Row::new(
            "cold start",
            "edgevault idle RSS (VmRSS), median",
            format!("{hr:.1} MiB (HWM {hh:.1})"),
            "≤ 15 MiB",
            Some(hr <= 15.0),
        ),
        Row::new("cold start", "warp-floor spawn → first answer, median", format!("{fm:.2} ms"), "floor", None),
        Row::new("cold start", "warp-floor idle RSS, median", format!("{fr:.1} MiB"), "floor", None),
        Row::new("cold start", "edgevault / floor", format!("time {:.2}x, RSS {:.2}x", hm / fm, hr / fr), "", None),
    ])
}
