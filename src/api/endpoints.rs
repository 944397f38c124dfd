//! Handlers for the mount's paths (config, roles, creds, tidy) and for client tokens.

use serde_json::{Value, json};

use crate::api::Context;
use crate::api::auth::Caller;
use crate::api::fields::Fields;
use crate::api::path::TokenOperation;
use crate::api::response::{LeaseInfo, Reply};
use crate::api::time::rfc3339;
use crate::bindings::exports::litellm_secrets::engine::types::{ConfigRequest, Role, RoleRequest};
use crate::config;
use crate::creds;
use crate::error::{Error, Result};
use crate::role;
use crate::tidy;
use crate::tokens;

/// `<mount>/config`: read, write, delete. Admin only.
pub fn config(context: &Context<'_>, method: &str) -> Result<Reply> {
    if let Some(denied) = context.require_admin() {
        return Ok(denied);
    }
    match method {
        "GET" => {
            let config = config::read(context.store, context.settings)?;
            Ok(Reply::data(
                json!({
                    "url": config.url,
                    "master_key_set": config.master_key_set,
                    "updated_at": rfc3339(config.updated_at),
                }),
                Vec::new(),
            ))
        }
        "POST" | "PUT" => {
            let mut fields = Fields::parse(&context.request.body, false)?;
            let request = ConfigRequest {
                url: fields.string("url")?,
                master_key: fields.string("master_key")?,
            };
            let warnings = fields.unknown_fields_warning().into_iter().collect();
            config::write(context.store, context.settings, request)?;
            Ok(Reply::done(warnings))
        }
        "DELETE" => {
            config::delete(context.store)?;
            Ok(Reply::no_content())
        }
        _ => Ok(Reply::method_not_allowed(method, &context.request.path)),
    }
}

/// `<mount>/roles`: LIST (or `GET ?list=true`). Admin only.
pub fn role_list(context: &Context<'_>, method: &str) -> Result<Reply> {
    if let Some(denied) = context.require_admin() {
        return Ok(denied);
    }
    if !context.is_list() {
        return Ok(Reply::method_not_allowed(method, &context.request.path));
    }
    let names = role::list(context.store)?;
    if names.is_empty() {
        return Ok(Reply::empty_list());
    }
    Ok(Reply::data(json!({ "keys": names }), Vec::new()))
}

/// `<mount>/roles/<name>`: read, write, delete. Admin only.
pub fn role(context: &Context<'_>, method: &str, name: &str) -> Result<Reply> {
    if let Some(denied) = context.require_admin() {
        return Ok(denied);
    }
    match method {
        "GET" => Ok(Reply::data(
            role_data(&role::read(context.store, name)?),
            Vec::new(),
        )),
        "POST" | "PUT" => {
            let mut fields = Fields::parse(&context.request.body, false)?;
            let request = role_request(&mut fields)?;
            let written = role::write(context.store, context.settings, name, request)?;
            let mut warnings = written.warnings;
            warnings.extend(fields.unknown_fields_warning());
            Ok(Reply::data(role_data(&written.role), warnings))
        }
        "DELETE" => {
            role::delete(context.store, name)?;
            Ok(Reply::no_content())
        }
        _ => Ok(Reply::method_not_allowed(method, &context.request.path)),
    }
}

/// `<mount>/creds/<name>`: GET, or POST with `ttl`. Admins and tokens scoped to the role.
pub fn creds(context: &Context<'_>, method: &str, name: &str) -> Result<Reply> {
    if !context.caller.may_issue(name) {
        return Ok(Reply::permission_denied());
    }
    let mut fields = match method {
        "GET" => Fields::parse(b"", true)?,
        "POST" | "PUT" => Fields::parse(&context.request.body, true)?,
        _ => return Ok(Reply::method_not_allowed(method, &context.request.path)),
    };
    let ttl = fields.duration("ttl")?;
    let unknown = fields.unknown_fields_warning();
    let credential = creds::issue(
        context.store,
        context.settings,
        name,
        ttl.as_deref(),
        context.caller.accessor(),
    )?;
    let lease = LeaseInfo {
        lease_id: &credential.lease_id,
        renewable: credential.renewable,
        lease_duration: credential.lease_duration,
    };
    let data = json!({ "key": credential.key, "key_alias": credential.key_alias });
    let mut warnings = credential.warnings;
    warnings.extend(unknown);
    Ok(Reply::leased(data, lease, warnings))
}

/// `<mount>/tidy`: POST or PUT. Admin only.
pub fn tidy(context: &Context<'_>, method: &str) -> Result<Reply> {
    if let Some(denied) = context.require_admin() {
        return Ok(denied);
    }
    if method != "POST" && method != "PUT" {
        return Ok(Reply::method_not_allowed(method, &context.request.path));
    }
    let report = tidy::run(context.store, context.settings)?;
    Ok(Reply::data(
        json!({
            "revoked_leases": report.revoked_leases,
            "cleaned_pending": report.cleaned_pending,
            "failed": report.failed,
            "marked_irrevocable": report.marked_irrevocable,
            "complete": report.complete,
        }),
        Vec::new(),
    ))
}

