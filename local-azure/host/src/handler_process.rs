//! The custom handler as a supervised child process.
//!
//! Each start gets a fresh free port plus the app settings as environment variables, like the real host's worker
//! (`HttpWorkerProcess.CreateWorkerProcess`, azure-functions-host `src/WebJobs.Script/Workers/Http/`). The port is
//! published on a `watch` channel only once the handler answers HTTP, and withdrawn the moment it exits, so
//! invocations wait for a ready handler instead of racing a restart. Readiness is the host's own probe
//! (`DefaultHttpWorkerService.IsWorkerReady`): `GET /` every 25 ms (`WorkerConstants.WorkerReadyCheckPollingIntervalMilliseconds`)
//! for up to 30 s (`HttpWorkerOptions.InitializationTimeout`); any HTTP answer, whatever its status, counts.
//!
//! A handler that dies is started again (with a short, growing pause so a handler that crashes on startup does not
//! spin) and the restart is counted. An invocation that overruns `functionTimeout` asks for a restart: the real host
//! kills and restarts the worker process then (`WebScriptHostExceptionHandler.OnTimeoutExceptionAsync` →
//! `HttpFunctionInvocationDispatcher.RestartWorkerWithInvocationIdAsync`), failing every invocation in flight.
//! Its stdout and stderr become `tracing` events.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{broadcast, watch};

use crate::HostEvent;

/// How long a freshly started handler has to answer `GET /` (`HttpWorkerOptions.InitializationTimeout`).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the readiness probe asks (`WorkerConstants.WorkerReadyCheckPollingIntervalMilliseconds`).
pub const READY_POLL_INTERVAL: Duration = Duration::from_millis(25);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("the custom handler {path} does not exist; build it or pass its path explicitly")]
    Missing { path: PathBuf },
    #[error("cannot start the custom handler {path}")]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("cannot find a free port for the custom handler: {0}")]
    Port(std::io::Error),
    #[error("the custom handler exited during startup ({exit}){}", stderr_tail(.stderr))]
    ExitedDuringStartup { exit: String, stderr: Vec<String> },
    #[error("the custom handler did not answer GET / on port {port} within {timeout:?}")]
    NotListening { port: u16, timeout: Duration },
}

/// How to start the handler.
#[derive(Debug, Clone)]
pub struct HandlerCommand {
    pub executable: PathBuf,
    pub arguments: Vec<String>,
    pub working_directory: PathBuf,
    /// The app folder (`FUNCTIONS_APP_ROOT_PATH`).
    pub app_root: PathBuf,
    /// App settings, passed as environment variables.
    pub environment: BTreeMap<String, String>,
}

/// Shared view of the supervised handler.
#[derive(Debug)]
pub struct HandlerStatus {
    pub port: watch::Receiver<Option<u16>>,
    restarts: AtomicU64,
    restart: tokio::sync::mpsc::UnboundedSender<RestartRequest>,
}

/// Asks the supervisor to kill and restart the handler that listens on `port`.
#[derive(Debug)]
struct RestartRequest {
    port: u16,
    reason: String,
}

impl HandlerStatus {
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::SeqCst)
    }

    /// Kills the handler listening on `port` and starts a new one, as the real host does after a function timeout.
    /// A request for a port that is no longer current is ignored: that process was already replaced.
    pub fn restart(&self, port: u16, reason: impl Into<String>) {
        let _ = self.restart.send(RestartRequest { port, reason: reason.into() });
    }
}

/// Starts the handler, waits until it listens, and keeps it running until `shutdown` flips to true.
/// Returns once the first start succeeded (or failed: a handler that cannot start at all is a startup error).
pub async fn supervise(
    command: HandlerCommand,
    events: broadcast::Sender<HostEvent>,
    shutdown: watch::Receiver<bool>,
) -> Result<(Arc<HandlerStatus>, tokio::task::JoinHandle<()>), ProcessError> {
    if !command.executable.is_file() {
        return Err(ProcessError::Missing { path: command.executable.clone() });
    }
    let (port_tx, port_rx) = watch::channel(None);
    let (restart_tx, restart_rx) = tokio::sync::mpsc::unbounded_channel();
    let status = Arc::new(HandlerStatus { port: port_rx, restarts: AtomicU64::new(0), restart: restart_tx });
    let (child, port) = start(&command).await?;
    port_tx.send_replace(Some(port));
    let _ = events.send(HostEvent::HandlerReady { port, restarts: 0 });
    let task = tokio::spawn(supervise_loop(command, child, port_tx, restart_rx, status.clone(), events, shutdown));
    Ok((status, task))
}

