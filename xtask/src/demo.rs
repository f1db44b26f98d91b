//! The main job: the Key Vault lifecycle of one Stack Edge device on local-azure, step by step, each step checked
//! against the Azure state it should leave behind. Exits non-zero unless every step held.
//!
//! local-azure plays ARM, Key Vault and the managed-identity endpoint; the real `edgevault` handler is invoked as
//! the Functions host invokes it. (The Service Bus and Event Grid legs join when local-azure's part 2 lands.)

use edgevault::activation_key::ActivationKey;
use edgevault::messages::Command;
use edgevault::resource_id::ResourceId;
use edgevault_tests::scenario::{World, operation_id, world};
use serde_json::json;

struct Steps {
    count: usize,
    all_held: bool,
}

impl Steps {
    fn step(&mut self, what: &str, held: bool, detail: impl AsRef<str>) {
        self.count += 1;
        self.all_held &= held;
        let mark = if held { "✓" } else { "✗" };
        println!("{mark} {:>2}. {what}", self.count);
        if !detail.as_ref().is_empty() {
            println!("       {}", detail.as_ref());
        }
    }
}

pub fn run() -> anyhow::Result<bool> {
    println!("starting local-azure and the edgevault handler …");
    let w = world(&[]);
    let mut s = Steps { count: 0, all_held: true };
    s.step("local-azure is up", true, format!("admin API {}", w.la.admin));

    let device = w.create_device("ase-demo-01");
    s.step("an operator creates a Stack Edge resource", true, device.to_string());

    let (status, _) = w.deliver(
        "ResourceCreated",
        &Command::ResourceCreated { device: device.clone(), cause: "demo-write".into() },
        1,
    );
    let principal = principal(&w, &device);
    s.step(
        "ResourceCreated enables its system-assigned identity",
        status == 200 && principal.is_some(),
        format!("principal {}", principal.clone().unwrap_or_default()),
    );

    let request = Command::ActivationKeyRequested {
        device: device.clone(),
        operation_id: operation_id(&device),
        vault_name: None,
    };
    let (status, answer) = w.deliver("ActivationKeyRequested", &request, 1);
    let info = w.extended_info(&device);
    let vault_id = info["clientSecretStoreId"].as_str().unwrap_or_default().to_string();
    s.step(
        "ActivationKeyRequested provisions vault, lock and CIK and links them",
        status == 200 && info["keyVaultSyncStatus"] == "KeyVaultSynced",
        if status == 200 { format!("vault {vault_id}") } else { answer.to_string() },
    );

    let (_, vault) = w.arm("GET", &vault_id, None);
    let p = &vault["properties"];
    let lock = format!("{vault_id}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete");
    s.step(
        "the vault has soft delete (90 days), purge protection and a CanNotDelete lock",
        p["enableSoftDelete"] == true
            && p["softDeleteRetentionInDays"] == 90
            && p["enablePurgeProtection"] == true
            && w.arm("GET", &lock, None).0 == 200,
        "",
    );

    let res = w.api("GET", None, Some(&operation_id(&device)));
    let key = res["body"]["activationKey"].as_str().unwrap_or_default().to_string();
    s.step(
        "the portal's status URL returns the activation key",
        res["statusCode"] == 200 && res["body"]["status"] == "succeeded" && ActivationKey::parse(&key).is_ok(),
        format!("expires {}", res["body"]["expiresAt"].as_str().unwrap_or_default()),
    );

    let (ok, out) = w.cli(&["device", "open-key", "--resource-id", &device.to_string()], &key);
    s.step(
        "the device, as its own identity, reads its CIK and opens the key",
        ok,
        out.lines().next().unwrap_or_default(),
    );

    let blocked = w.arm("DELETE", &vault_id, None).0 == 409;
    let unlocked = w.arm("DELETE", &lock, None).0 == 200;
    let deleted = matches!(w.arm("DELETE", &vault_id, None).0, 200 | 204);
    s.step(
        "an operator deletes the vault (the lock refuses until removed)",
        blocked && unlocked && deleted,
        "vault soft-deleted",
    );

    let vault: ResourceId = vault_id.parse()?;
    let (status, answer) = w.deliver("VaultDeleted", &Command::VaultDeleted { vault, cause: "demo-delete".into() }, 1);
    let after = w.extended_info(&device);
    let recovered = w.arm("GET", &vault_id, None).0 == 200 && w.arm("GET", &lock, None).0 == 200;
    s.step(
        "VaultDeleted raises an alert, recovers the vault, re-applies the lock, keeps the CIK",
        status == 200 && recovered && after["channelIntegrityKeyVersion"] == info["channelIntegrityKeyVersion"],
        answer["Logs"].get(0).and_then(|l| l.as_str()).unwrap_or_default(),
    );

    let (status, answer) = w.handler.invoke("RecoverySweep", &json!({"Data": {"timer": {"IsPastDue": false}}}))?;
    s.step(
        "the recovery sweep finds the device healthy",
        status == 200 && answer["ReturnValue"]["findings"]["Healthy"] == 1,
        answer["ReturnValue"].to_string(),
    );

    let (ok, out) = w.cli(&["status"], "");
    s.step("edgevault-cli status shows the fleet", ok, out.lines().nth(1).unwrap_or_default());
    Ok(s.all_held)
}

fn principal(w: &World, device: &ResourceId) -> Option<String> {
    let (_, body) = w.arm("GET", &device.to_string(), None);
    body["identity"]["principalId"].as_str().map(str::to_string)
}
