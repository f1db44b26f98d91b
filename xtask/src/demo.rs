//! The main job: the whole system on one machine — local-azure (ARM, Key Vault, identity, Service Bus, Event
//! Grid) with the edgevault app in its Functions host — walking one Stack Edge device through its life. Each step
//! is checked against the state it must leave in Azure; the run exits non-zero unless every step held.
//!
//! With `--keep` the system stays up after the walk-through, and the demo prints the line that points a shell at it
//! and the commands to try next (each works as printed: `xtask/tests/demo_keep.rs` runs them); Ctrl-C stops it all.

use std::path::Path;
use std::time::Duration;

use edgevault_tests::binary;
use edgevault_tests::local_azure::{API_AUDIENCE, ARM_AUDIENCE, LocalAzure, eventually};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

struct Steps {
    count: usize,
    all_held: bool,
}

impl Steps {
    fn step(&mut self, what: &str, held: bool, detail: impl AsRef<str>) {
        self.count += 1;
        self.all_held &= held;
        println!("{} {:>2}. {what}", if held { "✓" } else { "✗" }, self.count);
        for line in detail.as_ref().lines().filter(|l| !l.is_empty()) {
            println!("       {line}");
        }
    }
}

struct Demo {
    la: LocalAzure,
    operator: String,
}

impl Demo {
    fn arm(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let token = self.la.token(&self.operator, ARM_AUDIENCE).expect("token");
        self.la.arm(&token, method, path, body).expect("ARM call")
    }

    fn info(&self, device: &str) -> Value {
        self.arm("POST", &format!("{device}/getExtendedInformation"), Some(json!({}))).1["properties"].clone()
    }

    fn alerts(&self) -> Vec<Value> {
        let peek =
            self.la.admin_get("/admin/servicebus/queues/edgevault/alerts/messages?limit=100").unwrap_or_default();
        let messages = peek["value"].as_array().cloned().unwrap_or_default();
        messages.iter().filter_map(|m| m["body"].as_str().and_then(|b| serde_json::from_str(b).ok())).collect()
    }

    fn cli(&self, args: &[&str], stdin: &str) -> (bool, String) {
        use std::io::Write;
        let mut child = std::process::Command::new(binary("edgevault-cli").expect("edgevault-cli is built"))
            .args(args)
            .envs(&self.la.env)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("edgevault-cli runs");
        child.stdin.take().expect("piped").write_all(stdin.as_bytes()).expect("stdin");
        let out = child.wait_with_output().expect("edgevault-cli finishes");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }
}

