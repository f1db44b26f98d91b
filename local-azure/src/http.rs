//! The request/response shapes every emulated service works with.
//!
//! Services see a fully buffered request (Azure payloads are small) and answer with a
//! buffered response, so they stay plain synchronous functions over the store; only the
//! gateway deals with hyper, TLS and the network. The admin API's answers ([`AdminError`], [`ok`], [`created`],
//! [`deleted`]) live here too, so the services that add admin routes need not import the admin router.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::store::StoreError;

/// A buffered request as a service sees it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    /// The host the client addressed (lowercase, without port).
    pub host: String,
    /// Path segments, empty ones dropped: `//subscriptions` and trailing slashes are tolerated.
    pub segments: Vec<String>,
    /// The path as sent.
    pub raw_path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn new(method: Method, host: &str, path_and_query: &str, headers: HeaderMap, body: Bytes) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_and_query, ""),
        };
        let segments = path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
        let query = form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let host = host
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(host)
            .to_ascii_lowercase();
        Req { method, host, segments, raw_path: path.to_string(), query, headers, body }
    }

    /// A query parameter, matched case-insensitively (ARM accepts `API-VERSION`).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The bearer token of the `Authorization` header, if any.
    pub fn bearer(&self) -> Option<&str> {
        let value = self.header("authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
    }

    /// The body as JSON; an empty body reads as `null`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        if self.body.iter().all(|b| b.is_ascii_whitespace()) {
            serde_json::from_slice(b"null")
        } else {
            serde_json::from_slice(&self.body)
        }
    }

    /// The path joined back with single slashes.
    pub fn path(&self) -> String {
        format!("/{}", self.segments.join("/"))
    }

    /// The URL the client asked for, as the real service would see it.
    pub fn url(&self) -> String {
        let mut url = format!("https://{}{}", self.host, self.raw_path);
        if !self.query.is_empty() {
            url.push('?');
            url.push_str(&form_urlencoded::Serializer::new(String::new()).extend_pairs(self.query.iter()).finish());
        }
        url
    }
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) =
                std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A buffered response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn empty(status: StatusCode) -> Self {
        Resp { status, headers: HeaderMap::new(), body: Bytes::new() }
    }

    pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_default();
        let mut resp = Resp { status, headers: HeaderMap::new(), body: body.into() };
        resp.headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        resp
    }

    pub fn text(status: StatusCode, text: impl Into<String>) -> Self {
        let mut resp = Resp { status, headers: HeaderMap::new(), body: Bytes::from(text.into()) };
        resp.headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        resp
    }

    pub fn with_header(mut self, name: &'static str, value: impl AsRef<str>) -> Self {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.insert(HeaderName::from_static(name), v);
        }
        self
    }
}

/// What a service decided to do with a request.
#[derive(Debug)]
pub enum Outcome {
    Respond(Resp),
    /// Close the connection without answering (fault injection).
    Drop,
}

/// What the admin API's routes (`crate::admin` and the services' `admin` functions) answer when a request fails:
/// the message goes back as `{"error": …}` with the status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `{"error": "<message>"}` with the error's status.
    pub fn into_resp(self) -> Resp {
        Resp::json(self.status(), &serde_json::json!({ "error": self.to_string() }))
    }
}

pub(crate) fn bad(e: impl std::fmt::Display) -> AdminError {
    AdminError::BadRequest(e.to_string())
}

pub(crate) fn body<T: serde::de::DeserializeOwned>(req: &Req) -> Result<T, AdminError> {
    req.json().map_err(bad)
}

pub(crate) fn ok(v: Value) -> Result<Resp, AdminError> {
    Ok(Resp::json(StatusCode::OK, &v))
}

pub(crate) fn created<T: serde::Serialize>(v: &T) -> Result<Resp, AdminError> {
    Ok(Resp::json(StatusCode::CREATED, v))
}

pub(crate) fn deleted(removed: bool, what: &str) -> Result<Resp, AdminError> {
    if removed {
        Ok(Resp::empty(StatusCode::NO_CONTENT))
    } else {
        Err(AdminError::NotFound(format!("{what} not found")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_tolerate_double_and_trailing_slashes() {
        let req = Req::new(
            Method::GET,
            "Management.Azure.com:443",
            "//subscriptions/abc//resourceGroups/rg/?api-version=1",
            HeaderMap::new(),
            Bytes::new(),
        );
        assert_eq!(req.segments, ["subscriptions", "abc", "resourceGroups", "rg"]);
        assert_eq!(req.host, "management.azure.com");
        assert_eq!(req.query("API-Version"), Some("1"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
