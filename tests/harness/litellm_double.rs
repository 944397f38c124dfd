//! A loopback test double of the LiteLLM proxy's key-management API, modelled on LiteLLM 1.108.7.
//!
//! The double keeps virtual keys in memory and records every request. It takes every timestamp
//! from a shared [`Clock`], so tests expire keys by moving the clock forward. Tests can also
//! script faulty replies: delays, padding, endless bodies and dropped connections. Status codes,
//! error envelopes and messages copy what the real 1.108.7 proxy returned to recorded requests.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::Clock;

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// A reply that [`LiteLlmDouble::script`] queues for the next request to one path.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A JSON body with the given status.
    Json { status: u16, body: Value },
    /// Any body with the given status and Content-Type.
    Raw {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
    /// An empty body with a `Location` header.
    Redirect { status: u16, location: String },
    /// `padding` bytes of ASCII spaces streamed first, then `tail`, with Content-Type
    /// application/json and no Content-Length (chunked).
    Padded {
        status: u16,
        padding: usize,
        tail: Vec<u8>,
    },
    /// A chunked body of spaces that never ends. Sending stops when the client goes away.
    Endless { status: u16 },
    /// Waits for `delay`, then sends the inner reply.
    Delayed { delay: Duration, reply: Box<Reply> },
    /// Closes the connection without any response.
    CloseConnection,
    /// The reply the real proxy would send, authentication included (useful inside `Delayed`).
    Normal,
}

/// One request as the double received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The HTTP method, such as `POST`.
    pub method: String,
    /// The path with its query string.
    pub path: String,
    /// Header names in lowercase, values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The complete request body.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// Returns the first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(header, _)| *header == name)
            .map(|(_, value)| value.as_str())
    }

    /// Parses the body as JSON, or returns `Value::Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Returns the path without its query string.
    fn route_path(&self) -> &str {
        split_query(&self.path).0
    }
}

/// A snapshot of one stored virtual key.
#[derive(Clone, Debug)]
pub struct KeyRow {
    /// Lowercase hex SHA-256 of the plaintext key.
    pub token: String,
    pub key_alias: Option<String>,
    /// Models the key may call. An empty list allows every model.
    pub models: Vec<String>,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub max_parallel_requests: Option<i64>,
    pub metadata: Value,
    /// `default`, `llm_api`, `management` or `read_only`.
    pub key_type: String,
    pub allowed_routes: Vec<String>,
    /// Expiry in Unix seconds (rounded down), or `None` for a key that never expires.
    pub expires: Option<u64>,
    pub deleted: bool,
    pub blocked: bool,
}

// ---------------------------------------------------------------------------------------------
// The double
// ---------------------------------------------------------------------------------------------

/// A LiteLLM proxy stand-in that serves HTTP/1.1 on 127.0.0.1 until [`LiteLlmDouble::shutdown`]
/// or until it is dropped.
pub struct LiteLlmDouble {
    shared: Arc<Shared>,
    port: u16,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
}

struct Shared {
    clock: Clock,
    state: Mutex<State>,
}

impl Shared {
    /// Locks the state. A panic in another handler does not make the state unusable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self) -> Micros {
        u64::try_from(self.clock.now().as_micros()).unwrap_or(u64::MAX)
    }
}

struct State {
    master_key: String,
    /// Keys in creation order. Deleted keys stay here with `deleted_at` set.
    keys: Vec<StoredKey>,
    requests: Vec<RecordedRequest>,
    scripts: HashMap<String, VecDeque<Reply>>,
    completions_served: u64,
}

impl LiteLlmDouble {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start(master_key: &str, clock: Clock) -> anyhow::Result<LiteLlmDouble> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("failed to bind the LiteLLM double to 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            clock,
            state: Mutex::new(State {
                master_key: master_key.to_owned(),
                keys: Vec::new(),
                requests: Vec::new(),
                scripts: HashMap::new(),
                completions_served: 0,
            }),
        });
        let (stop, stop_signal) = watch::channel(false);
        let server = tokio::spawn(accept_connections(listener, shared.clone(), stop_signal));
        Ok(LiteLlmDouble {
            shared,
            port,
            stop,
            server,
        })
    }

    /// Returns the base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Returns the port on 127.0.0.1 that the double listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replaces the master key. Later requests must use the new one.
    pub fn set_master_key(&self, key: &str) {
        self.shared.lock().master_key = key.to_owned();
    }

    /// Returns every request received so far, in order of arrival, scripted ones included.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Returns the recorded requests whose path, without the query string, equals `path`.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        let state = self.shared.lock();
        state
            .requests
            .iter()
            .filter(|request| request.route_path() == path)
            .cloned()
            .collect()
    }

    /// Returns the keys that are not deleted, expired ones included, in creation order.
    pub fn live_keys(&self) -> Vec<KeyRow> {
        let state = self.shared.lock();
        state
            .keys
            .iter()
            .filter(|key| key.is_live())
            .map(StoredKey::to_row)
            .collect()
    }

    /// Finds a key by its SHA-256 hash, deleted ones included. A live key wins over a deleted one.
    pub fn key_by_hash(&self, token_hash: &str) -> Option<KeyRow> {
        let state = self.shared.lock();
        state
            .find_for_info(token_hash)
            .map(|index| state.keys[index].to_row())
    }

    /// Finds a live key by alias.
    pub fn key_by_alias(&self, alias: &str) -> Option<KeyRow> {
        let state = self.shared.lock();
        let index = *state.live_indexes_with_alias(alias).first()?;
        Some(state.keys[index].to_row())
    }

    /// Queues `reply` for the next request to `path` (without query). Replies for one path are
    /// used first in, first out. Scripted requests are recorded but not authenticated.
    pub fn script(&self, path: &str, reply: Reply) {
        let mut state = self.shared.lock();
        state
            .scripts
            .entry(path.to_owned())
            .or_default()
            .push_back(reply);
    }

    /// Stores a key without an HTTP request and returns its row.
    ///
    /// The row starts as `/key/generate` with an empty body would create it, then `edit` may change
    /// it. `token` is always the SHA-256 of `plaintext`, whatever `edit` sets. Setting `deleted`
    /// stores the key as already deleted. Aliases are not checked for uniqueness, so a test can
    /// set up a collision that the proxy itself would reject.
    pub fn insert_key(&self, plaintext: &str, edit: impl FnOnce(&mut KeyRow)) -> KeyRow {
        let now = self.shared.now();
        let mut row = StoredKey::new(plaintext, now).to_row();
        edit(&mut row);
        let stored = StoredKey::from_row(plaintext, &row, now);
        let snapshot = stored.to_row();
        self.shared.lock().keys.push(stored);
        snapshot
    }

    /// Stops accepting connections, drops open ones, and waits until the port is closed.
    pub async fn shutdown(self) {
        // An error only means the server task already ended.
        let _ = self.stop.send(true);
        if let Err(error) = self.server.await {
            eprintln!(
                "litellm double on port {}: server task failed: {error}",
                self.port
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serving connections
// ---------------------------------------------------------------------------------------------

/// The error that makes hyper close a connection without writing a response.
#[derive(Debug)]
struct CloseConnection;

impl fmt::Display for CloseConnection {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("connection closed without a response on purpose")
    }
}

impl std::error::Error for CloseConnection {}

type ReplyBody = BoxBody<Bytes, Infallible>;

/// Accepts connections until `stop` changes or its sender is dropped, then aborts all of them.
async fn accept_connections(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                Err(error) => {
                    eprintln!("litellm double: accept failed, retrying in 10 ms: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let service =
        hyper::service::service_fn(move |request| handle_request(shared.clone(), request));
    // Errors are clients that went away and the connections that `Reply::CloseConnection` drops on
    // purpose. Both are normal in these tests, so they are not logged.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle_request(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ReplyBody>, CloseConnection> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|_| CloseConnection)?
        .to_bytes();
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map_or_else(
            || parts.uri.path().to_owned(),
            |path| path.as_str().to_owned(),
        ),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let scripted = {
        let mut state = shared.lock();
        state.requests.push(recorded.clone());
        state
            .scripts
            .get_mut(recorded.route_path())
            .and_then(VecDeque::pop_front)
    };
    send_reply(&shared, &recorded, scripted.unwrap_or(Reply::Normal)).await
}

async fn send_reply(
    shared: &Shared,
    request: &RecordedRequest,
    mut reply: Reply,
) -> Result<Response<ReplyBody>, CloseConnection> {
    loop {
        return match reply {
            Reply::Delayed {
                delay,
                reply: inner,
            } => {
                tokio::time::sleep(delay).await;
                reply = *inner;
                continue;
            }
            Reply::Normal => Ok(route_request(shared, request)),
            Reply::CloseConnection => Err(CloseConnection),
            Reply::Json { status, body } => Ok(json_response(status, &body)),
            Reply::Raw {
                status,
                content_type,
                body,
            } => Ok(build_response(
                status,
                &[("content-type", &content_type)],
                full_body(body),
            )),
            Reply::Redirect { status, location } => Ok(build_response(
                status,
                &[("location", &location)],
                full_body(Vec::new()),
            )),
            Reply::Padded {
                status,
                padding,
                tail,
            } => Ok(padded_response(status, padding, tail)),
            Reply::Endless { status } => Ok(endless_response(status)),
        };
    }
}

// ---------------------------------------------------------------------------------------------
// Response bodies
// ---------------------------------------------------------------------------------------------

const SPACE_CHUNK_BYTES: usize = 16 * 1024;
static SPACES: [u8; SPACE_CHUNK_BYTES] = [b' '; SPACE_CHUNK_BYTES];

/// A streamed body fed by a task. The task stops when the connection drops the receiver.
struct ChannelBody {
    chunks: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.chunks
            .poll_recv(context)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn full_body(bytes: impl Into<Bytes>) -> ReplyBody {
    Full::new(bytes.into()).boxed()
}

/// Builds a response. An invalid scripted status or header becomes a 500 that names the problem.
fn build_response(status: u16, headers: &[(&str, &str)], body: ReplyBody) -> Response<ReplyBody> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body).unwrap_or_else(|error| {
        eprintln!("litellm double: invalid reply with status {status}: {error}");
        let mut fallback = Response::new(full_body(format!("invalid scripted reply: {error}")));
        *fallback.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}

fn json_response(status: u16, body: &Value) -> Response<ReplyBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    build_response(
        status,
        &[("content-type", "application/json")],
        full_body(bytes),
    )
}

fn padded_response(status: u16, padding: usize, tail: Vec<u8>) -> Response<ReplyBody> {
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut remaining = padding;
        while remaining > 0 {
            let length = remaining.min(SPACE_CHUNK_BYTES);
            if sender
                .send(Bytes::from_static(&SPACES[..length]))
                .await
                .is_err()
            {
                return;
            }
            remaining -= length;
        }
        if !tail.is_empty() {
            let _ = sender.send(Bytes::from(tail)).await;
        }
    });
    let body = ChannelBody { chunks: receiver }.boxed();
    build_response(status, &[("content-type", "application/json")], body)
}

fn endless_response(status: u16) -> Response<ReplyBody> {
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move { while sender.send(Bytes::from_static(&SPACES)).await.is_ok() {} });
    let body = ChannelBody { chunks: receiver }.boxed();
    build_response(status, &[("content-type", "application/json")], body)
}

// ---------------------------------------------------------------------------------------------
// Error envelopes and Python-style text
// ---------------------------------------------------------------------------------------------

/// Builds the OpenAI-style error envelope. `code` is the status as a string, as the proxy sends it.
fn openai_error(status: u16, message: &str, error_type: &str, param: Value) -> Response<ReplyBody> {
    let body = json!({
        "error": {
            "message": message,
            "type": error_type,
            "param": param,
            "code": status.to_string(),
        }
    });
    json_response(status, &body)
}

/// Builds the response to a FastAPI `HTTPException` with a dict detail. Its message is Python's
/// repr of that dict, and its type is always `internal_server_error`.
fn http_exception(status: u16, text: &str) -> Response<ReplyBody> {
    let message = format!("{{'error': {}}}", python_repr(text));
    openai_error(status, &message, "internal_server_error", Value::Null)
}

fn auth_error(message: &str) -> Response<ReplyBody> {
    openai_error(401, message, "auth_error", json!("None"))
}

fn validation_issue(kind: &str, location: Value, message: &str) -> Value {
    json!({"type": kind, "loc": location, "msg": message})
}

fn validation_error(issues: Vec<Value>) -> Response<ReplyBody> {
    json_response(422, &json!({ "detail": issues }))
}

fn key_not_found() -> Response<ReplyBody> {
    openai_error(404, "Key not found.", "not_found_error", json!("key"))
}

/// Python's `repr` of a string. It uses double quotes when the text contains single quotes
/// and no double quotes, and single quotes otherwise.
fn python_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut repr = String::with_capacity(text.len() + 2);
    repr.push(quote);
    for character in text.chars() {
        match character {
            '\\' => repr.push_str("\\\\"),
            '\n' => repr.push_str("\\n"),
            '\r' => repr.push_str("\\r"),
            '\t' => repr.push_str("\\t"),
            c if c == quote => {
                repr.push('\\');
                repr.push(c);
            }
            c if c.is_ascii_control() => repr.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => repr.push(c),
        }
    }
    repr.push(quote);
    repr
}