async fn supervise_loop(
    command: HandlerCommand,
    mut child: Child,
    port_tx: watch::Sender<Option<u16>>,
    mut restarts: tokio::sync::mpsc::UnboundedReceiver<RestartRequest>,
    status: Arc<HandlerStatus>,
    events: broadcast::Sender<HostEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        let exit = tokio::select! {
            exit = child.wait() => exit.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
            Some(request) = restarts.recv() => {
                if *port_tx.borrow() != Some(request.port) {
                    continue;
                }
                // The real host disposes the worker channel, which kills the process outright.
                port_tx.send_replace(None);
                let _ = child.kill().await;
                tracing::warn!(reason = %request.reason, "restarting the custom handler");
                // A restart on purpose is not a crash: start again at once.
                pause = Duration::ZERO;
                format!("killed by the host: {}", request.reason)
            }
            _ = crate::stopped(&mut shutdown) => {
                port_tx.send_replace(None);
                stop(&mut child).await;
                return;
            }
        };
        port_tx.send_replace(None);
        tracing::warn!(exit = %exit, "the custom handler exited; restarting it");
        let _ = events.send(HostEvent::HandlerExited { exit });
        loop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = crate::stopped(&mut shutdown) => return,
            }
            let restarts = status.restarts.fetch_add(1, Ordering::SeqCst) + 1;
            let started = tokio::select! {
                started = start(&command) => started,
                _ = crate::stopped(&mut shutdown) => return,
            };
            match started {
                Ok((new_child, port)) => {
                    child = new_child;
                    port_tx.send_replace(Some(port));
                    tracing::info!(port, restarts, "the custom handler is ready again");
                    let _ = events.send(HostEvent::HandlerReady { port, restarts });
                    pause = Duration::from_millis(100);
                    break;
                }
                Err(err) => {
                    tracing::error!(restarts, "restarting the custom handler failed: {}", crate::error_chain(&err));
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// Asks the handler to stop (SIGTERM, so in-flight invocations can finish), then kills it after a grace period.
async fn stop(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own child's pid, which cannot be reused while the child is unreaped.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

fn free_port() -> Result<u16, ProcessError> {
    // Bind-and-release: the handler binds the port a moment later. Another process could take it in between;
    // then the handler fails to listen, exits, and is restarted on a new port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(ProcessError::Port)?;
    Ok(listener.local_addr().map_err(ProcessError::Port)?.port())
}

async fn start(command: &HandlerCommand) -> Result<(Child, u16), ProcessError> {
    let port = free_port()?;
    let worker_id = uuid::Uuid::new_v4().to_string();
    let mut cmd = Command::new(&command.executable);
    // The variables `HttpWorkerProcess.CreateWorkerProcess` sets, besides the app settings.
    cmd.args(&command.arguments)
        .current_dir(&command.working_directory)
        .envs(&command.environment)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", &worker_id)
        .env("FUNCTIONS_HTTPWORKER_PORT", port.to_string())
        .env("FUNCTIONS_HTTPWORKER_ID", &worker_id)
        .env("FUNCTIONS_APP_ROOT_PATH", &command.app_root)
        .env("FUNCTIONS_WORKER_RUNTIME", "custom")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // kill_on_drop covers an orderly exit; if the host process is killed outright, the kernel stops the handler
    // too instead of leaving it orphaned and holding its port.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the forked child's own state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn { path: command.executable.clone(), source })?;
    let pid = child.id().unwrap_or_default();
    // The first stderr lines explain a handler that refuses to start (missing settings, say); keep them for the error.
    let first_stderr = Arc::new(std::sync::Mutex::new(Vec::new()));
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(out, pid, "stdout", None));
    }
    let stderr_task =
        child.stderr.take().map(|err| tokio::spawn(forward_lines(err, pid, "stderr", Some(first_stderr.clone()))));
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    let probe = reqwest::Client::builder().no_proxy().build().expect("reqwest client for the readiness probe");
    loop {
        if let Some(exit) = child.try_wait().ok().flatten() {
            if let Some(task) = stderr_task {
                let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
            }
            let stderr = first_stderr.lock().expect("stderr lines lock").clone();
            return Err(ProcessError::ExitedDuringStartup { exit: exit.to_string(), stderr });
        }
        if answers_http(&probe, port, deadline).await {
            tracing::info!(pid, port, "the custom handler answers HTTP");
            return Ok((child, port));
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill().await;
            return Err(ProcessError::NotListening { port, timeout: STARTUP_TIMEOUT });
        }
        tokio::time::sleep(READY_POLL_INTERVAL).await;
    }
}

/// One readiness probe: `GET http://127.0.0.1:<port>/`. Any answer means ready, and so does any failure other than
/// failing to connect (`IsWorkerReady` waits only on a `SocketException`).
pub async fn answers_http(client: &reqwest::Client, port: u16, deadline: tokio::time::Instant) -> bool {
    let patience = deadline.saturating_duration_since(tokio::time::Instant::now()).max(READY_POLL_INTERVAL);
    match client.get(format!("http://127.0.0.1:{port}/")).timeout(patience).send().await {
        Ok(_) => true,
        Err(err) => !err.is_connect(),
    }
}

/// How many of a handler's first stderr lines a startup error quotes.
const STARTUP_STDERR_LINES: usize = 5;

async fn forward_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    pid: u32,
    which: &'static str,
    keep: Option<Arc<std::sync::Mutex<Vec<String>>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "handler", pid, stream = which, "{line}");
        if let Some(keep) = &keep {
            let mut kept = keep.lock().expect("stderr lines lock");
            if kept.len() < STARTUP_STDERR_LINES && !line.trim().is_empty() {
                kept.push(line);
            }
        }
    }
}

fn stderr_tail(lines: &[String]) -> String {
    if lines.is_empty() { String::new() } else { format!("; its stderr began:\n  {}", lines.join("\n  ")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn any_http_answer_is_ready_and_a_closed_port_is_not() {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        // A server that answers every request with 500: still ready, as for the real host.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let read = socket.read(&mut request).await.unwrap();
            socket.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n").await.unwrap();
            String::from_utf8_lossy(&request[..read]).into_owned()
        });
        assert!(answers_http(&client, port, deadline).await);
        assert!(server.await.unwrap().starts_with("GET / HTTP/1.1"), "the probe is GET /");
        // Nothing listens on a port just released.
        let closed = free_port().unwrap();
        assert!(!answers_http(&client, closed, deadline).await);
    }
}
