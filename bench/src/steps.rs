//! The steps of a device's life that the benchmarks time through the whole system (local-azure with the app),
//! shared by `activation`, `recovery` and `busy_sweep`: a device created by an operator, its activation key asked
//! for and ready, its vault deleted and recovered. Times come from local-azure's activity log where the step ends
//! in Azure (timestamps to 100 ns, written in the transaction of each change) and from the client where it ends
//! at the client (the status `GET` that returns the key).

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use edgevault_tests::local_azure::{LocalAzure, eventually};
use serde_json::{Value, json};

/// The lock edgevault puts on each vault (`lifecycle::LOCK_NAME`).
pub const LOCK: &str = edgevault::lifecycle::LOCK_NAME;

/// The activity log after sequence number `after` (one page of at most 1,000 entries) and the last number in it.
pub fn activity(la: &LocalAzure, after: u64) -> anyhow::Result<(Vec<Value>, u64)> {
    let page = la.admin_get(&format!("/admin/activity?after={after}&limit=1000"))?;
    let entries = page["value"].as_array().cloned().unwrap_or_default();
    let last = entries.iter().filter_map(|e| e["sequenceNumber"].as_u64()).max().unwrap_or(after);
    Ok((entries, last))
}

/// The activity log's last sequence number: what a step's entries come after.
pub fn last_sequence(la: &LocalAzure) -> anyhow::Result<u64> {
    let mut cursor = 0;
    loop {
        let (entries, last) = activity(la, cursor)?;
        if entries.is_empty() {
            return Ok(cursor);
        }
        cursor = last;
    }
}

/// `HH:MM:SS.fffffff` of an activity timestamp, in seconds of the day.
pub fn seconds_of_day(timestamp: &str) -> Option<f64> {
    let time = timestamp.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// A Stack Edge device `name` in local-azure's resource group, created by the holder of `token` and given its
/// identity by edgevault (Event Grid → `ArmEvents` → `ResourceCreated`), as a portal request finds it; answers its id.
pub fn created_device(la: &LocalAzure, token: &str, name: &str) -> anyhow::Result<String> {
    let id = format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}", la.resource_group_id());
    let body =
        json!({"location": la.var("AZURE_LOCATION"), "sku": {"name": "Edge", "tier": "Standard"}, "properties": {}});
    let (status, answer) = la.arm(token, "PUT", &id, Some(body))?;
    ensure!(status == 200 || status == 201, "create device: {status} {answer}");
    eventually(Duration::from_secs(60), || {
        let (_, device) = la.arm(token, "GET", &id, None).ok()?;
        device["identity"]["principalId"].as_str().map(str::to_string)
    })
    .ok_or_else(|| anyhow!("{name} never got its identity"))?;
    Ok(id)
}

/// One activation, timed.
pub struct Activation {
    /// `POST` → the worker's last write of the link (the third `updateExtendedInformation`: pending, syncing,
    /// synced), from the client's clock to the log's arrival.
    pub to_worker_done_ms: f64,
    /// `POST` → the status `GET` that returns the key.
    pub to_key_ms: f64,
    /// That `GET` alone.
    pub status_get_ms: f64,
    /// Where the time went, on the activity log's clock (the same machine's as the client's): `POST` → the API's
    /// pending mark (the API's reads and its write); → the vault's `PUT` (the command's queue delivery and the
    /// worker's reads before it); → the link written (the worker's writes).
    pub api_ms: f64,
    pub to_vault_put_ms: f64,
    pub worker_writes_ms: f64,
}

/// Now, in seconds of the UTC day, as [`seconds_of_day`] reads the log's timestamps.
fn now_of_day() -> f64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    since.as_secs_f64() % 86_400.0
}

fn entry_at(e: &Value) -> Option<f64> {
    e["eventTimestamp"].as_str().and_then(seconds_of_day)
}

