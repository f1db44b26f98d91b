//! The Channel Integrity Key (CIK) and the activation key sealed with it.
//!
//! The CIK is 32 bytes from the OS CSPRNG, stored in the device's vault as secret `ase-cik-<guid>` (base64). The
//! activation key is a versioned, self-describing token:
//!
//! ```text
//! ase-ak1.<header>.<nonce>.<ciphertext>        (each part base64url without padding)
//! ```
//!
//! The header (JSON, not secret) tells the device where its CIK lives: vault URI, secret name and version. It is
//! authenticated as AES-256-GCM associated data, so it cannot be altered without the key failing to open. The
//! ciphertext holds the payload: resource id, vault URI, CIK name and version, issue and expiry times. Opening checks
//! the tag, that header and payload agree, and the expiry.
//!
//! Neither the CIK nor a token ever reaches a log: both types print as `<redacted>` under `Debug`, and the CIK's
//! bytes are zeroed on drop.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload, rand_core::RngCore};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::resource_id::ResourceId;

/// The token's prefix; a new format gets a new prefix, and old devices reject it clearly.
pub const PREFIX: &str = "ase-ak1";
/// Secret names of CIKs start with this, followed by a GUID.
pub const CIK_SECRET_PREFIX: &str = "ase-cik-";
const CIK_LEN: usize = 32;
const NONCE_LEN: usize = 12;
/// Larger tokens are refused before any decoding: a real one is well under 2 KiB.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The Channel Integrity Key.
#[derive(Clone)]
pub struct Cik(Zeroizing<[u8; CIK_LEN]>);

impl Cik {
    /// 32 fresh bytes from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; CIK_LEN]);
        OsRng.fill_bytes(bytes.as_mut());
        Cik(bytes)
    }

    /// The form stored as the Key Vault secret value.
    pub fn to_secret_value(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    pub fn from_secret_value(value: &str) -> Result<Self, KeyError> {
        let decoded = Zeroizing::new(STANDARD.decode(value.trim()).map_err(|_| KeyError::BadCik)?);
        let bytes: [u8; CIK_LEN] = decoded.as_slice().try_into().map_err(|_| KeyError::BadCik)?;
        Ok(Cik(Zeroizing::new(bytes)))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.0.as_ref()).expect("a CIK is exactly an AES-256 key")
    }
}

impl fmt::Debug for Cik {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cik(<redacted>)")
    }
}

/// Where a device finds the CIK that opens its activation key. Not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CikLocation {
    pub vault_uri: String,
    pub secret_name: String,
    pub secret_version: String,
}

/// What an activation key says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    pub resource_id: ResourceId,
    #[serde(flatten)]
    pub cik: CikLocation,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds; the key does not open after this.
    pub expires_at: i64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(flatten)]
    cik: CikLocation,
}

const ALG: &str = "A256GCM";

/// A sealed activation key. Printing it with `Debug` shows nothing of the token.
#[derive(Clone, PartialEq, Eq)]
pub struct ActivationKey(String);

impl ActivationKey {
    /// Seals `claims` with `cik`.
    pub fn seal(claims: &Claims, cik: &Cik) -> Self {
        let header = serde_json::to_vec(&Header { alg: ALG.into(), cik: claims.cik.clone() }).expect("serializable");
        let header = URL_SAFE_NO_PAD.encode(header);
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let plaintext = Zeroizing::new(serde_json::to_vec(claims).expect("serializable"));
        let ciphertext = cik
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: &plaintext, aad: header.as_bytes() })
            .expect("AES-GCM encryption of a small payload cannot fail");
        ActivationKey(format!(
            "{PREFIX}.{header}.{}.{}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(ciphertext)
        ))
    }

    /// Wraps a token received from outside, checking only its outer shape; [`ActivationKey::open`] does the rest.
    pub fn parse(token: &str) -> Result<Self, KeyError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(KeyError::Malformed("longer than any activation key"));
        }
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 4 {
            return Err(KeyError::Malformed("expected four dot-separated parts"));
        }
        if parts[0] != PREFIX {
            return Err(KeyError::UnsupportedVersion);
        }
        Ok(ActivationKey(token.to_string()))
    }

    /// Where the CIK that opens this key lives, read from the (authenticated, not secret) header.
    pub fn cik_location(&self) -> Result<CikLocation, KeyError> {
        Ok(self.header()?.cik)
    }

    /// Opens the key with `cik` at time `now` (unix seconds).
    pub fn open(&self, cik: &Cik, now: i64) -> Result<Claims, KeyError> {
        let parts: Vec<&str> = self.0.split('.').collect();
        let header = self.header()?;
        if header.alg != ALG {
            return Err(KeyError::Malformed("unknown algorithm"));
        }
        let nonce = URL_SAFE_NO_PAD.decode(parts[2]).map_err(|_| KeyError::Malformed("nonce is not base64url"))?;
        if nonce.len() != NONCE_LEN {
            return Err(KeyError::Malformed("nonce has the wrong length"));
        }
        let ciphertext = URL_SAFE_NO_PAD.decode(parts[3]).map_err(|_| KeyError::Malformed("body is not base64url"))?;
        let plaintext = Zeroizing::new(
            cik.cipher()
                .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ciphertext, aad: parts[1].as_bytes() })
                .map_err(|_| KeyError::WrongKeyOrTampered)?,
        );
        let claims: Claims = serde_json::from_slice(&plaintext).map_err(|_| KeyError::Malformed("payload"))?;
        if claims.cik != header.cik {
            return Err(KeyError::WrongKeyOrTampered);
        }
        if now >= claims.expires_at {
            return Err(KeyError::Expired { expired_at: claims.expires_at });
        }
        Ok(claims)
    }

    /// The token, for the one place it may go: the status response to the portal.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn header(&self) -> Result<Header, KeyError> {
        let part = self.0.split('.').nth(1).ok_or(KeyError::Malformed("no header"))?;
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| KeyError::Malformed("header is not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|_| KeyError::Malformed("header is not the expected JSON"))
    }
}