/// Plays the walk-through and returns whether every step held. With `interrupts` (`--keep`), everything stays up
/// afterwards until one of them arrives.
pub fn run(interrupts: Option<Interrupts>, screenshot: Option<&Path>) -> anyhow::Result<bool> {
    println!("starting local-azure with the edgevault app in its Functions host …\n");
    let la = LocalAzure::start_with_app(&[])?;
    let operator = la.principal("operator", &["*"])?;
    let d = Demo { la, operator };
    let mut s = Steps { count: 0, all_held: true };
    s.step(
        "local-azure is up: ARM, Key Vault, identity, Service Bus, Event Grid, Functions host",
        true,
        format!(
            "portal API {}  (App Service Authentication in front: callers sign in with Entra ID)",
            d.la.var("EDGEVAULT_API_BASE_URL")
        ),
    );

    let device = format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/ase-demo-01", d.la.resource_group_id());
    let body =
        json!({"location": d.la.var("AZURE_LOCATION"), "sku": {"name": "Edge", "tier": "Standard"}, "properties": {}});
    let (status, _) = d.arm("PUT", &device, Some(body));
    s.step("an operator creates a Stack Edge resource", status == 200 || status == 201, &device);

    let principal =
        eventually(LIMIT, || d.arm("GET", &device, None).1["identity"]["principalId"].as_str().map(str::to_string));
    s.step(
        "its creation event reaches ArmEvents; ResourceCreated enables its managed identity",
        principal.is_some(),
        format!("principal {}", principal.clone().unwrap_or_default()),
    );

    // Someone signed in but without rights on the device: refused before anything happens to it.
    let guest = d.la.user("guest")?;
    let guest_token = d.la.token(&guest, API_AUDIENCE)?;
    let request = json!({"resourceId": device});
    let (status, _, refused) = d.la.api_as(Some(&guest_token), "POST", "/activation-keys", Some(request.clone()))?;
    s.step(
        "a signed-in user without rights on the device asks for its key: 403 naming the permission, nothing marked",
        status == 403 && d.info(&device)["keyVaultSyncStatus"] == "KeyVaultNotConfigured",
        refused["error"]["message"].as_str().unwrap_or_default(),
    );

    let (status, headers, accepted) = d.la.api("POST", "/activation-keys", Some(request))?;
    let location = headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    s.step(
        "an operator with rights on it (ARM says so, asked on the operator's behalf) requests the key: 202 Accepted",
        status == 202 && !location.is_empty(),
        format!(
            "vault name {}; the device records who asked: {}",
            accepted["vaultName"].as_str().unwrap_or_default(),
            d.arm("GET", &device, None).1["tags"]["edgevault-requested-by"].as_str().unwrap_or_default()
        ),
    );

    let accepted_operation = accepted["operationId"].as_str().map(str::to_string);

    let done = eventually(LIMIT, || {
        let (_, _, body) = d.la.api("GET", &location, None).ok()?;
        matches!(body["status"].as_str(), Some("succeeded" | "failed")).then_some(body)
    })
    .unwrap_or_default();
    let info = d.info(&device);
    let vault_id = info["clientSecretStoreId"].as_str().unwrap_or_default().to_string();
    s.step(
        "polling the status URL: vault, lock and CIK provisioned, extended information synced, key issued",
        done["status"] == "succeeded" && info["keyVaultSyncStatus"] == "KeyVaultSynced",
        format!("vault {}\nkey expires {}", vault_id, done["expiresAt"].as_str().unwrap_or_default()),
    );

    let key = done["activationKey"].as_str().unwrap_or_default();
    let (ok, out) = d.cli(&["device", "open-key", "--resource-id", &device], key);
    s.step(
        "the device, as its own identity, reads its CIK and opens the key",
        ok,
        out.lines().next().unwrap_or_default(),
    );

    // Audit logging, made once the device is linked: a diagnostic setting on the vault sends its audit logs to a
    // zone-redundant storage account beside it, locked and tagged with the vault's name.
    let setting = format!(
        "{vault_id}/providers/Microsoft.Insights/diagnosticSettings/edgevault-audit?api-version=2021-05-01-preview"
    );
    let audit = eventually(LIMIT, || {
        let (status, body) = d.arm("GET", &setting, None);
        (status == 200).then_some(body)
    })
    .unwrap_or_default();
    let account = audit["properties"]["storageAccountId"].as_str().unwrap_or_default().to_string();
    let (status, stored) = d.arm("GET", &format!("{account}?api-version=2023-05-01"), None);
    let account_locked =
        d.arm("GET", &format!("{account}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete"), None).0
            == 200;
    s.step(
        "audit logging: the vault's diagnostic setting sends its audit logs to a locked zone-redundant storage account",
        status == 200 && stored["sku"]["name"] == "Standard_ZRS" && account_locked,
        format!(
            "setting edgevault-audit (category group {}) -> {}\naccount tagged edgevault-vault={}",
            audit["properties"]["logs"][0]["categoryGroup"].as_str().unwrap_or_default(),
            account,
            stored["tags"]["edgevault-vault"].as_str().unwrap_or_default()
        ),
    );

    // "Sync device secrets", as the device does it: its identity writes its BitLocker keys and BMC password into its
    // vault and asks for a re-sync; edgevault verifies and marks it. The device's right to ask is a grant here, as
    // in Azure it is the device's own (DataBoxEdge's) business.
    let principal = d.arm("GET", &device, None).1["identity"]["principalId"].as_str().unwrap_or_default().to_string();
    d.la.grant(&principal, &device, &["Microsoft.DataBoxEdge/dataBoxEdgeDevices/updateExtendedInformation/action"])?;
    let (ok, out) = d.cli(&["device", "sync-secrets", "--resource-id", &device, "--wait", "60"], "");
    s.step(
        "the device syncs its secrets (BitLocker recovery keys, BMC password) as its own identity: KeyVaultSynced",
        ok && out.contains("KeyVaultSynced"),
        out.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n"),
    );

    // A drift only the owner may fix, and a refresh that finds it and, once fixed, clears its alert.
    let (sub, rg) = (d.la.subscription().to_string(), d.la.var("AZURE_RESOURCE_GROUP").to_string());
    let refresh = format!("/devices/{sub}/{rg}/{}/refresh", device.rsplit('/').next().unwrap_or_default());
    let network = |action: &str| {
        let body = json!({"properties": {"networkAcls": {"defaultAction": action, "bypass": "None"}}});
        d.arm("PATCH", &vault_id, Some(body)).0 == 200
    };
    let denied = network("Deny");
    let (_, _, raised) = d.la.api("POST", &refresh, None)?;
    let allowed = network("Allow");
    let (_, _, cleared) = d.la.api("POST", &refresh, None)?;
    let names = |report: &Value, which: &str| report["alerts"][which].to_string();
    s.step(
        "the owner's network rules shut the device out: a refresh raises \"Couldn't access the Key Vault\"; rules \
         fixed, the next refresh clears it",
        denied
            && allowed
            && names(&raised, "raised").contains("KeyVaultNotAccessible")
            && names(&cleared, "resolved").contains("KeyVaultNotAccessible")
            && cleared["healthy"] == true,
        format!("raised {}, then resolved {}", names(&raised, "raised"), names(&cleared, "resolved")),
    );

    let lock = format!("{vault_id}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete");
    // The alerts so far (the refresh's) are not this incident's: only those after them count.
    let earlier = d.alerts().len();
    let refused = d.arm("DELETE", &vault_id, None).0 == 409;
    let unlocked = d.arm("DELETE", &lock, None).0 == 200;
    let deleted = matches!(d.arm("DELETE", &vault_id, None).0, 200 | 204);
    s.step(
        "an operator deletes the vault: the lock refuses, then lock removed and vault deleted",
        refused && unlocked && deleted,
        "",
    );

    // The worker resolves the alert as its last step, so wait for that, then check the state it vouches for.
    let incident = || d.alerts().into_iter().skip(earlier).collect::<Vec<_>>();
    let resolved = eventually(LIMIT, || {
        incident().iter().any(|a| a["state"] == "Resolved" && a["vault"] == vault_id.as_str()).then_some(())
    })
    .is_some();
    let back = (d.arm("GET", &vault_id, None).0 == 200
        && d.arm("GET", &lock, None).0 == 200
        && d.info(&device)["keyVaultSyncStatus"] == "KeyVaultSynced")
        .then_some(());
    let alerts = incident();
    let raised = alerts.iter().any(|a| a["state"] == "Raised" && a["vault"] == vault_id.as_str());
    let cik_kept = d.info(&device)["channelIntegrityKeyVersion"] == info["channelIntegrityKeyVersion"];
    s.step(
        "the delete event: an alert is raised, the vault recovered, lock and policies re-applied, the alert resolved",
        back.is_some() && raised && resolved && cik_kept,
        alerts
            .iter()
            .map(|a| format!("alert {} {}: {}", a["state"], a["severity"], a["what"]))
            .collect::<Vec<_>>()
            .join("\n"),
    );

    // Drift the sweep must find: the lock removed by hand.
    d.arm("DELETE", &lock, None);
    let accepted = d.la.run_function("RecoverySweep", "")?;
    let relocked = eventually(LIMIT, || (d.arm("GET", &lock, None).0 == 200).then_some(()));
    s.step(
        "the recovery sweep (timer) finds the missing lock and the worker puts it back",
        accepted == 202 && relocked.is_some(),
        "",
    );

    let (status, _, fleet) = d.la.api("GET", "/fleet.json", None)?;
    let row = fleet["devices"].as_array().and_then(|rows| rows.iter().find(|r| r["id"] == device.as_str()));
    let healthy = row.is_some_and(|r| r["health"] == "healthy");
    s.step(
        "the fleet page (GET /api/fleet, its JSON form here) shows the device healthy",
        status == 200 && healthy,
        format!(
            "{} device(s), {} open alert(s), {} recovery(ies) recorded",
            fleet["devices"].as_array().map_or(0, Vec::len),
            fleet["alerts"].as_array().map_or(0, Vec::len),
            fleet["recoveries"].as_array().map_or(0, Vec::len)
        ),
    );

    let (ok, out) = d.cli(&["status"], "");
    s.step("edgevault-cli status shows the fleet", ok, out);
    if let Some(png) = screenshot {
        let saved = fleet_screenshot(&d.la, png);
        s.step(
            "the fleet page, in headless Chromium, saved as a screenshot",
            saved.is_ok(),
            match saved {
                Ok(()) => png.display().to_string(),
                Err(err) => format!("{err:#}"),
            },
        );
    }
    println!("\n{}", if s.all_held { "every step held" } else { "some steps did NOT hold" });

    let Demo { mut la, .. } = d;
    if let Some(interrupts) = interrupts {
        let operation = accepted_operation.as_deref().unwrap_or_default();
        print!("\n{}", next_steps(&la, &device, operation)?);
        std::io::Write::flush(&mut std::io::stdout())?;
        if let Some(status) = interrupts.wait_or_exit(&mut la)? {
            anyhow::bail!("local-azure exited by itself ({status}); its log:\n{}", la.log().join("\n"));
        }
        println!("stopping local-azure and the app …");
    }
    let status = la.stop(STOP_LIMIT)?;
    anyhow::ensure!(status.success(), "local-azure stopped with {status}; its log:\n{}", la.log().join("\n"));
    Ok(s.all_held)
}