/// `auth/token/create` (admin), `lookup-self` and `revoke-self`.
pub fn token(context: &Context<'_>, method: &str, operation: TokenOperation) -> Result<Reply> {
    match operation {
        TokenOperation::Create => create_token(context, method),
        TokenOperation::LookupSelf => match method {
            "GET" | "POST" | "PUT" => Ok(Reply::data(token_data(context.caller), Vec::new())),
            _ => Ok(Reply::method_not_allowed(method, &context.request.path)),
        },
        TokenOperation::RevokeSelf => revoke_self(context, method),
    }
}

fn create_token(context: &Context<'_>, method: &str) -> Result<Reply> {
    if let Some(denied) = context.require_admin() {
        return Ok(denied);
    }
    if method != "POST" && method != "PUT" {
        return Ok(Reply::method_not_allowed(method, &context.request.path));
    }
    let mut fields = Fields::parse(&context.request.body, false)?;
    // `policies` is what Vault clients such as hvac send; here it names roles.
    let roles = match fields.string_list("roles")? {
        Some(roles) => Some(roles),
        None => fields.string_list("policies")?,
    };
    let ttl = fields.duration("ttl")?;
    let display_name = fields.string("display_name")?;
    let warnings = fields.unknown_fields_warning().into_iter().collect();
    let (token, record) = tokens::create(
        context.store,
        context.settings,
        roles.unwrap_or_default(),
        ttl.as_deref(),
        display_name,
    )?;
    Ok(Reply::auth(
        json!({
            "client_token": token,
            "accessor": record.accessor,
            "policies": record.roles,
            "token_policies": record.roles,
            "metadata": { "roles": record.roles.join(",") },
            "lease_duration": record.expires_at - record.created_at,
            "renewable": false,
            "entity_id": "",
            "token_type": "service",
            "orphan": true,
        }),
        warnings,
    ))
}

fn revoke_self(context: &Context<'_>, method: &str) -> Result<Reply> {
    if method != "POST" && method != "PUT" {
        return Ok(Reply::method_not_allowed(method, &context.request.path));
    }
    if matches!(context.caller, Caller::Admin) {
        return Err(Error::invalid(
            "the admin token comes from the host settings and cannot be revoked here; \
             change the setting instead",
        ));
    }
    if let Some(token) = crate::api::auth::presented_token(context.request) {
        tokens::revoke(context.store, token)?;
    }
    Ok(Reply::no_content())
}

fn token_data(caller: &Caller) -> Value {
    match caller {
        Caller::Admin => json!({
            "display_name": "admin",
            "policies": ["root"],
            "ttl": 0,
            "expire_time": null,
            "type": "service",
        }),
        Caller::Client(token) => json!({
            "accessor": token.accessor,
            "display_name": token.display_name,
            "policies": token.roles,
            "meta": { "roles": token.roles.join(",") },
            "creation_time": token.created_at,
            "expire_time": rfc3339(token.expires_at),
            "ttl": token.expires_at.saturating_sub(crate::clock::now()),
            "type": "service",
        }),
    }
}

fn role_request(fields: &mut Fields) -> Result<RoleRequest> {
    Ok(RoleRequest {
        models: fields.string_list("models")?,
        max_budget: fields.number("max_budget")?,
        budget_duration: fields.string("budget_duration")?,
        tpm_limit: fields.unsigned("tpm_limit")?,
        rpm_limit: fields.unsigned("rpm_limit")?,
        max_parallel_requests: fields.unsigned("max_parallel_requests")?,
        key_alias_prefix: fields.string("key_alias_prefix")?,
        metadata: fields.object_text("metadata")?,
        ttl: fields.duration("ttl")?,
        max_ttl: fields.duration("max_ttl")?,
    })
}

fn role_data(role: &Role) -> Value {
    let metadata: Value = serde_json::from_str(&role.metadata).unwrap_or_else(|_| json!({}));
    json!({
        "models": role.models,
        "max_budget": role.max_budget.unwrap_or(0.0),
        "budget_duration": role.budget_duration.clone().unwrap_or_default(),
        "tpm_limit": role.tpm_limit.unwrap_or(0),
        "rpm_limit": role.rpm_limit.unwrap_or(0),
        "max_parallel_requests": role.max_parallel_requests.unwrap_or(0),
        "key_alias_prefix": role.key_alias_prefix,
        "metadata": metadata,
        "ttl": role.ttl,
        "max_ttl": role.max_ttl,
    })
}