/// Formats a float as Python's `repr` does. Python writes exponents below 1e-4 and from 1e16
/// (`1e-05`), but this prints those values in full.
fn python_float(value: f64) -> String {
    if value.is_nan() {
        "nan".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else if value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// Hides the middle of a key the way the proxy's messages do (`abcd****wxyz`).
// The proxy printed "****" for 3- and 4-character values and kept 4 characters at each end
// of 26- and 28-character values. The cut-off at 8 characters is a guess.
fn mask_secret(secret: &str) -> String {
    let characters: Vec<char> = secret.chars().collect();
    if characters.len() <= 8 {
        return "****".to_owned();
    }
    let head: String = characters[..4].iter().collect();
    let tail: String = characters[characters.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

// ---------------------------------------------------------------------------------------------
// Routing and authentication
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Readiness,
    Generate,
    Info,
    Update,
    Delete,
    List,
    Block,
    Unblock,
    Regenerate,
    ChatCompletions,
}

impl Route {
    fn find(path: &str) -> Option<Route> {
        let route = match path {
            "/health/readiness" => Route::Readiness,
            "/key/generate" => Route::Generate,
            "/key/info" => Route::Info,
            "/key/update" => Route::Update,
            "/key/delete" => Route::Delete,
            "/key/list" => Route::List,
            "/key/block" => Route::Block,
            "/key/unblock" => Route::Unblock,
            "/key/regenerate" => Route::Regenerate,
            "/v1/chat/completions" | "/chat/completions" => Route::ChatCompletions,
            _ if path.starts_with("/key/") && path.ends_with("/regenerate") => Route::Regenerate,
            _ => return None,
        };
        Some(route)
    }

    fn method(self) -> &'static str {
        match self {
            Route::Readiness | Route::Info | Route::List => "GET",
            _ => "POST",
        }
    }

    fn is_key_management(self) -> bool {
        !matches!(self, Route::Readiness | Route::ChatCompletions)
    }

    /// Checks whether a route group named in a key's `allowed_routes` covers this route.
    // NOTE: only `llm_api_routes` was observed. The other two groups, which `key_type` values
    // `management` and `read_only` select here, and what they cover are guesses.
    fn is_in_group(self, group: &str) -> bool {
        match group {
            "llm_api_routes" => self == Route::ChatCompletions,
            "management_routes" => self.is_key_management(),
            "info_routes" => matches!(self, Route::Info | Route::List),
            _ => false,
        }
    }
}

/// Who sent an authenticated request.
#[derive(Clone, Copy)]
enum Caller {
    Master,
    /// Index of a live key in `State::keys`.
    VirtualKey(usize),
}

/// Handles a request as the real proxy would. Unknown paths get 404 before any authentication,
/// as in FastAPI, and a JSON body that does not parse gets 422 before authentication too.
fn route_request(shared: &Shared, request: &RecordedRequest) -> Response<ReplyBody> {
    let (path, query) = split_query(&request.path);
    let Some(route) = Route::find(path) else {
        return json_response(404, &json!({"detail": "Not Found"}));
    };
    if request.method != route.method() {
        return json_response(405, &json!({"detail": "Method Not Allowed"}));
    }
    if route == Route::Readiness {
        return readiness_response();
    }
    let body = if route.is_key_management() && route.method() == "POST" {
        match decode_fastapi_body(request) {
            Ok(body) => body,
            Err(response) => return response,
        }
    } else {
        FastApiBody::Missing
    };

    let now = shared.now();
    let mut state = shared.lock();
    let caller = match authenticate(&state, request, route, path) {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    if let Caller::VirtualKey(index) = caller
        && route.is_key_management()
        && let Err(response) = check_management_access(&state.keys[index], route, path, now)
    {
        return response;
    }
    let parameters = parse_query(query);
    match route {
        Route::Readiness => readiness_response(),
        Route::ChatCompletions => chat_completion(&mut state, caller, request, now),
        Route::Info => key_info(&state, &parameters, now),
        Route::List => list_keys(&state, &parameters, now),
        Route::Regenerate => regenerate_without_licence(),
        Route::Generate => with_object(body, |body| generate_key(&mut state, body, now)),
        Route::Update => with_object(body, |body| update_key(&mut state, body, now)),
        Route::Delete => with_object(body, |body| delete_keys(&mut state, body, now)),
        Route::Block => with_object(body, |body| set_blocked(&mut state, body, true, now)),
        Route::Unblock => with_object(body, |body| set_blocked(&mut state, body, false, now)),
    }
}

fn readiness_response() -> Response<ReplyBody> {
    json_response(200, &json!({"status": "healthy", "db": "connected"}))
}

/// Runs `handler` on a body that is a JSON object, or returns FastAPI's error for any other body.
fn with_object(
    body: FastApiBody,
    handler: impl FnOnce(&Map<String, Value>) -> Response<ReplyBody>,
) -> Response<ReplyBody> {
    match body.into_object() {
        Ok(object) => handler(&object),
        Err(response) => response,
    }
}

/// Checks the API key headers. `x-litellm-api-key` wins over `Authorization`, which wins over the
/// provider-style headers. A virtual key must be live, unblocked and allowed on the route.
fn authenticate(
    state: &State,
    request: &RecordedRequest,
    route: Route,
    path: &str,
) -> Result<Caller, Response<ReplyBody>> {
    let api_key = presented_api_key(request)?;
    if api_key == state.master_key {
        return Ok(Caller::Master);
    }
    if !api_key.starts_with("sk-") {
        let message = format!(
            "LiteLLM Virtual Key expected. Received={}, expected to start with 'sk-'.",
            mask_secret(&api_key)
        );
        return Err(auth_error(&message));
    }
    let Some(index) = state.live_index_by_hash(&sha256_hex(&api_key)) else {
        return Err(openai_error(
            401,
            "Authentication Error, Invalid API key provided.",
            "token_not_found_in_db",
            json!("key"),
        ));
    };
    let key = &state.keys[index];
    if key.blocked == Some(true) {
        return Err(auth_error(
            "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin.",
        ));
    }
    let route_allowed = key.allowed_routes.is_empty()
        || key
            .allowed_routes
            .iter()
            .any(|allowed| allowed == path || route.is_in_group(allowed));
    if !route_allowed {
        let allowed: Vec<String> = key
            .allowed_routes
            .iter()
            .map(|route| python_repr(route))
            .collect();
        let detail = format!(
            "Virtual key is not allowed to call this route. Only allowed to call routes: [{}]. Tried to call route: {path}",
            allowed.join(", ")
        );
        return Err(json_response(403, &json!({ "detail": detail })));
    }
    Ok(Caller::VirtualKey(index))
}

fn presented_api_key(request: &RecordedRequest) -> Result<String, Response<ReplyBody>> {
    if let Some(value) = request
        .header("x-litellm-api-key")
        .map(str::trim)
        .filter(|value| !value.is_empty())
    {
        return Ok(strip_scheme(value, "bearer ").unwrap_or(value).to_owned());
    }
    if let Some(value) = request.header("authorization") {
        let key =
            strip_scheme(value.trim(), "bearer ").or_else(|| strip_scheme(value.trim(), "basic "));
        return match key.map(str::trim).filter(|key| !key.is_empty()) {
            Some(key) => Ok(key.to_owned()),
            None => Err(auth_error(
                "Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix.",
            )),
        };
    }
    for name in [
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "ocp-apim-subscription-key",
    ] {
        if let Some(value) = request
            .header(name)
            .map(str::trim)
            .filter(|value| !value.is_empty())
        {
            return Ok(value.to_owned());
        }
    }
    Err(auth_error("Authentication Error, No api key passed in."))
}

/// Removes a case-insensitive scheme prefix such as `bearer `.
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let prefix = value.get(..scheme.len())?;
    prefix
        .eq_ignore_ascii_case(scheme)
        .then(|| &value[scheme.len()..])
}

/// Applies the proxy's checks for a virtual key on a `/key/*` route: expiry, then the admin role.
/// A virtual key may read `/key/info`, because LiteLLM 1.108.7 returned another key's info to a
/// default virtual key.
fn check_management_access(
    key: &StoredKey,
    route: Route,
    path: &str,
    now: Micros,
) -> Result<(), Response<ReplyBody>> {
    check_expiry(key, now)?;
    match route {
        Route::Info => Ok(()),
        Route::List => Err(openai_error(
            403,
            "You are not authorized to access this endpoint. No 'user_id' is associated with your API key.",
            "bad_request_error",
            json!("user_id"),
        )),
        _ => Err(auth_error(&format!(
            "Authentication Error, Only proxy admin can be used to generate, delete, update info for new keys/users/teams. Route={path}. Your role=unknown. Your user_id=*******"
        ))),
    }
}

fn check_expiry(key: &StoredKey, now: Micros) -> Result<(), Response<ReplyBody>> {
    match key.expires {
        Some(expires) if now >= expires => {
            let message = format!(
                "Authentication Error - Expired Key. Key Expiry time {} and current time {}",
                format_timestamp(expires, TimestampStyle::Spaced),
                format_timestamp(now, TimestampStyle::Spaced)
            );
            Err(openai_error(
                401,
                &message,
                "expired_key",
                json!(key.key_name),
            ))
        }
        _ => Ok(()),
    }
}

fn split_query(path: &str) -> (&str, &str) {
    path.split_once('?').unwrap_or((path, ""))
}

/// Decodes `a=1&b=x%20y` into pairs. Invalid percent escapes are kept as they are.
fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .filter(|hex| hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[index], escaped) {
            (_, Some(byte)) => {
                decoded.push(byte);
                index += 3;
                continue;
            }
            (b'+', None) => decoded.push(b' '),
            (byte, None) => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Request bodies and field validation (FastAPI and pydantic shapes)
// ---------------------------------------------------------------------------------------------

/// A request body as FastAPI reads it, before the request model is validated.
enum FastApiBody {
    Missing,
    /// A body sent without a JSON Content-Type.
    NotJson,
    Json(Value),
}

/// Parses a JSON body. FastAPI rejects undecodable JSON before running authentication.
fn decode_fastapi_body(request: &RecordedRequest) -> Result<FastApiBody, Response<ReplyBody>> {
    if request.body.is_empty() {
        return Ok(FastApiBody::Missing);
    }
    if !has_json_content_type(request) {
        return Ok(FastApiBody::NotJson);
    }
    match serde_json::from_slice(&request.body) {
        Ok(value) => Ok(FastApiBody::Json(value)),
        Err(error) => {
            let position = json_error_position(&request.body, &error);
            let issue = validation_issue(
                "json_invalid",
                json!(["body", position]),
                "JSON decode error",
            );
            Err(validation_error(vec![issue]))
        }
    }
}

impl FastApiBody {
    fn into_object(self) -> Result<Map<String, Value>, Response<ReplyBody>> {
        match self {
            FastApiBody::Json(Value::Object(object)) => Ok(object),
            FastApiBody::Missing => Err(validation_error(vec![validation_issue(
                "missing",
                json!(["body"]),
                "Field required",
            )])),
            FastApiBody::NotJson => Err(validation_error(vec![validation_issue(
                "model_attributes_type",
                json!(["body"]),
                "Input should be a valid dictionary or object to extract fields from",
            )])),
            // LiteLLM 1.108.7 returned this 500 for a JSON array sent to /key/generate.
            FastApiBody::Json(_) => Err(json_response(
                500,
                &json!({
                    "error": {"message": "Internal server error", "type": "internal_server_error"}
                }),
            )),
        }
    }
}

fn has_json_content_type(request: &RecordedRequest) -> bool {
    let Some(content_type) = request.header("content-type") else {
        return false;
    };
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media_type == "application/json"
        || (media_type.starts_with("application/") && media_type.ends_with("+json"))
}

/// Computes the character offset that Python's `json.loads` reports for a decode error.
fn json_error_position(body: &[u8], error: &serde_json::Error) -> usize {
    let Ok(text) = std::str::from_utf8(body) else {
        return 0;
    };
    if error.is_eof() {
        return text.chars().count();
    }
    let preceding_lines: usize = text
        .split('\n')
        .take(error.line().saturating_sub(1))
        .map(|line| line.chars().count() + 1)
        .sum();
    preceding_lines + error.column().saturating_sub(1)
}

/// Reads typed fields from a JSON object and collects pydantic-style issues for the 422 response.
/// A null field reads as absent.
struct Fields<'a> {
    body: &'a Map<String, Value>,
    issues: Vec<Value>,
}

impl<'a> Fields<'a> {
    fn new(body: &'a Map<String, Value>) -> Self {
        Fields {
            body,
            issues: Vec::new(),
        }
    }

    fn value(&self, name: &str) -> Option<&'a Value> {
        self.body.get(name).filter(|value| !value.is_null())
    }

    fn reject(&mut self, name: &str, kind: &str, message: &str) {
        self.issues
            .push(validation_issue(kind, json!(["body", name]), message));
    }

    fn string(&mut self, name: &str) -> Option<String> {
        match self.value(name)? {
            Value::String(text) => Some(text.clone()),
            _ => {
                self.reject(name, "string_type", "Input should be a valid string");
                None
            }
        }
    }

    fn string_list(&mut self, name: &str) -> Option<Vec<String>> {
        let Value::Array(items) = self.value(name)? else {
            self.reject(name, "list_type", "Input should be a valid list");
            return None;
        };
        let mut strings = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(text) => strings.push(text.to_owned()),
                None => self.issues.push(validation_issue(
                    "string_type",
                    json!(["body", name, index]),
                    "Input should be a valid string",
                )),
            }
        }
        Some(strings)
    }

    /// Reads a float. Pydantic also accepts numeric strings, and LiteLLM reads `""` as null.
    fn number(&mut self, name: &str) -> Option<f64> {
        match self.value(name)? {
            Value::Number(number) => number.as_f64(),
            Value::String(text) if text.trim().is_empty() => None,
            Value::String(text) => match text.trim().parse::<f64>() {
                Ok(number) => Some(number),
                Err(_) => {
                    let message =
                        "Input should be a valid number, unable to parse string as a number";
                    self.reject(name, "float_parsing", message);
                    None
                }
            },
            _ => {
                self.reject(name, "float_type", "Input should be a valid number");
                None
            }
        }
    }

    /// Reads an integer. Pydantic also accepts whole floats and numeric strings.
    fn integer(&mut self, name: &str) -> Option<i64> {
        match self.value(name)? {
            Value::Number(number) => {
                if let Some(integer) = number.as_i64() {
                    return Some(integer);
                }
                let float = number.as_f64().unwrap_or(f64::NAN);
                if float.fract() == 0.0 && float.abs() < 9.2e18 {
                    return Some(float as i64);
                }
                let message =
                    "Input should be a valid integer, got a number with a fractional part";
                self.reject(name, "int_from_float", message);
                None
            }
            Value::String(text) => match text.trim().parse::<i64>() {
                Ok(integer) => Some(integer),
                Err(_) => {
                    let message =
                        "Input should be a valid integer, unable to parse string as an integer";
                    self.reject(name, "int_parsing", message);
                    None
                }
            },
            _ => {
                self.reject(name, "int_type", "Input should be a valid integer");
                None
            }
        }
    }

    fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.value(name)? {
            Value::Bool(flag) => Some(*flag),
            Value::Number(number) if number.as_i64() == Some(0) => Some(false),
            Value::Number(number) if number.as_i64() == Some(1) => Some(true),
            Value::String(text) => match text.to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "on" | "1" => Some(true),
                "false" | "f" | "no" | "n" | "off" | "0" => Some(false),
                _ => {
                    let message = "Input should be a valid boolean, unable to interpret input";
                    self.reject(name, "bool_parsing", message);
                    None
                }
            },
            _ => {
                self.reject(name, "bool_type", "Input should be a valid boolean");
                None
            }
        }
    }

    fn object(&mut self, name: &str) -> Option<Map<String, Value>> {
        match self.value(name)? {
            Value::Object(object) => Some(object.clone()),
            _ => {
                self.reject(name, "dict_type", "Input should be a valid dictionary");
                None
            }
        }
    }

    fn key_type(&mut self) -> Option<String> {
        let key_type = self.string("key_type")?;
        if KEY_TYPES.contains(&key_type.as_str()) {
            return Some(key_type);
        }
        self.reject(
            "key_type",
            "enum",
            "Input should be 'llm_api', 'management', 'read_only' or 'default'",
        );
        None
    }

    fn finish(self) -> Result<(), Response<ReplyBody>> {
        if self.issues.is_empty() {
            Ok(())
        } else {
            Err(validation_error(self.issues))
        }
    }
}

