//! Assertions on engine results: a trap is always a test failure with its message, and an
//! error's case is checked before its message is read.

use std::fmt::Debug;

use crate::host::{Error, RoleRequest, UpstreamError};

/// Unwrapping of `TestHost` call results.
pub trait EngineResult<T> {
    /// Returns the value, panicking on a trap or an engine error.
    fn value(self) -> T;
    /// Returns the engine error, panicking on a trap or a success.
    fn error(self) -> Error;
}

impl<T: Debug> EngineResult<T> for wasmtime::Result<Result<T, Error>> {
    #[track_caller]
    fn value(self) -> T {
        match self {
            Ok(Ok(value)) => value,
            Ok(Err(error)) => panic!("expected success, got engine error {error:?}"),
            Err(trap) => panic!("expected success, the instance trapped: {trap:?}"),
        }
    }

    #[track_caller]
    fn error(self) -> Error {
        match self {
            Ok(Err(error)) => error,
            Ok(Ok(value)) => panic!("expected an engine error, got success {value:?}"),
            Err(trap) => panic!("expected an engine error, the instance trapped: {trap:?}"),
        }
    }
}

/// Returns the message of an `invalid-input` error.
#[track_caller]
pub fn invalid_input(error: &Error) -> &str {
    match error {
        Error::InvalidInput(message) => message,
        other => panic!("expected invalid-input, got {other:?}"),
    }
}

/// Returns the message of a `not-found` error.
#[track_caller]
pub fn not_found(error: &Error) -> &str {
    match error {
        Error::NotFound(message) => message,
        other => panic!("expected not-found, got {other:?}"),
    }
}

/// Returns the payload of an `upstream` error.
#[track_caller]
pub fn upstream(error: &Error) -> &UpstreamError {
    match error {
        Error::Upstream(upstream) => upstream,
        other => panic!("expected upstream, got {other:?}"),
    }
}

/// Returns the message of a `storage` error.
#[track_caller]
pub fn storage(error: &Error) -> &str {
    match error {
        Error::Storage(message) => message,
        other => panic!("expected storage, got {other:?}"),
    }
}

/// Returns a role request that sets nothing.
pub fn role_request() -> RoleRequest {
    RoleRequest {
        models: None,
        max_budget: None,
        budget_duration: None,
        tpm_limit: None,
        rpm_limit: None,
        max_parallel_requests: None,
        key_alias_prefix: None,
        metadata: None,
        ttl: None,
        max_ttl: None,
    }
}

/// Returns a role request that sets only `models`.
pub fn role_with_models(models: &[&str]) -> RoleRequest {
    RoleRequest {
        models: Some(models.iter().map(|model| model.to_string()).collect()),
        ..role_request()
    }
}