impl fmt::Debug for ActivationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ActivationKey(<redacted>)")
    }
}

/// Why a key or CIK was refused. The messages never include key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the activation key is malformed: {0}")]
    Malformed(&'static str),
    #[error("the activation key is not in a format this version understands (expected `{PREFIX}.…`)")]
    UnsupportedVersion,
    #[error(
        "the activation key does not open with this CIK: it was altered, or belongs to another device or CIK version"
    )]
    WrongKeyOrTampered,
    #[error("the activation key expired at {expired_at} (unix seconds); request a new one")]
    Expired { expired_at: i64 },
    #[error("the stored CIK is not 32 bytes of base64")]
    BadCik,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            resource_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataBoxEdge/dataBoxEdgeDevices/d"
                .parse()
                .unwrap(),
            cik: CikLocation {
                vault_uri: "https://ase-d-abc123.vault.azure.net/".into(),
                secret_name: "ase-cik-0f8fad5b-d9cb-469f-a165-70867728950e".into(),
                secret_version: "4387e9f3d6e14c459867679a90fd0f79".into(),
            },
            issued_at: 1_800_000_000,
            expires_at: 1_800_086_400,
        }
    }

    #[test]
    fn seals_and_opens() {
        let cik = Cik::generate();
        let key = ActivationKey::seal(&claims(), &cik);
        assert!(key.expose().starts_with("ase-ak1."));
        let parsed = ActivationKey::parse(key.expose()).unwrap();
        assert_eq!(parsed.cik_location().unwrap(), claims().cik);
        assert_eq!(parsed.open(&cik, 1_800_000_001).unwrap(), claims());
    }

    #[test]
    fn cik_round_trips_through_its_secret_value_and_is_random() {
        let cik = Cik::generate();
        let back = Cik::from_secret_value(&cik.to_secret_value()).unwrap();
        assert_eq!(back.0.as_ref(), cik.0.as_ref());
        assert_ne!(Cik::generate().0.as_ref(), cik.0.as_ref());
        assert_eq!(Cik::from_secret_value("c2hvcnQ=").unwrap_err(), KeyError::BadCik);
    }

    #[test]
    fn another_cik_or_a_tampered_part_does_not_open() {
        let cik = Cik::generate();
        let key = ActivationKey::seal(&claims(), &cik);
        assert_eq!(key.open(&Cik::generate(), 0).unwrap_err(), KeyError::WrongKeyOrTampered);
        let parts: Vec<&str> = key.expose().split('.').collect();
        // Point the header at another secret version: the header is authenticated, so the key no longer opens.
        let mut header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        header["secretVersion"] = "other".into();
        let forged_header = URL_SAFE_NO_PAD.encode(header.to_string());
        let forged = ActivationKey::parse(&[parts[0], &forged_header, parts[2], parts[3]].join(".")).unwrap();
        assert_eq!(forged.open(&cik, 0).unwrap_err(), KeyError::WrongKeyOrTampered);
        let mut body = URL_SAFE_NO_PAD.decode(parts[3]).unwrap();
        body[0] ^= 1;
        let flipped = [parts[0], parts[1], parts[2], &URL_SAFE_NO_PAD.encode(body)].join(".");
        assert_eq!(ActivationKey::parse(&flipped).unwrap().open(&cik, 0).unwrap_err(), KeyError::WrongKeyOrTampered);
    }

    #[test]
    fn an_expired_key_is_refused() {
        let cik = Cik::generate();
        let key = ActivationKey::seal(&claims(), &cik);
        assert_eq!(key.open(&cik, 1_800_086_400).unwrap_err(), KeyError::Expired { expired_at: 1_800_086_400 });
    }

    #[test]
    fn malformed_tokens_are_refused_clearly() {
        assert_eq!(ActivationKey::parse("ase-ak2.a.b.c").unwrap_err(), KeyError::UnsupportedVersion);
        assert!(matches!(ActivationKey::parse("ase-ak1.a.b").unwrap_err(), KeyError::Malformed(_)));
        assert!(matches!(ActivationKey::parse(&"a".repeat(10_000)).unwrap_err(), KeyError::Malformed(_)));
        let key = ActivationKey::parse("ase-ak1.!!.b.c").unwrap();
        assert!(matches!(key.open(&Cik::generate(), 0).unwrap_err(), KeyError::Malformed(_)));
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let cik = Cik::generate();
        let key = ActivationKey::seal(&claims(), &cik);
        let printed = format!("{cik:?} {key:?}");
        assert_eq!(printed, "Cik(<redacted>) ActivationKey(<redacted>)");
        assert!(!printed.contains(cik.to_secret_value().as_str()));
    }
}