const KEY_TYPES: [&str; 4] = ["default", "llm_api", "management", "read_only"];

/// Returns the `allowed_routes` that `key_type` fills in when the request gives none.
fn default_allowed_routes(key_type: &str) -> Vec<String> {
    match key_type {
        "llm_api" => vec!["llm_api_routes".to_owned()],
        "management" => vec!["management_routes".to_owned()],
        "read_only" => vec!["info_routes".to_owned()],
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared field rules for generate and update
// ---------------------------------------------------------------------------------------------

fn check_max_budget(max_budget: Option<f64>) -> Result<(), Response<ReplyBody>> {
    match max_budget {
        Some(budget) if !budget.is_finite() || budget < 0.0 => Err(http_exception(
            400,
            &format!(
                "max_budget must be a non-negative finite number. Received: {}",
                python_float(budget)
            ),
        )),
        _ => Ok(()),
    }
}

fn check_budget_duration(
    budget_duration: Option<&str>,
    now: Micros,
) -> Result<(), Response<ReplyBody>> {
    let Some(text) = budget_duration else {
        return Ok(());
    };
    if ["hourly", "daily", "weekly", "monthly"].contains(&text) || duration_end(text, now).is_ok() {
        return Ok(());
    }
    Err(http_exception(
        400,
        &format!(
            "Invalid budget_duration '{text}'. Use a format like '1h', '24h', '7d', or '30d'."
        ),
    ))
}

/// Rejects control characters and `..` path segments. Spaces, `/` and `#` are accepted.
fn check_alias_format(alias: &str) -> Result<(), Response<ReplyBody>> {
    if alias.chars().any(char::is_control) || alias.split('/').any(|segment| segment == "..") {
        return Err(openai_error(
            400,
            "Invalid key_alias: must not contain control characters (such as tab or newline) or a \"..\" path segment",
            "bad_request_error",
            json!("key_alias"),
        ));
    }
    Ok(())
}

/// Rejects an alias that a live key other than `except` already has.
fn check_alias_unique(
    state: &State,
    alias: &str,
    except: Option<usize>,
) -> Result<(), Response<ReplyBody>> {
    let alias_in_use = state
        .live_indexes_with_alias(alias)
        .into_iter()
        .any(|index| Some(index) != except);
    if alias_in_use {
        return Err(openai_error(
            400,
            &format!(
                "Key with alias '{alias}' already exists. Unique key aliases across all keys are required."
            ),
            "bad_request_error",
            json!("key_alias"),
        ));
    }
    Ok(())
}

fn check_custom_key(key: &str) -> Result<(), Response<ReplyBody>> {
    if !key.starts_with("sk-") {
        return Err(http_exception(
            400,
            &format!(
                "Invalid key format. LiteLLM Virtual Key must start with 'sk-'. Received: {}",
                mask_secret(key)
            ),
        ));
    }
    if key.chars().count() < 16 {
        return Err(http_exception(
            400,
            "Invalid key format. LiteLLM Virtual Key must be at least 16 characters long.",
        ));
    }
    Ok(())
}

/// Computes the expiry for `duration`, or the proxy's 500 for a duration it cannot parse.
fn expiry_from_duration(duration: &str, now: Micros) -> Result<Micros, Response<ReplyBody>> {
    duration_end(duration, now)
        .map_err(|message| openai_error(500, &message, "internal_server_error", Value::Null))
}

// ---------------------------------------------------------------------------------------------
// Key routes
// ---------------------------------------------------------------------------------------------

/// POST /key/generate. Unknown fields are ignored. A duplicate custom key gets 200 but is not
/// stored.
fn generate_key(state: &mut State, body: &Map<String, Value>, now: Micros) -> Response<ReplyBody> {
    let mut fields = Fields::new(body);
    let key_alias = fields.string("key_alias");
    let duration = fields.string("duration");
    let models = fields.string_list("models").unwrap_or_default();
    let max_budget = fields.number("max_budget");
    let budget_duration = fields.string("budget_duration");
    let tpm_limit = fields.integer("tpm_limit");
    let rpm_limit = fields.integer("rpm_limit");
    let max_parallel_requests = fields.integer("max_parallel_requests");
    let metadata = fields.object("metadata").unwrap_or_default();
    let custom_key = fields.string("key");
    let allowed_routes = fields.string_list("allowed_routes").unwrap_or_default();
    let blocked = fields.boolean("blocked");
    let tags = fields.string_list("tags");
    let key_type = fields.key_type().unwrap_or_else(|| "default".to_owned());
    if let Err(response) = fields.finish() {
        return response;
    }

    if tags.is_some() {
        return http_exception(
            403,
            "This feature is only available for LiteLLM Enterprise users: tags. You must be a LiteLLM Enterprise user to use this feature. If you have a license please set `LITELLM_LICENSE` in your env. Get a 7 day trial key here: https://www.litellm.ai/enterprise#trial. \nPricing: https://www.litellm.ai/#pricing",
        );
    }
    let checks = check_max_budget(max_budget)
        .and_then(|()| check_budget_duration(budget_duration.as_deref(), now))
        .and_then(|()| key_alias.as_deref().map_or(Ok(()), check_alias_format))
        .and_then(|()| {
            key_alias
                .as_deref()
                .map_or(Ok(()), |alias| check_alias_unique(state, alias, None))
        })
        .and_then(|()| custom_key.as_deref().map_or(Ok(()), check_custom_key));
    if let Err(response) = checks {
        return response;
    }
    let exact_expiry = match duration
        .as_deref()
        .map(|duration| expiry_from_duration(duration, now))
    {
        Some(Err(response)) => return response,
        Some(Ok(expiry)) => Some(expiry),
        None => None,
    };

    let plaintext = custom_key.unwrap_or_else(generate_plaintext_key);
    let mut key = StoredKey::new(&plaintext, now);
    key.key_alias = key_alias;
    key.models = models;
    key.max_budget = max_budget;
    key.budget_duration = budget_duration;
    key.tpm_limit = tpm_limit;
    key.rpm_limit = rpm_limit;
    key.max_parallel_requests = max_parallel_requests;
    key.metadata = Value::Object(metadata);
    key.allowed_routes = if allowed_routes.is_empty() {
        default_allowed_routes(&key_type)
    } else {
        allowed_routes
    };
    key.key_type = key_type;
    key.blocked = blocked;
    key.expires = exact_expiry.map(to_database_precision);

    let response = json_response(200, &generated_key_json(&key, &plaintext, exact_expiry));
    // The proxy writes with an upsert whose update part is empty, so a second key with the same
    // plaintext leaves the first row untouched.
    if state.live_index_by_hash(&key.token).is_none() {
        state.keys.push(key);
    }
    response
}

/// GET /key/info?key=<plaintext or hash>. Deleted keys still return 200 with status "deleted".
fn key_info(
    state: &State,
    parameters: &HashMap<String, String>,
    now: Micros,
) -> Response<ReplyBody> {
    let found = parameters.get("key").and_then(|reference| {
        state
            .find_for_info(&token_for_reference(reference))
            .map(|index| (reference, index))
    });
    let Some((reference, index)) = found else {
        return openai_error(
            404,
            "Key not found in database",
            "not_found_error",
            json!("key"),
        );
    };
    let key = &state.keys[index];
    let mut info = key_row_json(key, TimestampStyle::Offset);
    info.insert("status".to_owned(), json!(key.status(now)));
    if let Some(deleted_at) = key.deleted_at {
        add_deletion_fields(&mut info, key, deleted_at);
    }
    json_response(200, &json!({"key": reference, "info": info}))
}

/// Reshapes an info row as the proxy returns it from its deleted-keys table.
fn add_deletion_fields(info: &mut Map<String, Value>, key: &StoredKey, deleted_at: Micros) {
    for absent in [
        "policies",
        "jwt_key_mappings",
        "litellm_organization_table",
        "litellm_project_table",
    ] {
        info.remove(absent);
    }
    // The archive row's id is a UUID. Deriving it from the hash keeps it stable across requests.
    let digest = sha256_hex(&key.token);
    let id = format!(
        "{}-{}-{}-{}-{}",
        &digest[..8],
        &digest[8..12],
        &digest[12..16],
        &digest[16..20],
        &digest[20..32]
    );
    let deletion = json!({
        "id": id,
        "org_id": null,
        "deleted_at": format_timestamp(deleted_at, TimestampStyle::Offset),
        "deleted_by": "default_user_id",
        "deleted_by_api_key": "litellm_proxy_master_key",
        "litellm_changed_by": null,
    });
    merge_object(info, deletion);
}

/// POST /key/update. Null fields stay unchanged, except `duration`: null or "-1" clears the expiry.
fn update_key(state: &mut State, body: &Map<String, Value>, now: Micros) -> Response<ReplyBody> {
    let mut fields = Fields::new(body);
    let reference = fields.string("key");
    let key_alias = fields.string("key_alias");
    let models = fields.string_list("models");
    let max_budget = fields.number("max_budget");
    let budget_duration = fields.string("budget_duration");
    let tpm_limit = fields.integer("tpm_limit");
    let rpm_limit = fields.integer("rpm_limit");
    let max_parallel_requests = fields.integer("max_parallel_requests");
    let metadata = fields.object("metadata");
    let allowed_routes = fields.string_list("allowed_routes");
    let blocked = fields.boolean("blocked");
    let duration = body
        .contains_key("duration")
        .then(|| fields.string("duration"));
    if let Err(response) = fields.finish() {
        return response;
    }

    let index = match (&reference, &key_alias) {
        (Some(reference), _) => state
            .live_index_by_hash(&token_for_reference(reference))
            .ok_or_else(key_not_found),
        (None, Some(alias)) => match state.live_indexes_with_alias(alias).as_slice() {
            [index] => Ok(*index),
            [] => Err(key_not_found()),
            // This message is a guess. LiteLLM has this 400, but no recorded request hit it.
            _ => Err(openai_error(
                400,
                &format!("Multiple keys share key_alias={alias}. Use the key instead."),
                "bad_request_error",
                json!("key_alias"),
            )),
        },
        (None, None) => Err(validation_error(vec![validation_issue(
            "value_error",
            json!(["body"]),
            "Value error, either key or key_alias must be provided",
        )])),
    };
    let index = match index {
        Ok(index) => index,
        Err(response) => return response,
    };
    let renamed_alias = key_alias.filter(|_| reference.is_some());
    let checks = check_max_budget(max_budget)
        .and_then(|()| check_budget_duration(budget_duration.as_deref(), now))
        .and_then(|()| renamed_alias.as_deref().map_or(Ok(()), check_alias_format))
        .and_then(|()| {
            renamed_alias.as_deref().map_or(Ok(()), |alias| {
                check_alias_unique(state, alias, Some(index))
            })
        });
    if let Err(response) = checks {
        return response;
    }
    let new_expiry = match duration {
        None => state.keys[index].expires,
        Some(None) => None,
        Some(Some(text)) if text == "-1" => None,
        Some(Some(text)) => match expiry_from_duration(&text, now) {
            Ok(expiry) => Some(to_database_precision(expiry)),
            Err(response) => return response,
        },
    };

    let key = &mut state.keys[index];
    key.expires = new_expiry;
    if let Some(alias) = renamed_alias {
        key.key_alias = Some(alias);
    }
    key.models = models.unwrap_or_else(|| key.models.clone());
    key.max_budget = max_budget.or(key.max_budget);
    key.budget_duration = budget_duration.or_else(|| key.budget_duration.clone());
    key.tpm_limit = tpm_limit.or(key.tpm_limit);
    key.rpm_limit = rpm_limit.or(key.rpm_limit);
    key.max_parallel_requests = max_parallel_requests.or(key.max_parallel_requests);
    key.allowed_routes = allowed_routes.unwrap_or_else(|| key.allowed_routes.clone());
    key.blocked = blocked.or(key.blocked);
    if let Some(mut metadata) = metadata {
        // The reserved service_account_id entry survives a metadata replacement unchanged.
        if let Some(service_account) = key.metadata.get("service_account_id") {
            metadata.insert("service_account_id".to_owned(), service_account.clone());
        }
        key.metadata = Value::Object(metadata);
    }
    key.updated_at = to_database_precision(now);
    key.settings_updated_at = Some(to_database_precision(now));

    let mut row = key_row_json(key, TimestampStyle::Offset);
    // When the key was found by alias, the proxy echoes the hash as `key`.
    row.insert(
        "key".to_owned(),
        json!(reference.unwrap_or_else(|| key.token.clone())),
    );
    row.insert("token".to_owned(), json!(key.token));
    json_response(200, &Value::Object(row))
}

/// POST /key/delete. The response echoes the request list, even values that matched no key.
fn delete_keys(state: &mut State, body: &Map<String, Value>, now: Micros) -> Response<ReplyBody> {
    let mut fields = Fields::new(body);
    let keys = fields.string_list("keys").unwrap_or_default();
    let key_aliases = fields.string_list("key_aliases").unwrap_or_default();
    if let Err(response) = fields.finish() {
        return response;
    }
    let (requested, targets): (Vec<String>, Vec<usize>) = if !keys.is_empty() {
        let targets = keys
            .iter()
            .filter_map(|reference| state.live_index_by_hash(&token_for_reference(reference)))
            .collect();
        (keys, targets)
    } else if !key_aliases.is_empty() {
        let targets = key_aliases
            .iter()
            .flat_map(|alias| state.live_indexes_with_alias(alias))
            .collect();
        (key_aliases, targets)
    } else {
        return validation_error(vec![validation_issue(
            "value_error",
            json!(["body"]),
            "Value error, At least one of 'keys' or 'key_aliases' must be provided.",
        )]);
    };
    if targets.is_empty() {
        let message = format!("{{'error': {}}}", python_repr("No keys found"));
        return openai_error(404, &message, "internal_server_error", Value::Null);
    }
    for index in targets {
        state.keys[index].deleted_at = Some(to_database_precision(now));
    }
    json_response(200, &json!({ "deleted_keys": requested }))
}

/// GET /key/list: hashes of live keys, newest first, filtered by `key_alias` or `key_hash`.
/// `status=deleted` lists deleted keys instead, and `return_full_object=true` returns rows.
fn list_keys(
    state: &State,
    parameters: &HashMap<String, String>,
    now: Micros,
) -> Response<ReplyBody> {
    let mut issues = Vec::new();
    let page = query_integer(parameters, "page", 1, 1, None, &mut issues);
    let size = query_integer(parameters, "size", 10, 1, Some(100), &mut issues);
    if !issues.is_empty() {
        return validation_error(issues);
    }
    let want_deleted = parameters
        .get("status")
        .is_some_and(|status| status == "deleted");
    let matching: Vec<&StoredKey> = state
        .keys
        .iter()
        .rev()
        .filter(|key| key.is_live() != want_deleted)
        .filter(|key| {
            parameters
                .get("key_alias")
                .is_none_or(|alias| key.key_alias.as_ref() == Some(alias))
        })
        .filter(|key| {
            parameters
                .get("key_hash")
                .is_none_or(|hash| key.token == *hash)
        })
        .collect();
    let full_objects = parameters
        .get("return_full_object")
        .is_some_and(|flag| flag == "true");
    let page_keys: Vec<Value> = matching
        .iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .map(|key| {
            if !full_objects {
                return json!(key.token);
            }
            let mut row = key_row_json(key, TimestampStyle::Zulu);
            row.insert("token".to_owned(), json!(key.token));
            row.insert("status".to_owned(), json!(key.status(now)));
            Value::Object(row)
        })
        .collect();
    json_response(
        200,
        &json!({
            "keys": page_keys,
            "total_count": matching.len(),
            "current_page": page,
            "total_pages": matching.len().div_ceil(size),
        }),
    )
}

/// Reads a query integer with FastAPI's bounds errors.
fn query_integer(
    parameters: &HashMap<String, String>,
    name: &str,
    default: usize,
    minimum: usize,
    maximum: Option<usize>,
    issues: &mut Vec<Value>,
) -> usize {
    let Some(text) = parameters.get(name) else {
        return default;
    };
    let location = json!(["query", name]);
    let Ok(value) = text.trim().parse::<i64>() else {
        let message = "Input should be a valid integer, unable to parse string as an integer";
        issues.push(validation_issue("int_parsing", location, message));
        return default;
    };
    if value < minimum as i64 {
        let message = format!("Input should be greater than or equal to {minimum}");
        issues.push(validation_issue("greater_than_equal", location, &message));
        return default;
    }
    if let Some(maximum) = maximum
        && value > maximum as i64
    {
        let message = format!("Input should be less than or equal to {maximum}");
        issues.push(validation_issue("less_than_equal", location, &message));
        return default;
    }
    usize::try_from(value).unwrap_or(default)
}

/// POST /key/block and /key/unblock with `{"key": plaintext or hash}`.
fn set_blocked(
    state: &mut State,
    body: &Map<String, Value>,
    blocked: bool,
    now: Micros,
) -> Response<ReplyBody> {
    let mut fields = Fields::new(body);
    let reference = fields.string("key");
    if reference.is_none() && !body.contains_key("key") {
        fields.reject("key", "missing", "Field required");
    }
    if let Err(response) = fields.finish() {
        return response;
    }
    let reference = reference.unwrap_or_default();
    let Some(index) = state.live_index_by_hash(&token_for_reference(&reference)) else {
        return key_not_found();
    };
    let key = &mut state.keys[index];
    key.blocked = Some(blocked);
    key.updated_at = to_database_precision(now);
    let mut row = key_row_json(key, TimestampStyle::Offset);
    row.insert("token".to_owned(), json!(key.token));
    json_response(200, &Value::Object(row))
}

/// POST /key/regenerate and /key/{key}/regenerate without an Enterprise licence. The proxy never
/// looks the key up, so an unknown key gets the same 500.
fn regenerate_without_licence() -> Response<ReplyBody> {
    openai_error(
        500,
        "Regenerating Virtual Keys is an Enterprise feature, You must be a LiteLLM Enterprise user to use this feature. If you have a license please set `LITELLM_LICENSE` in your env. Get a 7 day trial key here: https://www.litellm.ai/enterprise#trial. \nPricing: https://www.litellm.ai/#pricing",
        "internal_server_error",
        Value::Null,
    )
}

// ---------------------------------------------------------------------------------------------
// Chat completions
// ---------------------------------------------------------------------------------------------

/// Models the double serves, with LiteLLM 1.108.7's price in USD for one call that uses 1000
/// prompt and 1000 completion tokens. Every call here reports that usage.
const MODEL_CALL_COSTS: [(&str, f64); 2] = [("gpt-4o-mini", 0.00075), ("gpt-4o", 0.0125)];

/// POST /v1/chat/completions and /chat/completions. A virtual key is checked in the proxy's
/// observed order: model access, then expiry, then budget. Streaming is not supported.
// NOTE: the body is parsed as JSON whatever its Content-Type. How the proxy treats other
// Content-Types was not traced.
fn chat_completion(
    state: &mut State,
    caller: Caller,
    request: &RecordedRequest,
    now: Micros,
) -> Response<ReplyBody> {
    let body: Value = if request.body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(error) => {
                let message = format!("Invalid JSON payload: {error}");
                return openai_error(
                    400,
                    &message,
                    "invalid_request_error",
                    json!("request_body"),
                );
            }
        }
    };
    let model = body.get("model").and_then(Value::as_str);
    let model_text = model.unwrap_or("None");

    if let Caller::VirtualKey(index) = caller {
        let key = &state.keys[index];
        if !key.models.is_empty()
            && !key
                .models
                .iter()
                .any(|allowed| Some(allowed.as_str()) == model)
        {
            let message = format!(
                "The requested model '{model_text}' is not available for this API key, or the model name is invalid. Check the models available to you and try again."
            );
            return openai_error(403, &message, "key_model_access_denied", json!("model"));
        }
        if let Err(response) = check_expiry(key, now) {
            return response;
        }
        if let Some(max_budget) = key.max_budget
            && key.spend >= max_budget
        {
            let alias = key.key_alias.as_deref().unwrap_or("None");
            let message = format!(
                "Budget has been exceeded! Key={alias} ({}) Current cost: {}, Max budget: {}",
                key.key_name,
                python_float(key.spend),
                python_float(max_budget)
            );
            return openai_error(422, &message, "budget_exceeded", Value::Null);
        }
    }
    let Some((model, cost)) = MODEL_CALL_COSTS
        .iter()
        .find(|(known, _)| Some(*known) == model)
    else {
        let message = format!(
            "/chat/completions: Invalid model name passed in model={model_text}. Call `/v1/models` to view available models for your key."
        );
        let body = json!({"error": {
            "message": message, "type": "invalid_request_error", "param": null, "code": "400",
            "provider_specific_fields": {"error": message},
        }});
        return json_response(400, &body);
    };
    if let Caller::VirtualKey(index) = caller {
        state.keys[index].spend += cost;
    }
    state.completions_served += 1;
    json_response(200, &completion_json(model, state.completions_served, now))
}

