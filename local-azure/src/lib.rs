//! local-azure: the Azure services edgevault uses, on one machine.
//!
//! Map of the crate:
//! - [`cli`]: `local-azure up` / `local-azure env`.
//! - [`config`]: start-up options and the built-in defaults (tenant, subscription, app identity).
//! - [`gateway`]: the TLS gateway + `CONNECT` proxy and the admin listener.
//! - [`ca`]: the local CA and the leaf certificates for Azure host names.
//! - [`identity`]: managed identities and the App Service token endpoint.
//! - [`token`]: JWT-shaped access tokens (issue, verify).
//! - [`arm`]: Azure Resource Manager (devices, vaults, locks, grants, activity log).
//! - [`keyvault`]: the Key Vault secrets data plane.
//! - [`servicebus`]: Service Bus queues over the REST protocol (sessions, locks, dead-lettering).
//! - [`eventgrid`]: successful ARM operations published to webhook subscriptions (handshake, retries, dead-letter).
//! - [`functions`]: `up --app`, the embedded Functions host (`local-azure-host`) wired to all of the above.
//! - [`faults`]: fault injection per service and operation.
//! - [`admin`]: the admin API that seeds, inspects and steers all of the above; [`seed`]: its bulk fleet writes.
//! - [`store`]: durable state (redb); [`clock`]: the movable clock; [`http`]: request/response, and the admin
//!   API's answers ([`http::AdminError`], `ok`, `created`, `deleted`) that the services' admin routes use.
//!

pub mod admin;
pub mod arm;
pub mod ca;
pub mod cli;
pub mod clock;
pub mod config;
pub mod eventgrid;
pub mod faults;
pub mod functions;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod keyvault;
pub mod seed;
pub mod servicebus;
pub mod store;
pub mod tables;
pub mod token;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ca::Ca;
use crate::clock::Clock;
use crate::config::Config;
use crate::store::{Store, StoreError};
use crate::token::TokenIssuer;

/// Everything a request handler needs.
pub struct App {
    pub store: Store,
    pub clock: Clock,
    pub ca: Arc<Ca>,
    pub tokens: TokenIssuer,
    pub identity_header: String,
    /// The client environment (what `env.json` holds); `up --app` adds the function app's URL and keys.
    env: std::sync::RwLock<Value>,
    /// Wake-ups for Service Bus receivers waiting on a queue.
    pub servicebus: servicebus::Broker,
    /// The Event Grid publisher's wake-up and webhook client.
    pub eventgrid: eventgrid::Publisher,
    /// The fault rules, served from memory.
    pub faults: faults::Faults,
}

