//! Support for the end-to-end tests and the demo: find the workspace's binaries and run them as real processes.
//!
//! Binaries are found next to the running executable (tests run from `target/<profile>/deps`, xtask from
//! `target/<profile>`), so they must be built first: `cargo xtask test` does that before running the tests.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

pub mod local_azure;
pub mod openapi;
pub mod scenario;
pub mod secrets;

/// The path of a workspace binary built in the same profile as the running executable.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("binary `{name}` not found near {}: build it first (`cargo xtask test` builds every binary)", exe.display())
}

/// A running `edgevault` handler on a free loopback port, killed when dropped.
pub struct Handler {
    /// `None` once [`Handler::wait_for_exit`] took it.
    child: Option<Child>,
    pub port: u16,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
    client: reqwest::blocking::Client,
    /// The traced `edgevault` under `strace` ([`Handler::start_traced`]): killing strace would only detach it.
    tracee: Option<u32>,
}

/// Settings for tests that exercise the runtime only: well-formed, and every Azure endpoint (identity, ARM, Service
/// Bus) a closed loopback port, so each Azure call fails at once and nothing leaves the machine. Tests against
/// local-azure pass its real values instead (later pairs win).
pub const PLACEHOLDER_SETTINGS: &[(&str, &str)] = &[
    ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000001"),
    ("EDGEVAULT_PRINCIPAL_ID", "00000000-0000-0000-0000-000000000002"),
    ("ServiceBusConnection__fullyQualifiedNamespace", "127.0.0.1:1"),
    ("EDGEVAULT_SUBSCRIPTIONS", "00000000-0000-0000-0000-000000000003"),
    ("EDGEVAULT_ARM_ENDPOINT", "https://127.0.0.1:1"),
    ("EDGEVAULT_RECORDS_TABLE_URI", "https://127.0.0.1:1"),
    ("EDGEVAULT_RETRY_MAX_RETRIES", "0"),
    ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
    ("IDENTITY_HEADER", "placeholder"),
    ("NO_PROXY", "*"),
];

/// How long a process may take to start listening before the test gives up (a limit, not a wait).
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Handler {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with::<&str, &str>(&[])
    }

    /// Starts the handler with extra environment variables (they override the placeholders); it binds port 0 and
    /// the port is read from its log.
    pub fn start_with<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(env: &[(K, V)]) -> anyhow::Result<Self> {
        Self::spawn(Command::new(binary("edgevault")?), env)
    }

    /// Starts the handler under `strace`, which writes every `connect`, `sendto` and `sendmsg` the process and its
    /// threads make to `trace` (addresses only: `-s 0` leaves the data out).
    pub fn start_traced<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        env: &[(K, V)],
        trace: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new("strace");
        command.args(["-f", "-qq", "-s", "0", "-e", "trace=connect,sendto,sendmsg", "-o"]).arg(trace);
        command.arg(binary("edgevault")?);
        let mut handler = Self::spawn(command, env)?;
        handler.tracee = child_named(handler.pid(), "edgevault");
        anyhow::ensure!(handler.tracee.is_some(), "strace started no edgevault process");
        Ok(handler)
    }

    fn spawn<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        mut command: Command,
        env: &[(K, V)],
    ) -> anyhow::Result<Self> {
        command
            .env_remove("FUNCTIONS_HTTPWORKER_PORT")
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in PLACEHOLDER_SETTINGS {
            command.env(key, value);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().context("starting edgevault")?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = listening_port(&line) {
                    let _ = port_tx.send(port);
                }
                lines.0.lock().unwrap().push(line);
                lines.1.notify_all();
            }
        });
        let port = match port_rx.recv_timeout(START_TIMEOUT) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                bail!("edgevault did not start listening; its log:\n{}", log.0.lock().unwrap().join("\n"))
            }
        };
        let client = reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
        Ok(Handler { child: Some(child), port, log, client, tracee: None })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, path.trim_start_matches('/'))
    }

    /// POSTs a raw body to `/<function>` the way the real Functions host does: chunked, with no `Content-Length`
    /// (azure-functions-host `HttpScriptInvocationContextExtensions.cs` posts an `ObjectContent`), and the host's
    /// headers (`DefaultHttpWorkerService.AddHeaders`). Returns the status and the JSON answer.
    pub fn invoke_raw(&self, function: &str, body: impl Into<Vec<u8>>) -> anyhow::Result<(u16, Value)> {
        // A reader of unknown length makes reqwest stream the body chunked.
        let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(body.into()));
        self.post(function, chunked)
    }

    /// POSTs a body buffered with a `Content-Length`, as Core Tools (`func start`) does.
    pub fn invoke_buffered(&self, function: &str, invocation: &Value) -> anyhow::Result<(u16, Value)> {
        self.post(function, reqwest::blocking::Body::from(invocation.to_string()))
    }

    fn post(&self, function: &str, body: reqwest::blocking::Body) -> anyhow::Result<(u16, Value)> {
        let response = self
            .client
            .post(self.url(function))
            .header("Content-Type", "application/json; charset=utf-8")
            .header("X-Azure-Functions-InvocationId", "00000000-0000-0000-0000-00000000test")
            .header("X-Azure-Functions-HostVersion", "4.1037.0")
            .header("User-Agent", "Azure-Functions-Host/4.1037.0")
            .body(body)
            .send()?;
        let status = response.status().as_u16();
        let text = response.text()?;
        let value = serde_json::from_str(&text).map_err(|e| anyhow!("answer is not JSON ({e}): {text}"))?;
        secrets::scan_answer(&format!("the answer of {function}"), &value);
        Ok((status, value))
    }

    pub fn invoke(&self, function: &str, invocation: &Value) -> anyhow::Result<(u16, Value)> {
        self.invoke_raw(function, invocation.to_string())
    }

    /// Everything the handler has logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.0.lock().unwrap().clone()
    }

    /// The first log line matching `predicate`, waiting up to `limit` for it to be written (logs arrive on another
    /// thread, after the answer that caused them).
    pub fn wait_for_log(&self, limit: Duration, predicate: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = std::time::Instant::now() + limit;
        let mut lines = self.log.0.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| predicate(l)) {
                return Some(line.clone());
            }
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            lines = self.log.1.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Waits (up to `limit`) for the process to exit by itself, e.g. after a signal; `None` if it did not.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send(status);
        });
        rx.recv_timeout(limit).ok()?.ok()
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        if let Some(pid) = self.tracee {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Every handler any test starts has its whole log scanned on the way out.
        if !std::thread::panicking() {
            secrets::scan("the handler's log", &self.log().join("\n"));
        }
    }
}

