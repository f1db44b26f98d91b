//! Access tokens: JWT-shaped, HS256-signed with a key kept in the data directory.
//!
//! Clients never look inside an Azure access token, but services do: local-azure reads the
//! principal (`oid`), tenant (`tid`) and audience (`aud`) to authorise requests, and checks
//! expiry against its own (movable) clock.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub oid: String,
    pub tid: String,
    pub sub: String,
    pub appid: String,
    pub idtyp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xms_mirid: Option<String>,
    pub uti: String,
    pub ver: String,
    /// A user's display name and sign-in name (`idtyp` `user` only), as Entra ID puts them in access tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// Delegated scopes (`user_impersonation` on an on-behalf-of ARM token); app-only tokens carry none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("the token is not a JWT")]
    Malformed,
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token expired at {0}")]
    Expired(i64),
    #[error("the token is not valid before {0}")]
    NotYetValid(i64),
    #[error("the token audience '{0}' is not accepted here")]
    WrongAudience(String),
}

/// Now on the wall clock, in unix seconds: tokens are issued and checked on it (see `identity::TOKEN_LIFETIME_SECONDS`).
pub fn wall_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub struct TokenIssuer {
    key: hmac::Key,
}

impl TokenIssuer {
    pub fn new(secret: &[u8]) -> Self {
        TokenIssuer { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    pub fn issue(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256","kid":"local-azure"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let tag = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Verifies signature, time window (against `now`, unix seconds) and audience. An audience
    /// matches with or without a trailing slash, as Azure services accept both forms.
    pub fn verify(&self, token: &str, now: i64, audiences: &[&str]) -> Result<Claims, TokenError> {
        let claims = self.verify_any_audience(token, now)?;
        let aud = claims.aud.trim_end_matches('/');
        if !audiences.iter().any(|a| a.trim_end_matches('/') == aud) {
            return Err(TokenError::WrongAudience(claims.aud.clone()));
        }
        Ok(claims)
    }

    /// Verifies signature and time window only, for a caller that decides on the audience itself (the token
    /// endpoint, which looks the audience up among the app registrations).
    pub fn verify_any_audience(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, format!("{header}.{payload}").as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(TokenError::Malformed)?;
        if now >= claims.exp {
            return Err(TokenError::Expired(claims.exp));
        }
        // Azure allows five minutes of clock skew on nbf.
        if now + 300 < claims.nbf {
            return Err(TokenError::NotYetValid(claims.nbf));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            aud: "https://vault.azure.net".into(),
            iss: "https://sts.windows.net/t/".into(),
            iat: 0,
            nbf: 0,
            exp,
            oid: "o".into(),
            tid: "t".into(),
            sub: "o".into(),
            appid: "c".into(),
            idtyp: "app".into(),
            xms_mirid: None,
            uti: "u".into(),
            ver: "1.0".into(),
            name: None,
            upn: None,
            scp: None,
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let issuer = TokenIssuer::new(b"secret");
        let token = issuer.issue(&claims(100));
        let got = issuer.verify(&token, 50, &["https://vault.azure.net/"]).unwrap();
        assert_eq!(got.oid, "o");
        assert_eq!(issuer.verify(&token, 100, &["https://vault.azure.net"]), Err(TokenError::Expired(100)));
        assert!(matches!(
            issuer.verify(&token, 50, &["https://management.azure.com/"]),
            Err(TokenError::WrongAudience(_))
        ));
        let forged = TokenIssuer::new(b"other").issue(&claims(100));
        assert_eq!(issuer.verify(&forged, 50, &["https://vault.azure.net"]), Err(TokenError::BadSignature));
        assert_eq!(issuer.verify("abc", 50, &["x"]), Err(TokenError::Malformed));
    }
}