impl App {
    /// The client environment.
    pub fn env(&self) -> Value {
        self.env.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds variables to the client environment.
    pub fn extend_env(&self, vars: &serde_json::Map<String, Value>) {
        let mut env = self.env.write().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = env.as_object_mut() {
            map.extend(vars.clone());
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Keys and seed data created once per data directory.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Secrets {
    token_key: String,
    identity_header: String,
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf).expect("OS random number generator");
    buf
}

fn load_or_seed(store: &Store) -> Result<Secrets, StoreError> {
    store.write(|tx| -> Result<Secrets, StoreError> {
        if let Some(s) = tx.get::<Secrets>("meta", "secrets")? {
            return Ok(s);
        }
        arm::tenancy::seed_defaults(tx)?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let s = Secrets { token_key: b64.encode(random_bytes(32)), identity_header: b64.encode(random_bytes(24)) };
        tx.put("meta", "secrets", &s)?;
        Ok(s)
    })
}

/// The version of the secondary indexes ([`arm::vaults::PURGE_DUE`], the principal indexes); a data directory
/// with an older one gets them built once at start-up.
const INDEX_VERSION: u32 = 1;

fn ensure_indexes(store: &Store) -> Result<(), StoreError> {
    store.write(|tx| -> Result<(), StoreError> {
        if tx.get::<u32>("meta", "index-version")? == Some(INDEX_VERSION) {
            return Ok(());
        }
        arm::vaults::build_purge_index(tx)?;
        identity::build_principal_index(tx)?;
        tx.put("meta", "index-version", &INDEX_VERSION)
    })
}

/// The environment variables a client needs to use this local-azure.
pub fn client_env(data_dir: &Path, gateway: SocketAddr, admin: SocketAddr, header: &str) -> Value {
    let ca = data_dir.join("ca.pem").display().to_string();
    json!({
        "HTTPS_PROXY": format!("http://{gateway}"),
        "SSL_CERT_FILE": ca,
        "REQUESTS_CA_BUNDLE": ca,
        "CURL_CA_BUNDLE": ca,
        "NO_PROXY": "127.0.0.1,localhost",
        "IDENTITY_ENDPOINT": format!("http://{admin}/msi/token"),
        "IDENTITY_HEADER": header,
        "AZURE_TENANT_ID": config::DEFAULT_TENANT_ID,
        "AZURE_SUBSCRIPTION_ID": config::DEFAULT_SUBSCRIPTION_ID,
        "AZURE_RESOURCE_GROUP": config::DEFAULT_RESOURCE_GROUP,
        "AZURE_LOCATION": config::DEFAULT_LOCATION,
        "EDGEVAULT_PRINCIPAL_ID": config::APP_PRINCIPAL_ID,
        "EDGEVAULT_CLIENT_ID": config::APP_CLIENT_ID,
        "EDGEVAULT_RECORDS_TABLE_URI": format!("https://{}.table.core.windows.net", tables::DEFAULT_ACCOUNT),
        "LOCAL_AZURE_ADMIN": format!("http://{admin}"),
        "LOCAL_AZURE_GATEWAY": gateway.to_string(),
        "LOCAL_AZURE_DATA_DIR": data_dir.display().to_string(),
    })
}

/// A bound, not yet serving, local-azure.
pub struct Server {
    pub app: Arc<App>,
    pub gateway_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    gateway: TcpListener,
    admin: TcpListener,
}

/// Opened and bound, before any async runtime exists: `up --app` exports the proxy environment for the embedded
/// Functions host's clients at this point, while the process still has a single thread.
pub struct Prepared {
    pub app: Arc<App>,
    pub gateway_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    gateway: std::net::TcpListener,
    admin: std::net::TcpListener,
}

impl Prepared {
    /// Hands the listeners to the tokio runtime this is called in.
    pub fn into_server(self) -> Result<Server, StartError> {
        let convert = |l: std::net::TcpListener, addr: SocketAddr| {
            l.set_nonblocking(true).and_then(|()| TcpListener::from_std(l)).map_err(|e| StartError::Bind(addr, e))
        };
        Ok(Server {
            app: self.app,
            gateway_addr: self.gateway_addr,
            admin_addr: self.admin_addr,
            gateway: convert(self.gateway, self.gateway_addr)?,
            admin: convert(self.admin, self.admin_addr)?,
        })
    }
}

impl Server {
    /// Opens the data directory (creating CA, keys and default state on first start) and binds
    /// both ports.
    pub async fn bind(config: &Config) -> Result<Server, StartError> {
        Server::prepare(config)?.into_server()
    }

    /// [`Server::bind`] without a runtime (see [`Prepared`]).
    pub fn prepare(config: &Config) -> Result<Prepared, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
        let data_dir =
            std::fs::canonicalize(&config.data_dir).map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
        let store = Store::open(&data_dir.join("state.redb"))?;
        let secrets = load_or_seed(&store)?;
        ensure_indexes(&store)?;
        servicebus::seed_defaults(&store)?;
        tables::seed_defaults(&store)?;
        let offset: i64 = store.get("meta", "clock")?.unwrap_or(0);
        let ca = Arc::new(Ca::load_or_create(&data_dir)?);
        let bind = |port| {
            let addr = SocketAddr::new(config.bind, port);
            std::net::TcpListener::bind(addr).map_err(|e| StartError::Bind(addr, e))
        };
        let gateway = bind(config.port)?;
        let admin = bind(config.admin_port)?;
        let gateway_addr =
            gateway.local_addr().map_err(|e| StartError::Bind(SocketAddr::new(config.bind, config.port), e))?;
        let admin_addr =
            admin.local_addr().map_err(|e| StartError::Bind(SocketAddr::new(config.bind, config.admin_port), e))?;
        let token_key = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&secrets.token_key).unwrap_or_default();
        let env = client_env(&data_dir, gateway_addr, admin_addr, &secrets.identity_header);
        let faults = faults::Faults::load(&store)?;
        let app = Arc::new(App {
            faults,
            store,
            clock: Clock::with_offset(offset),
            ca,
            tokens: TokenIssuer::new(&token_key),
            identity_header: secrets.identity_header,
            env: std::sync::RwLock::new(env),
            servicebus: servicebus::Broker::default(),
            eventgrid: eventgrid::Publisher::default(),
        });
        Ok(Prepared { app, gateway_addr, admin_addr, gateway, admin })
    }

    /// Serves until `shutdown` turns true.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let gw = tokio::spawn(gateway::serve(self.app.clone(), self.gateway, false, shutdown.clone()));
        let admin = tokio::spawn(gateway::serve(self.app.clone(), self.admin, true, shutdown.clone()));
        let ticker = tokio::spawn(servicebus::run_ticker(self.app.clone(), shutdown.clone()));
        let publisher = tokio::spawn(eventgrid::publisher::run(self.app.clone(), shutdown));
        let _ = tokio::join!(gw, admin, ticker, publisher);
    }
}
