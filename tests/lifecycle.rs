//! The Key Vault lifecycle end to end against local-azure as a real process: the real `edgevault` handler is
//! invoked the way the Functions host invokes it (worker messages, API requests), and every assertion reads the
//! resulting state back from Azure (ARM and the Key Vault data plane), never from logs.

use edgevault::activation_key::{ActivationKey, Cik};
use edgevault::messages::Command;
use edgevault::resource_id::ResourceId;
use edgevault::vault_name::VaultName;
use edgevault_tests::local_azure::{ARM_AUDIENCE, VAULT_AUDIENCE};
use edgevault_tests::openapi;
use edgevault_tests::scenario::{cik_url, operation_id, world};
use serde_json::{Value, json};

#[test]
fn activation_provisions_everything_the_device_needs_and_replays_change_nothing() {
    let w = world(&[]);
    let device = w.create_device("ase-one");
    let info = w.provision(&device);

    // Extended information links the vault and the CIK.
    assert_eq!(info["keyVaultSyncStatus"], "KeyVaultSynced", "{info}");
    let vault_id: ResourceId = info["clientSecretStoreId"].as_str().unwrap().parse().unwrap();
    assert!(info["channelIntegrityKeyName"].as_str().unwrap().starts_with("ase-cik-"));

    // The vault: same subscription, group and location as the device; standard; soft delete 90 days; purge
    // protection; tagged with its device; the device may get and set secrets, nothing else; edgevault may not purge.
    let (status, vault) = w.arm("GET", &vault_id.to_string(), None);
    assert_eq!(status, 200, "{vault}");
    assert_eq!(vault_id.resource_group(), device.resource_group());
    assert_eq!(vault["location"], w.la.var("AZURE_LOCATION"));
    let props = &vault["properties"];
    assert_eq!(props["sku"]["name"], "standard");
    assert_eq!(props["enableSoftDelete"], true);
    assert_eq!(props["softDeleteRetentionInDays"], 90);
    assert_eq!(props["enablePurgeProtection"], true);
    assert_eq!(vault["tags"]["edgevault-device"], device.to_string());
    let principal = w.device_principal(&device);
    let policies = props["accessPolicies"].as_array().unwrap();
    let policy_of = |oid: &str| policies.iter().find(|p| p["objectId"] == oid).cloned();
    let device_policy = policy_of(&principal).expect("the device has a policy");
    assert_eq!(device_policy["permissions"]["secrets"], json!(["get", "set"]));
    assert_eq!(device_policy["permissions"]["keys"], json!([]));
    let own = policy_of(w.la.var("EDGEVAULT_PRINCIPAL_ID")).expect("edgevault has a policy");
    assert!(!own["permissions"]["secrets"].as_array().unwrap().iter().any(|p| p == "purge" || p == "all"));

    // The lock.
    let (status, lock) =
        w.arm("GET", &format!("{vault_id}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete"), None);
    assert_eq!(status, 200, "{lock}");
    assert_eq!(lock["properties"]["level"], "CanNotDelete");

    // The CIK: 32 bytes, readable by the device's identity.
    let (status, secret) = w.read_secret(&principal, &cik_url(&info));
    assert_eq!(status, 200, "{secret}");
    let cik = Cik::from_secret_value(secret["value"].as_str().unwrap()).expect("32 bytes of base64");

    // The status API seals an activation key the device opens with that CIK.
    let res = w.api("GET", None, Some(&operation_id(&device)));
    assert_eq!(res["statusCode"], 200, "{res}");
    assert_eq!(res["body"]["status"], "succeeded");
    let key = ActivationKey::parse(res["body"]["activationKey"].as_str().unwrap()).unwrap();
    let claims = key.open(&cik, time::OffsetDateTime::now_utc().unix_timestamp()).expect("the device opens its key");
    assert_eq!(claims.resource_id, device);
    assert_eq!(claims.cik.secret_version, info["channelIntegrityKeyVersion"].as_str().unwrap());

    // Replaying both messages twice changes nothing: same vault, same CIK, one secret version.
    let before = (w.arm("GET", &vault_id.to_string(), None).1, w.extended_info(&device));
    for _ in 0..2 {
        w.provision(&device);
    }
    let after = (w.arm("GET", &vault_id.to_string(), None).1, w.extended_info(&device));
    assert_eq!(before, after);
    let versions_url = format!(
        "{}/secrets/{}/versions",
        info["clientSecretStoreUrl"].as_str().unwrap().trim_end_matches('/'),
        info["channelIntegrityKeyName"].as_str().unwrap()
    );
    let edgevault_token = w.la.token(w.la.var("EDGEVAULT_PRINCIPAL_ID"), VAULT_AUDIENCE).unwrap();
    let (status, versions) = w.la.vault(&edgevault_token, "GET", &versions_url, None).unwrap();
    assert_eq!(status, 200, "edgevault lists names (never values) to check the device's secrets: {versions}");
    assert_eq!(versions["value"].as_array().unwrap().len(), 1, "one CIK version: {versions}");

    // Secrets stay secret: neither the CIK nor the activation key reached the handler's log.
    let log = w.handler.log().join("\n");
    assert!(!log.contains(secret["value"].as_str().unwrap()), "the CIK leaked into the log");
    assert!(!log.contains(key.expose()), "the activation key leaked into the log");
}

#[test]
fn a_device_identity_reads_its_own_cik_and_nothing_else() {
    let w = world(&[]);
    let (a, b) = (w.create_device("ase-a"), w.create_device("ase-b"));
    let (info_a, info_b) = (w.provision(&a), w.provision(&b));
    let principal_a = w.device_principal(&a);
    assert_eq!(w.read_secret(&principal_a, &cik_url(&info_a)).0, 200);
    assert_eq!(w.read_secret(&principal_a, &cik_url(&info_b)).0, 403, "another device's vault is closed to it");
    let token = w.la.token(&principal_a, VAULT_AUDIENCE).unwrap();
    let vault_url = info_a["clientSecretStoreUrl"].as_str().unwrap().trim_end_matches('/').to_string();
    let (status, _) =
        w.la.vault(&token, "PUT", &format!("{vault_url}/secrets/BMCDefaultUserPassword"), Some(json!({"value": "x"})))
            .unwrap();
    assert_eq!(status, 200, "the device writes its own secrets");
    let other_url = info_b["clientSecretStoreUrl"].as_str().unwrap().trim_end_matches('/').to_string();
    let (status, _) =
        w.la.vault(&token, "PUT", &format!("{other_url}/secrets/planted"), Some(json!({"value": "x"}))).unwrap();
    assert_eq!(status, 403, "but not into another device's vault");
    let (status, _) = w.la.vault(&token, "GET", &format!("{vault_url}/secrets"), None).unwrap();
    assert_eq!(status, 403, "the device cannot list secrets");
    let (status, _) =
        w.la.vault(&token, "DELETE", &format!("{vault_url}/secrets/BMCDefaultUserPassword"), None).unwrap();
    assert_eq!(status, 403, "nor delete them");
}