fn completion_json(model: &str, sequence: u64, now: Micros) -> Value {
    json!({
        "id": format!("chatcmpl-double-{sequence}"),
        "created": now / MICROS_PER_SECOND,
        "model": model,
        "object": "chat.completion",
        "system_fingerprint": "fp_litellm_double",
        "choices": [{
            "finish_reason": "stop",
            "index": 0,
            "message": {
                "content": format!("Reply from the LiteLLM test double for model {model}."),
                "role": "assistant",
                "annotations": [],
                "refusal": null,
            },
            "provider_specific_fields": {},
            "logprobs": null,
        }],
        "usage": {"completion_tokens": 1000, "prompt_tokens": 1000, "total_tokens": 2000},
        "service_tier": "default",
    })
}

// ---------------------------------------------------------------------------------------------
// Key storage
// ---------------------------------------------------------------------------------------------

/// Microseconds since the Unix epoch.
type Micros = u64;

/// One row of the proxy's key table, or of its deleted-keys table once `deleted_at` is set.
struct StoredKey {
    token: String,
    key_name: String,
    key_alias: Option<String>,
    models: Vec<String>,
    max_budget: Option<f64>,
    budget_duration: Option<String>,
    tpm_limit: Option<i64>,
    rpm_limit: Option<i64>,
    max_parallel_requests: Option<i64>,
    metadata: Value,
    key_type: String,
    allowed_routes: Vec<String>,
    expires: Option<Micros>,
    /// `None` until a request sets it. The proxy reports null, true and false differently.
    blocked: Option<bool>,
    /// Spend in USD, updated at once. LiteLLM 1.108.7 shows it in /key/info 1 to 11 s later,
    /// depending on its `proxy_batch_write_at` setting.
    spend: f64,
    created_at: Micros,
    updated_at: Micros,
    settings_updated_at: Option<Micros>,
    deleted_at: Option<Micros>,
}

