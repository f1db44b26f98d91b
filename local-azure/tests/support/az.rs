//! The Azure CLI as a test client: `az` from `tests/tools/install-azure-cli.sh`, one configuration directory per
//! user, local-azure's client environment and nothing else inherited.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{Value, json};

use super::{LocalAzure, unique};

/// Where the CLI is: `EDGEVAULT_AZ`, else `<workspace>/target/tools/azure-cli/bin/az`.
pub fn az_binary() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf();
    let az = std::env::var_os("EDGEVAULT_AZ")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/tools/azure-cli/bin/az"));
    assert!(
        az.is_file(),
        "the Azure CLI is not installed at {}: run `bash tests/tools/install-azure-cli.sh` from the workspace root (or set EDGEVAULT_AZ to an az executable)",
        az.display()
    );
    az
}

/// One CLI user: its own configuration directory, local-azure's client environment, nothing else inherited.
pub struct Az {
    bin: PathBuf,
    pub config: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Az {
    pub fn new(la: &LocalAzure) -> Az {
        let config = tempfile::tempdir().unwrap();
        let mut env: Vec<(String, String)> =
            ["HTTPS_PROXY", "REQUESTS_CA_BUNDLE", "NO_PROXY", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"]
                .iter()
                .map(|k| (k.to_string(), la.var(k)))
                .collect();
        env.push(("AZURE_CONFIG_DIR".into(), config.path().display().to_string()));
        env.push(("HOME".into(), config.path().display().to_string()));
        env.push(("PATH".into(), std::env::var("PATH").unwrap_or_default()));
        // The CLI uploads usage telemetry to a Microsoft host at exit; there is no internet here and local-azure's
        // proxy refuses that host. Not a safety check: a privacy setting every user may change.
        env.push(("AZURE_CORE_COLLECT_TELEMETRY".into(), "no".into()));
        Az { bin: az_binary(), config, env }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.config.path())
            .output()
            .expect("running az")
    }

    /// Runs a command that must succeed and answers its `-o json` output (`null` for none). On failure the message
    /// carries stderr only: stdout may hold a secret's value.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "az {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).expect("az printed JSON") }
    }

    /// Runs a command that must fail; answers its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "az {} should have failed; stderr: {stderr}", args.join(" "));
        stderr
    }
}

/// A principal with every action on the default subscription (an operator with Owner), and a CLI logged in as it
/// through the managed-identity endpoint.
pub async fn operator(la: &LocalAzure) -> (Az, String) {
    let oid = la.admin_post("/admin/principals", json!({ "displayName": unique("operator") })).await["objectId"]
        .as_str()
        .unwrap()
        .to_string();
    la.admin_post(
        "/admin/grants",
        json!({ "principalId": oid, "scope": format!("/subscriptions/{}", la.var("AZURE_SUBSCRIPTION_ID")), "actions": ["*"], "roleName": "Owner" }),
    )
    .await;
    let az = Az::new(la);
    let accounts = az.json(&["login", "--identity", "--object-id", &oid]);
    assert_eq!(accounts[0]["id"], la.var("AZURE_SUBSCRIPTION_ID"), "{accounts}");
    (az, oid)
}
