//! A lifecycle scenario against local-azure: local-azure and the real handler as processes, an operator
//! principal, and the calls the Functions host and the portal would make. Shared by the end-to-end tests and the
//! demo, so both exercise exactly the same steps.

use base64::Engine;
use edgevault::messages::Command;
use edgevault::resource_id::ResourceId;
use edgevault::vault_name::VaultName;
use serde_json::{Value, json};

use crate::Handler;
use crate::local_azure::{API_AUDIENCE, ARM_AUDIENCE, LocalAzure, VAULT_AUDIENCE};
use crate::openapi;

pub struct World {
    pub la: LocalAzure,
    pub handler: Handler,
    /// An operator principal with every ARM permission in the subscription (not edgevault's identity).
    pub operator: String,
    /// The handler's settings, to start it again.
    env: Vec<(String, String)>,
}

/// Starts local-azure and the handler pointed at it; `extra` adds or overrides handler settings.
pub fn world(extra: &[(&str, &str)]) -> World {
    let la = LocalAzure::start().expect("local-azure starts");
    let mut env = la.handler_env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let handler = Handler::start_with(&env).expect("edgevault starts");
    World::of(la, handler, env)
}

/// A world whose handler runs under `strace`, recording its network calls to `trace`.
pub fn traced_world(trace: &std::path::Path) -> World {
    let la = LocalAzure::start().expect("local-azure starts");
    let env = la.handler_env();
    let handler = Handler::start_traced(&env, trace).expect("edgevault starts under strace");
    World::of(la, handler, env)
}

impl World {
    fn of(la: LocalAzure, handler: Handler, env: Vec<(String, String)>) -> World {
        let operator = la.principal("operator", &["*"]).unwrap();
        World { la, handler, operator, env }
    }

    /// Replaces the handler with a new process on the same settings: nothing cached (tokens, clients).
    pub fn restart_handler(&mut self) {
        self.handler = Handler::start_with(&self.env).expect("edgevault starts again");
    }

    pub fn arm(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let token = self.la.token(&self.operator, ARM_AUDIENCE).unwrap();
        self.la.arm(&token, method, path, body).unwrap()
    }

    pub fn create_device(&self, name: &str) -> ResourceId {
        let id = format!("{}/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/{name}", self.la.resource_group_id());
        let body = json!({"location": self.la.var("AZURE_LOCATION"), "sku": {"name": "Edge", "tier": "Standard"}, "properties": {}});
        let (status, answer) = self.arm("PUT", &id, Some(body));
        assert!(status == 200 || status == 201, "create device: {status} {answer}");
        id.parse().unwrap()
    }

    pub fn extended_info(&self, device: &ResourceId) -> Value {
        let (status, info) = self.arm("POST", &format!("{device}/getExtendedInformation"), Some(json!({})));
        assert_eq!(status, 200, "{info}");
        info["properties"].clone()
    }

    /// Invokes a Service Bus worker with `command` as the host would deliver it.
    pub fn deliver(&self, function: &str, command: &Command, delivery_count: u32) -> (u16, Value) {
        let invocation = json!({
            "Data": {"message": command.to_json()},
            "Metadata": {"MessageId": command.message_id(), "DeliveryCount": delivery_count, "SessionId": command.session_id(),
                         "SequenceNumber": 1, "EnqueuedTimeUtc": "2026-11-28T12:00:00Z"}
        });
        self.handler.invoke(function, &invocation).unwrap()
    }

    /// A whole recovery sweep the way the host runs it: the timer starts it, then every `SweepPage` message on the
    /// queue is delivered to the handler once, in order, until no new page is sent. Returns the timer's answer and
    /// each page's `ReturnValue`.
    pub fn sweep(&self) -> (Value, Vec<Value>) {
        let timer = crate::fixture("triggers/timer.json").unwrap();
        let (status, started) = self.handler.invoke("RecoverySweep", &timer).unwrap();
        assert_eq!(status, 200, "{started}");
        let mut delivered = std::collections::BTreeSet::new();
        let mut pages = Vec::new();
        loop {
            let peeked =
                self.la.admin_get("/admin/servicebus/queues/edgevault/sweep-pages/messages?limit=1000").unwrap();
            let list = peeked.as_array().cloned().or_else(|| peeked["value"].as_array().cloned()).unwrap_or_default();
            let new: Vec<Value> =
                list.into_iter().filter(|m| !delivered.contains(m["messageId"].as_str().unwrap_or_default())).collect();
            if new.is_empty() {
                return (started, pages);
            }
            for message in new {
                delivered.insert(message["messageId"].as_str().unwrap_or_default().to_string());
                let body: serde_json::Map<String, Value> =
                    serde_json::from_str(message["body"].as_str().unwrap_or_default()).unwrap();
                let command = Command::from_json(&body).unwrap();
                let (status, answer) = self.deliver("SweepPage", &command, 1);
                assert_eq!(status, 200, "{answer}");
                pages.push(answer["ReturnValue"].clone());
            }
        }
    }

