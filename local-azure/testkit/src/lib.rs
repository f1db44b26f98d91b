//! local-azure as a process under test: started with `up --exit-on-stdin-close` on the ports and data directory the
//! test asks for, ready when it prints `local-azure ready <json>`, stopped the orderly way (its standard input
//! closed) or killed. The one harness local-azure's own tests and edgevault's end-to-end tests share; each suite
//! builds its clients on top (`local-azure/tests/support`, `tests/support/local_azure.rs`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde_json::Value;

/// How long a start may take before the test gives up (a limit, not a wait: ready is usually well under a second).
const READY_LIMIT: Duration = Duration::from_secs(60);

/// Where local-azure's standard error goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Kept in memory ([`Process::log`]), e.g. to scan what the handler logged for secrets.
    Capture,
    /// Passed through to the test's own output.
    Inherit,
}

/// How to start local-azure.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub binary: &'a Path,
    pub data_dir: &'a Path,
    /// 0 picks a free port.
    pub port: u16,
    pub admin_port: u16,
    /// Arguments after the common ones (`--app …`, `--settings …`).
    pub extra: &'a [String],
    pub stderr: Stderr,
}

/// A running local-azure; killed (SIGKILL) on drop unless it was stopped.
pub struct Process {
    child: Child,
    /// `None` once closed: local-azure then stops by itself.
    stdin: Option<ChildStdin>,
    /// The ready line's JSON: `gateway`, `admin`, `env` (the client environment).
    pub ready: Value,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    pub fn start(launch: Launch<'_>) -> anyhow::Result<Process> {
        let mut child = Command::new(launch.binary)
            .args(["up", "--exit-on-stdin-close", "--data-dir"])
            .arg(launch.data_dir)
            .args(["--port", &launch.port.to_string(), "--admin-port", &launch.admin_port.to_string()])
            .args(launch.extra)
            .env("LOCAL_AZURE_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(match launch.stderr {
                Stderr::Capture => Stdio::piped(),
                Stderr::Inherit => Stdio::inherit(),
            })
            .spawn()
            .with_context(|| format!("starting {}", launch.binary.display()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let lines = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        // Reads stdout to the end, so local-azure never blocks on a full pipe; the ready line is sent on.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(json) = line.strip_prefix("local-azure ready ") {
                    let _ = tx.send(json.to_string());
                }
            }
        });
        let mut process = Process { child, stdin, ready: Value::Null, log };
        let line = match rx.recv_timeout(READY_LIMIT) {
            Ok(line) => line,
            Err(_) => {
                let status = process.exited();
                return Err(anyhow!(
                    "local-azure was not ready within {READY_LIMIT:?} ({}); its stderr:\n{}",
                    status.map(|s| format!("exited: {s}")).unwrap_or_else(|| "still running".into()),
                    process.log().join("\n")
                ));
            }
        };
        process.ready = serde_json::from_str(&line).context("the ready line is not JSON")?;
        Ok(process)
    }

    pub fn gateway(&self) -> &str {
        self.ready["gateway"].as_str().unwrap_or_default()
    }

    pub fn admin(&self) -> &str {
        self.ready["admin"].as_str().unwrap_or_default()
    }

    /// The client environment (`HTTPS_PROXY`, `SSL_CERT_FILE`, `IDENTITY_ENDPOINT`, …) as printed when ready.
    pub fn env(&self) -> BTreeMap<String, String> {
        self.ready["env"]
            .as_object()
            .map(|env| env.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
            .unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What local-azure (and, with an app, its Functions host and the handler) wrote to stderr, with
    /// [`Stderr::Capture`].
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops it the orderly way: with its standard input closed, local-azure stops the Functions host (which stops
    /// the handler and waits for it) and its servers, then exits. Waits up to `limit`.
    pub fn stop(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        drop(self.stdin.take());
        eventually(limit, || self.exited()).ok_or_else(|| anyhow!("local-azure did not stop within {limit:?}"))
    }

    /// SIGKILL, no chance to flush anything (a crash).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for `check` to return `Some`, re-evaluating it every 100 ms until `limit`: for state another process
/// changes (a queue being worked, a process exiting), this waits on the event, not on time passing.
pub fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventually_returns_the_first_value_and_gives_up_at_the_limit() {
        let mut calls = 0;
        assert_eq!(
            eventually(Duration::from_secs(5), || {
                calls += 1;
                (calls == 3).then_some(calls)
            }),
            Some(3)
        );
        assert_eq!(eventually(Duration::ZERO, || None::<()>), None);
    }

    #[test]
    fn a_binary_that_never_gets_ready_is_reported_with_its_stderr() {
        let dir = std::env::temp_dir();
        let err = Process::start(Launch {
            binary: Path::new("/bin/sh"),
            data_dir: &dir,
            port: 0,
            admin_port: 0,
            extra: &[],
            stderr: Stderr::Capture,
        })
        .err()
        .expect("sh is not local-azure");
        assert!(err.to_string().contains("not ready"), "{err}");
    }
}
