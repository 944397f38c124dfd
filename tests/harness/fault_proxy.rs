//! A fault-injecting HTTP proxy on 127.0.0.1 in front of LiteLLM (the double or the real
//! proxy). Requests pass through unchanged until a test injects a fault for a route. Then
//! the proxy breaks the exchange before or after forwarding, as a failing network, a
//! crashed LiteLLM or a misconfigured gateway would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Maximum time a stalled exchange is held open. Clients give up long before.
const STALL: Duration = Duration::from_secs(120);

/// Pause between the bytes of a slow body.
const TRICKLE_PAUSE: Duration = Duration::from_millis(400);

/// Size of each chunk of an endless body.
const ENDLESS_CHUNK: usize = 16 * 1024;

/// How the proxy breaks one exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The connection closes without a response. With `forward`, LiteLLM got the request.
    Reset { forward: bool },
    /// No response ever starts. With `forward`, LiteLLM got the request.
    Stall { forward: bool },
    /// The proxy returns `status` with a JSON error body. With `forward`, LiteLLM got the
    /// request and its answer is dropped, as a gateway that timed out upstream does.
    Status { status: u16, forward: bool },
    /// The proxy returns 200 with an HTML page. With `forward`, LiteLLM got the request.
    NotJson { forward: bool },
    /// The proxy returns 307 to another address, and LiteLLM never receives the request.
    Redirect,
    /// LiteLLM's response is sent with its full Content-Length but only half of its body,
    /// then the connection closes.
    Truncated,
    /// LiteLLM's response head arrives at once and its body one byte at a time.
    SlowBody,
    /// LiteLLM got the request; the response is 200 with a chunked body that never ends.
    Endless,
    /// LiteLLM's JSON response is sent with its `token` and `token_id` replaced by the
    /// hash of another key.
    ForeignToken,
    /// The proxy returns 429 with `Retry-After: retry_after`, and LiteLLM never receives
    /// the request.
    RateLimited { retry_after: u64 },
}

impl Fault {
    /// Returns whether the request reaches LiteLLM before the fault strikes.
    pub fn forwards(self) -> bool {
        match self {
            Self::Reset { forward }
            | Self::Stall { forward }
            | Self::Status { forward, .. }
            | Self::NotJson { forward } => forward,
            Self::Redirect | Self::RateLimited { .. } => false,
            Self::Truncated | Self::SlowBody | Self::Endless | Self::ForeignToken => true,
        }
    }
}

#[derive(Clone, Debug)]
struct Rule {
    route: String,
    fault: Fault,
    remaining: usize,
}

/// One request the proxy received.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// The path with its query string.
    pub path: String,
    /// The fault applied, or `None` when the request passed through.
    pub fault: Option<Fault>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    exchanges: Vec<Exchange>,
}

struct Shared {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the request and returns the fault that applies to it, if any.
    fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut state = self.lock();
        let route = path.split('?').next().unwrap_or(path);
        let fault = state
            .rules
            .iter_mut()
            .find(|rule| rule.remaining > 0 && route == rule.route)
            .map(|rule| {
                rule.remaining -= 1;
                rule.fault
            });
        state.exchanges.push(Exchange {
            path: path.to_owned(),
            fault,
        });
        fault
    }
}

/// The proxy. It serves until dropped.
pub struct FaultProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

type ProxyBody = BoxBody<Bytes, std::io::Error>;

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 that forwards to `upstream`
    /// (`http://host:port`, no trailing slash).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            state: Mutex::new(State::default()),
        });
        let accept = tokio::spawn(serve(listener, shared.clone()));
        Ok(Self {
            address,
            shared,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// Base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Applies `fault` to the next `times` requests whose path, without the query, is
    /// `route`.
    pub fn inject(&self, route: &str, fault: Fault, times: usize) {
        self.shared.lock().rules.push(Rule {
            route: route.to_owned(),
            fault,
            remaining: times,
        });
    }

    /// Removes every injected fault and accepts connections again if they were refused.
    pub async fn heal(&self) -> anyhow::Result<()> {
        self.shared.lock().rules.clear();
        self.accept_connections().await
    }

    /// Closes the listening socket, so connections are refused as when LiteLLM is down.
    /// Returns once the socket is closed.
    pub async fn refuse_connections(&self) {
        let task = self.lock_accept().take();
        if let Some(task) = task {
            task.abort();
            // The aborted task drops the listener when it ends.
            let _ = task.await;
        }
    }

    /// Listens on the same port again after [`FaultProxy::refuse_connections`].
    pub async fn accept_connections(&self) -> anyhow::Result<()> {
        if self.lock_accept().is_some() {
            return Ok(());
        }
        let listener = bind_again(self.address).await?;
        let task = tokio::spawn(serve(listener, self.shared.clone()));
        *self.lock_accept() = Some(task);
        Ok(())
    }

    /// Returns every request received so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.shared.lock().exchanges.clone()
    }

    fn lock_accept(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.accept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(task) = self.lock_accept().take() {
            task.abort();
        }
    }
}