/// The pid of a child of `parent` whose command name is `comm`.
pub fn child_named(parent: u32, comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        // `pid (comm) state ppid …`; comm may hold spaces, so split after the closing parenthesis.
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && name == comm).then_some(pid)
    })
}

fn listening_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.rsplit(':').next()?.parse().ok()
}

/// A fixture file from `tests/fixtures/`, parsed as JSON.
pub fn fixture(relative: &str) -> anyhow::Result<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(relative);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A Service Bus invocation for `body` in the real host's form: the `real-host/service-bus.json` fixture with its
/// message replaced. `Data.message` is the body JSON-encoded once more, and the body's top-level non-array fields are
/// merged into `Metadata` over what was there, case-insensitively, scalars as strings JSON-encoded again
/// (azure-functions-host `Utility.ApplyBindingData`, then `GetHttpScriptInvocationContextValue`).
pub fn real_host_message(body: &Value) -> Value {
    let mut invocation = fixture("triggers/real-host/service-bus.json").expect("the real-host fixture");
    invocation["Data"]["message"] = Value::String(Value::String(body.to_string()).to_string());
    let metadata = invocation["Metadata"].as_object_mut().expect("Metadata is an object");
    for (name, value) in body.as_object().expect("a message body is an object") {
        let merged = match value {
            Value::Null | Value::Array(_) => continue,
            Value::Object(_) => value.clone(),
            // .NET's `(string)JValue` spells booleans `True`/`False`.
            Value::Bool(b) => Value::String(Value::String(if *b { "True" } else { "False" }.into()).to_string()),
            Value::String(text) => Value::String(Value::String(text.clone()).to_string()),
            Value::Number(n) => Value::String(Value::String(n.to_string()).to_string()),
        };
        let key = metadata.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned().unwrap_or_else(|| name.clone());
        metadata.insert(key, merged);
    }
    invocation
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_port_from_the_listening_line() {
        let line = "2026-11-28T12:00:00Z  INFO edgevault: listening on 127.0.0.1:41234";
        assert_eq!(super::listening_port(line), Some(41234));
        assert_eq!(super::listening_port("INFO something else"), None);
    }
}
