//! The Vault-compatible HTTP API over the engine, served through
//! `wasi:http/incoming-handler`.
//!
//! Paths, under the mount (default `litellm`):
//! - `/v1/<mount>/config`, `/v1/<mount>/roles[/<name>]`, `/v1/<mount>/creds/<name>`,
//!   `/v1/<mount>/tidy`;
//! - `/v1/sys/leases/{renew,revoke,lookup}[/<lease id>]`, `/v1/sys/leases/revoke-prefix/...`;
//! - `/v1/auth/token/{create,lookup-self,revoke-self}`;
//! - `/v1/sys/health`, the only path that needs no token.

mod auth;
mod endpoints;
mod fields;
mod leases;
mod path;
mod response;
mod time;
mod wire;

use serde_json::json;

use crate::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use crate::clock;
use crate::error::{Error, Result};
use crate::log;
use crate::redact;
use crate::settings::{self, AdminDigest, Settings};
use crate::store::Store;

use self::auth::Caller;
use self::path::Route;
use self::response::Reply;
use self::wire::{ReadError, WireRequest};

/// Serves one HTTP request.
pub fn handle(request: IncomingRequest, out: ResponseOutparam) {
    let reply = match wire::read(request) {
        Ok(request) => {
            let reply = serve(&request);
            log_server_error(&request, &reply);
            reply
        }
        Err(ReadError::TooLarge) => Reply::error(
            413,
            format!(
                "request body exceeds {} bytes; send a smaller body",
                wire::MAX_BODY_BYTES
            ),
        ),
        Err(ReadError::Broken(message)) => {
            Reply::error(400, format!("reading the request body failed: {message}"))
        }
    };
    let body = if reply.body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&reply.body).unwrap_or_default()
    };
    wire::send(out, reply.status, &body);
}

/// Logs why a request failed on the server's or LiteLLM's side, so that the operator sees
/// the cause of a 5xx. Error messages never contain secrets.
fn log_server_error(request: &WireRequest, reply: &Reply) {
    if reply.status < 500 {
        return;
    }
    let message = reply.body["errors"][0].as_str().unwrap_or("no message");
    log::warn(&format!(
        "{} {} failed with {}: {message}",
        request.method,
        quoted_path(&request.path),
        reply.status
    ));
}

fn serve(request: &WireRequest) -> Reply {
    let segments = match path::segments(&request.path) {
        Ok(segments) => segments,
        Err(reply) => return reply,
    };
    if segments == ["sys", "health"] {
        return health(request);
    }

    let admin = match settings::admin_digest() {
        Ok(admin) => admin,
        Err(error) => return admin_setting_failure(error),
    };
    let (settings, store) = match open() {
        Ok(opened) => opened,
        Err(error) => return settings_failure(request, admin, error),
    };
    let caller = match auth::authenticate(request, &store, admin) {
        Ok(caller) => caller,
        Err(reply) => return reply,
    };

    let context = Context {
        request,
        settings: &settings,
        store: &store,
        caller: &caller,
    };
    match path::route(&segments, &settings.mount) {
        Some(route) => dispatch(&context, route),
        None => Reply::error(
            404,
            format!("no handler for route {}", quoted_path(&request.path)),
        ),
    }
}

/// Reports an invalid admin token setting as a server fault. No caller can be identified,
/// and the message names settings only, so it goes to every caller.
fn admin_setting_failure(error: Error) -> Reply {
    log::warn(&format!("request rejected: {error}"));
    Reply::error(500, error.to_string())
}

/// Reports invalid settings in full to the admin only: anyone else gets a generic 500, and
/// the detail goes to the log for the operator.
fn settings_failure(request: &WireRequest, admin: Option<AdminDigest>, error: Error) -> Reply {
    let is_admin = match (auth::presented_token(request), admin) {
        (Some(presented), Some(admin)) => auth::is_admin_token(presented, admin),
        _ => false,
    };
    if is_admin {
        return Reply::from_error(error);
    }
    log::warn(&format!(
        "request refused because the settings are invalid: {error}"
    ));
    Reply::error(
        500,
        "the engine's settings are invalid; its operator must fix them",
    )
}

/// Everything a handler needs about the request it serves.
pub struct Context<'a> {
    /// The request.
    pub request: &'a WireRequest,
    /// Host settings.
    pub settings: &'a Settings,
    /// The engine's bucket.
    pub store: &'a Store,
    /// The authenticated caller.
    pub caller: &'a Caller,
}

impl Context<'_> {
    /// Returns whether the request is a LIST: the LIST method or `GET ?list=true`.
    pub fn is_list(&self) -> bool {
        self.request.method == "LIST"
            || (self.request.method == "GET" && path::query_flag(&self.request.query, "list"))
    }

    /// Returns the 403 for a caller that is not the admin, or `None` for the admin.
    pub fn require_admin(&self) -> Option<Reply> {
        match self.caller {
            Caller::Admin => None,
            Caller::Client(_) => Some(Reply::permission_denied()),
        }
    }
}

fn dispatch(context: &Context<'_>, route: Route) -> Reply {
    // Vault turns `GET ?list=true` into a LIST, which paths without a list refuse.
    let method = if context.is_list() {
        "LIST"
    } else {
        context.request.method.as_str()
    };
    let result = match route {
        Route::Config => endpoints::config(context, method),
        Route::Roles => endpoints::role_list(context, method),
        Route::Role(name) => endpoints::role(context, method, &name),
        Route::Creds(name) => endpoints::creds(context, method, &name),
        Route::Tidy => endpoints::tidy(context, method),
        Route::Lease { operation, rest } => leases::lease(context, method, operation, &rest),
        Route::Token(operation) => endpoints::token(context, method, operation),
    };
    result.unwrap_or_else(Reply::from_error)
}

/// Returns the path cut for an error message, so that huge paths are not echoed whole.
fn quoted_path(path: &str) -> String {
    redact::truncate(path, 200)
}

fn open() -> Result<(Settings, Store)> {
    let settings = Settings::load()?;
    let store = Store::open(&settings.bucket)?;
    Ok((settings, store))
}

/// Returns Vault's health status, which clients use as a liveness probe: 200, or 503 while
/// the settings are invalid, because every other request fails then.
/// Key that health checks read to confirm that storage responds.
const HEALTH_PROBE_KEY: &str = "config";

fn health(request: &WireRequest) -> Reply {
    if request.method != "GET" && request.method != "HEAD" {
        return Reply::method_not_allowed(&request.method, &request.path);
    }
    // Healthy means requests can be served: the settings are valid and storage responds.
    let healthy = open()
        .and_then(|(_, store)| store.exists(HEALTH_PROBE_KEY))
        .is_ok();
    Reply {
        status: if healthy { 200 } else { 503 },
        body: json!({
            "initialized": true,
            "sealed": !healthy,
            "standby": false,
            "performance_standby": false,
            "server_time_utc": clock::now(),
            "version": concat!("litellm-secrets-engine ", env!("CARGO_PKG_VERSION")),
        }),
    }
}