/// How long local-azure may take to stop the host, the handler (which finishes in-flight invocations) and itself.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// What `--keep` prints: the line that points a shell at the running local-azure, and the commands a newcomer tries
/// next. The API wants a signed-in caller: each curl line gets the operator's token from `local-azure token` inside
/// `$(…)`, as one would from `az account get-access-token` against Azure; nothing printed is a secret.
pub fn next_steps(la: &LocalAzure, device: &str, operation: &str) -> anyhow::Result<String> {
    let local_azure = quote(&binary("local-azure")?.display().to_string());
    let cli = quote(&binary("edgevault-cli")?.display().to_string());
    let data_dir = quote(&la.data_dir().display().to_string());
    let caller = la.api_caller().ok_or_else(|| anyhow::anyhow!("the demo called the API as nobody"))?;
    let key =
        format!(r#"-H "Authorization: Bearer $({local_azure} token --data-dir {data_dir} --principal {caller})""#);
    let request = quote(&json!({"resourceId": device}).to_string());
    Ok(format!(
        "{KEPT}\n\
         \n  eval \"$({local_azure} env --data-dir {data_dir})\"\n\
         \nthen try:\n\
         \n  # the status URL the portal polled: 200, \"succeeded\" and a freshly sealed activation key\
         \n  curl -si \"$EDGEVAULT_API_BASE_URL/activation-keys/{operation}\" {key}\
         \n  # ask again for the same device: 202 and a new status URL (its vault and CIK are reused)\
         \n  curl -si -X POST \"$EDGEVAULT_API_BASE_URL/activation-keys\" {key} -H 'content-type: application/json' -d {request}\
         \n  # the fleet page, saved as fleet.html to open in a browser (which, against local-azure, has no sign-in)\
         \n  curl -sf \"$EDGEVAULT_API_BASE_URL/fleet\" {key} -o fleet.html\
         \n  # the fleet: status, identity, vault, lock, soft delete, purge protection, CIK and sync per device\
         \n  {cli} status\n\
         \n{WAITING}\n"
    ))
}

/// The line before the commands `--keep` prints, and the one after them (what `demo_keep.rs` reads up to).
pub const KEPT: &str = "local-azure and the app keep running. In another shell, point the shell at them:";
pub const WAITING: &str = "Ctrl-C here stops local-azure, the Functions host and the handler.";

/// A word for a POSIX shell: as is when it is plainly safe, else single-quoted.
fn quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:,@=+".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// SIGINT and SIGTERM (and SIGCHLD, so a child that exits wakes the wait) held pending for [`Interrupts::wait_or_exit`]
/// instead of ending the process: Ctrl-C then stops local-azure the orderly way and removes its data directory.
pub struct Interrupts(libc::sigset_t);

impl Interrupts {
    /// Blocks the signals in this thread and in every thread started after it, so call it before any thread exists.
    /// Child processes start with them unblocked: std resets the signal mask of what it spawns.
    pub fn hold() -> std::io::Result<Interrupts> {
        // SAFETY: sigemptyset/sigaddset fill a set we own; pthread_sigmask changes only this thread's mask; signal()
        // with SIG_DFL installs no handler.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGCHLD] {
                libc::sigaddset(&mut set, signal);
            }
            let errno = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if errno != 0 {
                return Err(std::io::Error::from_raw_os_error(errno));
            }
            // An ignored signal is discarded, not left pending, and a shell ignores SIGINT in what it starts in the
            // background (`cargo xtask demo --keep &`): `kill -INT` must still stop it. Blocked now, the default
            // action never runs.
            for signal in [libc::SIGINT, libc::SIGTERM] {
                libc::signal(signal, libc::SIG_DFL);
            }
            Ok(Interrupts(set))
        }
    }

    /// Waits for SIGINT or SIGTERM (`None`), or for local-azure to exit by itself (its status).
    fn wait_or_exit(&self, la: &mut LocalAzure) -> std::io::Result<Option<std::process::ExitStatus>> {
        loop {
            // A SIGCHLD may be left pending from any earlier child (the build, edgevault-cli): look, then wait.
            if let Some(status) = la.exited() {
                return Ok(Some(status));
            }
            let mut signal = 0;
            // SAFETY: sigwait reads the set we own and writes the signal number into `signal`.
            match unsafe { libc::sigwait(&self.0, &mut signal) } {
                0 if signal == libc::SIGCHLD => continue,
                0 => return Ok(None),
                errno => return Err(std::io::Error::from_raw_os_error(errno)),
            }
        }
    }
}