/// "Sync device secrets": the device, as its own identity (`edgevault-cli device sync-secrets`), writes its secrets
/// and asks for a re-sync; the worker verifies the linked CIK and the secrets and marks it synced. Without its
/// secrets the device is marked failed with one alert, which the next good sync resolves with the same id. A vault
/// with the policy edgevault used to grant (secrets get only) is drift the repair fixes.
#[test]
fn a_device_syncs_its_secrets_and_the_worker_verifies_them() {
    use edgevault_tests::scenario::{grant_device_sync, queued_alerts};
    let w = world(&[]);
    let device = w.create_device("ase-sync");
    let info = w.provision(&device);
    let principal = w.device_principal(&device);
    grant_device_sync(&w.la, &principal, &device);
    let sync = Command::from(edgevault::messages::SecretsSyncRequested { device: device.clone(), cause: "e1".into() });

    // Asked for a sync before writing anything: failed, with the reason and one alert.
    let (ok, out) =
        w.cli(&["device", "sync-secrets", "--resource-id", &device.to_string(), "--no-write", "--wait", "0"], "");
    assert!(ok, "{out}");
    assert_eq!(w.extended_info(&device)["keyVaultSyncStatus"], "KeyVaultSyncPending", "the device asked");
    assert_eq!(w.deliver("ActivationKeyRequested", &sync, 1).0, 200);
    assert_eq!(w.extended_info(&device)["keyVaultSyncStatus"], "KeyVaultSyncFailed");
    let (_, body) = w.arm("GET", &device.to_string(), None);
    let reason = body["tags"]["edgevault-sync-error"].as_str().unwrap_or_default();
    assert!(reason.contains("SystemVolumeBitLockerRecoveryKey"), "{body}");
    assert!(body["tags"]["edgevault-alerts"].as_str().unwrap_or_default().starts_with("SecretsNotRetrieved@"));
    let raised: Vec<Value> = queued_alerts(&w.la).into_iter().filter(|a| a["kind"] == "SecretsNotRetrieved").collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(
        raised[0]["what"].as_str().unwrap().split(" Missing").next(),
        Some("Couldn't retrieve secret(s) from the Key Vault.")
    );

    // The device writes its secrets with its own identity and asks again: synced, the alert resolved.
    let (ok, out) = w.cli(&["device", "sync-secrets", "--resource-id", &device.to_string(), "--wait", "0"], "");
    assert!(ok, "{out}");
    let vault_url = info["clientSecretStoreUrl"].as_str().unwrap().trim_end_matches('/').to_string();
    for name in edgevault::lifecycle::DEVICE_SECRET_NAMES {
        let (status, _) = w.read_secret(&principal, &format!("{vault_url}/secrets/{name}"));
        assert_eq!(status, 200, "{name} is in the vault, readable by the device");
    }
    let again = Command::from(edgevault::messages::SecretsSyncRequested { device: device.clone(), cause: "e2".into() });
    assert_eq!(w.deliver("ActivationKeyRequested", &again, 1).0, 200);
    let after = w.extended_info(&device);
    assert_eq!(after["keyVaultSyncStatus"], "KeyVaultSynced");
    assert_eq!(after["channelIntegrityKeyVersion"], info["channelIntegrityKeyVersion"], "the same CIK stays linked");
    let (_, body) = w.arm("GET", &device.to_string(), None);
    assert!(
        body["tags"].get("edgevault-alerts").is_none() && body["tags"].get("edgevault-sync-error").is_none(),
        "{body}"
    );
    let alerts: Vec<Value> = queued_alerts(&w.la).into_iter().filter(|a| a["kind"] == "SecretsNotRetrieved").collect();
    assert_eq!(alerts.len(), 2, "raised once, resolved once: {alerts:?}");
    assert_eq!((alerts[1]["state"].as_str(), &alerts[1]["id"]), (Some("Resolved"), &alerts[0]["id"]));

    // The policy edgevault used to grant (secrets get only) is drift: the repair gives the device set again.
    let vault_id = info["clientSecretStoreId"].as_str().unwrap();
    let narrow = json!({"properties": {"accessPolicies": [{"tenantId": w.la.var("AZURE_TENANT_ID"), "objectId": principal,
        "permissions": {"secrets": ["get"]}}]}});
    assert_eq!(w.arm("PUT", &format!("{vault_id}/accessPolicies/replace"), Some(narrow)).0, 200);
    let token = w.la.token(&principal, VAULT_AUDIENCE).unwrap();
    let write = |value: &str| {
        w.la.vault(&token, "PUT", &format!("{vault_url}/secrets/BMCDefaultUserPassword"), Some(json!({"value": value})))
            .unwrap()
            .0
    };
    assert_eq!(write("y"), 403, "with get only the device cannot sync");
    let repair = Command::from(edgevault::messages::ReconcileVault {
        device: device.clone(),
        findings: vec![edgevault::lifecycle::Finding::AccessPolicyMissing],
        sweep_id: "s1".into(),
    });
    assert_eq!(w.deliver("ActivationKeyRequested", &repair, 1).0, 200);
    assert_eq!(write("z"), 200, "the repair restored get and set");
}

#[test]
fn a_deleted_vault_is_recovered_with_its_lock_policies_and_cik() {
    let w = world(&[]);
    let device = w.create_device("ase-recover");
    let info = w.provision(&device);
    let vault_id: ResourceId = info["clientSecretStoreId"].as_str().unwrap().parse().unwrap();

    // The lock stops a plain delete; an operator removes it first.
    assert_eq!(w.arm("DELETE", &vault_id.to_string(), None).0, 409, "ScopeLocked");
    let lock = format!("{vault_id}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete");
    assert_eq!(w.arm("DELETE", &lock, None).0, 200);
    assert!(matches!(w.arm("DELETE", &vault_id.to_string(), None).0, 200 | 204));
    assert_eq!(w.arm("GET", &vault_id.to_string(), None).0, 404);

    // edgevault's own identity cannot purge the soft-deleted vault.
    let edgevault = w.la.token(w.la.var("EDGEVAULT_PRINCIPAL_ID"), ARM_AUDIENCE).unwrap();
    let purge = format!(
        "/subscriptions/{}/providers/Microsoft.KeyVault/locations/{}/deletedVaults/{}/purge",
        w.la.subscription(),
        w.la.var("AZURE_LOCATION"),
        vault_id.name().unwrap()
    );
    let (status, answer) = w.la.arm(&edgevault, "POST", &purge, None).unwrap();
    assert_eq!(status, 403, "{answer}");

    let command =
        Command::from(edgevault::messages::VaultDeleted { vault: vault_id.clone(), cause: "event-delete".into() });
    let (status, answer) = w.deliver("VaultDeleted", &command, 1);
    assert_eq!(status, 200, "{answer}");

    let (status, vault) = w.arm("GET", &vault_id.to_string(), None);
    assert_eq!(status, 200, "the vault is back: {vault}");
    assert_eq!(w.arm("GET", &lock, None).0, 200, "the lock is re-applied");
    let after = w.extended_info(&device);
    assert_eq!(after["channelIntegrityKeyVersion"], info["channelIntegrityKeyVersion"], "the CIK is intact");
    assert_eq!(after["keyVaultSyncStatus"], "KeyVaultSynced");
    let principal = w.device_principal(&device);
    assert_eq!(w.read_secret(&principal, &cik_url(&after)).0, 200, "the device reads its CIK again");

    // Replaying the event changes nothing.
    let (status, _) = w.deliver("VaultDeleted", &command, 2);
    assert_eq!(status, 200);
    assert_eq!(w.extended_info(&device), after);
}

/// The worker creates a vault without first looking for a soft-deleted one; Azure's 409 for a name a soft-deleted
/// vault holds is what sends it to look. Here the activation request arrives after the device's vault was deleted
/// (before any `VaultDeleted` event), and a second device asks for a name another's soft-deleted vault holds.
#[test]
fn a_name_held_by_a_soft_deleted_vault_recovers_the_devices_own_and_refuses_anothers() {
    let w = world(&[]);
    let device = w.create_device("ase-held");
    let info = w.provision(&device);
    let vault_id: ResourceId = info["clientSecretStoreId"].as_str().unwrap().parse().unwrap();
    let lock = format!("{vault_id}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete");
    w.unlock_and_delete_vault(&vault_id);

    let again = Command::from(edgevault::messages::ActivationKeyRequested {
        device: device.clone(),
        operation_id: operation_id(&device),
        vault_name: Some(VaultName::parse(vault_id.name().unwrap()).unwrap()),
    });
    let (status, answer) = w.deliver("ActivationKeyRequested", &again, 1);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(w.arm("GET", &vault_id.to_string(), None).0, 200, "the device's own vault is recovered");
    assert_eq!(w.arm("GET", &lock, None).0, 200, "and locked again");
    let after = w.extended_info(&device);
    assert_eq!(after["channelIntegrityKeyVersion"], info["channelIntegrityKeyVersion"], "with the same CIK");
    assert_eq!(after["keyVaultSyncStatus"], "KeyVaultSynced");

    // Another device's request for a name that someone else's soft-deleted vault holds creates nothing.
    let other = w.create_device("ase-held-2");
    let created =
        Command::from(edgevault::messages::ResourceCreated { device: other.clone(), cause: "event-2".into() });
    assert_eq!(w.deliver("ResourceCreated", &created, 1).0, 200);
    let foreign = format!("{}/providers/Microsoft.KeyVault/vaults/held-by-another", w.la.resource_group_id());
    let body = json!({"location": w.la.var("AZURE_LOCATION"), "properties": {"tenantId": w.la.var("AZURE_TENANT_ID"),
        "sku": {"family": "A", "name": "standard"}, "accessPolicies": []}});
    assert!(matches!(w.arm("PUT", &foreign, Some(body)).0, 200 | 201));
    assert!(matches!(w.arm("DELETE", &foreign, None).0, 200 | 204));
    let refused = Command::from(edgevault::messages::ActivationKeyRequested {
        device: other.clone(),
        operation_id: operation_id(&other),
        vault_name: Some(VaultName::parse("held-by-another").unwrap()),
    });
    let (status, answer) = w.deliver("ActivationKeyRequested", &refused, 1);
    assert_ne!(status, 200, "a permanent refusal fails the invocation: {answer}");
    assert_eq!(w.arm("GET", &foreign, None).0, 404, "the soft-deleted vault is neither recovered nor replaced");
    assert_eq!(w.extended_info(&other)["keyVaultSyncStatus"], "KeyVaultSyncFailed");
    let (_, device_body) = w.arm("GET", &other.to_string(), None);
    let reason = device_body["tags"]["edgevault-sync-error"].as_str().unwrap_or_default();
    assert!(reason.contains("VaultNameReserved") || reason.contains("reserves the name"), "{device_body}");
}

