//! ARM's error shape: `{"error":{"code","message"}}` with the status Azure uses.

use http::StatusCode;
use serde_json::json;

use crate::http::Resp;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ArmError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Extra headers (e.g. `WWW-Authenticate` on 401).
    pub headers: Vec<(&'static str, String)>,
}

impl ArmError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ArmError { status, code: code.to_string(), message: message.into(), headers: Vec::new() }
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
        self.headers.push((name, value));
        self
    }

    pub fn to_resp(&self) -> Resp {
        let mut resp = Resp::json(self.status, &json!({ "error": { "code": self.code, "message": self.message } }));
        resp = resp.with_header("x-ms-failure-cause", "gateway");
        for (name, value) in &self.headers {
            resp = resp.with_header(name, value);
        }
        resp
    }
}

impl From<StoreError> for ArmError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        ArmError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Encountered internal server error. Please try again.",
        )
    }
}
