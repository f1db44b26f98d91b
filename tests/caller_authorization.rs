//! Who may call the activation-key API, through the whole system: local-azure's Functions host with App Service
//! Authentication in front, the edgevault handler asking ARM on the caller's behalf (on-behalf-of exchange at
//! local-azure's Entra ID token endpoint, then ARM's permissions API computed from local-azure's grants).
//!
//! Callers are Entra ID users with tokens for the API (`api://edgevault`). Assertions read Azure state (the device's
//! sync status and tags, the vaults, the queue) and the answers; every answer and every log line is scanned for
//! tokens (`support::secrets`, which also knows each token minted here by value).

use std::time::Duration;

use edgevault::authorization::ACTIVATE;
use edgevault_tests::local_azure::{API_AUDIENCE, ARM_AUDIENCE, LocalAzure, eventually};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);

struct System {
    la: LocalAzure,
    operator: String,
}

impl System {
    fn start() -> System {
        let la = LocalAzure::start_with_app(&[]).expect("local-azure with the app starts");
        let operator = la.principal("operator", &["*"]).unwrap();
        System { la, operator }
    }

    fn arm(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let token = self.la.token(&self.operator, ARM_AUDIENCE).unwrap();
        self.la.arm(&token, method, path, body).unwrap()
    }

    /// A device, created by the operator, once its identity is enabled (the creation event has gone through).
    fn device(&self, name: &str) -> String {
        let id = format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}", self.la.resource_group_id());
        let body = json!({"location": self.la.var("AZURE_LOCATION"), "sku": {"name": "Edge"}, "properties": {}});
        let (status, answer) = self.arm("PUT", &id, Some(body));
        assert!(status == 200 || status == 201, "{answer}");
        eventually(LIMIT, || self.arm("GET", &id, None).1["identity"]["principalId"].as_str().map(drop))
            .expect("the device's identity is enabled");
        id
    }

    fn sync_status(&self, device: &str) -> Value {
        self.arm("POST", &format!("{device}/getExtendedInformation"), Some(json!({}))).1["properties"]
            ["keyVaultSyncStatus"]
            .clone()
    }

    fn tags(&self, device: &str) -> Value {
        self.arm("GET", device, None).1["tags"].clone()
    }

    /// The vaults in the resource group tagged as `device`'s.
    fn vaults_of(&self, device: &str) -> Vec<Value> {
        let token = self.la.token(&self.operator, ARM_AUDIENCE).unwrap();
        let path = format!("{}/providers/Microsoft.KeyVault/vaults", self.la.resource_group_id());
        let vaults = self.la.arm_list(&token, &path).unwrap();
        vaults.into_iter().filter(|v| v["tags"]["edgevault-device"].as_str() == Some(device)).collect()
    }

    fn post(&self, token: Option<&str>, device: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        self.la.api_as(token, "POST", "/activation-keys", Some(json!({"resourceId": device}))).unwrap()
    }

    fn operation_of(device: &str) -> String {
        use base64::Engine;
        format!("{}.0123456789abcdef", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(device))
    }
}

fn message(answer: &Value) -> String {
    answer["error"]["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_caller_with_rights_on_one_device_gets_its_key_and_a_403_naming_the_permission_for_another() {
    let s = System::start();
    let (a, b) = (s.device("ase-authz-a"), s.device("ase-authz-b"));
    let alice = s.la.user("alice").unwrap();
    s.la.grant(&alice, &a, &[ACTIVATE]).unwrap();
    let token = s.la.token(&alice, API_AUDIENCE).unwrap();

    // Device A: accepted, provisioned, and the status URL hands Alice the key.
    let (status, headers, accepted) = s.post(Some(&token), &a);
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(headers["x-edgevault-caller"], alice.as_str(), "the answer names the caller");
    let location = headers["location"].to_str().unwrap().to_string();
    let done = eventually(LIMIT, || {
        let (status, _, body) = s.la.api_as(Some(&token), "GET", &location, None).unwrap();
        assert_eq!(status, 200, "{body}");
        (body["status"] == "succeeded").then_some(body)
    })
    .expect("A's key is issued");
    assert!(done["activationKey"].as_str().is_some_and(|k| k.starts_with("ase-ak1.")));
    let requested_by = s.tags(&a)["edgevault-requested-by"].as_str().unwrap_or_default().to_string();
    assert!(requested_by.contains(&alice) && requested_by.contains("alice"), "A records who asked: {requested_by}");

    // Device B: 403 naming the permission, and nothing at all happens to B.
    let (status, headers, refused) = s.post(Some(&token), &b);
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "AuthorizationFailed");
    let why = message(&refused);
    assert!(why.contains(ACTIVATE) && why.contains(&b) && why.contains(&alice), "{why}");
    assert_eq!(headers["x-edgevault-caller"], alice.as_str());
    let (status, _, status_of_b) =
        s.la.api_as(Some(&token), "GET", &format!("/activation-keys/{}", System::operation_of(&b)), None).unwrap();
    assert_eq!(status, 403, "B's status (which would carry its key) is refused too: {status_of_b}");
    assert_eq!(s.sync_status(&b), "KeyVaultNotConfigured", "B is not marked");
    assert!(s.tags(&b).get("edgevault-requested-by").is_none(), "B records no request");
    assert!(s.vaults_of(&b).is_empty(), "no vault for B");
    let queued = s.la.queue_counts("activation-key-requested").unwrap();
    assert_eq!(queued["activeMessageCount"].as_u64().unwrap_or(0), 0, "nothing queued for B: {queued}");

    // The logs name the caller of every decision (and, scanned at drop, hold no token).
    let log = s.la.log();
    let decisions: Vec<&String> = log.iter().filter(|l| l.contains("authorisation")).collect();
    assert!(decisions.iter().any(|l| l.contains(&alice) && l.contains("allowed=true")), "{decisions:#?}");
    assert!(decisions.iter().any(|l| l.contains(&alice) && l.contains("allowed=false") && l.contains(&b)));
    let done: Vec<&String> =
        log.iter().filter(|l| l.contains("ActivationKeyApi") && l.contains("invocation done")).collect();
    assert!(
        !done.is_empty() && done.iter().all(|l| l.contains("caller_id=")),
        "every request's line names its caller: {done:#?}"
    );
}