#[test]
fn a_purged_vault_marks_the_device_failed_and_the_api_says_why() {
    let w = world(&[]);
    let device = w.create_device("ase-purged");
    let info = w.provision(&device);
    let vault_id: ResourceId = info["clientSecretStoreId"].as_str().unwrap().parse().unwrap();
    w.unlock_and_delete_vault(&vault_id);
    // Past the 90-day retention local-azure purges the vault, as Azure does.
    w.la.admin_post("/admin/clock/advance", json!({"seconds": 91 * 86_400})).unwrap();

    let command =
        Command::from(edgevault::messages::VaultDeleted { vault: vault_id.clone(), cause: "event-delete".into() });
    let (status, answer) = w.deliver("VaultDeleted", &command, 1);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(w.extended_info(&device)["keyVaultSyncStatus"], "KeyVaultSyncFailed");
    let res = w.api("GET", None, Some(&operation_id(&device)));
    assert_eq!(res["body"]["status"], "failed", "{res}");
    assert!(res["body"]["error"]["message"].as_str().unwrap().contains("cannot be recovered"), "{res}");
}

#[test]
fn a_pre_integration_device_is_never_touched() {
    let w = world(&[("EDGEVAULT_CUTOVER", "2999-01-01T00:00:00Z")]);
    let device = w.create_device("ase-legacy");
    let command =
        Command::from(edgevault::messages::ResourceCreated { device: device.clone(), cause: "event-legacy".into() });
    let (status, answer) = w.deliver("ResourceCreated", &command, 1);
    assert_eq!(status, 200, "{answer}");
    let (_, body) = w.arm("GET", &device.to_string(), None);
    assert!(body["identity"]["principalId"].is_null(), "no identity was enabled: {body}");
    let res = w.api("POST", Some(json!({"resourceId": device.to_string()})), None);
    assert_eq!(res["statusCode"], 409, "{res}");
    assert_eq!(res["body"]["error"]["code"], "PreIntegrationResource");
    assert_eq!(w.extended_info(&device)["keyVaultSyncStatus"], "KeyVaultNotConfigured", "nothing changed");
}

#[test]
fn bad_activation_requests_get_a_clear_4xx_and_create_nothing() {
    let w = world(&[]);
    let device = w.create_device("ase-names");
    // A vault that exists, and one that is soft-deleted: both names are unavailable.
    let vault_body = |name: &str| {
        json!({"location": w.la.var("AZURE_LOCATION"), "properties": {"tenantId": w.la.var("AZURE_TENANT_ID"),
            "sku": {"family": "A", "name": "standard"}, "accessPolicies": []}, "name": name})
    };
    let taken = format!("{}/providers/Microsoft.KeyVault/vaults/taken-vault-1", w.la.resource_group_id());
    assert!(matches!(w.arm("PUT", &taken, Some(vault_body("taken-vault-1"))).0, 200 | 201));
    let deleted = format!("{}/providers/Microsoft.KeyVault/vaults/deleted-vault-1", w.la.resource_group_id());
    assert!(matches!(w.arm("PUT", &deleted, Some(vault_body("deleted-vault-1"))).0, 200 | 201));
    assert!(matches!(w.arm("DELETE", &deleted, None).0, 200 | 204));
    let vaults_before =
        w.arm("GET", &format!("{}/providers/Microsoft.KeyVault/vaults", w.la.resource_group_id()), None).1;

    let id = device.to_string();
    let cases = [
        (json!({"resourceId": id, "vaultName": "ab"}), 400, "VaultNameLength"),
        (json!({"resourceId": id, "vaultName": "a".repeat(25)}), 400, "VaultNameLength"),
        (json!({"resourceId": id, "vaultName": "bad_name"}), 400, "VaultNameCharacters"),
        (json!({"resourceId": id, "vaultName": "9lives"}), 400, "VaultNameStart"),
        (json!({"resourceId": id, "vaultName": "ends-"}), 400, "VaultNameEnd"),
        (json!({"resourceId": id, "vaultName": "two--hyphens"}), 400, "VaultNameConsecutiveHyphens"),
        (json!({"resourceId": id, "vaultName": "taken-vault-1"}), 409, "VaultNameUnavailable"),
        (json!({"resourceId": id, "vaultName": "deleted-vault-1"}), 409, "VaultNameUnavailable"),
        (json!({"resourceId": taken}), 400, "NotAStackEdgeResource"),
        (json!({"resourceId": "/subscriptions/../etc"}), 400, "InvalidResourceId"),
        (json!({"resourceId": id.replace("ase-names", "ase-missing")}), 404, "DeviceNotFound"),
        (json!({"resourceId": id, "extra": 1}), 400, "InvalidRequestBody"),
    ];
    for (body, status, code) in cases {
        let res = w.api("POST", Some(body.clone()), None);
        assert_eq!(res["statusCode"], status, "{body}: {res}");
        assert_eq!(res["body"]["error"]["code"], code, "{body}: {res}");
    }
    let vaults_after =
        w.arm("GET", &format!("{}/providers/Microsoft.KeyVault/vaults", w.la.resource_group_id()), None).1;
    assert_eq!(vaults_before, vaults_after, "no vault was created");
    assert_eq!(w.extended_info(&device)["keyVaultSyncStatus"], "KeyVaultNotConfigured", "the device was not marked");
}

#[test]
fn the_sweep_finds_a_healthy_fleet_healthy() {
    let w = world(&[]);
    let device = w.create_device("ase-sweep");
    w.provision(&device);
    let (started, pages) = w.sweep();
    assert_eq!(started["ReturnValue"]["subscriptions"], 1, "{started}");
    assert!(started["ReturnValue"]["sweepId"].as_str().unwrap().starts_with("sweep-20"), "{started}");
    assert_eq!(pages.len(), 1, "{pages:?}");
    let answer = &pages[0];
    assert_eq!(answer["devices"], 1, "{answer}");
    assert_eq!(answer["findings"]["Healthy"], 1, "{answer}");
    assert_eq!(answer["commands"], 0, "{answer}");
    assert_eq!(answer["next"], false, "{answer}");
}

