//! The local certificate authority and the leaf certificates it issues.
//!
//! Azure clients only send bearer tokens over TLS and verify the server's name, so local-azure
//! answers for `management.azure.com`, `*.vault.azure.net`, `*.servicebus.windows.net` and `*.table.core.windows.net` with
//! leaf certificates signed by a CA that lives in the data directory (`ca.pem` is what clients
//! trust). Leaves are issued on first use per host and cached in memory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("reading or writing the CA files: {0}")]
    Io(#[from] std::io::Error),
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS key: {0}")]
    Tls(#[from] rustls::Error),
}

/// The hosts local-azure serves under their real names.
pub fn is_served_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == "management.azure.com"
        || single_label_under(&host, ".vault.azure.net")
        || single_label_under(&host, ".servicebus.windows.net")
        || single_label_under(&host, ".table.core.windows.net")
        || host == "localhost"
        || host == "127.0.0.1"
}

fn single_label_under(host: &str, suffix: &str) -> bool {
    host.strip_suffix(suffix).is_some_and(|label| !label.is_empty() && !label.contains('.'))
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    provider: Arc<CryptoProvider>,
    leaves: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// The CA's parameters are rebuilt identically on every start, so an issuer reloaded from the
/// stored key produces leaves that chain to the stored `ca.pem`.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "local-azure root CA");
    dn.push(DnType::OrganizationName, "local-azure");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    params
}

impl Ca {
    /// Loads the CA from `dir` (`ca-key.pem`, `ca.pem`), creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let key_path = dir.join("ca-key.pem");
        let cert_path = dir.join("ca.pem");
        let (key, ca_pem) = if key_path.exists() && cert_path.exists() {
            let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path)?)?;
            (key, std::fs::read_to_string(&cert_path)?)
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            let pem = cert.pem();
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            std::fs::write(&cert_path, &pem)?;
            (key, pem)
        };
        let ca_der = pem_to_der(&ca_pem)?;
        Ok(Ca {
            issuer: Issuer::new(ca_params(), key),
            ca_der,
            ca_pem,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn provider(&self) -> Arc<CryptoProvider> {
        self.provider.clone()
    }

    /// The certificate and key for `host`, issued on first use.
    pub fn leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let host = host.to_ascii_lowercase();
        if let Some(found) = self.leaves.lock().expect("leaf cache").get(&host) {
            return Ok(found.clone());
        }
        let mut params = CertificateParams::new(vec![host.clone()])?;
        params.distinguished_name.push(DnType::CommonName, host.clone());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let signing_key = self
            .provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))?;
        let certified = Arc::new(CertifiedKey::new(vec![cert.der().clone(), self.ca_der.clone()], signing_key));
        self.leaves.lock().expect("leaf cache").insert(host, certified.clone());
        Ok(certified)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

fn pem_to_der(pem: &str) -> Result<CertificateDer<'static>, CaError> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().concat();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(CertificateDer::from(der))
}

/// Picks the leaf by SNI; a client that sends no name (an IP literal) gets the `localhost` leaf.
#[derive(Debug)]
pub struct SniResolver {
    pub ca: Arc<Ca>,
    /// Used when SNI is absent, e.g. the CONNECT target of a tunnel.
    pub fallback_host: String,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let host = hello.server_name().map(str::to_string).unwrap_or_else(|| self.fallback_host.clone());
        if !is_served_host(&host) {
            tracing::warn!(host, "TLS handshake for a host local-azure does not serve");
            return None;
        }
        match self.ca.leaf(&host) {
            Ok(leaf) => Some(leaf),
            Err(error) => {
                tracing::error!(host, %error, "issuing leaf certificate");
                None
            }
        }
    }
}

/// A rustls server configuration that serves HTTP/1.1 with leaves from `ca`.
pub fn server_config(ca: &Arc<Ca>, fallback_host: &str) -> Result<rustls::ServerConfig, CaError> {
    let mut config = rustls::ServerConfig::builder_with_provider(ca.provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { ca: ca.clone(), fallback_host: fallback_host.to_string() }));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_hosts() {
        assert!(is_served_host("management.azure.com"));
        assert!(is_served_host("MyVault.vault.azure.net"));
        assert!(is_served_host("ns.servicebus.windows.net"));
        assert!(!is_served_host("a.b.vault.azure.net"));
        assert!(!is_served_host("vault.azure.net"));
        assert!(!is_served_host("example.com"));
    }

    #[test]
    fn ca_reloads_and_issues() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let pem = ca.ca_pem().to_string();
        ca.leaf("management.azure.com").unwrap();
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(again.ca_pem(), pem);
        again.leaf("x.vault.azure.net").unwrap();
    }
}
