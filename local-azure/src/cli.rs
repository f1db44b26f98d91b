//! The command line: `local-azure up` and `local-azure env`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "local-azure", version, about = "Azure on one machine, for edgevault")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start local-azure (creates the data directory, CA and default tenant on first start).
    Up(UpArgs),
    /// Print the environment a client needs, as `export K=V` lines (or JSON).
    Env(EnvArgs),
    /// Print an access token for a principal (a user, for the activation-key API) from the running local-azure,
    /// as `az account get-access-token --query accessToken -o tsv` would against Azure.
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[arg(long, env = "LOCAL_AZURE_DATA_DIR", default_value = ".local-azure")]
    pub data_dir: PathBuf,
    /// The principal's object id (see `GET /admin/principals`).
    #[arg(long)]
    pub principal: String,
    /// The audience; default: the activation-key API's (`api://edgevault`).
    #[arg(long, default_value = crate::config::API_AUDIENCE)]
    pub resource: String,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[arg(long, env = "LOCAL_AZURE_DATA_DIR", default_value = ".local-azure")]
    pub data_dir: PathBuf,
    /// Gateway port: HTTPS under the Azure host names and the CONNECT proxy (0 = any free port).
    #[arg(long, default_value_t = 8443)]
    pub port: u16,
    /// Plain-http admin API and managed-identity endpoint (0 = any free port).
    #[arg(long, default_value_t = 8080)]
    pub admin_port: u16,
    /// Exit when standard input closes (lets a test harness tie local-azure to its lifetime).
    #[arg(long)]
    pub exit_on_stdin_close: bool,
    /// Also run this function app (a packaged app folder, or a repository root with `host.json` and
    /// `function-definitions/`) in the embedded Functions host.
    #[arg(long)]
    pub app: Option<PathBuf>,
    /// The custom handler executable (default: host.json's `defaultExecutablePath` in the app folder; in a
    /// repository root, where that is never built, `target/release/<name>`, then `target/debug/<name>`).
    #[arg(long, requires = "app")]
    pub handler: Option<PathBuf>,
    /// An app setting `KEY=VALUE` for the function app; repeatable; wins over the defaults.
    #[arg(long = "settings", value_parser = parse_setting, requires = "app")]
    pub settings: Vec<(String, String)>,
    /// The Functions host's port (0 = any free port).
    #[arg(long, default_value_t = 7071, requires = "app")]
    pub host_port: u16,
    /// How the Functions host sends invocations to the handler: `real` (the Azure Functions host's form, chunked
    /// bodies) or `core-tools` (`func start`'s form, buffered with Content-Length).
    #[arg(long, env = "LOCAL_AZURE_HOST_FORM", default_value = "real")]
    pub host_form: local_azure_host::HostForm,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    #[arg(long, env = "LOCAL_AZURE_DATA_DIR", default_value = ".local-azure")]
    pub data_dir: PathBuf,
    /// Print one JSON object instead of `export` lines.
    #[arg(long)]
    pub json: bool,
}

/// Quotes a value for POSIX shells.
pub fn shell_quote(v: &str) -> String {
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:,@=+".contains(c)) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

/// `export K=V` lines for `eval "$(local-azure env)"`.
pub fn export_lines(env: &serde_json::Value) -> String {
    let mut out = String::new();
    if let Some(map) = env.as_object() {
        for (k, v) in map {
            let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            out.push_str(&format!("export {k}={}\n", shell_quote(&v)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("http://127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
        let lines = export_lines(&serde_json::json!({"A": "x y"}));
        assert_eq!(lines, "export A='x y'\n");
    }

    #[test]
    fn the_host_form_defaults_to_the_real_host() {
        let up = |args: &[&str]| match Cli::try_parse_from([&["local-azure", "up", "--app", "."], args].concat()) {
            Ok(Cli { command: Command::Up(up) }) => up.host_form,
            other => panic!("{other:?}"),
        };
        // LOCAL_AZURE_HOST_FORM may be set around the tests; the flag wins over it.
        assert_eq!(up(&["--host-form", "real"]), local_azure_host::HostForm::Real);
        assert_eq!(up(&["--host-form", "core-tools"]), local_azure_host::HostForm::CoreTools);
        assert!(Cli::try_parse_from(["local-azure", "up", "--app", ".", "--host-form", "func"]).is_err());
        if std::env::var_os("LOCAL_AZURE_HOST_FORM").is_none() {
            assert_eq!(up(&[]), local_azure_host::HostForm::Real);
        }
    }
}