/// `POST /api/activation-keys` for device `id`, then its status once the worker's last write is in the log.
pub fn activate(la: &LocalAzure, id: &str) -> anyhow::Result<Activation> {
    let mut cursor = last_sequence(la)?;
    let posted_at = now_of_day();
    let started = Instant::now();
    let (status, headers, answer) = la.api("POST", "/activation-keys", Some(json!({"resourceId": id})))?;
    ensure!(status == 202, "POST: {status} {answer}");
    let location = headers.get("location").and_then(|v| v.to_str().ok()).context("no Location")?.to_string();
    let is_update = |e: &Value| {
        e["resourceId"].as_str().is_some_and(|r| r.eq_ignore_ascii_case(id))
            && e["operationName"].as_str().is_some_and(|o| o.ends_with("updateExtendedInformation/action"))
            && e["status"] == "Succeeded"
    };
    let mut updates = Vec::new();
    let mut vault_put = None;
    let limit = Instant::now() + Duration::from_secs(120);
    while updates.len() < 3 {
        if Instant::now() > limit {
            bail!("the worker did not finish within 120 s");
        }
        let (entries, last) = activity(la, cursor)?;
        cursor = last;
        for e in &entries {
            if is_update(e) {
                updates.extend(entry_at(e));
            } else if vault_put.is_none() && e["operationName"] == "Microsoft.KeyVault/vaults/write" {
                vault_put = entry_at(e);
            }
        }
        if updates.len() < 3 {
            // Only for noticing the end sooner than a long poll would: the log is read again at once otherwise.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let worker_done = started.elapsed();
    let get_started = Instant::now();
    let (status, _, body) = la.api("GET", &location, None)?;
    let status_get = get_started.elapsed();
    ensure!(status == 200 && body["status"] == "succeeded", "status after the worker: {status} {body}");
    let (pending, linked) = (updates[0], updates[2]);
    let vault_put = vault_put.context("no vault PUT in the log before the link")?;
    Ok(Activation {
        to_worker_done_ms: worker_done.as_secs_f64() * 1000.0,
        to_key_ms: started.elapsed().as_secs_f64() * 1000.0,
        status_get_ms: status_get.as_secs_f64() * 1000.0,
        api_ms: (pending - posted_at) * 1000.0,
        to_vault_put_ms: (vault_put - pending) * 1000.0,
        worker_writes_ms: (linked - vault_put) * 1000.0,
    })
}

/// The vault edgevault linked to device `id` (its extended information), once the activation that made it is
/// done with it: the worker makes the vault's audit logging after the link, last, and a vault deleted before that
/// would fail the worker rather than measure a recovery.
pub fn linked_vault(la: &LocalAzure, token: &str, id: &str) -> anyhow::Result<String> {
    let (status, info) = la.arm(token, "POST", &format!("{id}/getExtendedInformation"), Some(json!({})))?;
    ensure!(status == 200, "getExtendedInformation: {status} {info}");
    let vault = info["properties"]["clientSecretStoreId"].as_str().context("no vault linked")?.to_string();
    let setting = format!(
        "{vault}/providers/Microsoft.Insights/diagnosticSettings/{}?api-version=2021-05-01-preview",
        edgevault::lifecycle::audit::AUDIT_SETTING_NAME
    );
    eventually(Duration::from_secs(60), || (la.arm(token, "GET", &setting, None).ok()?.0 == 200).then_some(()))
        .ok_or_else(|| anyhow!("{id}: the vault's audit setting was never made"))?;
    Ok(vault)
}

/// An operator's accident: the lock removed, then the vault deleted.
pub fn unlock_and_delete(la: &LocalAzure, token: &str, vault: &str) -> anyhow::Result<()> {
    let (status, body) =
        la.arm(token, "DELETE", &format!("{vault}/providers/Microsoft.Authorization/locks/{LOCK}"), None)?;
    ensure!(status == 200, "lock DELETE: {status} {body}");
    let (status, body) = la.arm(token, "DELETE", vault, None)?;
    ensure!(status == 200, "vault DELETE: {status} {body}");
    Ok(())
}

/// One recovery, timed on the activity log.
pub struct Recovery {
    /// The vault's DELETE → the recovery `PUT` (`createMode: recover`).
    pub to_recover_ms: f64,
    /// The DELETE → the lock's `PUT`: the vault recovered and locked.
    pub to_locked_ms: f64,
    /// The DELETE → edgevault's first write for it (the device's "Key Vault is deleted" alert): the event's path
    /// (Event Grid, `ArmEvents`, the `vault-deleted` queue) and the worker's reads before it.
    pub to_first_write_ms: f64,
}

/// Deletes `vault` (lock first) as the holder of `token` and waits for edgevault to recover and lock it.
pub fn recover(la: &LocalAzure, token: &str, vault: &str) -> anyhow::Result<Recovery> {
    let lock_id = format!("{vault}/providers/Microsoft.Authorization/locks/{LOCK}");
    let cursor = last_sequence(la)?;
    unlock_and_delete(la, token, vault)?;
    let same = |e: &Value, id: &str| e["resourceId"].as_str().is_some_and(|r| r.eq_ignore_ascii_case(id));
    let ok = |e: &Value, op: &str| e["status"] == "Succeeded" && e["operationName"] == op;
    let edgevault = la.var("EDGEVAULT_PRINCIPAL_ID");
    let limit = Instant::now() + Duration::from_secs(60);
    let mut entries = Vec::new();
    let mut read = cursor;
    let (deleted, recovered, locked, first) = loop {
        let (more, last) = activity(la, read)?;
        read = last;
        entries.extend(more);
        let at = |pred: &dyn Fn(&Value) -> bool, after: f64| {
            entries.iter().filter(|e| pred(e)).filter_map(entry_at).find(|t| *t >= after)
        };
        if let Some(deleted) = at(&|e| same(e, vault) && ok(e, "Microsoft.KeyVault/vaults/delete"), 0.0)
            && let Some(recovered) = at(&|e| same(e, vault) && ok(e, "Microsoft.KeyVault/vaults/write"), deleted)
            && let Some(locked) = at(&|e| same(e, &lock_id) && ok(e, "Microsoft.Authorization/locks/write"), deleted)
        {
            let first = at(&|e| e["caller"].as_str().is_some_and(|c| c.eq_ignore_ascii_case(edgevault)), deleted);
            break (deleted, recovered, locked, first.unwrap_or(recovered));
        }
        if Instant::now() > limit {
            bail!("{vault} was not recovered and locked within 60 s");
        }
        // Only for noticing the end: the figures are the log's own timestamps.
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Recovery {
        to_recover_ms: (recovered - deleted) * 1000.0,
        to_locked_ms: (locked - deleted) * 1000.0,
        to_first_write_ms: (first - deleted) * 1000.0,
    })
}
