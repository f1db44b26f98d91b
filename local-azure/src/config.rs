//! Start-up configuration and the built-in defaults a newcomer gets with `local-azure up`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// The tenant every default object lives in.
pub const DEFAULT_TENANT_ID: &str = "7a1e5c3d-0000-4000-8000-000000000001";
pub const DEFAULT_SUBSCRIPTION_ID: &str = "5b0c7e2a-0000-4000-8000-000000000002";
pub const DEFAULT_RESOURCE_GROUP: &str = "edgevault-rg";
pub const DEFAULT_LOCATION: &str = "westus2";
/// edgevault's function app system-assigned identity (object id / principal id).
pub const APP_PRINCIPAL_ID: &str = "e0e0e0e0-0000-4000-8000-000000000003";
/// The client (application) id of that identity.
pub const APP_CLIENT_ID: &str = "e0e0e0e0-0000-4000-8000-000000000004";
pub const APP_DISPLAY_NAME: &str = "edgevault-func";
/// The app registration of edgevault's activation-key API (`entra::Application`): callers get tokens for
/// [`API_AUDIENCE`], the Functions host's Easy Auth accepts them, and the function app exchanges them on behalf of
/// the caller with this client id (its identity trusted as a federated credential).
pub const API_CLIENT_ID: &str = "e0e0e0e0-0000-4000-8000-000000000005";
pub const API_AUDIENCE: &str = "api://edgevault";

/// The ARM actions edgevault's identity is granted on the default subscription: it manages
/// devices, vaults (but may not purge them) and locks, creates audit storage accounts (but may not delete them) and
/// vaults' diagnostic settings, and reads everything.
pub const APP_ACTIONS: &[&str] = &[
    "*/read",
    "Microsoft.DataBoxEdge/dataBoxEdgeDevices/*",
    "Microsoft.KeyVault/vaults/*",
    "Microsoft.KeyVault/checkNameAvailability/action",
    "Microsoft.Authorization/locks/*",
    "Microsoft.Storage/storageAccounts/write",
    "Microsoft.Insights/diagnosticSettings/write",
];

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind: IpAddr,
    /// Gateway port (TLS + CONNECT proxy); 0 picks a free one.
    pub port: u16,
    /// Plain-http admin and identity port; 0 picks a free one.
    pub admin_port: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(".local-azure"),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8443,
            admin_port: 8080,
        }
    }
}