impl StoredKey {
    /// Creates a key with every setting at the `/key/generate` default.
    fn new(plaintext: &str, now: Micros) -> StoredKey {
        let created_at = to_database_precision(now);
        StoredKey {
            token: sha256_hex(plaintext),
            key_name: key_display_name(plaintext),
            key_alias: None,
            models: Vec::new(),
            max_budget: None,
            budget_duration: None,
            tpm_limit: None,
            rpm_limit: None,
            max_parallel_requests: None,
            metadata: json!({}),
            key_type: "default".to_owned(),
            allowed_routes: Vec::new(),
            expires: None,
            blocked: None,
            spend: 0.0,
            created_at,
            updated_at: created_at,
            settings_updated_at: None,
            deleted_at: None,
        }
    }

    fn from_row(plaintext: &str, row: &KeyRow, now: Micros) -> StoredKey {
        let mut key = StoredKey::new(plaintext, now);
        key.key_alias = row.key_alias.clone();
        key.models = row.models.clone();
        key.max_budget = row.max_budget;
        key.budget_duration = row.budget_duration.clone();
        key.tpm_limit = row.tpm_limit;
        key.rpm_limit = row.rpm_limit;
        key.max_parallel_requests = row.max_parallel_requests;
        key.metadata = row.metadata.clone();
        key.key_type = row.key_type.clone();
        key.allowed_routes = row.allowed_routes.clone();
        key.expires = row
            .expires
            .map(|seconds| seconds.saturating_mul(MICROS_PER_SECOND));
        key.blocked = row.blocked.then_some(true);
        key.deleted_at = row.deleted.then(|| to_database_precision(now));
        key
    }

    fn to_row(&self) -> KeyRow {
        KeyRow {
            token: self.token.clone(),
            key_alias: self.key_alias.clone(),
            models: self.models.clone(),
            max_budget: self.max_budget,
            budget_duration: self.budget_duration.clone(),
            tpm_limit: self.tpm_limit,
            rpm_limit: self.rpm_limit,
            max_parallel_requests: self.max_parallel_requests,
            metadata: self.metadata.clone(),
            key_type: self.key_type.clone(),
            allowed_routes: self.allowed_routes.clone(),
            expires: self.expires.map(|expires| expires / MICROS_PER_SECOND),
            deleted: self.deleted_at.is_some(),
            blocked: self.blocked == Some(true),
        }
    }

    fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }

    /// Returns the `status` that /key/info reports.
    fn status(&self, now: Micros) -> &'static str {
        if self.deleted_at.is_some() {
            "deleted"
        } else if self.blocked == Some(true) {
            "revoked"
        } else if self.expires.is_some_and(|expires| now >= expires) {
            "expired"
        } else {
            "active"
        }
    }
}

impl State {
    fn live_index_by_hash(&self, token: &str) -> Option<usize> {
        self.keys
            .iter()
            .position(|key| key.is_live() && key.token == token)
    }

    fn live_indexes_with_alias(&self, alias: &str) -> Vec<usize> {
        (0..self.keys.len())
            .filter(|&index| {
                self.keys[index].is_live() && self.keys[index].key_alias.as_deref() == Some(alias)
            })
            .collect()
    }

    /// Finds a live key with this hash, else the most recently deleted one.
    fn find_for_info(&self, token: &str) -> Option<usize> {
        self.live_index_by_hash(token)
            .or_else(|| self.keys.iter().rposition(|key| key.token == token))
    }
}

/// Returns the hash for a key reference in a request. Values starting with `sk-` are plaintext
/// keys and get hashed, and other values are used as the hash.
fn token_for_reference(reference: &str) -> String {
    if reference.starts_with("sk-") {
        sha256_hex(reference)
    } else {
        reference.to_owned()
    }
}

/// Fields that the proxy's key rows always return with the same empty value here, as
/// whitespace-separated names: null, `{}` and `[]` values.
const ROW_NULL_FIELDS: &str = "user_id team_id agent_id project_id tpd_limit budget_id
    organization_id object_permission_id last_active rotation_interval last_rotation_at
    key_rotation_at budget_limits
    litellm_budget_table litellm_organization_table litellm_project_table object_permission
    jwt_key_mappings budget_reset_at";
const ROW_OBJECT_FIELDS: &str =
    "aliases config router_settings permissions model_spend model_max_budget budget_fallbacks";
const ROW_LIST_FIELDS: &str = "allowed_cache_controls policies access_group_ids";

/// The key row as /key/info (under `info`), /key/update, /key/block and /key/list return it,
/// without `token`.
// NOTE: `budget_reset_at` is always null here. The proxy fills it in when budget_duration is set,
// aligned to calendar boundaries (30d from 2026-12-04 gave 2027-01-01).
fn key_row_json(key: &StoredKey, style: TimestampStyle) -> Map<String, Value> {
    let mut row = Map::new();
    fill_empty_fields(
        &mut row,
        ROW_NULL_FIELDS,
        ROW_OBJECT_FIELDS,
        ROW_LIST_FIELDS,
    );
    let described = json!({
        "key_name": key.key_name,
        "key_alias": key.key_alias,
        "soft_budget_cooldown": false,
        "spend": key.spend,
        "total_spend": key.spend,
        "expires": key.expires.map(|expires| format_timestamp(expires, style)),
        "models": key.models,
        "max_parallel_requests": key.max_parallel_requests,
        "metadata": key.metadata,
        "blocked": key.blocked,
        "tpm_limit": key.tpm_limit,
        "rpm_limit": key.rpm_limit,
        "max_budget": key.max_budget,
        "budget_duration": key.budget_duration,
        "allowed_routes": key.allowed_routes,
        "key_type": key.key_type,
        "created_at": format_timestamp(key.created_at, style),
        "created_by": "default_user_id",
        "updated_at": format_timestamp(key.updated_at, style),
        "updated_by": "default_user_id",
        "settings_updated_at":
            key.settings_updated_at.map(|updated| format_timestamp(updated, style)),
        "rotation_count": 0,
        "auto_rotate": false,
    });
    merge_object(&mut row, described);
    row
}

