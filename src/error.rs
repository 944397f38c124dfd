//! The engine's error type, one case per cause a caller must tell apart.

use std::fmt;

use crate::bindings::exports::litellm_secrets::engine::types as wit;

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failure of an engine call. Messages name the offending value and the fix, and never
/// contain a master key or a minted key.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The caller's input is invalid; nothing was changed.
    InvalidInput(String),
    /// The named config, role or lease does not exist.
    NotFound(String),
    /// LiteLLM could not be reached, rejected the request or returned an unusable answer.
    Upstream(Upstream),
    /// The host's key-value store failed.
    Storage(String),
}

/// A failed or unusable LiteLLM response.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// HTTP status of LiteLLM's response; `None` when no response arrived.
    pub status: Option<u16>,
    /// Whether the request timed out.
    pub timed_out: bool,
    /// Description of the failure, with the LiteLLM URL and LiteLLM's own message, secrets
    /// masked.
    pub message: String,
}

impl Error {
    /// Creates an [`Error::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// Creates an [`Error::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    /// Creates an [`Error::Storage`].
    pub fn storage(message: impl Into<String>) -> Self {
        Self::Storage(message.into())
    }

    /// Creates an [`Error::Upstream`] for a response with `status`.
    pub fn upstream(status: Option<u16>, message: impl Into<String>) -> Self {
        Self::Upstream(Upstream {
            status,
            timed_out: false,
            message: message.into(),
        })
    }

    /// Creates an [`Error::Upstream`] for a request that timed out.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::Upstream(Upstream {
            status: None,
            timed_out: true,
            message: message.into(),
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInput(message) | Self::NotFound(message) | Self::Storage(message) => {
                f.write_str(message)
            }
            Self::Upstream(upstream) => f.write_str(&upstream.message),
        }
    }
}

impl From<Error> for wit::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidInput(message) => Self::InvalidInput(message),
            Error::NotFound(message) => Self::NotFound(message),
            Error::Storage(message) => Self::Storage(message),
            Error::Upstream(upstream) => Self::Upstream(wit::UpstreamError {
                status: upstream.status,
                timed_out: upstream.timed_out,
                message: upstream.message,
            }),
        }
    }
}
