//! Client for LiteLLM's key management API. It handles routes, bodies and status codes,
//! and nothing about roles or leases.

use serde_json::{Map, Value, json};

use crate::clock;
use crate::error::{Error, Result};
use crate::ids;
use crate::outbound::{self, Failure, Response, Verb};
use crate::redact;
use crate::url::BaseUrl;

/// Attempts of an idempotent request (delete, update) before its error is returned.
const IDEMPOTENT_ATTEMPTS: u32 = 3;

/// Pause before the second attempt; it grows fourfold per attempt.
const FIRST_BACKOFF_MILLIS: u64 = 200;

/// Maximum `Retry-After` a request waits for before its next attempt, in seconds. A
/// longer one ends the request with the error, so rate-limit pauses add at most
/// 2 × 5 s to a request.
const MAX_RETRY_AFTER_SECONDS: u64 = 5;

/// LiteLLM's message when none of the keys in a delete request exist.
const NO_KEYS_FOUND: &str = "No keys found";

/// A newly generated key.
pub struct NewKey {
    /// The plaintext key, `sk-...`.
    pub key: String,
    /// Lowercase hex SHA-256 of the key, LiteLLM's handle for it.
    pub token_hash: String,
}

/// Outcome of a delete request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// LiteLLM deleted the key.
    Deleted,
    /// LiteLLM had no such key (HTTP 404 "No keys found").
    AlreadyGone,
}

/// A failed generate request.
pub struct GenerateError {
    /// Cause of the failure.
    pub error: Error,
    /// Whether a key may have been created despite the failure.
    pub key_may_exist: bool,
    /// Whether LiteLLM may still be working on the request, because no response arrived:
    /// a key may appear after an immediate cleanup found nothing.
    pub may_be_in_flight: bool,
}

/// A failed request with what is known about its effect.
struct CallError {
    error: Error,
    status: Option<u16>,
    /// LiteLLM's error message, unmasked, for recognising known answers.
    detail: String,
    may_have_acted: bool,
    may_be_in_flight: bool,
    retryable: bool,
    /// The seconds LiteLLM asked to wait before a retry (`Retry-After`).
    retry_after: Option<u64>,
}

/// A LiteLLM proxy and the master key to manage its keys with. It has no `Debug`, so the
/// key cannot reach a log through it.
pub struct Client {
    url: BaseUrl,
    master_key: String,
    response_timeout_seconds: u64,
}

impl Client {
    /// Creates a client for the proxy at `url` that waits `response_timeout_seconds` for
    /// the first byte of each response.
    pub fn new(url: BaseUrl, master_key: String, response_timeout_seconds: u64) -> Self {
        Self {
            url,
            master_key,
            response_timeout_seconds,
        }
    }

    /// Base URL of the proxy.
    pub fn url(&self) -> &BaseUrl {
        &self.url
    }

    /// Checks that LiteLLM accepts the master key for key management, with one key listing.
    pub fn verify(&self) -> Result<()> {
        match self.call(Verb::Get, "/key/list?page=1&size=1", None) {
            Ok(response) => {
                let listing = self.json_object("/key/list", &response)?;
                self.confirm(
                    listing.get("keys").is_some_and(Value::is_array),
                    "/key/list",
                )
            }
            Err(failure) if matches!(failure.status, Some(401 | 403)) => {
                Err(Error::invalid(format!(
                    "LiteLLM at {} rejected the master key (HTTP {}); check master_key: it must \
                     be the proxy's master key or a key with key-management rights",
                    self.url,
                    failure.status.unwrap_or_default()
                )))
            }
            Err(failure) => Err(failure.error),
        }
    }

    /// Creates a key from the `/key/generate` request body `spec`.
    pub fn generate(&self, spec: &Value) -> Result<NewKey, GenerateError> {
        let body = spec.to_string();
        // LiteLLM acts on nothing it rate-limits, so only a 429 is retried here.
        let response = self
            .call_retrying("/key/generate", &body, |failure| {
                failure.status == Some(429)
            })
            .map_err(|failure| GenerateError {
                error: failure.error,
                key_may_exist: failure.may_have_acted,
                may_be_in_flight: failure.may_be_in_flight,
            })?;
        self.parse_new_key(&response)
            .map_err(|error| GenerateError {
                error,
                key_may_exist: true,
                may_be_in_flight: false,
            })
    }

    /// Sets the key's expiry to `seconds` from now.
    pub fn set_expiry(&self, token_hash: &str, seconds: u64) -> Result<()> {
        let body = json!({ "key": token_hash, "duration": format!("{seconds}s") }).to_string();
        let response = self
            .call_with_retries("/key/update", &body)
            .map_err(|failure| failure.error)?;
        let updated = self.json_object("/key/update", &response)?;
        let token = updated.get("token").and_then(Value::as_str);
        self.confirm(token == Some(token_hash), "/key/update")
    }

    /// Deletes the key whose SHA-256 hash is `token_hash`.
    pub fn delete_key(&self, token_hash: &str) -> Result<Deletion> {
        let body = json!({ "keys": [token_hash] }).to_string();
        self.delete(&body, token_hash)
    }