#[test]
fn a_throttled_sweep_paces_itself_to_arm_and_loses_no_device() {
    // The production retry count: what is under test is how the handler meets ARM's throttling, not how it gives up.
    let w = world(&[("EDGEVAULT_RETRY_MAX_RETRIES", "6")]);
    let devices: Vec<ResourceId> = (0..8).map(|i| w.create_device(&format!("ase-paced-{i}"))).collect();
    for device in &devices {
        w.provision(device);
    }
    // ARM as it throttles: 4 requests/s with a bucket of 4 for each operation type, `429` + `Retry-After` and the
    // remaining-requests headers. The sweep needs 25 ARM calls, 8 of them writes (each device's
    // `getExtendedInformation`, a POST), so it must meet an empty bucket several times.
    let limit =
        w.la.admin_post(
            "/admin/faults",
            json!({"service": "arm", "action": {"type": "rateLimit", "perSecond": 4, "burst": 4}}),
        )
        .unwrap();
    let (_, pages) = w.sweep();
    let rules = w.la.admin_get("/admin/faults").unwrap();
    let refused =
        rules["value"].as_array().unwrap().iter().find(|r| r["id"] == limit["id"]).unwrap()["fired"].as_u64().unwrap();
    let answer = &pages[0];
    assert_eq!(answer["devices"], 8, "{answer}");
    assert_eq!(answer["findings"]["Healthy"], 8, "every device inspected: {answer}");
    assert_eq!(answer["errors"], 0, "{answer}");
    assert!(refused > 0, "the rate limit never bit, so this tested nothing");
    // Unpaced, every inspection in flight is refused each time the bucket is empty: 31–35 refusals measured with
    // the pacer taken out (one bucket for every type then). Paced to the remaining-requests headers, 5: the first
    // requests, sent before any answer said what was left (14–17 while local-azure kept one bucket for reads and
    // writes, which ARM, and so the pacer, count apart).
    assert!(refused <= 12, "{refused} requests refused: the handler did not pace itself to ARM's headers");
}

#[test]
fn the_device_side_opens_its_key_and_status_shows_the_fleet() {
    let w = world(&[]);
    let device = w.create_device("ase-cli");
    let info = w.provision(&device);
    let res = w.api("GET", None, Some(&operation_id(&device)));
    let key = res["body"]["activationKey"].as_str().unwrap().to_string();

    let (ok, out) = w.cli(&["device", "open-key", "--resource-id", &device.to_string()], &key);
    assert!(ok, "{out}");
    assert!(
        out.contains(&device.to_string()) && out.contains(info["channelIntegrityKeyVersion"].as_str().unwrap()),
        "{out}"
    );
    let principal = w.device_principal(&device);
    let (_, secret) = w.read_secret(&principal, &cik_url(&info));
    assert!(!out.contains(secret["value"].as_str().unwrap()), "the CIK is never printed");

    // A forged key — one character of the sealed part changed, or cut short — is refused, saying why.
    let at = key.len() - 10;
    let flipped = if key.as_bytes()[at] == b'A' { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &key[..at], &key[at + 1..]);
    let (ok, out) = w.cli(&["device", "open-key", "--resource-id", &device.to_string()], &tampered);
    assert!(!ok && out.contains("altered"), "{out}");
    let (ok, out) = w.cli(&["device", "open-key", "--resource-id", &device.to_string()], &key[..key.len() / 2]);
    assert!(!ok && (out.contains("malformed") || out.contains("altered")), "{out}");

    // A key for another device does not open as this one.
    let other = w.create_device("ase-cli-2");
    w.provision(&other);
    let (ok, out) = w.cli(&["device", "open-key", "--resource-id", &other.to_string()], &key);
    assert!(!ok, "{out}");

    let (ok, out) = w.cli(&["status"], "");
    assert!(ok, "{out}");
    let row = out.lines().find(|l| l.starts_with("ase-cli ")).unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("KeyVaultSynced") && row.contains("healthy"), "{row}");
    assert!(!row.contains("NO"), "{row}");

    // The same view as JSON, narrowed by a filter: what `GET /api/fleet.json` answers.
    let (ok, out) = w.cli(&["status", "--json", "--status", "healthy"], "");
    assert!(ok, "{out}");
    let view: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let names: Vec<&str> = view["devices"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ase-cli", "ase-cli-2"], "{out}");
    openapi::check("get", "/fleet.json", 200, &view).unwrap();
    let (ok, out) = w.cli(&["status", "--status", "sick"], "");
    assert!(!ok && out.contains("`sick` is not a status"), "{out}");

    // The fleet page's JSON form, as the host invokes it, matches the OpenAPI document with devices in it.
    // The operator signed in (App Service Authentication's identity and the token), with every right.
    let token = w.la.token(&w.operator, edgevault_tests::local_azure::API_AUDIENCE).unwrap();
    let invocation = json!({"Data": {"req": {"Url": "http://127.0.0.1:7071/api/fleet.json", "Method": "GET",
        "Query": {"resourceGroup": w.la.var("AZURE_RESOURCE_GROUP")}, "Params": {},
        "Headers": {"Authorization": [format!("Bearer {token}")]},
        "Identities": [edgevault_tests::scenario::easy_auth_identity(&w.operator, "operator")]}}, "Metadata": {}});
    let (status, answer) = w.handler.invoke("FleetData", &invocation).unwrap();
    assert_eq!(status, 200, "{answer}");
    let res = &answer["Outputs"]["res"];
    assert_eq!(res["statusCode"], 200, "{res}");
    assert_eq!(res["body"]["devices"].as_array().unwrap().len(), 2, "{res}");
    openapi::check("get", "/fleet.json", 200, &res["body"]).unwrap();
}