    /// The API invoked as the Functions host would with App Service Authentication on, the caller being the
    /// operator (every right on the subscription).
    pub fn api(&self, method: &str, body: Option<Value>, operation_id: Option<&str>) -> Value {
        self.api_as(&self.operator, "operator", method, body, operation_id)
    }

    /// The API invoked as the host would for `caller` (object id) named `name`: its Easy Auth identity first in
    /// `Identities`, its token in `Authorization`.
    pub fn api_as(
        &self,
        caller: &str,
        name: &str,
        method: &str,
        body: Option<Value>,
        operation_id: Option<&str>,
    ) -> Value {
        let token = self.la.token(caller, API_AUDIENCE).unwrap();
        let url = match operation_id {
            Some(id) => format!("http://127.0.0.1:7071/api/activation-keys/{id}"),
            None => "http://127.0.0.1:7071/api/activation-keys".to_string(),
        };
        let params = operation_id.map(|id| json!({"operationId": id})).unwrap_or(json!({}));
        let headers = json!({"Content-Type": ["application/json"], "Authorization": [format!("Bearer {token}")]});
        let invocation = json!({"Data": {"req": {
            "Url": url, "Method": method, "Query": {}, "Headers": headers, "Identities": [easy_auth_identity(caller, name)],
            "Params": params, "Body": body.map(|b| b.to_string()).unwrap_or_default()}}, "Metadata": {}});
        let (status, answer) = self.handler.invoke("ActivationKeyApi", &invocation).unwrap();
        assert_eq!(status, 200, "the API invocation itself succeeds: {answer}");
        let res = answer["Outputs"]["res"].clone();
        // Every answer the tests see is checked against the OpenAPI document.
        let template = if operation_id.is_some() { "/activation-keys/{operationId}" } else { "/activation-keys" };
        let code = res["statusCode"].as_u64().unwrap() as u16;
        openapi::check(&method.to_ascii_lowercase(), template, code, &res["body"]).unwrap();
        res
    }

    /// `POST /api/devices/{subscription}/{group}/{name}/{action}` as the host invokes `DeviceApi`; the answer is
    /// checked against the OpenAPI document.
    pub fn device_api(&self, device: &ResourceId, action: &str) -> Value {
        self.device_api_as(&self.operator.clone(), "operator", device, action)
    }

    /// [`World::device_api`] as `caller` (object id) named `name`.
    pub fn device_api_as(&self, caller: &str, name: &str, device: &ResourceId, action: &str) -> Value {
        let (sub, group, device_name) =
            (device.subscription(), device.resource_group().unwrap(), device.name().unwrap());
        let url = format!("http://127.0.0.1:7071/api/devices/{sub}/{group}/{device_name}/{action}");
        let params =
            json!({"subscriptionId": sub, "resourceGroup": group, "deviceName": device_name, "action": action});
        // Signed in the way App Service Authentication passes callers on.
        let token = self.la.token(caller, API_AUDIENCE).unwrap();
        let headers = json!({"Authorization": [format!("Bearer {token}")]});
        let invocation = json!({"Data": {"req": {"Url": url, "Method": "POST", "Query": {}, "Headers": headers,
            "Identities": [easy_auth_identity(caller, name)], "Params": params}}, "Metadata": {}});
        let (status, answer) = self.handler.invoke("DeviceApi", &invocation).unwrap();
        assert_eq!(status, 200, "the API invocation itself succeeds: {answer}");
        let res = answer["Outputs"]["res"].clone();
        let template = format!("/devices/{{subscriptionId}}/{{resourceGroup}}/{{deviceName}}/{action}");
        let code = res["statusCode"].as_u64().unwrap() as u16;
        openapi::check("post", &template, code, &res["body"]).unwrap();
        res
    }

