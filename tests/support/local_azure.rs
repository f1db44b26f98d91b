//! local-azure as a real process for end-to-end tests: started on free ports with a temporary data directory,
//! plus a small blocking ARM / Key Vault client that goes through its proxy and trusts its CA, as any Azure client
//! configured from its environment would.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
pub use local_azure_testkit::eventually;
use local_azure_testkit::{Launch, Process, Stderr};
use serde_json::{Value, json};

use crate::binary;

pub const ARM: &str = "https://management.azure.com";
pub const ARM_AUDIENCE: &str = "https://management.azure.com/";
pub const VAULT_AUDIENCE: &str = "https://vault.azure.net";

/// How the embedded Functions host sends invocations to the handler (`local-azure up --host-form`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostForm {
    /// The Azure Functions host's form: chunked invocation bodies.
    Real,
    /// Core Tools' (`func start`) form: buffered bodies with `Content-Length`.
    CoreTools,
}

impl HostForm {
    fn as_arg(self) -> &'static str {
        match self {
            HostForm::Real => "real",
            HostForm::CoreTools => "core-tools",
        }
    }
}

pub struct LocalAzure {
    /// The process (`local-azure-testkit`, the harness local-azure's own tests use too), its stderr captured.
    process: Process,
    /// `None` only while [`LocalAzure::kill_and_restart`] moves it to the new process.
    data_dir: Option<tempfile::TempDir>,
    /// The arguments after the data directory, so a restart runs the same configuration.
    extra: Vec<String>,
    pub admin: String,
    pub env: BTreeMap<String, String>,
    azure: reqwest::blocking::Client,
    local: reqwest::blocking::Client,
}

impl LocalAzure {
    pub fn start() -> anyhow::Result<Self> {
        Self::launch(&[])
    }

    /// local-azure with the edgevault function app in its Functions host (the repository's `host.json` and
    /// `function-definitions/`, the built `edgevault` binary), the whole system on one machine. `settings` override
    /// app settings (e.g. `EDGEVAULT_CUTOVER`).
    pub fn start_with_app(settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with_app_as(HostForm::Real, settings)
    }

    /// [`LocalAzure::start_with_app`] with the Functions host sending its invocations in `form`: the real Azure
    /// host's (chunked bodies) or Core Tools' (`func start`: buffered, with `Content-Length`).
    pub fn start_with_app_as(form: HostForm, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut args: Vec<String> = vec![
            "--app".into(),
            repo.display().to_string(),
            "--handler".into(),
            binary("edgevault")?.display().to_string(),
            "--host-port".into(),
            "0".into(),
            "--host-form".into(),
            form.as_arg().into(),
            "--settings".into(),
            "EDGEVAULT_RETRY_INITIAL_DELAY_MS=50".into(),
        ];
        for (key, value) in settings {
            args.push("--settings".into());
            args.push(format!("{key}={value}"));
        }
        Self::launch(&args)
    }

    fn launch(extra: &[String]) -> anyhow::Result<Self> {
        Self::spawn_on(tempfile::tempdir()?, extra.to_vec())
    }

    /// SIGKILLs local-azure (and with it the Functions host and the handler) and starts it again on the same data
    /// directory, as after a crash. Ports change; `env` is refreshed.
    pub fn kill_and_restart(mut self) -> anyhow::Result<Self> {
        self.process.kill();
        let data_dir = self.data_dir.take().expect("present until a restart");
        Self::spawn_on(data_dir, std::mem::take(&mut self.extra))
    }

    fn spawn_on(data_dir: tempfile::TempDir, extra: Vec<String>) -> anyhow::Result<Self> {
        let binary = binary("local-azure")?;
        let process = Process::start(Launch {
            binary: &binary,
            data_dir: data_dir.path(),
            port: 0,
            admin_port: 0,
            extra: &extra,
            stderr: Stderr::Capture,
        })?;
        let env = process.env();
        if env.is_empty() {
            bail!("ready line without env: {}", process.ready);
        }
        let ca = std::fs::read(&env["SSL_CERT_FILE"])?;
        let azure = reqwest::blocking::Client::builder()
            .proxy(reqwest::Proxy::https(&env["HTTPS_PROXY"])?)
            .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
            .timeout(Duration::from_secs(60))
            .build()?;
        let local = reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build()?;
        let admin = process.admin().to_string();
        Ok(LocalAzure { process, data_dir: Some(data_dir), extra, admin, env, azure, local })
    }

    /// Everything local-azure (and, with an app, its Functions host and the handler) wrote to stderr.
    pub fn log(&self) -> Vec<String> {
        self.process.log()
    }