#[test]
fn no_token_an_expired_a_forged_or_a_wrong_audience_token_gets_401_with_a_reason() {
    let s = System::start();
    let device = s.device("ase-authn");
    let bob = s.la.principal("bob", &["*"]).unwrap();
    let valid = s.la.token(&bob, API_AUDIENCE).unwrap();
    let expired = s.la.token_expiring(&bob, API_AUDIENCE, Some(0)).unwrap();
    let wrong_audience = s.la.token(&bob, ARM_AUDIENCE).unwrap();
    // Someone else's claims under Bob's signature: the signature no longer matches what it signs.
    let forged = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = valid.split('.').collect();
        let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        claims["oid"] = json!(s.operator);
        format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2])
    };
    for (what, token, reason) in [
        ("no token", None, "no bearer token"),
        ("an expired token", Some(expired.as_str()), "expired"),
        ("a forged token", Some(forged.as_str()), "signature"),
        ("a token for ARM", Some(wrong_audience.as_str()), "audience"),
    ] {
        let (status, headers, answer) = s.post(token, &device);
        assert_eq!(status, 401, "{what}: {answer}");
        assert!(message(&answer).contains(reason), "{what}: the reason is given: {answer}");
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer") && challenge.contains(reason), "{what}: {challenge}");
    }
    // Headers that claim to be the platform's are the client's own invention: dropped, still 401.
    let base = s.la.var("EDGEVAULT_API_BASE_URL").to_string();
    let forged_principal = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{base}/activation-keys"))
        .header("x-ms-client-principal-id", &bob)
        .header("x-ms-client-principal-idp", "aad")
        .json(&json!({"resourceId": device}))
        .send()
        .unwrap();
    assert_eq!(forged_principal.status().as_u16(), 401);
    assert_eq!(s.sync_status(&device), "KeyVaultNotConfigured", "nothing happened");

    // The same valid token is accepted: the refusals were about the tokens.
    assert_eq!(s.post(Some(&valid), &device).0, 202);
}

/// edgevault keeps no decision: the permissions are ARM's answer on every request, so a revoked grant stops
/// working on the caller's next request. (There is no cache to expire, hence no clock to move; in Azure, ARM's own
/// propagation of a role assignment change — documented as up to 10 minutes — is the only delay.)
#[test]
fn a_revoked_grant_stops_working_on_the_next_request() {
    let s = System::start();
    let device = s.device("ase-revoked");
    let carol = s.la.user("carol").unwrap();
    let grant = s.la.grant(&carol, &s.la.resource_group_id(), &["Microsoft.DataBoxEdge/*"]).unwrap();
    let token = s.la.token(&carol, API_AUDIENCE).unwrap();
    let status_url = format!("/activation-keys/{}", System::operation_of(&device));
    let (status, _, body) = s.la.api_as(Some(&token), "GET", &status_url, None).unwrap();
    assert_eq!((status, body["status"].as_str()), (200, Some("notRequested")), "{body}");

    s.la.admin_delete(&format!("/admin/grants/{grant}")).unwrap();
    let (status, _, refused) = s.la.api_as(Some(&token), "GET", &status_url, None).unwrap();
    assert_eq!(status, 403, "the very next request is refused: {refused}");
    assert!(message(&refused).contains(ACTIVATE));
    assert_eq!(s.post(Some(&token), &device).0, 403);
    assert_eq!(s.sync_status(&device), "KeyVaultNotConfigured");

    // A grant that allows everything but the device's writes (`notActions`) is no grant of ACTIVATE either.
    s.la.admin_post(
        "/admin/grants",
        json!({"principalId": carol, "scope": device, "actions": ["*"], "notActions": ["Microsoft.DataBoxEdge/*/write"]}),
    )
    .unwrap();
    assert_eq!(s.la.api_as(Some(&token), "GET", &status_url, None).unwrap().0, 403);
}