#[test]
fn the_openapi_document_matches_the_function_definition() {
    // Each documented path is served by one HTTP function: its route, its methods, nothing else.
    let served = [("ActivationKeyApi", "/activation-keys"), ("DeviceApi", "/devices/"), ("FleetData", "/fleet.json")];
    let doc = openapi::document();
    let paths = doc["paths"].as_object().unwrap();
    for path in paths.keys() {
        assert!(served.iter().any(|(_, prefix)| path.starts_with(prefix)), "{path} is served by no function");
    }
    for (function, prefix) in served {
        let definition: Value = serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/../function-definitions/{function}/function.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap();
        let trigger = &definition["bindings"][0];
        let route = format!("/{}", trigger["route"].as_str().unwrap());
        assert!(route.starts_with(prefix), "the document's paths follow {function}'s route {route}");
        let mut documented: Vec<String> = paths
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .flat_map(|(_, operations)| operations.as_object().unwrap().keys().cloned())
            .collect();
        documented.sort();
        documented.dedup();
        let mut methods: Vec<String> =
            trigger["methods"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect();
        methods.sort();
        assert_eq!(documented, methods, "every method {function} routes is documented and nothing else");
    }
    // The checker itself catches a body that breaks the schema.
    assert!(openapi::check("get", "/activation-keys/{operationId}", 200, &json!({"status": "succeeded"})).is_err());
    assert!(openapi::check("get", "/activation-keys/{operationId}", 418, &json!({})).is_err());
}

/// Deletes the device as an operator and delivers the resulting command to `ResourceDeleted`.
fn delete_device(w: &edgevault_tests::scenario::World, device: &ResourceId) {
    assert!(matches!(w.arm("DELETE", &device.to_string(), None).0, 200 | 204));
    let command = Command::from(edgevault::messages::ResourceDeleted {
        device: device.clone(),
        cause: "event-device-delete".into(),
    });
    for delivery in 1..=2 {
        let (status, answer) = w.deliver("ResourceDeleted", &command, delivery);
        assert_eq!(status, 200, "delivery {delivery}: {answer}");
    }
}

#[test]
fn with_consent_a_deleted_devices_vault_is_unlocked_and_soft_deleted() {
    let w = world(&[("EDGEVAULT_DELETE_VAULT_WITH_DEVICE", "true")]);
    let device = w.create_device("ase-gone");
    let info = w.provision(&device);
    let vault_id: ResourceId = info["clientSecretStoreId"].as_str().unwrap().parse().unwrap();
    delete_device(&w, &device);
    assert_eq!(w.arm("GET", &vault_id.to_string(), None).0, 404, "the vault is deleted");
    let deleted = format!(
        "/subscriptions/{}/providers/Microsoft.KeyVault/locations/{}/deletedVaults/{}",
        w.la.subscription(),
        w.la.var("AZURE_LOCATION"),
        vault_id.name().unwrap()
    );
    let (status, body) = w.arm("GET", &deleted, None);
    assert_eq!(status, 200, "it stays soft-deleted: {body}");
    assert_eq!(body["properties"]["purgeProtectionEnabled"], true, "{body}");
}

#[test]
fn without_consent_a_deleted_devices_vault_is_kept_with_its_lock() {
    let w = world(&[]);
    let device = w.create_device("ase-orphan");
    let info = w.provision(&device);
    let vault_id = info["clientSecretStoreId"].as_str().unwrap().to_string();
    delete_device(&w, &device);
    assert_eq!(w.arm("GET", &vault_id, None).0, 200, "the vault is kept");
    let lock = format!("{vault_id}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete");
    assert_eq!(w.arm("GET", &lock, None).0, 200, "and still locked");
    let alerts = w.la.admin_get("/admin/servicebus/queues/edgevault/alerts/messages").unwrap();
    let orphaned = alerts["value"].as_array().unwrap().iter().any(|m| {
        let alert: Value = serde_json::from_str(m["body"].as_str().unwrap_or("null")).unwrap_or_default();
        alert["vault"] == vault_id.as_str() && alert["what"].as_str().unwrap_or_default().contains("orphaned")
    });
    assert!(orphaned, "an orphan alert is on the alerts queue: {alerts}");
}

/// Event Grid and Service Bus give no order across resources and retries: each worker must hold whatever arrives
/// when. An activation before the creation event; that creation event late; a deleted device's creation event,
/// activation request and vault-deleted event all arriving after its deletion; a vault-deleted event arriving after
/// the vault is back.
#[test]
fn events_and_messages_out_of_order_end_in_the_right_state() {
    let w = world(&[("EDGEVAULT_DELETE_VAULT_WITH_DEVICE", "true")]);
    let vaults = || {
        let (_, list) =
            w.arm("GET", &format!("{}/providers/Microsoft.KeyVault/vaults", w.la.resource_group_id()), None);
        list["value"].as_array().unwrap().len()
    };
    let request = |device: &ResourceId| {
        Command::from(edgevault::messages::ActivationKeyRequested {
            device: device.clone(),
            operation_id: operation_id(device),
            vault_name: Some(VaultName::default_for(device, 0)),
        })
    };
    let created = |device: &ResourceId| {
        Command::from(edgevault::messages::ResourceCreated { device: device.clone(), cause: "late".into() })
    };

    // The activation request is worked before the creation event: it enables the identity itself.
    let early = w.create_device("ase-early");
    assert_eq!(w.deliver("ActivationKeyRequested", &request(&early), 1).0, 200);
    let info = w.extended_info(&early);
    assert_eq!(info["keyVaultSyncStatus"], "KeyVaultSynced", "{info}");
    let principal = w.device_principal(&early);
    // The creation event, late, finds the identity there and changes nothing.
    assert_eq!(w.deliver("ResourceCreated", &created(&early), 1).0, 200);
    assert_eq!(w.device_principal(&early), principal, "the identity is kept");
    assert_eq!(w.extended_info(&early), info);
    let vault_id: ResourceId = info["clientSecretStoreId"].as_str().unwrap().parse().unwrap();

    // A vault-deleted event for a vault that is there (already recovered, or a stale event): nothing is created,
    // no CIK is written.
    let stale = Command::from(edgevault::messages::VaultDeleted { vault: vault_id.clone(), cause: "stale".into() });
    assert_eq!(w.deliver("VaultDeleted", &stale, 1).0, 200);
    assert_eq!(w.extended_info(&early), info, "the same vault and CIK version");
    assert_eq!(w.la.cik_versions(&w.operator, &info).unwrap(), 1);

    // The device is deleted (its vault with it, by consent); its events and messages arrive afterwards.
    let before = vaults();
    delete_device(&w, &early);
    assert_eq!(vaults(), before - 1, "the device's vault went with it");
    assert_eq!(w.deliver("ResourceCreated", &created(&early), 2).0, 200);
    assert_eq!(w.deliver("ActivationKeyRequested", &request(&early), 2).0, 200);
    let (status, answer) = w.deliver(
        "VaultDeleted",
        &Command::from(edgevault::messages::VaultDeleted { vault: vault_id.clone(), cause: "x".into() }),
        1,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(w.arm("GET", &early.to_string(), None).0, 404, "the device stays deleted");
    assert_eq!(w.arm("GET", &vault_id.to_string(), None).0, 404, "its vault is neither recovered nor recreated");
    assert_eq!(vaults(), before - 1, "no vault was created for a device that is gone");
}

/// Refresh (the API's `POST /api/devices/…/refresh`): a lost access policy is found, its alert raised once and
/// the repair queued; once repaired the alert is resolved with the id it was raised with, and a refresh reports
/// the device healthy. Each answer matches the OpenAPI document.
#[test]
fn a_refresh_raises_an_alert_once_and_a_healthy_device_clears_it() {
    use edgevault_tests::scenario::{grant_device_sync, queued_alerts};
    let w = world(&[]);
    let device = w.create_device("ase-refresh");
    let info = w.provision(&device);
    let principal = w.device_principal(&device);
    grant_device_sync(&w.la, &principal, &device);
    let (ok, out) = w.cli(&["device", "sync-secrets", "--resource-id", &device.to_string(), "--wait", "0"], "");
    assert!(ok, "{out}");
    let sync = Command::from(edgevault::messages::SecretsSyncRequested { device: device.clone(), cause: "e1".into() });
    assert_eq!(w.deliver("ActivationKeyRequested", &sync, 1).0, 200);
    let res = w.device_api(&device, "refresh");
    assert_eq!((res["statusCode"].as_u64(), &res["body"]["healthy"]), (Some(200), &json!(true)), "{res}");
    // A caller without rights on the device is refused before anything is read, raised or queued.
    let stranger = w.la.principal("stranger", &["Microsoft.KeyVault/vaults/read"]).unwrap();
    let refused = w.device_api_as(&stranger, "stranger", &device, "refresh");
    assert_eq!(refused["statusCode"], 403, "{refused}");
    assert!(refused["body"]["error"]["message"].as_str().unwrap().contains("dataBoxEdgeDevices/write"), "{refused}");

    // The device's access policy is removed by hand: "identity or access policy lost".
    let vault_id = info["clientSecretStoreId"].as_str().unwrap();
    let remove = json!({"properties": {"accessPolicies": [{"tenantId": w.la.var("AZURE_TENANT_ID"), "objectId": principal,
        "permissions": {"secrets": ["get", "set"]}}]}});
    assert_eq!(w.arm("PUT", &format!("{vault_id}/accessPolicies/remove"), Some(remove)).0, 200);
    let res = w.device_api(&device, "refresh");
    let body = &res["body"];
    assert_eq!(body["findings"], json!(["AccessPolicyMissing"]), "{res}");
    assert_eq!(body["alerts"]["raised"], json!(["IdentityOrAccessPolicyLost"]));
    assert_eq!(body["repairs"], json!(["ReconcileVault"]));
    let queued = w.la.admin_get("/admin/servicebus/queues/edgevault/activation-key-requested/messages").unwrap();
    assert!(queued.to_string().contains("AccessPolicyMissing"), "the repair is on the queue: {queued}");
    let again = w.device_api(&device, "refresh");
    assert_eq!(again["body"]["alerts"]["raised"], json!([]), "raised once");
    assert_eq!(again["body"]["alerts"]["open"], json!(["IdentityOrAccessPolicyLost"]));
    let (_, found) = w.arm("GET", &device.to_string(), None);
    assert!(found["tags"]["edgevault-alerts"].as_str().unwrap().starts_with("IdentityOrAccessPolicyLost@"), "{found}");

    // The queued repair runs: the policy is back and the repair's own check resolves the alert.
    let repair = Command::from(edgevault::messages::ReconcileVault {
        device: device.clone(),
        findings: vec![edgevault::lifecycle::Finding::AccessPolicyMissing],
        sweep_id: "refresh".into(),
    });
    assert_eq!(w.deliver("ActivationKeyRequested", &repair, 1).0, 200);
    let (_, vault) = w.arm("GET", vault_id, None);
    let policies = vault["properties"]["accessPolicies"].as_array().unwrap();
    assert!(policies.iter().any(|p| p["objectId"] == principal.as_str()), "{vault}");
    let healthy = w.device_api(&device, "refresh");
    assert_eq!(
        (&healthy["body"]["healthy"], &healthy["body"]["alerts"]["open"]),
        (&json!(true), &json!([])),
        "{healthy}"
    );
    let (_, found) = w.arm("GET", &device.to_string(), None);
    assert!(found["tags"].get("edgevault-alerts").is_none(), "{found}");
    let lost: Vec<Value> =
        queued_alerts(&w.la).into_iter().filter(|a| a["kind"] == "IdentityOrAccessPolicyLost").collect();
    assert_eq!(lost.len(), 2, "raised once, resolved once: {lost:?}");
    assert_eq!((lost[0]["state"].as_str(), lost[1]["state"].as_str()), (Some("Raised"), Some("Resolved")));
    assert_eq!(lost[0]["id"], lost[1]["id"]);
    let what = lost[0]["what"].as_str().unwrap();
    assert!(
        what.starts_with("The device's managed identity or its access policy on the Key Vault was lost."),
        "{what}"
    );

    // Bad paths are refused as documented.
    let missing: ResourceId =
        format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/nope", w.la.resource_group_id())
            .parse()
            .unwrap();
    assert_eq!(w.device_api(&missing, "refresh")["statusCode"], 404);

    // The operator's CLI does the same check and prints it.
    let (ok, out) = w.cli(&["device", "refresh", "--resource-id", &device.to_string()], "");
    assert!(ok && out.contains("healthy      yes"), "{out}");
}

/// Drift the sweep reads from the vault object: a vault switched to Azure RBAC shuts the device out (access
/// policies no longer apply) and is switched back; network rules that deny by default are the owner's and are
/// only alerted ("Couldn't access the Key Vault"), never changed — not even by the repair's write of the vault.
#[test]
fn a_vault_switched_to_rbac_is_switched_back_and_deny_by_default_rules_are_alerted_and_kept() {
    let w = world(&[]);
    let device = w.create_device("ase-rbac");
    let info = w.provision(&device);
    let principal = w.device_principal(&device);
    let vault_id = info["clientSecretStoreId"].as_str().unwrap().to_string();
    let rules = json!({"defaultAction": "Deny", "bypass": "AzureServices", "ipRules": [{"value": "203.0.113.0/24"}]});
    let patch = json!({"properties": {"enableRbacAuthorization": true, "networkAcls": rules}});
    assert_eq!(w.arm("PATCH", &vault_id, Some(patch)).0, 200);
    assert_eq!(w.read_secret(&principal, &cik_url(&info)).0, 403, "the device is shut out");

    let repair = Command::from(edgevault::messages::ReconcileVault {
        device: device.clone(),
        findings: vec![edgevault::lifecycle::Finding::RbacAuthorization],
        sweep_id: "s1".into(),
    });
    let (status, answer) = w.deliver("ActivationKeyRequested", &repair, 1);
    assert_eq!(status, 200, "{answer}");
    let (_, vault) = w.arm("GET", &vault_id, None);
    assert_eq!(vault["properties"]["enableRbacAuthorization"], false, "{vault}");
    assert_eq!(vault["properties"]["networkAcls"]["defaultAction"], "Deny", "the owner's rules are kept: {vault}");
    assert_eq!(vault["properties"]["networkAcls"]["ipRules"][0]["value"], "203.0.113.0/24");
    assert_eq!(w.read_secret(&principal, &cik_url(&info)).0, 200, "the device reads its CIK again");
    let after = w.extended_info(&device);
    assert_eq!(after["channelIntegrityKeyVersion"], info["channelIntegrityKeyVersion"], "the same CIK");

    let res = w.device_api(&device, "refresh");
    let findings = res["body"]["findings"].as_array().unwrap();
    assert!(findings.contains(&json!("NetworkDenied")), "{res}");
    assert!(res["body"]["alerts"]["open"].as_array().unwrap().contains(&json!("KeyVaultNotAccessible")), "{res}");
}

/// Reconfigure (the API's `POST /api/devices/…/reconfigure`): refused with the reason while the vault is healthy or
/// recoverable; once it is purged (past retention), a new vault under a new name — the same name for a repeated
/// request, and one vault for both — with a new CIK, linked, the old vault's alerts resolved, and the activation
/// key flow again: the old key no longer opens with the device's CIK, the new one does.
#[test]
fn reconfigure_replaces_a_purged_vault_once_and_the_old_key_no_longer_opens() {
    use edgevault_tests::scenario::queued_alerts;
    let w = world(&[]);
    let device = w.create_device("ase-reconf");
    let info = w.provision(&device);
    let old: ResourceId = info["clientSecretStoreId"].as_str().unwrap().parse().unwrap();
    let old_key =
        w.api("GET", None, Some(&operation_id(&device)))["body"]["activationKey"].as_str().unwrap().to_string();

    let res = w.device_api(&device, "reconfigure");
    assert_eq!((res["statusCode"].as_u64(), &res["body"]["error"]["code"]), (Some(409), &json!("VaultHealthy")));
    w.unlock_and_delete_vault(&old);
    let res = w.device_api(&device, "reconfigure");
    assert_eq!(res["body"]["error"]["code"], "VaultRecoverable", "{res}");
    assert!(res["body"]["error"]["message"].as_str().unwrap().contains("recovery worker"), "{res}");

    // Past the 90-day retention local-azure purges it; the recovery worker finds it gone.
    w.la.admin_post("/admin/clock/advance", json!({"seconds": 91 * 86_400})).unwrap();
    let deleted = Command::from(edgevault::messages::VaultDeleted { vault: old.clone(), cause: "event-delete".into() });
    assert_eq!(w.deliver("VaultDeleted", &deleted, 1).0, 200);
    assert_eq!(w.extended_info(&device)["keyVaultSyncStatus"], "KeyVaultSyncFailed");

    let first = w.device_api(&device, "reconfigure");
    assert_eq!(first["statusCode"], 202, "{first}");
    assert_eq!(first["body"]["gone"]["reason"], "Purged", "{first}");
    let name = first["body"]["vaultName"].as_str().unwrap().to_string();
    assert_ne!(name, old.name().unwrap(), "never the old name");
    assert!(first["body"]["statusUrl"].as_str().unwrap().contains("/api/activation-keys/"), "{first}");
    let second = w.device_api(&device, "reconfigure");
    assert_eq!(second["body"]["vaultName"], name.as_str(), "the same name for a repeated request");

    // Both queued requests run (the second is the duplicate).
    let queued = w.la.admin_get("/admin/servicebus/queues/edgevault/activation-key-requested/messages").unwrap();
    let commands: Vec<Command> = queued["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| serde_json::from_str(m["body"].as_str()?).ok())
        .filter_map(|body: serde_json::Map<String, Value>| Command::from_json(&body).ok())
        .filter(|c| c.kind() == "ReconfigureRequested")
        .collect();
    assert_eq!(commands.len(), 2, "{queued}");
    for command in &commands {
        let (status, answer) = w.deliver("ActivationKeyRequested", command, 1);
        assert_eq!(status, 200, "{answer}");
    }

    // Azure: one vault of the device's, under the new name, locked, linked with a new CIK version.
    let vaults = w.arm("GET", &format!("{}/providers/Microsoft.KeyVault/vaults", w.la.resource_group_id()), None).1;
    let own: Vec<&Value> = vaults["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["tags"]["edgevault-device"].as_str().is_some_and(|d| d.eq_ignore_ascii_case(&device.to_string())))
        .collect();
    assert_eq!(own.len(), 1, "one new vault: {vaults}");
    assert_eq!(own[0]["name"], name.as_str());
    let new_id = own[0]["id"].as_str().unwrap();
    let lock = format!("{new_id}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete");
    assert_eq!(w.arm("GET", &lock, None).0, 200, "the new vault is locked");
    let after = w.extended_info(&device);
    assert_eq!(after["keyVaultSyncStatus"], "KeyVaultSynced", "{after}");
    assert!(after["clientSecretStoreId"].as_str().unwrap().eq_ignore_ascii_case(new_id), "{after}");
    assert_ne!(after["channelIntegrityKeyVersion"], info["channelIntegrityKeyVersion"]);
    let (_, found) = w.arm("GET", &device.to_string(), None);
    assert!(found["tags"]["edgevault-alerts"].as_str().unwrap_or_default().is_empty(), "alerts resolved: {found}");
    assert!(found["tags"]["edgevault-sync-error"].is_null(), "{found}");
    let resolved: Vec<Value> = queued_alerts(&w.la)
        .into_iter()
        .filter(|a| a["kind"] == "RecoveryImpossible" && a["state"] == "Resolved")
        .collect();
    assert_eq!(resolved.len(), 1, "the old vault's RecoveryImpossible alert is resolved");

    // The key flow again: the device reads the new CIK; the old key does not open with it, the new one does.
    let principal = w.device_principal(&device);
    let (status, secret) = w.read_secret(&principal, &cik_url(&after));
    assert_eq!(status, 200, "{secret}");
    let cik = Cik::from_secret_value(secret["value"].as_str().unwrap()).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(ActivationKey::parse(&old_key).unwrap().open(&cik, now).is_err(), "a key for the old CIK no longer opens");
    let res = w.api("GET", None, Some(&operation_id(&device)));
    assert_eq!(res["body"]["status"], "succeeded", "{res}");
    let key = ActivationKey::parse(res["body"]["activationKey"].as_str().unwrap()).unwrap();
    let claims = key.open(&cik, now).expect("the new key opens");
    assert_eq!(claims.cik.secret_version, after["channelIntegrityKeyVersion"].as_str().unwrap());

    // Healthy again: a further request is refused.
    assert_eq!(w.device_api(&device, "reconfigure")["body"]["error"]["code"], "VaultHealthy");
}

/// `edgevault-cli device recovery-secrets` reads a device's recovery secrets as the operator: their own Azure CLI
/// login, never edgevault's identity. Without an access policy of their own they are refused (non-zero exit) with
/// the command that grants it; with one, the values go to stdout and nowhere else.
#[test]
fn recovery_secrets_are_read_with_the_operators_own_login_and_refused_without_their_policy() {
    use std::process::Command as Process;
    let w = world(&[]);
    let device = w.create_device("ase-down");
    let info = w.provision(&device);
    let vault: ResourceId = info["clientSecretStoreId"].as_str().unwrap().parse().unwrap();
    let vault_url = info["clientSecretStoreUrl"].as_str().unwrap().trim_end_matches('/').to_string();

    // The device synced its secrets (as its own identity); values made up here, compared, never saved.
    let principal = w.device_principal(&device);
    let device_token = w.la.token(&principal, VAULT_AUDIENCE).unwrap();
    let values: Vec<(&str, String)> = edgevault::lifecycle::DEVICE_SECRET_NAMES
        .iter()
        .map(|name| (*name, format!("{}-{:016x}", name.len(), rand_u64())))
        .collect();
    for (name, value) in &values {
        let url = format!("{vault_url}/secrets/{name}");
        assert_eq!(w.la.vault(&device_token, "PUT", &url, Some(json!({"value": value}))).unwrap().0, 200);
    }

    // The operator signs in to the Azure CLI (here `az login --identity --object-id`, against Azure `az login`).
    let az = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/azure-cli/bin/az");
    let az = std::env::var_os("EDGEVAULT_AZ").map(std::path::PathBuf::from).unwrap_or(az);
    assert!(az.is_file(), "run `bash tests/tools/install-azure-cli.sh`: {}", az.display());
    let config = tempfile::tempdir().unwrap();
    let path = format!("{}:{}", az.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let mut env = w.la.handler_env();
    env.extend([
        ("REQUESTS_CA_BUNDLE".to_string(), w.la.var("REQUESTS_CA_BUNDLE").to_string()),
        ("AZURE_CONFIG_DIR".into(), config.path().display().to_string()),
        ("AZURE_CORE_COLLECT_TELEMETRY".into(), "no".into()),
        ("PATH".into(), path),
        ("RUST_LOG".into(), "info".into()),
    ]);
    let login = Process::new(&az)
        .args(["login", "--identity", "--object-id", &w.operator, "-o", "none"])
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let run = || {
        let out = Process::new(edgevault_tests::binary("edgevault-cli").unwrap())
            .args(["device", "recovery-secrets", "--device", &device.to_string()])
            .envs(env.iter().cloned())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    // No access policy of the operator's: refused, with what grants it. edgevault's identity (which has `get`)
    // would have read them: the refusal shows the command acts as the operator.
    let (ok, stdout, stderr) = run();
    assert!(!ok, "refused: {stderr}");
    assert!(stdout.is_empty(), "nothing printed: {stdout}");
    let name = vault.name().unwrap();
    let grant = format!("az keyvault set-policy --name {name} --object-id {} --secret-permissions get", w.operator);
    assert!(stderr.contains(&grant), "{stderr}");

    // The operator gets the policy the message names; now the values come out on stdout, and only there.
    let policy = json!({"properties": {"accessPolicies": [{"tenantId": w.la.var("AZURE_TENANT_ID"),
        "objectId": w.operator, "permissions": {"secrets": ["get"]}}]}});
    assert_eq!(w.arm("PUT", &format!("{vault}/accessPolicies/add"), Some(policy)).0, 200);
    let (ok, stdout, stderr) = run();
    assert!(ok, "{stderr}");
    for (name, value) in &values {
        assert!(stdout.lines().any(|l| l == format!("{name}={value}")), "{name} printed");
        assert!(!stderr.contains(value.as_str()), "{name}'s value is in the CLI's log");
    }
    let log = w.handler.log().join("\n");
    assert!(values.iter().all(|(_, v)| !log.contains(v.as_str())), "a value reached edgevault's log");
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    hasher.finish()
}

/// A vault moved to another resource group (ARM's Resources – Move Resources) is treated as deleted: a refresh
/// reports where it went, in its answer and in the alert, and queues no recreation (the name is taken where it now
/// lives); reconfigure says where it went and gives the device a new vault, leaving the moved one alone.
#[test]
fn a_moved_vault_is_reported_where_it_went_and_reconfigure_replaces_it() {
    use edgevault_tests::scenario::queued_alerts;
    let w = world(&[]);
    let device = w.create_device("ase-moved");
    let info = w.provision(&device);
    let old: ResourceId = info["clientSecretStoreId"].as_str().unwrap().parse().unwrap();
    let elsewhere = format!("/subscriptions/{}/resourceGroups/somewhere-else", w.la.subscription());
    let location = w.la.var("AZURE_LOCATION").to_string();
    assert!(matches!(w.arm("PUT", &elsewhere, Some(json!({"location": location}))).0, 200 | 201));
    let request = json!({"resources": [old.to_string()], "targetResourceGroup": elsewhere});
    let (status, answer) = w.arm("POST", &format!("{}/moveResources", w.la.resource_group_id()), Some(request));
    assert_eq!(status, 204, "{answer}");
    let moved = format!("{elsewhere}/providers/Microsoft.KeyVault/vaults/{}", old.name().unwrap());

    let res = w.device_api(&device, "refresh");
    let body = &res["body"];
    assert!(body["movedTo"].as_str().unwrap().eq_ignore_ascii_case(&moved), "{res}");
    assert!(body["alerts"]["raised"].as_array().unwrap().contains(&json!("KeyVaultDeleted")), "{res}");
    assert_eq!(body["repairs"], json!(["VaultDeleted"]), "to the recovery worker; nothing recreates a moved name");
    let gone = Command::from(edgevault::messages::VaultDeleted { vault: old.clone(), cause: "sweep:gone".into() });
    assert_eq!(w.deliver("VaultDeleted", &gone, 1).0, 200);
    let (_, found) = w.arm("GET", &device.to_string(), None);
    let reason = found["tags"]["edgevault-sync-error"].as_str().unwrap_or_default();
    assert!(reason.contains("moved to") && reason.contains("somewhere-else"), "{found}");
    let alert = queued_alerts(&w.la).into_iter().find(|a| a["kind"] == "KeyVaultDeleted").expect("alerted");
    assert!(alert["what"].as_str().unwrap().contains("somewhere-else"), "{alert}");

    let res = w.device_api(&device, "reconfigure");
    assert_eq!(res["statusCode"], 202, "{res}");
    assert_eq!(res["body"]["gone"]["reason"], "Moved");
    assert!(res["body"]["gone"]["to"].as_str().unwrap().eq_ignore_ascii_case(&moved), "{res}");
    assert!(res["body"]["detail"].as_str().unwrap().contains("moved to"), "{res}");
    let name = res["body"]["vaultName"].as_str().unwrap().to_string();
    assert_ne!(name, old.name().unwrap());
    let command = Command::from(edgevault::messages::ReconfigureRequested {
        device: device.clone(),
        operation_id: res["body"]["operationId"].as_str().unwrap().to_string(),
        vault_name: VaultName::parse(&name).unwrap(),
    });
    let (status, answer) = w.deliver("ActivationKeyRequested", &command, 1);
    assert_eq!(status, 200, "{answer}");
    let after = w.extended_info(&device);
    assert_eq!(after["keyVaultSyncStatus"], "KeyVaultSynced", "{after}");
    let linked: ResourceId = after["clientSecretStoreId"].as_str().unwrap().parse().unwrap();
    assert_eq!((linked.name(), linked.resource_group()), (Some(name.as_str()), device.resource_group()));
    assert_eq!(w.arm("GET", &moved, None).0, 200, "the moved vault is left where it is");
    let refreshed = w.device_api(&device, "refresh");
    assert_eq!(
        refreshed["body"]["findings"],
        json!(["DeviceSecretsMissing"]),
        "only the device's own secrets are left"
    );
    assert!(refreshed["body"]["movedTo"].is_null(), "{refreshed}");
}

#[test]
fn activation_makes_the_vaults_audit_logging_and_a_missing_provider_is_a_warning_not_a_failure() {
    use edgevault::lifecycle::audit::{AUDIT_SETTING_NAME, account_id, account_names};
    use edgevault_tests::scenario::queued_alerts;
    let w = world(&[]);
    let device = w.create_device("ase-audit");
    let info = w.provision(&device);
    assert_eq!(info["keyVaultSyncStatus"], "KeyVaultSynced", "{info}");
    let vault_id: ResourceId = info["clientSecretStoreId"].as_str().unwrap().parse().unwrap();

    // The storage account: zone-redundant, beside the vault, tagged with the vault's name and the device, locked.
    let account = account_id(&vault_id, &account_names(&vault_id)[0]);
    let (status, stored) = w.arm("GET", &format!("{account}?api-version=2023-05-01"), None);
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["sku"]["name"], "Standard_ZRS");
    assert_eq!(stored["location"], w.la.var("AZURE_LOCATION"));
    assert_eq!(stored["tags"]["edgevault-vault"], vault_id.name().unwrap());
    assert_eq!(stored["tags"]["edgevault-device"], device.to_string());
    let (status, lock) =
        w.arm("GET", &format!("{account}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete"), None);
    assert_eq!((status, lock["properties"]["level"].as_str()), (200, Some("CanNotDelete")), "{lock}");
    let (status, refused) = w.arm("DELETE", &format!("{account}?api-version=2023-05-01"), None);
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("ScopeLocked")), "{refused}");
    // The diagnostic setting sends the vault's audit logs there.
    let setting = format!(
        "{vault_id}/providers/Microsoft.Insights/diagnosticSettings/{AUDIT_SETTING_NAME}?api-version=2021-05-01-preview"
    );
    let (status, found) = w.arm("GET", &setting, None);
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["properties"]["storageAccountId"], account.to_string());
    assert_eq!(found["properties"]["logs"][0]["categoryGroup"], "audit");
    assert_eq!(found["properties"]["logs"][0]["enabled"], true);

    // Microsoft.Insights not registered: the next device is activated all the same, with nothing half-made and
    // one warning.
    let provider = format!("/subscriptions/{}/providers/Microsoft.Insights", device.subscription());
    let (status, answer) = w.arm("POST", &format!("{provider}/unregister?api-version=2021-04-01"), None);
    assert_eq!(status, 200, "{answer}");
    let second = w.create_device("ase-unaudited");
    let info = w.provision(&second);
    assert_eq!(info["keyVaultSyncStatus"], "KeyVaultSynced", "activation succeeds: {info}");
    let second_vault: ResourceId = info["clientSecretStoreId"].as_str().unwrap().parse().unwrap();
    let second_account = account_id(&second_vault, &account_names(&second_vault)[0]);
    assert_eq!(w.arm("GET", &format!("{second_account}?api-version=2023-05-01"), None).0, 404, "no account made");
    let second_setting = setting.replace(&vault_id.to_string(), &second_vault.to_string());
    assert_eq!(w.arm("GET", &second_setting, None).0, 404);
    let warned = |w: &edgevault_tests::scenario::World| -> Vec<Value> {
        queued_alerts(&w.la).into_iter().filter(|a| a["kind"] == "AuditLoggingNotConfigured").collect()
    };
    let raised = warned(&w);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["severity"], "Warning");
    assert_eq!(raised[0]["device"], second.to_string());
    let what = raised[0]["what"].as_str().unwrap();
    assert!(what.contains("az provider register --namespace Microsoft.Insights"), "{what}");
    let res = w.device_api(&second, "refresh");
    assert!(res["body"]["findings"].as_array().unwrap().contains(&json!("AuditSettingMissing")), "{res}");
    assert!(res["body"]["alerts"]["open"].as_array().unwrap().contains(&json!("AuditLoggingNotConfigured")), "{res}");
    assert!(!res["body"]["alerts"]["raised"].as_array().unwrap().contains(&json!("AuditLoggingNotConfigured")), "once");

    // Registered again: the repair makes the account and the setting and resolves the warning.
    assert_eq!(w.arm("POST", &format!("{provider}/register?api-version=2021-04-01"), None).0, 200);
    let repair = Command::from(edgevault::messages::ReconcileVault {
        device: second.clone(),
        findings: vec![edgevault::lifecycle::Finding::AuditSettingMissing],
        sweep_id: "refresh".into(),
    });
    let (status, answer) = w.deliver("ActivationKeyRequested", &repair, 1);
    assert_eq!(status, 200, "{answer}");
    let (status, made) = w.arm("GET", &second_setting, None);
    assert_eq!(status, 200, "{made} {answer} {}", w.handler.log().join("\n"));
    let alerts = warned(&w);
    assert_eq!(alerts.len(), 2, "raised once, resolved once: {alerts:?}");
    assert_eq!((alerts[1]["state"].as_str(), &alerts[1]["id"]), (Some("Resolved"), &alerts[0]["id"]));
    let res = w.device_api(&second, "refresh");
    assert!(!res["body"]["findings"].as_array().unwrap().contains(&json!("AuditSettingMissing")), "{res}");
    assert!(!res["body"]["alerts"]["open"].as_array().unwrap().contains(&json!("AuditLoggingNotConfigured")), "{res}");
}

#[test]
fn a_subscription_without_key_vault_registered_is_refused_with_the_fix_before_anything_is_marked() {
    let w = world(&[]);
    let device = w.create_device("ase-prereq");
    let provider = format!("/subscriptions/{}/providers/Microsoft.KeyVault", device.subscription());
    assert_eq!(w.arm("POST", &format!("{provider}/unregister?api-version=2021-04-01"), None).0, 200);
    let before = w.arm("GET", &device.to_string(), None).1;
    let res = w.api("POST", Some(json!({"resourceId": device.to_string()})), None);
    assert_eq!(res["statusCode"], 409, "{res}");
    assert_eq!(res["body"]["error"]["code"], "ResourceProviderNotRegistered");
    let message = res["body"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("az provider register --namespace Microsoft.KeyVault"), "{message}");
    assert!(message.contains("Microsoft.KeyVault/register/action"), "{message}");
    // Nothing marked, nothing created.
    assert_eq!(w.arm("GET", &device.to_string(), None).1, before, "the device is untouched");
    assert_eq!(w.extended_info(&device)["keyVaultSyncStatus"], "KeyVaultNotConfigured");
    let (_, vaults) = w.arm("GET", &format!("{}/providers/Microsoft.KeyVault/vaults", w.la.resource_group_id()), None);
    assert_eq!(vaults["value"], json!([]), "{vaults}");
    // Registered: the same request is accepted.
    assert_eq!(w.arm("POST", &format!("{provider}/register?api-version=2021-04-01"), None).0, 200);
    let res = w.api("POST", Some(json!({"resourceId": device.to_string()})), None);
    assert_eq!(res["statusCode"], 202, "{res}");
}