    /// The data directory (`local-azure env --data-dir <it>` prints the environment that points a client here).
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.as_ref().expect("present until a restart").path()
    }

    /// local-azure's exit status if it has exited (by itself: it is never signalled by this handle but on drop).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.exited()
    }

    /// Stops local-azure the orderly way: closing its standard input makes it stop the Functions host (which stops
    /// the handler and waits for it) and its servers, then exit. Waits up to `limit` for that; past it, the drop
    /// that follows kills it. The data directory goes with the drop.
    pub fn stop(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        self.process.stop(limit)
    }

    /// The function app's HTTP API (with `up --app`): `method` on `<EDGEVAULT_API_BASE_URL><path>` with the
    /// function key; returns status, headers and the JSON body.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, reqwest::header::HeaderMap, Value)> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.var("EDGEVAULT_API_BASE_URL"))
        };
        let mut request =
            self.local.request(method.parse()?, &url).header("x-functions-key", self.var("EDGEVAULT_FUNCTION_KEY"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text()?;
        let answer = serde_json::from_str(&text).unwrap_or(Value::String(text));
        crate::secrets::scan_answer(&format!("the API's answer to {method} {path}"), &answer);
        Ok((status, headers, answer))
    }

    /// `GET <EDGEVAULT_API_BASE_URL><path>` with the function key held in variable `key_var` (every function has
    /// its own: `EDGEVAULT_FLEET_DATA_KEY` for the fleet view's JSON, say); returns status and body.
    pub fn api_get_with(&self, key_var: &str, path: &str) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}", self.var("EDGEVAULT_API_BASE_URL"));
        let response = self.local.get(&url).header("x-functions-key", self.var(key_var)).send()?;
        Ok((response.status().as_u16(), response.text()?))
    }

    pub fn var(&self, name: &str) -> &str {
        self.env.get(name).map(String::as_str).unwrap_or_default()
    }

    pub fn subscription(&self) -> &str {
        self.var("AZURE_SUBSCRIPTION_ID")
    }

    pub fn resource_group_id(&self) -> String {
        format!("/subscriptions/{}/resourceGroups/{}", self.subscription(), self.var("AZURE_RESOURCE_GROUP"))
    }

    /// What the edgevault handler needs to run against this local-azure: its client environment and the app
    /// settings a deployment would have, with short retries so a failing call fails fast.
    pub fn handler_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            "HTTPS_PROXY",
            "SSL_CERT_FILE",
            "NO_PROXY",
            "IDENTITY_ENDPOINT",
            "IDENTITY_HEADER",
            "AZURE_TENANT_ID",
            "EDGEVAULT_PRINCIPAL_ID",
            "EDGEVAULT_RECORDS_TABLE_URI",
        ]
        .iter()
        .map(|k| (k.to_string(), self.var(k).to_string()))
        .collect();
        env.push(("EDGEVAULT_SUBSCRIPTIONS".into(), self.subscription().to_string()));
        env.push(("ServiceBusConnection__fullyQualifiedNamespace".into(), "edgevault.servicebus.windows.net".into()));
        env.push(("EDGEVAULT_ARM_ENDPOINT".into(), ARM.into()));
        env.push(("EDGEVAULT_RETRY_MAX_RETRIES".into(), "2".into()));
        env.push(("EDGEVAULT_RETRY_INITIAL_DELAY_MS".into(), "50".into()));
        env
    }

    pub fn admin_post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self.local.post(format!("{}{path}", self.admin)).json(&body).send()?;
        let status = response.status();
        let value: Value = response.json().unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {path}: {status} {value}");
        }
        Ok(value)
    }

    /// Runs a non-HTTP function now through the Functions host's admin API (master key), as an operator would
    /// with `POST /admin/functions/<name>`; returns the host's status (202 when accepted).
    pub fn run_function(&self, name: &str, input: &str) -> anyhow::Result<u16> {
        let url = format!("{}/admin/functions/{name}", self.var("LOCAL_AZURE_FUNCTIONS_HOST"));
        let response = self
            .local
            .post(url)
            .header("x-functions-key", self.var("EDGEVAULT_MASTER_KEY"))
            .json(&json!({"input": input}))
            .send()?;
        Ok(response.status().as_u16())
    }

    pub fn admin_delete(&self, path: &str) -> anyhow::Result<()> {
        let response = self.local.delete(format!("{}{path}", self.admin)).send()?;
        if !response.status().is_success() {
            bail!("DELETE {path}: {}", response.status());
        }
        Ok(())
    }

    pub fn admin_get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.local.get(format!("{}{path}", self.admin)).send()?;
        let status = response.status();
        let value: Value = response.json().unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("GET {path}: {status} {value}");
        }
        Ok(value)
    }

    /// A new principal with `actions` granted at subscription scope; returns its object id.
    pub fn principal(&self, name: &str, actions: &[&str]) -> anyhow::Result<String> {
        let principal = self.admin_post("/admin/principals", json!({"displayName": name}))?;
        let oid = principal["objectId"].as_str().ok_or_else(|| anyhow!("no objectId: {principal}"))?.to_string();
        let scope = format!("/subscriptions/{}", self.subscription());
        self.admin_post("/admin/grants", json!({"principalId": oid, "scope": scope, "actions": actions}))?;
        Ok(oid)
    }

    pub fn token(&self, principal: &str, resource: &str) -> anyhow::Result<String> {
        let token = self.admin_post("/admin/tokens", json!({"principalId": principal, "resource": resource}))?;
        Ok(token["access_token"].as_str().ok_or_else(|| anyhow!("no token: {token}"))?.to_string())
    }

    /// An ARM call as the holder of `token`; `path` may carry its own query, `api-version` is added.
    pub fn arm(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = format!("{ARM}{path}{separator}api-version=2024-11-01");
        self.call(token, method, &url, body)
    }

    /// Every item of an ARM list, following `nextLink` across pages.
    pub fn arm_list(&self, token: &str, path: &str) -> anyhow::Result<Vec<Value>> {
        let (status, mut page) = self.arm(token, "GET", path, None)?;
        if status != 200 {
            bail!("GET {path}: {status} {page}");
        }
        let mut items = Vec::new();
        loop {
            items.extend(page["value"].as_array().cloned().unwrap_or_default());
            let Some(next) = page["nextLink"].as_str().map(str::to_string) else { return Ok(items) };
            let (status, next_page) = self.call(token, "GET", &next, None)?;
            if status != 200 {
                bail!("GET {next}: {status} {next_page}");
            }
            page = next_page;
        }
    }

    /// A Key Vault data-plane call as the holder of `token`.
    pub fn vault(&self, token: &str, method: &str, url: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let separator = if url.contains('?') { '&' } else { '?' };
        let (status, answer) = self.call(token, method, &format!("{url}{separator}api-version=7.5"), body)?;
        // A CIK the test reads is looked for in everything edgevault has answered and logged.
        crate::secrets::remember_secret_answer(url, &answer);
        Ok((status, answer))
    }

    /// The pid of the custom handler the embedded Functions host runs (a child of local-azure named `edgevault`).
    pub fn handler_pid(&self) -> Option<u32> {
        crate::child_named(self.process.pid(), "edgevault")
    }

    /// Counts the versions of a device's CIK secret (`info` is its extended information). `operator`, an ARM owner,
    /// first grants itself `secrets/list` on the vault: edgevault's own identity deliberately has none.
    pub fn cik_versions(&self, operator: &str, info: &Value) -> anyhow::Result<usize> {
        let vault = info["clientSecretStoreId"].as_str().context("no vault linked")?;
        let policy = json!({"properties": {"accessPolicies": [{"tenantId": self.var("AZURE_TENANT_ID"),
            "objectId": operator, "permissions": {"secrets": ["list"], "keys": [], "certificates": []}}]}});
        let arm_token = self.token(operator, ARM_AUDIENCE)?;
        let (status, answer) = self.arm(&arm_token, "PUT", &format!("{vault}/accessPolicies/add"), Some(policy))?;
        if status != 200 {
            bail!("granting list: {status} {answer}");
        }
        let url = format!(
            "{}/secrets/{}/versions",
            info["clientSecretStoreUrl"].as_str().unwrap_or_default().trim_end_matches('/'),
            info["channelIntegrityKeyName"].as_str().unwrap_or_default()
        );
        let (status, list) = self.vault(&self.token(operator, VAULT_AUDIENCE)?, "GET", &url, None)?;
        if status != 200 {
            bail!("listing versions: {status} {list}");
        }
        Ok(list["value"].as_array().map(Vec::len).unwrap_or_default())
    }

    /// Sends a message to a queue of the `edgevault` namespace over the Service Bus REST protocol, as edgevault's
    /// identity (which may send); `broker` is the `BrokerProperties` header.
    pub fn send_message(&self, queue: &str, body: &str, broker: Value) -> anyhow::Result<u16> {
        let token = self.token(self.var("EDGEVAULT_PRINCIPAL_ID"), "https://servicebus.azure.net")?;
        let response = self
            .azure
            .post(format!("https://edgevault.servicebus.windows.net/{queue}/messages"))
            .bearer_auth(token)
            .header("BrokerProperties", broker.to_string())
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()?;
        Ok(response.status().as_u16())
    }

    /// A queue's message counts (`activeMessageCount`, `lockedMessageCount`, `deadLetterMessageCount`, …).
    pub fn queue_counts(&self, queue: &str) -> anyhow::Result<Value> {
        Ok(self.admin_get(&format!("/admin/servicebus/queues/edgevault/{queue}"))?["counts"].clone())
    }

    fn call(&self, token: &str, method: &str, url: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut request = self.azure.request(method.parse()?, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let text = response.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }
}

impl Drop for LocalAzure {
    fn drop(&mut self) {
        self.process.kill();
        // With an app, the handler's log arrives here: it is scanned like every handler's.
        if !std::thread::panicking() {
            crate::secrets::scan("local-azure's log (with the handler's)", &self.log().join("\n"));
        }
    }
}
