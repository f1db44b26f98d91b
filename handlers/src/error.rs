//! The error a function handler returns. It carries the status the host sees and whether trying again can help:
//! a non-2xx answer fails the invocation, which for Service Bus means abandon → redelivery → dead-letter.

#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// The invocation or a trigger payload does not have the shape the function needs. Retrying cannot help.
    #[error("invalid input at `{field}`: {message}")]
    InvalidInput { field: String, message: String },

    /// The handler failed in a way a later attempt may not (a panic, a dependency that is down).
    #[error("internal error: {0}")]
    Internal(String),

    /// An Azure call failed; whether a retry can help is the Azure error's to say.
    #[error(transparent)]
    Azure(#[from] crate::azure::AzureError),

    /// The work cannot succeed as asked (a name owned by someone else, a purged vault); retrying changes nothing.
    #[error("{code}: {message}")]
    Permanent { code: &'static str, message: String },
}

impl FunctionError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        FunctionError::InvalidInput { field: field.into(), message: message.into() }
    }

    /// The HTTP status of the handler's answer to the host.
    pub fn status(&self) -> u16 {
        match self {
            FunctionError::InvalidInput { .. } => 400,
            FunctionError::Internal(_) => 500,
            FunctionError::Azure(err) if err.retryable() => 503,
            FunctionError::Azure(_) | FunctionError::Permanent { .. } => 424,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            FunctionError::InvalidInput { .. } => "InvalidInput",
            FunctionError::Internal(_) => "InternalError",
            FunctionError::Azure(_) => "AzureCallFailed",
            FunctionError::Permanent { code, .. } => code,
        }
    }

    /// Whether redelivering the same input could succeed.
    pub fn retryable(&self) -> bool {
        match self {
            FunctionError::Internal(_) => true,
            FunctionError::Azure(err) => err.retryable(),
            _ => false,
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            FunctionError::InvalidInput { field, .. } => Some(field),
            _ => None,
        }
    }
}
