//! Caller identification: the admin, whose token's digest comes from the `admin_token` or
//! `admin_token_sha256` setting, or a client with a token the admin created.

use subtle::ConstantTimeEq;

use crate::api::response::Reply;
use crate::api::wire::WireRequest;
use crate::ids;
use crate::log;
use crate::settings::AdminDigest;
use crate::store::Store;
use crate::tokens::{self, TokenRecord};

/// An authenticated caller.
pub enum Caller {
    /// The holder of the admin token: every operation.
    Admin,
    /// A client token: credentials for its roles and its own leases.
    Client(TokenRecord),
}

impl Caller {
    /// Returns whether the caller may request credentials for `role`.
    pub fn may_issue(&self, role: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::Client(token) => token.roles.iter().any(|allowed| allowed == role),
        }
    }

    /// Returns whether the caller may manage a lease owned by `owner`.
    pub fn may_manage(&self, owner: Option<&str>) -> bool {
        match self {
            Self::Admin => true,
            Self::Client(token) => owner == Some(token.accessor.as_str()),
        }
    }

    /// Returns the accessor to record as the owner of new leases.
    pub fn accessor(&self) -> Option<&str> {
        match self {
            Self::Admin => None,
            Self::Client(token) => Some(&token.accessor),
        }
    }
}

/// Returns the token a request presents: `X-Vault-Token`, else `Authorization: Bearer`.
pub fn presented_token(request: &WireRequest) -> Option<&str> {
    if let Some(token) = request
        .header("x-vault-token")
        .filter(|token| !token.is_empty())
    {
        return Some(token);
    }
    let authorization = request.header("authorization")?;
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|token| !token.is_empty())
}

/// Identifies the caller. Without a configured admin token every request is refused.
pub fn authenticate(
    request: &WireRequest,
    store: &Store,
    admin: Option<AdminDigest>,
) -> Result<Caller, Reply> {
    let Some(admin) = admin else {
        return Err(Reply::error(
            403,
            "permission denied: the engine has no admin_token or admin_token_sha256 configured",
        ));
    };
    let Some(token) = presented_token(request) else {
        return Err(Reply::permission_denied());
    };
    if is_admin_token(token, admin) {
        return Ok(Caller::Admin);
    }
    match tokens::lookup(store, token) {
        Ok(Some(record)) => Ok(Caller::Client(record)),
        Ok(None) => Err(Reply::permission_denied()),
        Err(error) => {
            // The caller is not identified yet, so the store's details go to the log only.
            log::warn(&format!("looking up a client token failed: {error}"));
            Err(Reply::error(
                500,
                "the engine's storage failed while checking the token; retry later",
            ))
        }
    }
}

/// Compares digests in constant time, so the comparison reveals neither the admin token
/// nor its length.
pub fn is_admin_token(presented: &str, admin: AdminDigest) -> bool {
    let presented = ids::sha256_bytes(presented);
    presented.ct_eq(&admin.0).into()
}
