//! `cargo xtask demo --keep`, as a newcomer uses it: after the walk-through the system stays up, the commands the
//! demo prints work exactly as printed (run by bash, parsed from its output), and Ctrl-C — SIGINT to the demo's
//! process group, as a terminal sends it — stops every process the demo started and removes its data directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use edgevault_tests::{openapi, secrets};
use serde_json::Value;
use xtask::demo::{KEPT, WAITING};

/// Limits, not waits: how long the demo may take to build and walk through, and to stop.
const WALK_LIMIT: Duration = Duration::from_secs(300);
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// A process as /proc knows it: its pid, command name and start time (a pid reused later has another).
#[derive(Debug, Clone, PartialEq)]
struct Proc {
    pid: u32,
    comm: String,
    start: u64,
    state: char,
}

fn read_proc(pid: u32) -> Option<(Proc, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid … starttime(22nd) …`; comm may hold spaces, so split after the closing parenthesis.
    let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((Proc { pid, comm: comm.to_string(), start, state }, ppid))
}

/// Every live descendant of `root`.
fn descendants(root: u32) -> Vec<Proc> {
    let mut children: BTreeMap<u32, Vec<Proc>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else { continue };
        if let Some((proc, ppid)) = read_proc(pid) {
            children.entry(ppid).or_default().push(proc);
        }
    }
    let mut found = Vec::new();
    let mut pending = vec![root];
    while let Some(parent) = pending.pop() {
        for child in children.get(&parent).into_iter().flatten() {
            pending.push(child.pid);
            found.push(child.clone());
        }
    }
    found
}

/// Whether `proc` still runs: its pid is there, not a zombie, and not a later process that reused the pid.
fn alive(proc: &Proc) -> bool {
    read_proc(proc.pid).is_some_and(|(now, _)| now.start == proc.start && now.state != 'Z')
}

/// Live processes whose command line or environment names `path`.
fn using(path: &str) -> Vec<Proc> {
    let path = path.as_bytes();
    let names = |bytes: &[u8]| bytes.windows(path.len()).any(|w| w == path);
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            (names(&cmdline) || names(&environ)).then(|| read_proc(pid)).flatten().map(|(proc, _)| proc)
        })
        .filter(|proc| proc.state != 'Z')
        .collect()
}

/// Runs `command` in bash after `setup` (the printed `eval` line), as a newcomer's shell would.
fn shell(setup: &str, command: &str) -> (bool, String, String) {
    let out = Command::new("bash").arg("-c").arg(format!("set -euo pipefail\n{setup}\n{command}")).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// `curl -si` output: the status code, the headers (lower-case names) and the JSON body.
fn http(output: &str) -> (u16, BTreeMap<String, String>, Value) {
    let (head, body) = output.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP answer: {output}"));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

#[test]
fn keep_leaves_the_system_up_for_the_printed_commands_and_ctrl_c_stops_every_process() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["demo", "--keep"])
        // Its own process group, so the SIGINT below reaches what a terminal's Ctrl-C reaches.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xtask runs");
    let pid = demo.id();
    let (tx, rx) = mpsc::channel();
    let stdout = demo.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stderr = demo.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let mut output = Vec::new();
    loop {
        match rx.recv_timeout(WALK_LIMIT) {
            Ok(line) if line == WAITING => break,
            Ok(line) => output.push(line),
            Err(_) => {
                let _ = demo.kill();
                panic!("the demo never said it waits; it printed:\n{}\n{}", output.join("\n"), stderr.join().unwrap())
            }
        }
    }
    let printed = output.join("\n");
    assert!(printed.contains("every step held"), "{printed}");
    secrets::scan("what `cargo xtask demo --keep` printed", &printed);

    // The commands: the indented lines after KEPT, comments aside; the first points the shell at local-azure.
    let kept = output.iter().position(|l| l == KEPT).unwrap_or_else(|| panic!("no `{KEPT}` in:\n{printed}"));
    let commands: Vec<&str> =
        output[kept + 1..].iter().filter_map(|l| l.strip_prefix("  ")).filter(|l| !l.starts_with('#')).collect();
    let [setup, status, request, page, fleet] = commands[..] else { panic!("five commands expected: {commands:#?}") };
    assert!(setup.starts_with(r#"eval "$("#) && setup.contains(" env --data-dir "), "{setup}");
    let data_dir = setup.split(" env --data-dir ").nth(1).unwrap().trim_end_matches(")\"").trim_matches('\'');
    assert!(std::path::Path::new(data_dir).is_dir(), "the data directory {data_dir} exists while the demo runs");

    let (ok, out, err) = shell(setup, status);
    assert!(ok, "{status}\n{out}{err}");
    let (code, _, body) = http(&out);
    assert_eq!(code, 200, "{out}");
    assert_eq!(body["status"], "succeeded", "{body}");
    assert!(body["activationKey"].as_str().is_some_and(|k| k.starts_with("ase-ak1.")), "a freshly sealed key");
    openapi::check("get", "/activation-keys/{operationId}", code, &body).unwrap();
    secrets::scan_answer("the printed status command's answer", &body);

    let (ok, out, err) = shell(setup, request);
    assert!(ok, "{request}\n{out}{err}");
    let (code, headers, body) = http(&out);
    assert_eq!(code, 202, "{out}");
    assert!(headers.get("location").is_some_and(|l| l.contains("/api/activation-keys/")), "{headers:?}");
    assert!(body["operationId"].is_string() && body["statusUrl"].is_string(), "{body}");
    openapi::check("post", "/activation-keys", code, &body).unwrap();
    secrets::scan_answer("the printed request command's answer", &body);

    let here = tempfile::tempdir().unwrap();
    let (ok, out, err) = shell(setup, &format!("cd '{}'\n{page}", here.path().display()));
    assert!(ok, "{page}\n{out}{err}");
    let html = std::fs::read_to_string(here.path().join("fleet.html")).unwrap();
    assert!(html.contains("<title>edgevault fleet</title>") && html.contains("ase-demo-01"), "{html}");

    let (ok, out, err) = shell(setup, fleet);
    assert!(ok, "{fleet}\n{out}{err}");
    let row = out.lines().find(|l| l.starts_with("ase-demo-01 ")).unwrap_or_else(|| panic!("no device in:\n{out}"));
    assert!(row.contains("KeyVaultSynced"), "{row}");
    secrets::scan("the printed status command's output", &format!("{out}{err}"));

    // What runs now: local-azure and, under its Functions host, the handler.
    let running = descendants(pid);
    let users = using(data_dir);
    for comm in ["local-azure", "edgevault"] {
        assert!(running.iter().any(|p| p.comm == comm), "no {comm} under the demo: {running:?}");
        assert!(users.iter().any(|p| p.comm == comm), "{comm} does not show as using {data_dir}: {users:?}");
    }

    let signalled = Command::new("kill").args(["-INT", "--", &format!("-{pid}")]).status().unwrap();
    assert!(signalled.success());
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(demo.wait());
    });
    let exit = done_rx.recv_timeout(STOP_LIMIT).expect("the demo stops on Ctrl-C").unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(exit.success(), "{exit}\n{}\n{}", rest.join("\n"), stderr.join().unwrap());
    let left: Vec<&Proc> = running.iter().filter(|p| alive(p)).collect();
    assert!(left.is_empty(), "still running after Ctrl-C: {left:?}");
    // Nor anything started later (a handler restarted during the stop): every process of the demo's has the data
    // directory on its command line or in its environment (the CA file the handler trusts lives there).
    let strays = using(data_dir);
    assert!(strays.is_empty(), "processes still using {data_dir}: {strays:?}");
    assert!(!std::path::Path::new(data_dir).exists(), "the data directory {data_dir} is removed");
}
