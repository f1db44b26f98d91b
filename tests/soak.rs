//! A bounded soak through the whole system: many devices onboarded, some of their vaults deleted and recovered,
//! with a share of every Azure call failing (local-azure answers 503 with the given probability). Every device must
//! end in the correct state. Prints wall time, the handler's peak memory and the number of injected failures (each
//! one a retry or a redelivery).
//!
//! CI runs a small soak (`SOAK_DEVICES`, default 40; `SOAK_DELETIONS`, default 8; `SOAK_FAULT_RATE`, default 0.05);
//! `docs/RELIABILITY.md` records a large run (`SOAK_DEVICES=2000 SOAK_DELETIONS=200`).

use std::time::{Duration, Instant};

use edgevault_tests::local_azure::{ARM_AUDIENCE, LocalAzure, eventually};
use serde_json::{Value, json};

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Peak resident memory of a process, from `/proc/<pid>/status` (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_bounded_soak_with_injected_faults_ends_with_every_device_correct() {
    let devices: usize = setting("SOAK_DEVICES", 40);
    let deletions: usize = setting("SOAK_DELETIONS", 8).min(devices);
    let fault_rate: f64 = setting("SOAK_FAULT_RATE", 0.05);
    let limit = Duration::from_secs(setting("SOAK_LIMIT_SECONDS", 600));
    let la = LocalAzure::start_with_app(&[]).unwrap();
    let operator = la.principal("operator", &["*"]).unwrap();
    let arm = |method: &str, path: &str, body: Option<Value>| {
        let token = la.token(&operator, ARM_AUDIENCE).unwrap();
        la.arm(&token, method, path, body).unwrap()
    };
    let info = |device: &str| {
        arm("POST", &format!("{device}/getExtendedInformation"), Some(json!({}))).1["properties"].clone()
    };
    let started = Instant::now();

    // Faults on every service edgevault calls, but not on the operator's own setup calls below: those go straight
    // to local-azure with a token it minted, and a failed PUT here would only be the test's problem.
    for service in ["keyvault", "servicebus"] {
        let rule = json!({"service": service, "action": {"type": "error", "status": 503}, "probability": fault_rate});
        la.admin_post("/admin/faults", rule).unwrap();
    }
    let ids: Vec<String> = (0..devices)
        .map(|i| {
            let id = format!(
                "{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/ase-soak-{i:05}",
                la.resource_group_id()
            );
            let body = json!({"location": la.var("AZURE_LOCATION"), "sku": {"name": "Edge"}, "properties": {}});
            assert!(matches!(arm("PUT", &id, Some(body)).0, 200 | 201));
            id
        })
        .collect();
    // ARM faults from here on: the workers' calls are retried by the pipeline, then by redelivery.
    let rule = json!({"service": "arm", "operation": "Microsoft.*/write", "action": {"type": "error", "status": 503}, "probability": fault_rate});
    la.admin_post("/admin/faults", rule).unwrap();

    for id in &ids {
        eventually(limit, || arm("GET", id, None).1["identity"]["principalId"].as_str().map(drop)).expect("identity");
        let (status, _, body) = la.api("POST", "/activation-keys", Some(json!({"resourceId": id}))).unwrap();
        assert!(status == 202 || status == 503, "{status} {body}");
        if status == 503 {
            // The portal retries after Retry-After; so does the soak.
            let (status, _, body) = la.api("POST", "/activation-keys", Some(json!({"resourceId": id}))).unwrap();
            assert_eq!(status, 202, "{body}");
        }
    }
    let synced = |id: &String| info(id)["keyVaultSyncStatus"] == "KeyVaultSynced";
    for id in &ids {
        eventually(limit, || synced(id).then_some(())).unwrap_or_else(|| panic!("{id} never synced: {}", info(id)));
    }

    // Delete some vaults as an operator would (lock first) and let the system recover them.
    let deleted: Vec<(String, Value)> = ids
        .iter()
        .take(deletions)
        .map(|id| {
            let before = info(id);
            let vault = before["clientSecretStoreId"].as_str().unwrap().to_string();
            assert_eq!(
                arm(
                    "DELETE",
                    &format!("{vault}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete"),
                    None
                )
                .0,
                200
            );
            assert!(matches!(arm("DELETE", &vault, None).0, 200 | 204));
            (id.clone(), before)
        })
        .collect();
    for (id, before) in &deleted {
        let vault = before["clientSecretStoreId"].as_str().unwrap();
        let lock = format!("{vault}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete");
        eventually(limit, || {
            (arm("GET", vault, None).0 == 200 && arm("GET", &lock, None).0 == 200 && synced(id)).then_some(())
        })
        .unwrap_or_else(|| panic!("{vault} was not recovered"));
        assert_eq!(info(id)["channelIntegrityKeyVersion"], before["channelIntegrityKeyVersion"], "the CIK survived");
    }
    let wall = started.elapsed();

    let faults = la.admin_get("/admin/faults").unwrap();
    let fired: u64 = faults["value"].as_array().unwrap().iter().map(|r| r["fired"].as_u64().unwrap_or(0)).sum();
    la.admin_delete("/admin/faults").unwrap();
    // Every device ends correct: synced, one vault of its own, one CIK version, nothing dead-lettered.
    let token = la.token(&operator, ARM_AUDIENCE).unwrap();
    let vaults =
        la.arm_list(&token, &format!("{}/providers/Microsoft.KeyVault/vaults", la.resource_group_id())).unwrap();
    for id in &ids {
        let owned = vaults.iter().filter(|v| v["tags"]["edgevault-device"] == id.as_str()).count();
        assert_eq!(owned, 1, "{id}: one vault");
        assert!(synced(id), "{id}");
    }
    for id in ids.iter().step_by((devices / 10).max(1)) {
        assert_eq!(la.cik_versions(&operator, &info(id)).unwrap(), 1, "{id}: one CIK");
    }
    for queue in ["resource-created", "activation-key-requested", "vault-deleted"] {
        assert_eq!(la.queue_counts(queue).unwrap()["deadLetterMessageCount"], 0, "{queue}");
    }
    let peak = la.handler_pid().and_then(peak_rss_kib).unwrap_or_default();
    println!(
        "soak: {devices} devices onboarded, {deletions} vaults deleted and recovered, fault rate {fault_rate}: \
         {:.1} s wall, handler peak RSS {:.1} MiB, {fired} injected failures retried",
        wall.as_secs_f64(),
        peak as f64 / 1024.0
    );
}
