//! The Azure Functions custom-handler protocol: what the host POSTs to `/<FunctionName>` and what it expects back.
//!
//! The host sends `{"Data": {<binding>: <value>}, "Metadata": {...}}` and reads `{"Outputs", "Logs", "ReturnValue"}`.
//! Two quirks of the real host shape this module: it may hand a trigger value JSON-encoded a second time (a string
//! holding JSON), and it base64-decodes an output *string* that happens to be valid base64 — so outputs are always
//! objects, never bare strings.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::FunctionError;

/// The header the host sets on every invocation request.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// One invocation as the host sends it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InvocationRequest {
    #[serde(rename = "Data", default)]
    pub data: Map<String, Value>,
    #[serde(rename = "Metadata", default)]
    pub metadata: Map<String, Value>,
}

impl InvocationRequest {
    /// The value bound to `binding` (e.g. `req`, `message`), decoded into `T`. Accepts the value as JSON or as a
    /// string that holds it JSON-encoded (once or twice), as the host may send either.
    pub fn binding<T: DeserializeOwned>(&self, binding: &str) -> Result<T, FunctionError> {
        let value = self.data.get(binding).ok_or_else(|| {
            FunctionError::invalid(format!("Data.{binding}"), "missing; the trigger binding has no value")
        })?;
        decode(value.clone(), &format!("Data.{binding}"))
    }

    /// The invocation metadata decoded into `T` (trigger-specific fields such as Service Bus `MessageId`).
    pub fn metadata<T: DeserializeOwned>(&self) -> Result<T, FunctionError> {
        decode(Value::Object(self.metadata.clone()), "Metadata")
    }
}

/// Decodes `value` into `T`, naming the exact failing field under `path` when it does not fit. A string that holds
/// JSON is unwrapped (at most twice) first when `T` does not take the string as it is.
pub fn decode<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, FunctionError> {
    let mut value = value;
    let mut first_error = None;
    // Once for the value as sent, then up to twice more for each layer of JSON-in-a-string.
    for _ in 0..3 {
        match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(decoded) => return Ok(decoded),
            Err(err) => {
                let field = join_path(path, &err.path().to_string());
                first_error.get_or_insert_with(|| FunctionError::invalid(field, err.inner().to_string()));
            }
        }
        match &value {
            Value::String(text) => match serde_json::from_str::<Value>(text) {
                Ok(inner) => value = inner,
                Err(_) => break,
            },
            _ => break,
        }
    }
    Err(first_error.expect("the loop runs at least once"))
}

fn join_path(prefix: &str, inner: &str) -> String {
    if inner.is_empty() || inner == "." { prefix.to_string() } else { format!("{prefix}.{inner}") }
}

/// What the handler answers for one invocation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct InvocationResponse {
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    #[serde(rename = "ReturnValue")]
    pub return_value: Value,
}

impl InvocationResponse {
    /// Sets an output binding. Only objects and arrays are accepted at compile time's next best thing: a typed
    /// value that serializes to one; a bare string would be base64-decoded by the host when it happens to look like
    /// base64, so it is wrapped instead of being sent as is.
    pub fn with_output(mut self, binding: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or_else(|e| Value::from(format!("unserializable output: {e}")));
        let value = match value {
            Value::String(text) => serde_json::json!({ "value": text }),
            other => other,
        };
        self.outputs.insert(binding.to_string(), value);
        self
    }

    pub fn with_log(mut self, line: impl Into<String>) -> Self {
        self.logs.push(line.into());
        self
    }
}

/// The answer for a failed invocation: a non-2xx status with the error in `Logs` (where the host records it) and
/// once more as a structured `error` for people and tests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailedInvocation {
    #[serde(flatten)]
    pub response: InvocationResponse,
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub retryable: bool,
}

impl From<&FunctionError> for FailedInvocation {
    fn from(err: &FunctionError) -> Self {
        FailedInvocation {
            response: InvocationResponse::default().with_log(format!("{}: {err}", err.code())),
            error: ErrorDetail {
                code: err.code().to_string(),
                message: err.to_string(),
                field: err.field().map(str::to_string),
                retryable: err.retryable(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Sample {
        id: u32,
        name: String,
    }

    #[test]
    fn decodes_plain_single_and_double_encoded_values_alike() {
        let plain = json!({"id": 7, "name": "a"});
        let once = Value::String(plain.to_string());
        let twice = Value::String(once.to_string());
        for value in [plain, once, twice] {
            assert_eq!(decode::<Sample>(value, "Data.x").unwrap(), Sample { id: 7, name: "a".into() });
        }
    }

    #[test]
    fn names_the_failing_field() {
        let err = decode::<Sample>(json!({"id": "seven", "name": "a"}), "Data.x").unwrap_err();
        assert_eq!(err.field(), Some("Data.x.id"));
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn a_string_is_taken_as_is_when_the_type_wants_a_string() {
        assert_eq!(decode::<String>(json!("{\"a\":1}"), "Data.x").unwrap(), "{\"a\":1}");
    }

    #[test]
    fn missing_binding_is_reported_by_name() {
        let req = InvocationRequest::default();
        let err = req.binding::<Sample>("message").unwrap_err();
        assert_eq!(err.field(), Some("Data.message"));
    }

    #[test]
    fn string_outputs_are_wrapped_so_the_host_cannot_base64_decode_them() {
        let res = InvocationResponse::default().with_output("out", "aGVsbG8=");
        assert_eq!(res.outputs["out"], json!({"value": "aGVsbG8="}));
        let res = InvocationResponse::default().with_output("out", json!({"k": 1}));
        assert_eq!(res.outputs["out"], json!({"k": 1}));
    }
}
