//! The request and reply the host's routers work with ([`Request`], [`Reply`] and its helpers), free of the server
//! library, so the HTTP trigger, the Event Grid webhook and the admin API are tested without a server. `server`
//! converts warp's types to and from these; nothing else imports `server`.

use bytes::Bytes;
use serde_json::Value;

/// A request, decoupled from the server library.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path as received (percent-encoded).
    pub raw_path: String,
    pub raw_query: Option<String>,
    /// Lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.raw_query
            .as_deref()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default()
    }

    pub fn query_value(&self, name: &str) -> Option<String> {
        self.query_pairs().into_iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Decoded, non-empty path segments.
    pub fn segments(&self) -> Vec<String> {
        self.raw_path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect()
    }
}

/// A response, decoupled from the server library.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: Bytes::new() }
    }

    pub fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json; charset=utf-8".into())],
            body: Bytes::from(body.to_string()),
        }
    }

    /// `text/plain` with a message.
    pub fn text(status: u16, message: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: Bytes::from(message.to_string()),
        }
    }

    /// `{"error": message}` as JSON: how the admin API says what is wrong.
    pub fn error(status: u16, message: impl std::fmt::Display) -> Reply {
        Reply::json(status, &serde_json::json!({"error": message.to_string()}))
    }
}