    /// Deletes the key with alias `alias`.
    pub fn delete_alias(&self, alias: &str) -> Result<Deletion> {
        let body = json!({ "key_aliases": [alias] }).to_string();
        self.delete(&body, alias)
    }

    /// Sends a delete for `identifier`. A 200 counts only when its `deleted_keys` lists
    /// `identifier`, as LiteLLM's does: a gateway's page proves nothing about the key.
    fn delete(&self, body: &str, identifier: &str) -> Result<Deletion> {
        match self.call_with_retries("/key/delete", body) {
            Ok(response) => {
                let answer = self.json_object("/key/delete", &response)?;
                let listed = answer
                    .get("deleted_keys")
                    .and_then(Value::as_array)
                    .is_some_and(|keys| keys.iter().any(|key| key == identifier));
                self.confirm(listed, "/key/delete")?;
                Ok(Deletion::Deleted)
            }
            // LiteLLM answers 404 "No keys found" only when none of the keys exist, so the
            // key is already gone. Any other 404 (a reverse proxy's, or an unknown route's
            // under a wrong base path) does not show whether the key exists.
            Err(failure)
                if failure.status == Some(404) && failure.detail.contains(NO_KEYS_FOUND) =>
            {
                Ok(Deletion::AlreadyGone)
            }
            Err(failure) => Err(failure.error),
        }
    }

    fn call_with_retries(&self, route: &str, body: &str) -> Result<Response, CallError> {
        self.call_retrying(route, body, |failure| failure.retryable)
    }

