//! ARM's error shape: `{"error":{"code","message"}}` with the status Azure uses.

use http::StatusCode;
use serde_json::json;

use crate::http::Resp;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    /// An error Azure itself would answer, with its status and code.
    #[error("{status} {code}: {message}")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
        /// Extra headers (e.g. `WWW-Authenticate` on 401).
        headers: Vec<(&'static str, String)>,
    },
    /// local-azure's own storage failed; answered as ARM's generic 500.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ArmError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ArmError::Api { status, code: code.to_string(), message: message.into(), headers: Vec::new() }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn resource_not_found(resource_type: &str, name: &str, group: &str) -> Self {
        Self::not_found(
            "ResourceNotFound",
            format!(
                "The Resource '{resource_type}/{name}' under resource group '{group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
            ),
        )
    }

    pub fn invalid_body(e: serde_json::Error) -> Self {
        Self::bad_request(
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{e}'."),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        if let ArmError::Api { headers, .. } = &mut self {
            headers.push((name, value));
        }
        self
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ArmError::Api { status, .. } => *status,
            ArmError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            ArmError::Api { code, .. } => code,
            ArmError::Store(_) => "InternalServerError",
        }
    }

    pub fn to_resp(&self) -> Resp {
        let (message, headers): (&str, &[(&'static str, String)]) = match self {
            ArmError::Api { message, headers, .. } => (message, headers),
            ArmError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                ("Encountered internal server error. Please try again.", &[])
            }
        };
        let mut resp = Resp::json(self.status(), &json!({ "error": { "code": self.code(), "message": message } }));
        for (name, value) in headers {
            resp = resp.with_header(name, value);
        }
        resp
    }
}
