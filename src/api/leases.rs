//! `/v1/sys/leases/...`: renew, revoke and look up leases in the body and path forms Vault
//! clients send, list them by prefix, and revoke by prefix.

use std::collections::BTreeSet;

use serde_json::json;

use crate::api::Context;
use crate::api::fields::Fields;
use crate::api::path::LeaseOperation;
use crate::api::response::{LeaseInfo, Reply};
use crate::api::time::rfc3339;

use crate::error::{Error, Result};
use crate::lease;
use crate::revocation;

/// Serves one lease operation; `rest` is the path after the operation.
pub fn lease(
    context: &Context<'_>,
    method: &str,
    operation: LeaseOperation,
    rest: &str,
) -> Result<Reply> {
    if operation == LeaseOperation::Lookup && context.is_list() {
        return list(context, rest);
    }
    if method != "PUT" && method != "POST" {
        return Ok(Reply::method_not_allowed(method, &context.request.path));
    }
    match operation {
        LeaseOperation::Renew => renew(context, rest),
        LeaseOperation::Revoke => revoke(context, rest),
        LeaseOperation::Lookup => lookup(context, rest),
        LeaseOperation::RevokePrefix => revoke_prefix(context, rest),
    }
}

/// Reads the lease id from the path, else from the body's `lease_id`.
fn lease_id(rest: &str, fields: &mut Fields) -> Result<String> {
    let from_body = fields.string("lease_id")?;
    if !rest.is_empty() {
        return Ok(rest.to_owned());
    }
    from_body.ok_or_else(|| {
        Error::invalid("missing lease_id; send it in the body or append it to the path")
    })
}

/// Returns the 403 for a caller that may not manage `lease_id`, or `None`. A missing lease
/// passes, so that each operation reports it in its own way.
fn check_owner(context: &Context<'_>, lease_id: &str) -> Result<Option<Reply>> {
    let owner = lease::find(context.store, context.settings, lease_id)?.map(|record| record.owner);
    match owner {
        Some(owner) if !context.caller.may_manage(owner.as_deref()) => {
            Ok(Some(Reply::permission_denied()))
        }
        _ => Ok(None),
    }
}

fn renew(context: &Context<'_>, rest: &str) -> Result<Reply> {
    let mut fields = Fields::parse(&context.request.body, !rest.is_empty())?;
    let lease_id = lease_id(rest, &mut fields)?;
    let increment = fields.duration("increment")?;
    if let Some(denied) = check_owner(context, &lease_id)? {
        return Ok(denied);
    }
    let renewal = lease::renew(
        context.store,
        context.settings,
        &lease_id,
        increment.as_deref(),
    )?;
    let info = LeaseInfo {
        lease_id: &lease_id,
        renewable: renewal.lease.renewable,
        lease_duration: renewal.lease_duration,
    };
    Ok(Reply::leased(
        serde_json::Value::Null,
        info,
        renewal.warnings,
    ))
}

fn revoke(context: &Context<'_>, rest: &str) -> Result<Reply> {
    let mut fields = Fields::parse(&context.request.body, !rest.is_empty())?;
    let lease_id = lease_id(rest, &mut fields)?;
    if let Some(denied) = check_owner(context, &lease_id)? {
        return Ok(denied);
    }
    revocation::revoke(context.store, context.settings, &lease_id)?;
    Ok(Reply::no_content())
}

fn lookup(context: &Context<'_>, rest: &str) -> Result<Reply> {
    let mut fields = Fields::parse(&context.request.body, !rest.is_empty())?;
    let lease_id = lease_id(rest, &mut fields)?;
    if let Some(denied) = check_owner(context, &lease_id)? {
        return Ok(denied);
    }
    let lease = lease::lookup(context.store, context.settings, &lease_id)?;
    Ok(Reply::data(
        json!({
            "id": lease.lease_id,
            "issue_time": rfc3339(lease.issued_at),
            "expire_time": rfc3339(lease.expires_at),
            "last_renewal": lease.last_renewed_at.map(rfc3339),
            "renewable": lease.renewable,
            "ttl": lease.ttl,
            "role": lease.role,
            "key_alias": lease.key_alias,
            "max_expire_time": rfc3339(lease.max_expires_at),
            "revoke_attempts": lease.revoke_attempts,
            "irrevocable": lease.irrevocable,
            "last_revoke_error": lease.last_revoke_error,
        }),
        Vec::new(),
    ))
}

/// LIST `sys/leases/lookup/<prefix>`: the next path segment of every lease id under the
/// prefix, with a trailing `/` where more segments follow, as Vault lists them. Admin only.
fn list(context: &Context<'_>, prefix: &str) -> Result<Reply> {
    if let Some(denied) = context.require_admin() {
        return Ok(denied);
    }
    let prefix = directory(prefix);
    let ids = lease::list(context.store, context.settings, &prefix)?;
    let keys: BTreeSet<String> = ids
        .iter()
        .filter_map(|id| id.strip_prefix(&prefix))
        .map(|rest| match rest.split_once('/') {
            Some((next, _)) => format!("{next}/"),
            None => rest.to_owned(),
        })
        .collect();
    if keys.is_empty() {
        return Ok(Reply::empty_list());
    }
    Ok(Reply::data(json!({ "keys": keys }), Vec::new()))
}

/// `sys/leases/revoke-prefix/<prefix>`: revokes every lease under the prefix. Admin only.
fn revoke_prefix(context: &Context<'_>, prefix: &str) -> Result<Reply> {
    if let Some(denied) = context.require_admin() {
        return Ok(denied);
    }
    if prefix.is_empty() {
        return Err(Error::invalid(
            "revoke-prefix needs a prefix, such as litellm/creds/dev/",
        ));
    }
    // As in Vault, a prefix that is a whole lease id revokes that lease.
    let exact = matches!(
        lease::find(context.store, context.settings, prefix),
        Ok(Some(_))
    );
    let lease_ids = if exact {
        vec![prefix.to_owned()]
    } else {
        lease::list(context.store, context.settings, &directory(prefix))?
    };
    let mut failures = Vec::new();
    let mut statuses = BTreeSet::new();
    for lease_id in lease_ids {
        if let Err(error) = revocation::revoke(context.store, context.settings, &lease_id) {
            failures.push(format!("{lease_id}: {error}"));
            statuses.insert(Reply::from_error(error).status);
        }
    }
    if failures.is_empty() {
        return Ok(Reply::no_content());
    }
    // Failures with one cause keep its status, such as 504 when every delete timed out.
    let status = match statuses.len() {
        1 => statuses.into_iter().next().unwrap_or(502),
        _ => 502,
    };
    Ok(Reply {
        status,
        body: json!({ "errors": failures }),
    })
}

/// Returns `prefix` ending in `/`, unless it is empty. The path parser drops a trailing
/// slash, so `litellm/creds/dev` here means the directory `litellm/creds/dev/`.
fn directory(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        return prefix.to_owned();
    }
    format!("{prefix}/")
}