    /// Posts `body` to `route`, and again after a pause while `retry` accepts the failure,
    /// up to [`IDEMPOTENT_ATTEMPTS`] attempts. The pause is LiteLLM's `Retry-After` when it
    /// gives one, or a backoff from [`FIRST_BACKOFF_MILLIS`].
    fn call_retrying(
        &self,
        route: &str,
        body: &str,
        retry: impl Fn(&CallError) -> bool,
    ) -> Result<Response, CallError> {
        let mut backoff = FIRST_BACKOFF_MILLIS;
        let mut attempt = 1;
        loop {
            let failure = match self.call(Verb::Post, route, Some(body.as_bytes())) {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            if attempt >= IDEMPOTENT_ATTEMPTS || !retry(&failure) {
                return Err(failure);
            }
            let pause = match failure.retry_after {
                Some(seconds) if seconds > MAX_RETRY_AFTER_SECONDS => return Err(failure),
                Some(seconds) => (seconds * 1000).max(backoff),
                None => backoff,
            };
            clock::sleep_millis(pause);
            backoff *= 4;
            attempt += 1;
        }
    }

    fn call(&self, verb: Verb, route: &str, body: Option<&[u8]>) -> Result<Response, CallError> {
        let authorization = format!("Bearer {}", self.master_key);
        let mut headers = vec![("authorization", authorization.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }

        let response = outbound::send(
            verb,
            &self.url,
            route,
            &headers,
            body,
            self.response_timeout_seconds,
        )
        .map_err(|failure| self.transport_error(route, failure))?;
        if (200..300).contains(&response.status) {
            return Ok(response);
        }
        Err(self.status_error(route, &response))
    }

    fn transport_error(&self, route: &str, failure: Failure) -> CallError {
        let may_have_acted = failure.may_have_reached_server();
        let may_be_in_flight = matches!(failure, Failure::TimedOut(_) | Failure::Broken(_));
        let denied = matches!(failure, Failure::Denied(_));
        let error = match failure {
            Failure::Denied(message) | Failure::NotSent(message) | Failure::Broken(message) => {
                Error::upstream(None, format!("{message} ({route})"))
            }
            Failure::TimedOut(message) => Error::timeout(format!("{message} ({route})")),
            Failure::TooLarge => Error::upstream(
                None,
                format!(
                    "the response of LiteLLM at {} to {route} exceeded the limit of {} bytes",
                    self.url,
                    outbound::MAX_RESPONSE_BYTES
                ),
            ),
        };
        CallError {
            error,
            status: None,
            detail: String::new(),
            may_have_acted,
            may_be_in_flight,
            retryable: !denied,
            retry_after: None,
        }
    }

    fn status_error(&self, route: &str, response: &Response) -> CallError {
        let status = response.status;
        let raw_detail = error_detail(&response.body);
        let detail = self.quote(&response.body);
        let message = match status {
            300..=399 => format!(
                "LiteLLM at {} answered {route} with a redirect (HTTP {status}) to {}; set the \
                 config url to the address LiteLLM serves directly",
                self.url,
                response
                    .location
                    .as_deref()
                    .map(|location| redact::mask(location, &[&self.master_key]))
                    .unwrap_or_else(|| "no location".to_owned())
            ),
            401 => format!(
                "LiteLLM at {} rejected the configured master key with HTTP 401 ({detail}); \
                 write the config again with a valid master_key",
                self.url
            ),
            _ => format!(
                "LiteLLM at {} returned HTTP {status} for {route}: {detail}",
                self.url
            ),
        };
        let message = match response.retry_after {
            Some(seconds) if status == 429 => {
                format!("{message}; LiteLLM asked to retry after {seconds}s")
            }
            _ => message,
        };
        CallError {
            error: Error::upstream(Some(status), message),
            status: Some(status),
            detail: raw_detail,
            may_be_in_flight: false,
            // A redirect comes from something other than LiteLLM, which acted on nothing.
            may_have_acted: status >= 500,
            retryable: status >= 500 || status == 429,
            retry_after: response.retry_after,
        }
    }

    /// Extracts LiteLLM's error message from a response body, secrets masked.
    fn quote(&self, body: &[u8]) -> String {
        let message = error_detail(body);
        if message.is_empty() {
            return "empty response body".to_owned();
        }
        redact::mask(&message, &[&self.master_key])
    }

    /// Parses a successful response's body as a JSON object.
    fn json_object(&self, route: &str, response: &Response) -> Result<Map<String, Value>> {
        match serde_json::from_slice(&response.body) {
            Ok(Value::Object(object)) => Ok(object),
            _ => Err(Error::upstream(
                Some(response.status),
                format!(
                    "LiteLLM at {} returned a {route} response (HTTP {}) that is not a JSON \
                     object: {}; check that the config url points at LiteLLM itself",
                    self.url,
                    response.status,
                    self.quote(&response.body)
                ),
            )),
        }
    }

    /// Fails unless a successful JSON response had the shape LiteLLM gives `route`.
    fn confirm(&self, confirmed: bool, route: &str) -> Result<()> {
        if confirmed {
            return Ok(());
        }
        Err(Error::upstream(
            Some(200),
            format!(
                "LiteLLM at {} returned a {route} response that does not confirm the request, \
                 so its outcome is unknown; check that the config url points at LiteLLM itself",
                self.url
            ),
        ))
    }

    fn parse_new_key(&self, response: &Response) -> Result<NewKey> {
        let value: Value = serde_json::from_slice(&response.body).map_err(|_| {
            Error::upstream(
                Some(response.status),
                format!(
                    "LiteLLM at {} returned a /key/generate response that is not valid JSON: {}",
                    self.url,
                    self.quote(&response.body)
                ),
            )
        })?;
        let key = value
            .get("key")
            .and_then(Value::as_str)
            .filter(|key| key.starts_with("sk-") && key.len() > 3)
            .ok_or_else(|| {
                Error::upstream(
                    Some(response.status),
                    format!(
                        "LiteLLM at {} returned a /key/generate response without a key",
                        self.url
                    ),
                )
            })?;

        // LiteLLM identifies a key by its SHA-256 hash and returns it as `token` and
        // `token_id`. A hash there that does not match the key would make revocation
        // delete the wrong key, so the response is rejected.
        let token_hash = ids::sha256_hex(key);
        let mismatch = ["token", "token_id"]
            .iter()
            .filter_map(|field| value.get(*field).and_then(Value::as_str))
            .any(|hash| is_sha256_hex(hash) && !hash.eq_ignore_ascii_case(&token_hash));
        if mismatch {
            return Err(Error::upstream(
                Some(response.status),
                format!(
                    "LiteLLM at {} returned a /key/generate response whose token is not the \
                     SHA-256 hash of its key; check that the config url points at LiteLLM \
                     itself",
                    self.url
                ),
            ));
        }
        Ok(NewKey {
            key: key.to_owned(),
            token_hash,
        })
    }
}

/// Returns LiteLLM's error message from a response body, or the trimmed body text.
fn error_detail(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|value| error_message(&value))
        .unwrap_or_else(|| text.trim().to_owned())
}

/// Finds the message in LiteLLM's error shapes: `{"error": {"message"}}`, FastAPI's
/// `{"detail": [...]}` or `{"detail": "..."}`, or a top-level `message`.
fn error_message(value: &Value) -> Option<String> {
    if let Some(message) = value.pointer("/error/message").and_then(Value::as_str) {
        return Some(message.to_owned());
    }
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        return Some(error.to_owned());
    }
    match value.get("detail") {
        Some(Value::String(detail)) => return Some(detail.clone()),
        Some(Value::Array(items)) => return Some(validation_messages(items)),
        Some(other @ Value::Object(_)) => return Some(other.to_string()),
        _ => {}
    }
    value
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn validation_messages(items: &[Value]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|item| {
            let message = item.get("msg").and_then(Value::as_str).unwrap_or("invalid");
            match item.get("loc").and_then(Value::as_array) {
                Some(location) => {
                    let path: Vec<String> = location
                        .iter()
                        .map(|part| match part {
                            Value::String(text) => text.clone(),
                            other => other.to_string(),
                        })
                        .collect();
                    format!("{message} at {}", path.join("."))
                }
                None => message.to_owned(),
            }
        })
        .collect();
    parts.join("; ")
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Builds a JSON object from optional fields, leaving out the absent ones.
pub fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    let map: Map<String, Value> = fields
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| (name.to_owned(), value)))
        .collect();
    Value::Object(map)
}