/// `edgevault-cli activate` calls the API as the operator (their own token), so the same rule applies: a key for the
/// device they may change, written to a file only the operator can read and never printed; a clear refusal naming
/// the permission for the other.
#[test]
fn the_cli_requests_a_key_as_the_operator_and_gets_only_what_the_operator_may_have() {
    use std::os::unix::fs::PermissionsExt;
    let s = System::start();
    let (a, b) = (s.device("ase-cli-a"), s.device("ase-cli-b"));
    let dana = s.la.user("dana").unwrap();
    s.la.grant(&dana, &a, &[ACTIVATE]).unwrap();
    let token = s.la.token(&dana, API_AUDIENCE).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |device: &str, out: &std::path::Path| {
        let output = std::process::Command::new(edgevault_tests::binary("edgevault-cli").unwrap())
            .args(["activate", "--resource-id", device, "--key-out"])
            .arg(out)
            .envs(s.la.handler_env())
            .env("EDGEVAULT_API_BASE_URL", s.la.var("EDGEVAULT_API_BASE_URL"))
            .env("EDGEVAULT_API_TOKEN", &token)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        edgevault_tests::secrets::scan("edgevault-cli activate's output", &text);
        (output.status.success(), text)
    };

    let key_file = dir.path().join("a.key");
    let (ok, text) = run(&a, &key_file);
    assert!(ok && text.contains(&dana), "requested as Dana: {text}");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert!(key.starts_with("ase-ak1."), "the key is in the file");
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);

    let refused_file = dir.path().join("b.key");
    let (ok, text) = run(&b, &refused_file);
    assert!(!ok && text.contains("403") && text.contains(ACTIVATE), "{text}");
    assert!(!refused_file.exists(), "no key file for B");
    assert_eq!(s.sync_status(&b), "KeyVaultNotConfigured");
}

/// The fleet view shows each caller the devices it may read, as ARM reports the caller's rights: a grant on one
/// device shows that device only, a grant on the resource group shows them all, no grant shows none (and no
/// recovery or alert of a device it cannot see); no token is a `401` from App Service Authentication.
#[test]
fn the_fleet_view_shows_each_caller_only_the_devices_it_may_read() {
    use edgevault::authorization::READ;
    let s = System::start();
    let a = s.device("ase-fleet-a");
    s.device("ase-fleet-b");
    let names = |token: &str| -> Vec<String> {
        let (status, headers, fleet) = s.la.api_as(Some(token), "GET", "/fleet.json", None).unwrap();
        assert_eq!(status, 200, "{fleet}");
        assert!(headers.get("x-edgevault-caller").is_some(), "the answer names its caller");
        let mut names: Vec<String> =
            fleet["devices"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap().to_string()).collect();
        names.sort();
        names
    };
    let one = s.la.user("erin").unwrap();
    s.la.grant(&one, &a, &[READ]).unwrap();
    assert_eq!(names(&s.la.token(&one, API_AUDIENCE).unwrap()), ["ase-fleet-a"]);

    let group = s.la.user("frank").unwrap();
    s.la.grant(&group, &s.la.resource_group_id(), &["Microsoft.DataBoxEdge/*/read"]).unwrap();
    assert_eq!(names(&s.la.token(&group, API_AUDIENCE).unwrap()), ["ase-fleet-a", "ase-fleet-b"]);

    let nobody = s.la.user("grace").unwrap();
    let token = s.la.token(&nobody, API_AUDIENCE).unwrap();
    assert!(names(&token).is_empty());
    let (status, _, fleet) = s.la.api_as(Some(&token), "GET", "/fleet.json", None).unwrap();
    assert_eq!(status, 200);
    assert!(fleet["alerts"].as_array().unwrap().is_empty() && fleet["recoveries"].as_array().unwrap().is_empty());

    let (status, _, refused) = s.la.api_as(None, "GET", "/fleet.json", None).unwrap();
    assert_eq!(status, 401, "{refused}");
}
