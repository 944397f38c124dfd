//! Path parsing and the route table.

use crate::api::response::Reply;
use crate::redact;

/// A lease operation under `/v1/sys/leases/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOperation {
    /// `renew`
    Renew,
    /// `revoke`
    Revoke,
    /// `lookup`
    Lookup,
    /// `revoke-prefix`
    RevokePrefix,
}

/// A token operation under `/v1/auth/token/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOperation {
    /// `create`
    Create,
    /// `lookup-self`
    LookupSelf,
    /// `revoke-self`
    RevokeSelf,
}

/// Destination of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `<mount>/config`
    Config,
    /// `<mount>/roles`
    Roles,
    /// `<mount>/roles/<name>`
    Role(String),
    /// `<mount>/creds/<name>`
    Creds(String),
    /// `<mount>/tidy`
    Tidy,
    /// `sys/leases/<operation>[/<rest>]`, where `rest` is a lease id or prefix.
    Lease {
        /// The operation.
        operation: LeaseOperation,
        /// The path after the operation, joined with `/`.
        rest: String,
    },
    /// `auth/token/<operation>`
    Token(TokenOperation),
}

/// Splits `/v1/...` into percent-decoded segments after `v1`. A trailing slash adds no
/// segment. Each segment is decoded on its own, so `%2F` never splits one.
pub fn segments(path: &str) -> Result<Vec<String>, Reply> {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Err(Reply::error(
            404,
            format!(
                "no handler for route {}; API paths start with /v1/",
                redact::truncate(path, 200)
            ),
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/').map(decode_segment).collect()
}

/// Matches decoded segments against the routes, with the mount's own segments first.
pub fn route(segments: &[String], mount: &str) -> Option<Route> {
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["sys", "leases", operation, rest @ ..] => {
            let operation = match *operation {
                "renew" => LeaseOperation::Renew,
                "revoke" => LeaseOperation::Revoke,
                "lookup" => LeaseOperation::Lookup,
                "revoke-prefix" => LeaseOperation::RevokePrefix,
                _ => return None,
            };
            Some(Route::Lease {
                operation,
                rest: rest.join("/"),
            })
        }
        ["auth", "token", operation] => {
            let operation = match *operation {
                "create" | "create-orphan" => TokenOperation::Create,
                "lookup-self" => TokenOperation::LookupSelf,
                "revoke-self" => TokenOperation::RevokeSelf,
                _ => return None,
            };
            Some(Route::Token(operation))
        }
        _ => mount_route(&parts, mount),
    }
}

fn mount_route(parts: &[&str], mount: &str) -> Option<Route> {
    let mount_parts: Vec<&str> = mount.split('/').collect();
    let rest = parts.strip_prefix(mount_parts.as_slice())?;
    match rest {
        ["config"] => Some(Route::Config),
        ["roles"] => Some(Route::Roles),
        ["roles", name] => Some(Route::Role((*name).to_owned())),
        ["creds", name] => Some(Route::Creds((*name).to_owned())),
        ["tidy"] => Some(Route::Tidy),
        _ => None,
    }
}

/// Returns whether query parameter `name` is set to a true value (`true`, `True`, `1`).
pub fn query_flag(query: &str, name: &str) -> bool {
    query.split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        key == name && matches!(value.to_ascii_lowercase().as_str(), "true" | "1")
    })
}

fn decode_segment(segment: &str) -> Result<String, Reply> {
    let invalid = || {
        Reply::error(
            400,
            format!(
                "path segment {:?} has an invalid percent-encoding or is not UTF-8",
                redact::truncate(segment, 200)
            ),
        )
    };
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = segment.get(index + 1..index + 3).ok_or_else(invalid)?;
            decoded.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str) -> Option<Route> {
        let segments = segments(path).ok()?;
        route(&segments, "litellm")
    }

    #[test]
    fn routes_mount_paths() {
        assert_eq!(parse("/v1/litellm/config"), Some(Route::Config));
        assert_eq!(parse("/v1/litellm/roles/"), Some(Route::Roles));
        assert_eq!(
            parse("/v1/litellm/roles/dev"),
            Some(Route::Role("dev".into()))
        );
        assert_eq!(
            parse("/v1/litellm/roles/a%2Fb"),
            Some(Route::Role("a/b".into()))
        );
        assert_eq!(parse("/v1/litellm/roles/a/b"), None);
        assert_eq!(parse("/v1/other/config"), None);
    }

    #[test]
    fn routes_lease_paths() {
        assert_eq!(
            parse("/v1/sys/leases/renew/litellm/creds/dev/abc"),
            Some(Route::Lease {
                operation: LeaseOperation::Renew,
                rest: "litellm/creds/dev/abc".into()
            })
        );
        assert_eq!(
            parse("/v1/sys/leases/revoke"),
            Some(Route::Lease {
                operation: LeaseOperation::Revoke,
                rest: String::new()
            })
        );
    }

    #[test]
    fn nested_mount_and_flags() {
        let segments = segments("/v1/ai/litellm/config").unwrap();
        assert_eq!(route(&segments, "ai/litellm"), Some(Route::Config));
        assert!(query_flag("list=true", "list"));
        assert!(query_flag("a=b&list=True", "list"));
        assert!(!query_flag("list=false", "list"));
        assert!(segments_error("/v1/litellm/roles/%zz"));
    }

    fn segments_error(path: &str) -> bool {
        segments(path).is_err()
    }
}