/// Binds `address` again, retrying while the port is still taken.
async fn bind_again(address: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut last_error = None;
    for _ in 0..50 {
        match TcpListener::bind(address).await {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(anyhow::anyhow!(
        "binding {address} again failed: {last_error:?}"
    ))
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { exchange(&shared, request).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Handles one request: forwards it, breaks it, or both. An error makes hyper close the
/// connection without a response.
async fn exchange(
    shared: &Shared,
    request: http::Request<Incoming>,
) -> Result<http::Response<ProxyBody>, std::io::Error> {
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), ToString::to_string);
    let fault = shared.take_fault(&path);

    let upstream_response = match fault {
        Some(fault) if !fault.forwards() => None,
        _ => Some(forward(shared, request, &path).await),
    };

    match (fault, upstream_response) {
        (Some(Fault::Reset { .. }), _) => Err(std::io::Error::other("reset by the fault proxy")),
        (Some(fault), response) => Ok(broken_response(fault, response).await),
        (None, Some(response)) => Ok(response),
        (None, None) => unreachable!("a request without a fault is always forwarded"),
    }
}

/// Sends the request to the upstream and returns its whole response, or a 502 when the
/// upstream could not be reached.
async fn forward(
    shared: &Shared,
    request: http::Request<Incoming>,
    path: &str,
) -> http::Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return proxy_error(502, &format!("reading the request failed: {error}")),
    };

    let mut upstream_request = http::Request::builder()
        .method(parts.method)
        .uri(format!("{}{path}", shared.upstream));
    for (name, value) in &parts.headers {
        if name != http::header::HOST {
            upstream_request = upstream_request.header(name, value);
        }
    }
    let upstream_request = match upstream_request.body(Full::new(body)) {
        Ok(request) => request,
        Err(error) => return proxy_error(502, &format!("building the request failed: {error}")),
    };

    match shared.client.request(upstream_request).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            match body.collect().await {
                Ok(collected) => http::Response::from_parts(parts, full(collected.to_bytes())),
                Err(error) => proxy_error(502, &format!("reading the upstream failed: {error}")),
            }
        }
        Err(error) => proxy_error(502, &format!("the upstream is unreachable: {error}")),
    }
}

/// Builds the response a fault sends in place of `upstream`'s.
async fn broken_response(
    fault: Fault,
    upstream: Option<http::Response<ProxyBody>>,
) -> http::Response<ProxyBody> {
    match fault {
        Fault::Reset { .. } => unreachable!("a reset sends no response"),
        Fault::Stall { .. } => {
            tokio::time::sleep(STALL).await;
            proxy_error(504, "stalled")
        }
        Fault::Status { status, .. } => proxy_error(status, "injected by the fault proxy"),
        Fault::NotJson { .. } => http::Response::builder()
            .header(http::header::CONTENT_TYPE, "text/html")
            .body(full(Bytes::from_static(
                b"<html><body><h1>Service Unavailable</h1></body></html>",
            )))
            .expect("valid response"),
        Fault::Redirect => http::Response::builder()
            .status(307)
            .header(http::header::LOCATION, "http://127.0.0.1:9/key/moved")
            .body(full(Bytes::new()))
            .expect("valid response"),
        Fault::Truncated => {
            let (status, body) = upstream_parts(upstream).await;
            let half = body.slice(..body.len() / 2);
            failing_body_response(status, half, body.len().max(1))
        }
        Fault::SlowBody => {
            let (status, body) = upstream_parts(upstream).await;
            trickle_response(status, body)
        }
        Fault::Endless => endless_response(),
        Fault::ForeignToken => {
            let (status, body) = upstream_parts(upstream).await;
            foreign_token_response(status, &body)
        }
        Fault::RateLimited { retry_after } => {
            let mut response = proxy_error(429, "rate limit reached");
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, retry_after.into());
            response
        }
    }
}

async fn upstream_parts(upstream: Option<http::Response<ProxyBody>>) -> (http::StatusCode, Bytes) {
    let Some(response) = upstream else {
        return (http::StatusCode::BAD_GATEWAY, Bytes::new());
    };
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    (parts.status, bytes)
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Builds a JSON error response in LiteLLM's `{"error": {"message": ...}}` shape.
fn proxy_error(status: u16, message: &str) -> http::Response<ProxyBody> {
    let body = serde_json::json!({"error": {"message": message, "type": "fault_proxy"}});
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(Bytes::from(body.to_string())))
        .expect("valid response")
}

/// Builds a response that announces `content_length` bytes, sends `sent` and then fails,
/// so the server closes the connection mid-body.
fn failing_body_response(
    status: http::StatusCode,
    sent: Bytes,
    content_length: usize,
) -> http::Response<ProxyBody> {
    // The pause lets the head and the first half reach the client before the cut.
    let cut = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Err(std::io::Error::other("cut off by the fault proxy"))
    });
    let frames = futures::stream::iter([Ok(Frame::data(sent))]).chain(cut);
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, content_length)
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("valid response")
}

fn trickle_response(status: http::StatusCode, body: Bytes) -> http::Response<ProxyBody> {
    let length = body.len();
    let frames = futures::stream::unfold(0, move |offset| {
        let body = body.clone();
        async move {
            if offset >= body.len() {
                return None;
            }
            tokio::time::sleep(TRICKLE_PAUSE).await;
            let frame = Frame::data(body.slice(offset..offset + 1));
            Some((Ok(frame), offset + 1))
        }
    });
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, length)
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("valid response")
}

fn foreign_token_response(status: http::StatusCode, body: &[u8]) -> http::Response<ProxyBody> {
    let mut value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        let foreign = serde_json::Value::String("ab".repeat(32));
        object.insert("token".to_owned(), foreign.clone());
        object.insert("token_id".to_owned(), foreign);
    }
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(Bytes::from(value.to_string())))
        .expect("valid response")
}

fn endless_response() -> http::Response<ProxyBody> {
    let chunk = Bytes::from(vec![b' '; ENDLESS_CHUNK]);
    let frames = futures::stream::repeat_with(move || Ok(Frame::data(chunk.clone())));
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("valid response")
}
