//! The HTTP front end: hyper on a TCP listener, one fresh component instance per request
//! through `wasi:http/incoming-handler`. A semaphore bounds live instances to the pool's
//! size, so extra requests wait instead of failing. Health checks have instances of their
//! own, so a LiteLLM outage that keeps every other instance busy does not fail liveness probes. Shutdown stops accepting, lets
//! requests in flight finish, and waits for every instance to return.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::logging;
use crate::runtime::Runtime;

/// Maximum wait for a client to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum time for a client to send a request's body once its headers arrived.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest body buffered per request, one byte past the component's own 1 MiB limit, so
/// that the component still rejects larger bodies with its own 413 message.
const MAX_BUFFERED_BODY_BYTES: usize = 1024 * 1024 + 1;

/// Longest path logged per request, in bytes.
const LOGGED_PATH_BYTES: usize = 200;

/// Instances kept for `GET /v1/sys/health`, so that probes get an answer while every
/// other instance waits on a slow LiteLLM.
pub const HEALTH_INSTANCES: u32 = 2;

const HEALTH_PATH: &str = "/v1/sys/health";

/// State shared by every request handler.
#[derive(Clone)]
struct Shared {
    runtime: Runtime,
    address: SocketAddr,
    instances: Arc<Semaphore>,
    health_instances: Arc<Semaphore>,
    guests: TaskTracker,
}

/// Serves until `stop` is cancelled, then drains for at most `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    runtime: Runtime,
    max_instances: u32,
    stop: CancellationToken,
    drain_timeout: Duration,
) {
    let shared = Shared {
        address: listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
        runtime,
        instances: Arc::new(Semaphore::new(max_instances as usize)),
        health_instances: Arc::new(Semaphore::new(HEALTH_INSTANCES as usize)),
        guests: TaskTracker::new(),
    };
    let graceful = GracefulShutdown::new();

    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of file descriptors must not end the server.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let service = service_fn(move |request| respond(shared.clone(), request));
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);

    tracing::info!("shutting down: no new connections; waiting for requests in flight");
    let drained = tokio::time::timeout(drain_timeout, async {
        graceful.shutdown().await;
        shared.guests.close();
        shared.guests.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(timeout = ?drain_timeout, "requests still in flight at the shutdown timeout were dropped");
    }
}

async fn respond(
    shared: Shared,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<HyperOutgoingBody>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = logged_path(request.uri().path());

    let response = match buffer_request(&shared, request).await {
        Err(rejection) => rejection,
        Ok(request) => match run_guest(&shared, request).await {
            Ok(response) => response,
            Err(failure) => {
                tracing::error!(%method, path, error = %failure, "the engine returned no response");
                json_error(
                    hyper::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error: the engine returned no response; the host log has the cause",
                )
            }
        },
    };
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_micros() as f64 / 1000.0,
        "request"
    );
    Ok(response)
}

/// Reads the whole request body before the request takes an instance, so that a client
/// that sends its body slowly, or never, keeps a connection open but no instance. A body
/// larger than the component accepts is cut one byte past that limit, and the component
/// rejects it with 413. A request without a Host header gets the listen address as its
/// host, as HTTP/1.0 health checks send none.
async fn buffer_request(
    shared: &Shared,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Request<Full<Bytes>>, hyper::Response<HyperOutgoingBody>> {
    let (mut parts, mut body) = request.into_parts();
    let host_is_text = parts
        .headers
        .get(hyper::header::HOST)
        .is_none_or(|host| host.to_str().is_ok());
    if !host_is_text {
        return Err(json_error(
            hyper::StatusCode::BAD_REQUEST,
            "the Host header is not valid text; send the server's address",
        ));
    }
    if parts.uri.authority().is_none() && !parts.headers.contains_key(hyper::header::HOST) {
        let host = hyper::header::HeaderValue::from_str(&shared.address.to_string())
            .expect("a socket address is a valid header value");
        parts.headers.insert(hyper::header::HOST, host);
    }

    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    let mut buffered = Vec::new();
    if declared.is_none_or(|length| length <= MAX_BUFFERED_BODY_BYTES) {
        let read = tokio::time::timeout(BODY_READ_TIMEOUT, async {
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    buffered.extend_from_slice(&data);
                    if buffered.len() > MAX_BUFFERED_BODY_BYTES {
                        break;
                    }
                }
            }
            Ok::<(), hyper::Error>(())
        })
        .await;
        match read {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "reading a request body failed");
                return Err(json_error(
                    hyper::StatusCode::BAD_REQUEST,
                    "reading the request body failed; send it again",
                ));
            }
            Err(_) => {
                return Err(json_error(
                    hyper::StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "the request body did not arrive within {}s; send it at once",
                        BODY_READ_TIMEOUT.as_secs()
                    ),
                ));
            }
        }
    }
    Ok(hyper::Request::from_parts(
        parts,
        Full::new(Bytes::from(buffered)),
    ))
}

/// Runs the request in a fresh instance and returns the response once its head is set.
/// The instance keeps running in a tracked task while it streams the body.
async fn run_guest(
    shared: &Shared,
    request: hyper::Request<Full<Bytes>>,
) -> anyhow::Result<hyper::Response<HyperOutgoingBody>> {
    let pool = if request.uri().path() == HEALTH_PATH {
        &shared.health_instances
    } else {
        &shared.instances
    };
    let permit: OwnedSemaphorePermit = Arc::clone(pool).acquire_owned().await?;
    let (mut store, stderr) = shared.runtime.new_store();
    let incoming = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let outparam = store.data_mut().http().new_response_outparam(sender)?;

    let proxy = shared.runtime.proxy().clone();
    let guest = shared.guests.spawn(async move {
        let result = async {
            let instance = proxy.instantiate_async(&mut store).await?;
            instance
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, outparam)
                .await
        }
        .await;
        logging::forward_guest_log(&stderr);
        drop(permit);
        result
    });

    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => anyhow::bail!("the engine responded with error code {code:?}"),
        Err(_) => match guest.await {
            Ok(Err(trap)) => anyhow::bail!("the engine trapped: {trap:#}"),
            _ => anyhow::bail!("the engine returned without a response"),
        },
    }
}

/// Builds a Vault-style error response, `{"errors": [message]}`.
fn json_error(status: hyper::StatusCode, message: &str) -> hyper::Response<HyperOutgoingBody> {
    let body = serde_json::json!({ "errors": [message] }).to_string();
    let mut response = hyper::Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn logged_path(path: &str) -> String {
    let mut end = path.len().min(LOGGED_PATH_BYTES);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    path[..end].to_owned()
}