/// The same for the /key/generate response.
const GENERATED_NULL_FIELDS: &str = "user_id team_id agent_id budget_limits model_rpm_limit
    model_tpm_limit guardrails policies prompts object_permission tpd_limit budget_id tags
    enforced_params organization_id project_id litellm_budget_table mcp_rpm_limit tag_rpm_limit
    default_estimated_output_tokens default_estimated_output_tokens_per_model end_user_budget_id
    disable_global_guardrails enable_prompt_caching throttle_on_budget_exceeded
    allowed_passthrough_routes denied_passthrough_routes allowed_vector_store_indexes rpm_limit_type
    tpm_limit_type";
const GENERATED_OBJECT_FIELDS: &str =
    "config permissions model_max_budget budget_fallbacks aliases router_settings";
const GENERATED_LIST_FIELDS: &str = "allowed_cache_controls access_group_ids";

/// Builds the /key/generate response, the only one that contains the plaintext key. `expires`
/// keeps microseconds here, while stored rows keep milliseconds.
fn generated_key_json(key: &StoredKey, plaintext: &str, exact_expiry: Option<Micros>) -> Value {
    let mut response = Map::new();
    fill_empty_fields(
        &mut response,
        GENERATED_NULL_FIELDS,
        GENERATED_OBJECT_FIELDS,
        GENERATED_LIST_FIELDS,
    );
    let described = json!({
        "key": plaintext,
        "key_name": key.key_name,
        "key_alias": key.key_alias,
        "token": key.token,
        "token_id": key.token,
        "expires": exact_expiry.map(|expires| format_timestamp(expires, TimestampStyle::Zulu)),
        "duration": null,
        "models": key.models,
        "spend": 0.0,
        "max_budget": key.max_budget,
        "budget_duration": key.budget_duration,
        "tpm_limit": key.tpm_limit,
        "rpm_limit": key.rpm_limit,
        "max_parallel_requests": key.max_parallel_requests,
        "metadata": key.metadata,
        "key_type": key.key_type,
        "allowed_routes": key.allowed_routes,
        "blocked": key.blocked,
        "created_by": "default_user_id",
        "updated_by": "default_user_id",
        "created_at": format_timestamp(key.created_at, TimestampStyle::Zulu),
        "updated_at": format_timestamp(key.updated_at, TimestampStyle::Zulu),
    });
    merge_object(&mut response, described);
    Value::Object(response)
}

fn fill_empty_fields(target: &mut Map<String, Value>, nulls: &str, objects: &str, lists: &str) {
    for (names, empty) in [
        (nulls, Value::Null),
        (objects, json!({})),
        (lists, json!([])),
    ] {
        for name in names.split_whitespace() {
            target.insert(name.to_owned(), empty.clone());
        }
    }
}

fn merge_object(target: &mut Map<String, Value>, source: Value) {
    if let Value::Object(source) = source {
        target.extend(source);
    }
}

// ---------------------------------------------------------------------------------------------
// Key material
// ---------------------------------------------------------------------------------------------

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Returns the display abbreviation, `sk-...` and the last four characters.
fn key_display_name(plaintext: &str) -> String {
    let characters: Vec<char> = plaintext.chars().collect();
    let tail: String = characters[characters.len().saturating_sub(4)..]
        .iter()
        .collect();
    format!("sk-...{tail}")
}

/// Generates a key like Python's `"sk-" + secrets.token_urlsafe(16)`, with 22 URL-safe base64
/// characters.
fn generate_plaintext_key() -> String {
    format!("sk-{}", base64_url(&random_bytes()))
}

/// Reads 16 bytes from /dev/urandom. If that fails, it hashes the time and a counter instead,
/// which is unique though not secret.
fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let from_os =
        std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes));
    if from_os.is_ok() {
        return bytes;
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let digest = Sha256::digest(format!(
        "{count}:{}:{}",
        time.as_nanos(),
        std::process::id()
    ));
    bytes.copy_from_slice(&digest[..16]);
    bytes
}

/// Encodes base64 with the URL-safe alphabet and no padding.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut encoded = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk.iter().enumerate().fold(0u32, |group, (index, byte)| {
            group | u32::from(*byte) << (16 - 8 * index)
        });
        for position in 0..=chunk.len() {
            let sextet = (group >> (18 - 6 * position)) & 0x3f;
            encoded.push(char::from(ALPHABET[sextet as usize]));
        }
    }
    encoded
}

// ---------------------------------------------------------------------------------------------
// Durations and timestamps
// ---------------------------------------------------------------------------------------------

const MICROS_PER_SECOND: u64 = 1_000_000;

/// Rounds down to milliseconds, the precision of the proxy's stored timestamps.
fn to_database_precision(time: Micros) -> Micros {
    time / 1000 * 1000
}

/// Adds a LiteLLM duration to `start`. The proxy matches `^(\d+)(mo|[smhdw]?)` at the start of
/// the string: `10min` reads as 10 minutes, and `mo` counts calendar months. The error text is
/// the proxy's message.
fn duration_end(text: &str, start: Micros) -> Result<Micros, String> {
    let digit_count = text.bytes().take_while(u8::is_ascii_digit).count();
    if digit_count == 0 {
        return Err("Invalid duration format".to_owned());
    }
    let count: u64 = text[..digit_count].parse().unwrap_or(u64::MAX);
    let unit = &text[digit_count..];
    if unit.starts_with("mo") {
        return Ok(add_months(start, count));
    }
    let seconds_per_unit = match unit.chars().next() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        Some('w') => 604_800,
        _ => {
            return Err(format!(
                "Unsupported duration unit, passed duration: {text}"
            ));
        }
    };
    Ok(start.saturating_add(
        count
            .saturating_mul(seconds_per_unit)
            .saturating_mul(MICROS_PER_SECOND),
    ))
}

/// A UTC calendar time.
struct CivilTime {
    year: i64,
    month: u32,
    day: u32,
    second_of_day: u64,
    micros: u64,
}

