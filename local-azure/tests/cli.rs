//! The CLI contract: the ready line, `env.json`, `local-azure env [--json]`.

mod support;

use serde_json::Value;
use support::*;

#[tokio::test]
async fn env_command_prints_what_up_announced() {
    let dir = tempfile::tempdir().unwrap();
    let la = LocalAzure::start(dir.path());
    for key in [
        "HTTPS_PROXY",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "NO_PROXY",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "AZURE_TENANT_ID",
        "AZURE_SUBSCRIPTION_ID",
        "AZURE_RESOURCE_GROUP",
        "LOCAL_AZURE_ADMIN",
        "EDGEVAULT_PRINCIPAL_ID",
    ] {
        assert!(!la.var(key).is_empty(), "{key} missing from the ready line");
    }
    assert_eq!(la.var("HTTPS_PROXY"), format!("http://{}", la.gateway));
    assert!(std::path::Path::new(&la.var("SSL_CERT_FILE")).exists());

    let bin = env!("CARGO_BIN_EXE_local-azure");
    let out = std::process::Command::new(bin).args(["env", "--json", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, la.env);

    let out = std::process::Command::new(bin).args(["env", "--data-dir"]).arg(dir.path()).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("export HTTPS_PROXY=http://{}\n", la.gateway)), "{text}");
    assert!(text.lines().all(|l| l.starts_with("export ")));

    assert_eq!(la.admin_get("/admin/env").await, la.env);
    assert_eq!(la.admin_get("/admin/health").await["status"], "ok");
}
