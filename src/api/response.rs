//! Vault's response shapes: the JSON envelope, `{"errors": [...]}` and the status codes
//! that Vault clients act on.

use serde_json::{Value, json};

use crate::error::Error;
use crate::ids;

/// A response ready to send.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body; `Value::Null` sends no body.
    pub body: Value,
}

/// Lease fields of an envelope.
pub struct LeaseInfo<'a> {
    /// Lease id.
    pub lease_id: &'a str,
    /// Whether the lease can be renewed.
    pub renewable: bool,
    /// Lease TTL in seconds.
    pub lease_duration: u64,
}

impl Reply {
    /// Creates a 200 response whose envelope carries `data` and `warnings`.
    pub fn data(data: Value, warnings: Vec<String>) -> Self {
        Self::envelope(data, None, warnings, Value::Null)
    }

    /// Creates a 200 response for a secret with a lease.
    pub fn leased(data: Value, lease: LeaseInfo<'_>, warnings: Vec<String>) -> Self {
        Self::envelope(data, Some(lease), warnings, Value::Null)
    }

    /// Creates a 200 response carrying an `auth` block, as token creation returns.
    pub fn auth(auth: Value, warnings: Vec<String>) -> Self {
        Self::envelope(Value::Null, None, warnings, auth)
    }

    /// Creates a 204 response, or a 200 with the warnings when there are some.
    pub fn done(warnings: Vec<String>) -> Self {
        if warnings.is_empty() {
            return Self::no_content();
        }
        Self::data(Value::Null, warnings)
    }

    /// Creates a 204 response without a body.
    pub fn no_content() -> Self {
        Self {
            status: 204,
            body: Value::Null,
        }
    }

    /// Creates an error response `{"errors": [message]}`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "errors": [message.into()] }),
        }
    }

    /// Creates Vault's response to a LIST with no results: 404 with an empty error list.
    pub fn empty_list() -> Self {
        Self {
            status: 404,
            body: json!({ "errors": [] }),
        }
    }

    /// Creates the 403 that every authorization failure gets.
    pub fn permission_denied() -> Self {
        Self::error(403, "permission denied")
    }

    /// Creates the 405 for a method that a path does not support.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::error(405, format!("method {method} is not supported on {path}"))
    }

    /// Maps an engine error to Vault's status codes.
    pub fn from_error(error: Error) -> Self {
        let status = match &error {
            Error::InvalidInput(_) => 400,
            Error::NotFound(_) => 404,
            Error::Upstream(upstream) if upstream.timed_out => 504,
            Error::Upstream(_) => 502,
            Error::Storage(_) => 500,
        };
        Self::error(status, error.to_string())
    }

    fn envelope(
        data: Value,
        lease: Option<LeaseInfo<'_>>,
        warnings: Vec<String>,
        auth: Value,
    ) -> Self {
        let (lease_id, renewable, lease_duration) = match lease {
            Some(lease) => (
                lease.lease_id.to_owned(),
                lease.renewable,
                lease.lease_duration,
            ),
            None => (String::new(), false, 0),
        };
        let warnings = if warnings.is_empty() {
            Value::Null
        } else {
            json!(warnings)
        };
        Self {
            status: 200,
            body: json!({
                "request_id": request_id(),
                "lease_id": lease_id,
                "renewable": renewable,
                "lease_duration": lease_duration,
                "data": data,
                "wrap_info": null,
                "warnings": warnings,
                "auth": auth,
                "mount_type": "",
            }),
        }
    }
}

/// Returns a random request id in UUID form.
fn request_id() -> String {
    let hex = ids::new_id();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
