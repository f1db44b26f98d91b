//! The fleet page in a real browser: headless Chromium (Debian's package) driven by playwright-core
//! (`tests/browser/fleet.cjs`), against the app on local-azure. A fleet of three devices is made the way it happens
//! in Azure — a healthy one; one whose vault was deleted and recovered; one whose vault could not be recovered (ARM
//! refuses the recovery) — and the page must show each in its state, narrow the list by the status filter, read
//! the same without JavaScript, fetch nothing from elsewhere, and save a screenshot (`target/browser/fleet.png`).
//!
//! Needs `bash tests/tools/install-playwright.sh` (`cargo xtask test` runs it first).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use edgevault_tests::local_azure::{API_AUDIENCE, ARM_AUDIENCE, LocalAzure, eventually};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

struct Fleet {
    la: LocalAzure,
    token: String,
}

impl Fleet {
    fn arm(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.la.arm(&self.token, method, path, body).expect("ARM call")
    }

    fn info(&self, device: &str) -> Value {
        self.arm("POST", &format!("{device}/getExtendedInformation"), Some(json!({}))).1["properties"].clone()
    }

    fn alerts(&self) -> Vec<Value> {
        let peek = self.la.admin_get("/admin/servicebus/queues/edgevault/alerts/messages?limit=100").unwrap();
        let messages = peek["value"].as_array().cloned().unwrap_or_default();
        messages.iter().filter_map(|m| m["body"].as_str().and_then(|b| serde_json::from_str(b).ok())).collect()
    }

    /// Creates a device and activates it through the API; returns its id and its vault's.
    fn activated(&self, name: &str) -> (String, String) {
        let device =
            format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}", self.la.resource_group_id());
        let body = json!({"location": self.la.var("AZURE_LOCATION"), "sku": {"name": "Edge"}, "properties": {}});
        let (status, answer) = self.arm("PUT", &device, Some(body));
        assert!(matches!(status, 200 | 201), "create {name}: {status} {answer}");
        let (status, _, accepted) =
            self.la.api("POST", "/activation-keys", Some(json!({"resourceId": device}))).unwrap();
        assert_eq!(status, 202, "activate {name}: {accepted}");
        let vault = eventually(LIMIT, || {
            let info = self.info(&device);
            (info["keyVaultSyncStatus"] == "KeyVaultSynced")
                .then(|| info["clientSecretStoreId"].as_str().map(str::to_string))?
        })
        .unwrap_or_else(|| panic!("{name} was not activated within {LIMIT:?}"));
        (device, vault)
    }

    /// What an operator does to delete a locked vault: the lock first, then the vault.
    fn delete_vault(&self, vault: &str) {
        let lock = format!("{vault}/providers/Microsoft.Authorization/locks/{}", edgevault::lifecycle::LOCK_NAME);
        assert_eq!(self.arm("DELETE", &lock, None).0, 200);
        assert!(matches!(self.arm("DELETE", vault, None).0, 200 | 204));
    }
}

#[test]
fn the_fleet_page_shows_each_device_in_its_state_and_filters_in_headless_chromium() {
    let tools = target_dir().join("tools/playwright");
    let playwright = tools.join("node_modules/playwright-core");
    let chromium = std::fs::read_to_string(tools.join("chromium-path")).unwrap_or_default().trim().to_string();
    assert!(
        playwright.is_dir() && !chromium.is_empty(),
        "playwright-core or Chromium is missing: run `bash tests/tools/install-playwright.sh` (`cargo xtask test` does)"
    );

    let la = LocalAzure::start_with_app(&[]).unwrap();
    let operator = la.principal("operator", &["*"]).unwrap();
    let token = la.token(&operator, ARM_AUDIENCE).unwrap();
    let fleet = Fleet { la, token };
    let operator = operator.as_str();

    fleet.activated("ase-fleet-healthy");
    let (_, recovered_vault) = fleet.activated("ase-fleet-recovered");
    let (lost, lost_vault) = fleet.activated("ase-fleet-lost");

    // Recovered: the delete event brings the vault back and the worker resolves the alert as its last step.
    fleet.delete_vault(&recovered_vault);
    eventually(LIMIT, || {
        fleet.alerts().iter().any(|a| a["state"] == "Resolved" && a["vault"] == recovered_vault.as_str()).then_some(())
    })
    .expect("the recovered vault's alert was resolved");

    // Past recovery: ARM refuses this vault's recovery, so the worker marks the device failed with a critical alert.
    let name = lost_vault.rsplit('/').next().unwrap();
    fleet
        .la
        .admin_post(
            "/admin/faults",
            json!({"service": "arm", "method": "PUT", "pathRegex": format!("(?i)/vaults/{name}$"),
                   "action": {"type": "error", "status": 409, "code": "Conflict"}}),
        )
        .unwrap();
    fleet.delete_vault(&lost_vault);
    eventually(LIMIT, || (fleet.info(&lost)["keyVaultSyncStatus"] == "KeyVaultSyncFailed").then_some(()))
        .expect("the device whose vault could not be recovered was marked failed");

    let screenshot = target_dir().join("browser/fleet.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let url = format!("{}/fleet", fleet.la.var("EDGEVAULT_API_BASE_URL"));
    // The operator's sign-in: App Service Authentication takes a bearer token from any client, a browser's too.
    let bearer = fleet.la.token(operator, API_AUDIENCE).unwrap();
    let expect = json!({"ase-fleet-healthy": "healthy", "ase-fleet-recovered": "healthy", "ase-fleet-lost": "failed"});
    let output = Command::new("node")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser/fleet.cjs"))
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("CHROMIUM", &chromium)
        .env("FLEET_URL", &url)
        .env("BEARER", &bearer)
        .env("SCREENSHOT", &screenshot)
        .env("EXPECT", expect.to_string())
        .env("FILTER", json!({"status": "failed", "devices": ["ase-fleet-lost"]}).to_string())
        .env("RECOVERED", "ase-fleet-recovered")
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    assert!(output.status.success(), "the browser checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("0 failed"), "{stdout}");
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot: {} bytes", png.len());
}