    /// Identity, then vault, lock, CIK and extended information, as the two workers do them.
    pub fn provision(&self, device: &ResourceId) -> Value {
        let created =
            Command::from(edgevault::messages::ResourceCreated { device: device.clone(), cause: "event-1".into() });
        let (status, answer) = self.deliver("ResourceCreated", &created, 1);
        assert_eq!(status, 200, "{answer}");
        let requested = Command::from(edgevault::messages::ActivationKeyRequested {
            device: device.clone(),
            operation_id: operation_id(device),
            vault_name: Some(VaultName::default_for(device, 0)),
        });
        let (status, answer) = self.deliver("ActivationKeyRequested", &requested, 1);
        assert_eq!(status, 200, "{answer}");
        self.extended_info(device)
    }

    /// Removes edgevault's lock from a vault and deletes it (it is then soft-deleted), as an operator would.
    pub fn unlock_and_delete_vault(&self, vault: &ResourceId) {
        let lock = format!("{vault}/providers/Microsoft.Authorization/locks/edgevault-do-not-delete");
        assert_eq!(self.arm("DELETE", &lock, None).0, 200, "the lock is removed");
        assert!(matches!(self.arm("DELETE", &vault.to_string(), None).0, 200 | 204), "the vault is deleted");
    }

    pub fn device_principal(&self, device: &ResourceId) -> String {
        let (_, body) = self.arm("GET", &device.to_string(), None);
        body["identity"]["principalId"].as_str().expect("the device has an identity").to_string()
    }

    /// Runs `edgevault-cli` with local-azure's environment; returns (success, stdout + stderr).
    pub fn cli(&self, args: &[&str], stdin: &str) -> (bool, String) {
        cli(&self.la, args, stdin)
    }

    /// Reads a CIK secret acting as `principal` (the device's managed identity, say).
    pub fn read_secret(&self, principal: &str, url: &str) -> (u16, Value) {
        let token = self.la.token(principal, VAULT_AUDIENCE).unwrap();
        self.la.vault(&token, "GET", url, None).unwrap()
    }
}

/// Runs `edgevault-cli` with `la`'s environment; returns (success, stdout + stderr), which is scanned for secrets.
pub fn cli(la: &LocalAzure, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(crate::binary("edgevault-cli").unwrap())
        .args(args)
        .envs(la.handler_env())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    crate::secrets::scan(&format!("the output of edgevault-cli {}", args.join(" ")), &text);
    (output.status.success(), text)
}

/// Grants the device's identity what "Sync device secrets" needs on its own resource: the
/// `updateExtendedInformation` action (a real device is registered with its resource; here a grant stands for it).
pub fn grant_device_sync(la: &LocalAzure, principal: &str, device: &ResourceId) {
    let grant = json!({"principalId": principal, "scope": device.to_string(),
        "actions": ["Microsoft.DataBoxEdge/dataBoxEdgeDevices/updateExtendedInformation/action"]});
    la.admin_post("/admin/grants", grant).expect("the grant is stored");
}

/// The alerts on the `alerts` queue so far (peeked, not received).
pub fn queued_alerts(la: &LocalAzure) -> Vec<Value> {
    let listed = la.admin_get("/admin/servicebus/queues/edgevault/alerts/messages").unwrap();
    listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["body"].as_str().and_then(|b| serde_json::from_str(b).ok()))
        .collect()
}

/// The claims identity the Functions host makes of App Service Authentication's `X-MS-CLIENT-PRINCIPAL` for an
/// Entra ID user (as `local-azure-host`'s `easy_auth::identity` does, and the real host with the site's
/// authentication on).
pub fn easy_auth_identity(object_id: &str, name: &str) -> Value {
    let claim = |kind: &str, value: &str| {
        json!({"Issuer": "LOCAL AUTHORITY", "OriginalIssuer": "LOCAL AUTHORITY",
        "Properties": {}, "Type": kind, "Value": value, "ValueType": "http://www.w3.org/2001/XMLSchema#string"})
    };
    let upn = format!("{name}@local-azure.test");
    json!({
        "AuthenticationType": "aad", "IsAuthenticated": true, "Actor": null, "BootstrapContext": null, "Label": null,
        "Name": upn,
        "NameClaimType": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        "RoleClaimType": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
        "Claims": [
            claim("http://schemas.microsoft.com/identity/claims/objectidentifier", object_id),
            claim("name", name),
            claim("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn", &upn),
            claim("http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", &upn),
        ],
    })
}

pub fn operation_id(device: &ResourceId) -> String {
    format!("{}.0123456789abcdef", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(device.to_string()))
}

pub fn cik_url(info: &Value) -> String {
    format!(
        "{}/secrets/{}/{}",
        info["clientSecretStoreUrl"].as_str().unwrap().trim_end_matches('/'),
        info["channelIntegrityKeyName"].as_str().unwrap(),
        info["channelIntegrityKeyVersion"].as_str().unwrap()
    )
}