/// Saves the fleet page as the demo's operator sees it: `tests/browser/fleet.cjs` with `SCREENSHOT_ONLY`, Debian's
/// Chromium through playwright-core (`tests/tools/install-playwright.sh` installs it when missing).
fn fleet_screenshot(la: &LocalAzure, png: &Path) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let installed = std::process::Command::new("bash").arg(root.join("tests/tools/install-playwright.sh")).status()?;
    anyhow::ensure!(installed.success(), "tests/tools/install-playwright.sh failed ({installed})");
    let tools = crate::target_dir().join("tools/playwright");
    let chromium = std::fs::read_to_string(tools.join("chromium-path"))?.trim().to_string();
    let caller = la.api_caller().ok_or_else(|| anyhow::anyhow!("the demo called the API as nobody"))?;
    let output = std::process::Command::new("node")
        .arg(root.join("tests/browser/fleet.cjs"))
        .env("PLAYWRIGHT_CORE", tools.join("node_modules/playwright-core"))
        .env("CHROMIUM", chromium)
        .env("FLEET_URL", format!("{}/fleet", la.var("EDGEVAULT_API_BASE_URL")))
        .env("BEARER", la.token(caller, API_AUDIENCE)?)
        .env("SCREENSHOT", std::path::absolute(png)?)
        .env("SCREENSHOT_ONLY", "1")
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "the browser failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