fn civil_time(time: Micros) -> CivilTime {
    let seconds = time / MICROS_PER_SECOND;
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    CivilTime {
        year,
        month,
        day,
        second_of_day: seconds % 86_400,
        micros: time % MICROS_PER_SECOND,
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = (if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    }) as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Converts a proleptic Gregorian date to days since 1970-01-01, the inverse of
/// [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Adds calendar months and clamps the day to the target month's length, as `relativedelta` does.
fn add_months(start: Micros, months: u64) -> Micros {
    let time = civil_time(start);
    let month_index =
        time.year * 12 + i64::from(time.month - 1) + i64::try_from(months).unwrap_or(i64::MAX / 24);
    let (year, month) = (
        month_index.div_euclid(12),
        month_index.rem_euclid(12) as u32 + 1,
    );
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let month_length = days_from_civil(next_year, next_month, 1) - days_from_civil(year, month, 1);
    let day = i64::from(time.day).min(month_length) as u32;
    let days = days_from_civil(year, month, day).max(0) as u64;
    (days * 86_400 + time.second_of_day) * MICROS_PER_SECOND + time.micros
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TimestampStyle {
    /// `2026-12-04T15:47:05.251807Z`, as /key/generate and /key/list return.
    Zulu,
    /// `2026-12-04T15:47:05.251000+00:00`, as /key/info and /key/update return.
    Offset,
    /// `2026-12-04 16:32:17.359000+00:00`, as the expired-key message prints.
    Spaced,
}

/// Formats like Python's `isoformat`, which leaves out the fraction when it is zero.
fn format_timestamp(time: Micros, style: TimestampStyle) -> String {
    let civil = civil_time(time);
    let separator = if style == TimestampStyle::Spaced {
        ' '
    } else {
        'T'
    };
    let fraction = if civil.micros == 0 {
        String::new()
    } else {
        format!(".{:06}", civil.micros)
    };
    let zone = if style == TimestampStyle::Zulu {
        "Z"
    } else {
        "+00:00"
    };
    format!(
        "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}{fraction}{zone}",
        civil.year,
        civil.month,
        civil.day,
        civil.second_of_day / 3600,
        civil.second_of_day / 60 % 60,
        civil.second_of_day % 60,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    const MASTER_KEY: &str = "sk-unit-test-master";

    fn client() -> Client<HttpConnector, Full<Bytes>> {
        Client::builder(TokioExecutor::new()).build_http()
    }

    /// Sends a request and returns the response, body unread.
    async fn request(
        double: &LiteLlmDouble,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", double.url()));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("test request is valid");
        client().request(request).await
    }

    /// Sends a request and returns the status and the body parsed as JSON (Null if not JSON).
    async fn send(
        double: &LiteLlmDouble,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Value) {
        let response = request(double, method, path, headers, body)
            .await
            .expect("the double sends a response");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body completes")
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    const ADMIN_JSON: [(&str, &str); 2] = [
        ("authorization", "Bearer sk-unit-test-master"),
        ("content-type", "application/json"),
    ];

    async fn admin_post(double: &LiteLlmDouble, path: &str, body: Value) -> (u16, Value) {
        send(double, "POST", path, &ADMIN_JSON, &body.to_string()).await
    }

    async fn admin_get(double: &LiteLlmDouble, path: &str) -> (u16, Value) {
        send(double, "GET", path, &ADMIN_JSON[..1], "").await
    }

    async fn chat(double: &LiteLlmDouble, api_key: &str, model: &str) -> (u16, Value) {
        let authorization = format!("Bearer {api_key}");
        let headers = [
            ("authorization", authorization.as_str()),
            ("content-type", "application/json"),
        ];
        let body = json!({"model": model, "messages": [{"role": "user", "content": "Say hello."}]});
        send(
            double,
            "POST",
            "/v1/chat/completions",
            &headers,
            &body.to_string(),
        )
        .await
    }

    async fn generate(double: &LiteLlmDouble, body: Value) -> String {
        let (status, response) = admin_post(double, "/key/generate", body).await;
        assert_eq!(status, 200, "generate failed: {response}");
        response["key"]
            .as_str()
            .expect("generate returns the key")
            .to_owned()
    }

    async fn start() -> (LiteLlmDouble, Clock) {
        let clock = Clock::new();
        let double = LiteLlmDouble::start(MASTER_KEY, clock.clone())
            .await
            .expect("double starts");
        (double, clock)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn generate_info_delete_round_trip() {
        let (double, clock) = start().await;
        let body = json!({"models": ["gpt-4o-mini"], "duration": "60s", "key_alias": "lease-1",
                          "metadata": {"lease_id": "lease-1"}, "expires": "ignored"});
        let (status, generated) = admin_post(&double, "/key/generate", body).await;
        assert_eq!(status, 200);
        let key = generated["key"].as_str().unwrap_or_default().to_owned();
        let hash = sha256_hex(&key);
        assert!(key.starts_with("sk-"));
        assert_eq!(key.len(), 25);
        assert_eq!(generated["token"], json!(hash));
        assert_eq!(generated["token_id"], json!(hash));
        assert_eq!(
            generated["key_name"],
            json!(format!("sk-...{}", &key[21..]))
        );
        assert_eq!(generated["duration"], Value::Null);
        assert_eq!(generated["metadata"], json!({"lease_id": "lease-1"}));
        assert!(
            generated["expires"]
                .as_str()
                .unwrap_or_default()
                .ends_with('Z')
        );
        assert!(
            generated["created_at"]
                .as_str()
                .unwrap_or_default()
                .ends_with('Z')
        );
        let stored = double.key_by_alias("lease-1").expect("key stored");
        let expected_expiry = clock.now_seconds() + 60;
        assert!(
            stored
                .expires
                .is_some_and(|expires| expires.abs_diff(expected_expiry) <= 1)
        );

        let (status, info) = admin_get(&double, &format!("/key/info?key={key}")).await;
        assert_eq!(status, 200);
        assert_eq!(info["key"], json!(key));
        assert_eq!(info["info"]["status"], json!("active"));
        assert!(info["info"].get("token").is_none());
        assert!(
            info["info"]["expires"]
                .as_str()
                .unwrap_or_default()
                .ends_with("+00:00")
        );
        let (status, info_by_hash) = admin_get(&double, &format!("/key/info?key={hash}")).await;
        assert_eq!(status, 200);
        assert_eq!(info_by_hash["info"]["key_alias"], json!("lease-1"));

        let delete = json!({"keys": [key]});
        let (status, deleted) = admin_post(&double, "/key/delete", delete.clone()).await;
        assert_eq!((status, deleted), (200, json!({"deleted_keys": [key]})));
        let (status, again) = admin_post(&double, "/key/delete", delete).await;
        assert_eq!(status, 404);
        let not_found = json!({"error": {"message": "{'error': 'No keys found'}",
            "type": "internal_server_error", "param": null, "code": "404"}});
        assert_eq!(again, not_found);
        let (status, info) = admin_get(&double, &format!("/key/info?key={key}")).await;
        assert_eq!(status, 200);
        assert_eq!(info["info"]["status"], json!("deleted"));
        assert!(double.key_by_alias("lease-1").is_none());
        assert!(double.key_by_hash(&hash).is_some_and(|row| row.deleted));
        assert!(double.live_keys().is_empty());
        generate(&double, json!({"key_alias": "lease-1"})).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn generate_rejects_invalid_fields() {
        let (double, _) = start().await;
        let cases = [
            (
                json!({"max_budget": -1}),
                400,
                "{'error': 'max_budget must be a non-negative finite number. Received: -1.0'}",
            ),
            (
                json!({"duration": "60"}),
                500,
                "Unsupported duration unit, passed duration: 60",
            ),
            (
                json!({"duration": "60 seconds"}),
                500,
                "Unsupported duration unit, passed duration: 60 seconds",
            ),
            (json!({"duration": ""}), 500, "Invalid duration format"),
            (json!({"duration": "-1"}), 500, "Invalid duration format"),
            (
                json!({"budget_duration": "soon"}),
                400,
                "{'error': \"Invalid budget_duration 'soon'. Use a format like '1h', '24h', '7d', or '30d'.\"}",
            ),
            (
                json!({"key": "sk-short"}),
                400,
                "{'error': 'Invalid key format. LiteLLM Virtual Key must be at least 16 characters long.'}",
            ),
            (
                json!({"key": "abcdefghijklmnopqrstuvwxyz"}),
                400,
                "{'error': \"Invalid key format. LiteLLM Virtual Key must start with 'sk-'. Received: abcd****wxyz\"}",
            ),
            (
                json!({"key_alias": "x/../y"}),
                400,
                "Invalid key_alias: must not contain control characters (such as tab or newline) or a \"..\" path segment",
            ),
        ];
        for (body, expected_status, expected_message) in cases {
            let (status, response) = admin_post(&double, "/key/generate", body.clone()).await;
            assert_eq!(status, expected_status, "status for {body}");
            assert_eq!(
                response["error"]["message"],
                json!(expected_message),
                "message for {body}"
            );
            assert_eq!(
                response["error"]["code"],
                json!(expected_status.to_string()),
                "code for {body}"
            );
        }
        let (status, response) = admin_post(&double, "/key/generate", json!({"tags": ["a"]})).await;
        assert_eq!(status, 403);
        assert!(
            response["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("\\nPricing")
        );

        let (status, response) = admin_post(
            &double,
            "/key/generate",
            json!({"max_budget": "five", "key_type": "x"}),
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(response["detail"][0]["type"], json!("float_parsing"));
        assert_eq!(response["detail"][0]["loc"], json!(["body", "max_budget"]));
        assert_eq!(response["detail"][1]["type"], json!("enum"));

        let (status, response) = send(
            &double,
            "POST",
            "/key/generate",
            &ADMIN_JSON[1..],
            "{\"models\":",
        )
        .await;
        assert_eq!(status, 422, "bad JSON is rejected before authentication");
        let json_invalid = json!({
            "detail": [{"type": "json_invalid", "loc": ["body", 10], "msg": "JSON decode error"}]
        });
        assert_eq!(response, json_invalid);
        let (status, response) = send(
            &double,
            "POST",
            "/key/generate",
            &ADMIN_JSON[..1],
            "{\"models\":[]}",
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(
            response["detail"][0]["type"],
            json!("model_attributes_type")
        );
        assert!(double.live_keys().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn duplicate_alias_and_custom_key() {
        let (double, _) = start().await;
        generate(&double, json!({"key_alias": "has space/and#hash"})).await;
        let (status, response) = admin_post(
            &double,
            "/key/generate",
            json!({"key_alias": "has space/and#hash"}),
        )
        .await;
        assert_eq!(status, 400);
        let duplicate = json!({"error": {
            "message": "Key with alias 'has space/and#hash' already exists. Unique key aliases across all keys are required.",
            "type": "bad_request_error", "param": "key_alias", "code": "400"}});
        assert_eq!(response, duplicate);

        let custom =
            json!({"key": "sk-my-custom-key-0001", "key_alias": "custom-1", "max_budget": 1});
        assert_eq!(generate(&double, custom).await, "sk-my-custom-key-0001");
        let (status, response) = admin_post(
            &double,
            "/key/generate",
            json!({"key": "sk-my-custom-key-0001"}),
        )
        .await;
        assert_eq!(status, 200, "a duplicate custom key still gets 200");
        assert_eq!(response["key_alias"], Value::Null);
        let stored = double
            .key_by_hash(&sha256_hex("sk-my-custom-key-0001"))
            .expect("first key kept");
        assert_eq!(stored.key_alias.as_deref(), Some("custom-1"));
        assert_eq!(stored.max_budget, Some(1.0));
        assert_eq!(double.live_keys().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn authentication_header_rules() {
        let (double, _) = start().await;
        let no_key = json!({"error": {"message": "Authentication Error, No api key passed in.",
            "type": "auth_error", "param": "None", "code": "401"}});
        let invalid = json!({"error": {"message": "Authentication Error, Invalid API key provided.",
            "type": "token_not_found_in_db", "param": "key", "code": "401"}});
        let malformed =
            "Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix.";
        let wrong = "Bearer sk-wrong-master-key";
        let master = format!("Bearer {MASTER_KEY}");
        let cases: [(&[(&str, &str)], u16); 6] = [
            (&[("authorization", wrong)], 401),
            (&[("authorization", MASTER_KEY)], 401),
            (&[("authorization", &master)], 200),
            (&[("authorization", &format!("bearer {MASTER_KEY}"))], 200),
            (
                &[("x-litellm-api-key", &master), ("authorization", wrong)],
                200,
            ),
            (
                &[
                    ("x-litellm-api-key", "sk-wrong-master-key"),
                    ("authorization", &master),
                ],
                401,
            ),
        ];
        for (headers, expected) in cases {
            let (status, _) = send(&double, "GET", "/key/list", headers, "").await;
            assert_eq!(status, expected, "headers {headers:?}");
        }
        assert_eq!(
            send(&double, "GET", "/key/list", &[], "").await,
            (401, no_key)
        );
        assert_eq!(
            send(&double, "GET", "/key/list", &[("authorization", wrong)], "").await,
            (401, invalid)
        );
        let (_, response) = send(
            &double,
            "GET",
            "/key/list",
            &[("authorization", MASTER_KEY)],
            "",
        )
        .await;
        assert_eq!(response["error"]["message"], json!(malformed));

        double.set_master_key("sk-rotated-master");
        assert_eq!(admin_get(&double, "/key/list").await.0, 401);
        let rotated = [("authorization", "Bearer sk-rotated-master")];
        assert_eq!(send(&double, "GET", "/key/list", &rotated, "").await.0, 200);
        let readiness = send(&double, "GET", "/health/readiness", &[], "").await;
        assert_eq!(
            readiness,
            (200, json!({"status": "healthy", "db": "connected"}))
        );
        let unknown = send(&double, "GET", "/no/such/path", &[], "").await;
        assert_eq!(unknown, (404, json!({"detail": "Not Found"})));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn virtual_keys_on_each_route() {
        let (double, _) = start().await;
        let llm_key = generate(
            &double,
            json!({"models": ["gpt-4o-mini"], "key_type": "llm_api"}),
        )
        .await;
        let open_key = generate(&double, json!({})).await;
        let blocked_key = generate(&double, json!({"blocked": true})).await;
        let deleted_key = generate(&double, json!({})).await;
        admin_post(
            &double,
            "/key/delete",
            json!({"keys": [sha256_hex(&deleted_key)]}),
        )
        .await;

        let (status, response) = chat(&double, &llm_key, "gpt-4o-mini").await;
        assert_eq!(status, 200);
        assert_eq!(response["model"], json!("gpt-4o-mini"));
        let (status, response) = chat(&double, &llm_key, "gpt-4o").await;
        assert_eq!(status, 403);
        assert_eq!(response["error"]["type"], json!("key_model_access_denied"));
        let llm_headers = [("authorization", format!("Bearer {llm_key}"))];
        let llm_headers: Vec<(&str, &str)> =
            llm_headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (status, response) = send(&double, "POST", "/key/generate", &llm_headers, "{}").await;
        assert_eq!(status, 403);
        let detail = "Virtual key is not allowed to call this route. Only allowed to call routes: ['llm_api_routes']. Tried to call route: /key/generate";
        assert_eq!(response, json!({"detail": detail}));

        let open_authorization = format!("Bearer {open_key}");
        let open_headers = [
            ("authorization", open_authorization.as_str()),
            ("content-type", "application/json"),
        ];
        let (status, response) = send(
            &double,
            "POST",
            "/key/delete",
            &open_headers,
            "{\"keys\":[\"x\"]}",
        )
        .await;
        assert_eq!(status, 401);
        assert_eq!(response["error"]["type"], json!("auth_error"));
        assert_eq!(chat(&double, &open_key, "gpt-4o").await.0, 200);
        let (status, response) = chat(&double, &open_key, "no-such-model").await;
        assert_eq!(status, 400);
        assert_eq!(response["error"]["type"], json!("invalid_request_error"));
        let (status, response) = chat(&double, &blocked_key, "gpt-4o").await;
        assert_eq!(status, 401);
        assert!(
            response["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("Key is blocked")
        );
        let (status, response) = chat(&double, &deleted_key, "gpt-4o").await;
        assert_eq!(status, 401);
        assert_eq!(response["error"]["type"], json!("token_not_found_in_db"));
        assert_eq!(chat(&double, MASTER_KEY, "gpt-4o").await.0, 200);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn clock_expires_and_update_renews() {
        let (double, clock) = start().await;
        let key = generate(
            &double,
            json!({"models": ["gpt-4o-mini"], "duration": "60s", "key_alias": "renew"}),
        )
        .await;
        assert_eq!(chat(&double, &key, "gpt-4o-mini").await.0, 200);
        clock.advance(61);
        let (status, response) = chat(&double, &key, "gpt-4o-mini").await;
        assert_eq!(status, 401);
        assert_eq!(response["error"]["type"], json!("expired_key"));
        assert_eq!(
            response["error"]["param"],
            json!(format!("sk-...{}", &key[21..]))
        );
        let (_, info) = admin_get(&double, &format!("/key/info?key={key}")).await;
        assert_eq!(info["info"]["status"], json!("expired"));
        assert_eq!(double.live_keys().len(), 1, "an expired key stays stored");

        let (status, updated) = admin_post(
            &double,
            "/key/update",
            json!({"key": key, "duration": "1h"}),
        )
        .await;
        assert_eq!(status, 200);
        assert!(
            updated["expires"]
                .as_str()
                .unwrap_or_default()
                .ends_with("+00:00")
        );
        let expiry = double.key_by_alias("renew").and_then(|row| row.expires);
        assert!(expiry.is_some_and(|expires| expires.abs_diff(clock.now_seconds() + 3600) <= 1));
        assert_eq!(chat(&double, &key, "gpt-4o-mini").await.0, 200);
        for cleared in [json!("-1"), Value::Null] {
            admin_post(
                &double,
                "/key/update",
                json!({"key": key, "duration": "5s"}),
            )
            .await;
            let (status, updated) = admin_post(
                &double,
                "/key/update",
                json!({"key": key, "duration": cleared}),
            )
            .await;
            assert_eq!(status, 200);
            assert_eq!(
                updated["expires"],
                Value::Null,
                "duration {cleared} clears the expiry"
            );
        }
        let (status, response) = admin_post(
            &double,
            "/key/update",
            json!({"key": key, "duration": "60"}),
        )
        .await;
        assert_eq!(status, 500);
        assert_eq!(
            response["error"]["message"],
            json!("Unsupported duration unit, passed duration: 60")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn block_and_budget_rules() {
        let (double, _) = start().await;
        let key = generate(
            &double,
            json!({"max_budget": 0.0005, "key_alias": "budget"}),
        )
        .await;
        let hash = sha256_hex(&key);
        assert_eq!(chat(&double, &key, "gpt-4o-mini").await.0, 200);
        let (status, response) = chat(&double, &key, "gpt-4o-mini").await;
        assert_eq!(
            status, 422,
            "the call after the one that crossed the budget is rejected"
        );
        assert_eq!(response["error"]["type"], json!("budget_exceeded"));
        let (_, info) = admin_get(&double, &format!("/key/info?key={hash}")).await;
        assert_eq!(info["info"]["spend"], json!(0.00075));

        let (status, blocked) = admin_post(&double, "/key/block", json!({"key": key})).await;
        assert_eq!(status, 200);
        assert_eq!(blocked["token"], json!(hash));
        assert_eq!(blocked["blocked"], json!(true));
        let (_, info) = admin_get(&double, &format!("/key/info?key={key}")).await;
        assert_eq!(info["info"]["status"], json!("revoked"));
        let (status, unblocked) = admin_post(&double, "/key/unblock", json!({"key": hash})).await;
        assert_eq!(status, 200);
        assert_eq!(unblocked["blocked"], json!(false));
        let unknown = json!({"key": "sk-doesnotexist0000000000"});
        let (status, response) = admin_post(&double, "/key/block", unknown).await;
        assert_eq!(status, 404);
        assert_eq!(response["error"]["message"], json!("Key not found."));
        let (status, response) = admin_post(&double, "/key/sk-any/regenerate", json!({})).await;
        assert_eq!(status, 500);
        assert_eq!(response["error"]["type"], json!("internal_server_error"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn update_replaces_and_identifies() {
        let (double, _) = start().await;
        let key = generate(
            &double,
            json!({"key_alias": "a", "metadata": {"old": 1}, "max_budget": 5}),
        )
        .await;
        generate(&double, json!({"key_alias": "taken"})).await;
        let update = json!({"key_alias": "a", "metadata": {"new": 2}, "max_budget": null});
        let (status, updated) = admin_post(&double, "/key/update", update).await;
        assert_eq!(status, 200);
        assert_eq!(
            updated["key"],
            json!(sha256_hex(&key)),
            "found by alias, so key is the hash"
        );
        assert_eq!(updated["token"], json!(sha256_hex(&key)));
        assert_eq!(updated["metadata"], json!({"new": 2}));
        assert_eq!(updated["max_budget"], json!(5.0));

        let (status, response) = admin_post(
            &double,
            "/key/update",
            json!({"key": key, "key_alias": "taken"}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(response["error"]["param"], json!("key_alias"));
        let (status, response) = admin_post(&double, "/key/update", json!({"max_budget": 1})).await;
        assert_eq!(status, 422);
        assert_eq!(
            response["detail"][0]["msg"],
            json!("Value error, either key or key_alias must be provided")
        );
        let (status, response) = admin_post(
            &double,
            "/key/update",
            json!({"key": "sk-doesnotexist0000000000"}),
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(response["error"]["message"], json!("Key not found."));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn list_pages_newest_first() {
        let (double, _) = start().await;
        let mut hashes = Vec::new();
        for alias in ["first", "second", "third"] {
            hashes.push(sha256_hex(
                &generate(&double, json!({"key_alias": alias})).await,
            ));
        }
        let (status, page) = admin_get(&double, "/key/list?size=2").await;
        assert_eq!(status, 200);
        let expected = json!({
            "keys": [hashes[2], hashes[1]],
            "total_count": 3,
            "current_page": 1,
            "total_pages": 2,
        });
        assert_eq!(page, expected);
        let (_, page) = admin_get(&double, "/key/list?size=2&page=2").await;
        assert_eq!(page["keys"], json!([hashes[0]]));
        let (_, filtered) = admin_get(&double, "/key/list?key_alias=second").await;
        assert_eq!(filtered["keys"], json!([hashes[1]]));
        let (status, response) = admin_get(&double, "/key/list?size=101").await;
        assert_eq!(status, 422);
        assert_eq!(response["detail"][0]["type"], json!("less_than_equal"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn scripted_replies_in_order() {
        let (double, _) = start().await;
        double.script(
            "/key/info",
            Reply::Json {
                status: 503,
                body: json!({"busy": true}),
            },
        );
        double.script(
            "/key/info",
            Reply::Redirect {
                status: 307,
                location: "http://127.0.0.1:9/x".into(),
            },
        );
        double.script(
            "/key/info",
            Reply::Padded {
                status: 200,
                padding: 40_000,
                tail: b"{}".to_vec(),
            },
        );
        let delayed = Reply::Delayed {
            delay: Duration::from_millis(200),
            reply: Box::new(Reply::Normal),
        };
        double.script("/key/info", delayed);
        double.script("/key/info", Reply::CloseConnection);

        assert_eq!(
            send(&double, "GET", "/key/info?key=x", &[], "").await,
            (503, json!({"busy": true}))
        );
        let redirect = request(&double, "GET", "/key/info", &[], "")
            .await
            .expect("redirect");
        assert_eq!(redirect.status().as_u16(), 307);
        assert_eq!(redirect.headers()["location"], "http://127.0.0.1:9/x");
        let padded = request(&double, "GET", "/key/info", &[], "")
            .await
            .expect("padded reply");
        assert!(padded.headers().get("content-length").is_none());
        assert_eq!(padded.headers()["transfer-encoding"], "chunked");
        let bytes = padded
            .into_body()
            .collect()
            .await
            .expect("padded body")
            .to_bytes();
        assert_eq!(bytes.len(), 40_002);
        assert!(bytes[..40_000].iter().all(|byte| *byte == b' '));
        assert!(bytes.ends_with(b"{}"));
        let started = std::time::Instant::now();
        let (status, _) = send(&double, "GET", "/key/info", &[], "").await;
        assert_eq!(status, 401, "Normal authenticates like the proxy");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(
            request(&double, "GET", "/key/info", &[], "").await.is_err(),
            "connection closed"
        );
        assert_eq!(
            admin_get(&double, "/key/info?key=x").await.0,
            404,
            "the queue is empty again"
        );
        assert_eq!(double.requests_to("/key/info").len(), 6);
        assert_eq!(double.requests()[0].path, "/key/info?key=x");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn shutdown_drops_endless_reply() {
        let (double, _) = start().await;
        double.script("/key/list", Reply::Endless { status: 200 });
        let response = request(&double, "GET", "/key/list", &[], "")
            .await
            .expect("endless reply starts");
        let mut body = response.into_body();
        for _ in 0..3 {
            let frame = body.frame().await.expect("a frame").expect("a data frame");
            assert!(
                frame
                    .data_ref()
                    .is_some_and(|data| data.iter().all(|byte| *byte == b' '))
            );
        }
        let port = double.port();
        double.shutdown().await;
        let mut ended = false;
        for _ in 0..1000 {
            match body.frame().await {
                Some(Ok(_)) => continue,
                _ => {
                    ended = true;
                    break;
                }
            }
        }
        assert!(ended, "the open connection is dropped");
        assert!(
            TcpStream::connect(("127.0.0.1", port)).await.is_err(),
            "connections are refused"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn insert_key_is_usable() {
        let (double, clock) = start().await;
        let expires = clock.now_seconds() + 10;
        let row = double.insert_key("sk-inserted-key-00001", |row| {
            row.key_alias = Some("lease-x".to_owned());
            row.models = vec!["gpt-4o".to_owned()];
            row.expires = Some(expires);
        });
        assert_eq!(row.token, sha256_hex("sk-inserted-key-00001"));
        assert_eq!(
            chat(&double, "sk-inserted-key-00001", "gpt-4o").await.0,
            200
        );
        clock.advance(10);
        assert_eq!(
            chat(&double, "sk-inserted-key-00001", "gpt-4o").await.0,
            401
        );
        let (status, _) =
            admin_post(&double, "/key/generate", json!({"key_alias": "lease-x"})).await;
        assert_eq!(status, 400);
    }

    #[test]
    fn duration_parsing_matches_proxy() {
        let start = days_from_civil(2026, 1, 31) as u64 * 86_400 * MICROS_PER_SECOND;
        let cases = [
            ("60s", Ok(60)),
            ("10min", Ok(600)),
            ("2h", Ok(7200)),
            ("1w", Ok(604_800)),
            ("1mo", Ok(28 * 86_400)),
            ("1.5h", Err(())),
            ("", Err(())),
            ("-1", Err(())),
        ];
        for (text, expected) in cases {
            let seconds = duration_end(text, start)
                .map(|end| (end - start) / MICROS_PER_SECOND)
                .map_err(|_| ());
            assert_eq!(seconds, expected, "duration {text:?}");
        }
    }

    #[test]
    fn timestamps_match_python_isoformat() {
        let time = (days_from_civil(2026, 12, 4) as u64 * 86_400 + 15 * 3600 + 47 * 60 + 5)
            * MICROS_PER_SECOND;
        assert_eq!(
            format_timestamp(time + 251_807, TimestampStyle::Zulu),
            "2026-12-04T15:47:05.251807Z"
        );
        assert_eq!(
            format_timestamp(time + 251_000, TimestampStyle::Offset),
            "2026-12-04T15:47:05.251000+00:00"
        );
        assert_eq!(
            format_timestamp(time, TimestampStyle::Spaced),
            "2026-12-04 15:47:05+00:00"
        );
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn key_material_formats() {
        assert_eq!(base64_url(&[0xfb, 0xff, 0xbf]), "-_-_");
        assert_eq!(base64_url(&[0u8; 16]).len(), 22);
        assert_eq!(
            sha256_hex("sk-Rsax8aF1trS1ijYT6Myncw"),
            "8f4a5aca1071a39741e0bfc537a30789d249c7192e20144dbe81216f61b16074"
        );
        assert_ne!(generate_plaintext_key(), generate_plaintext_key());
        assert_eq!(python_repr("it's"), "\"it's\"");
        assert_eq!(python_repr("a\nb"), "'a\\nb'");
    }
}
