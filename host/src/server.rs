//! The HTTP front end: hyper on a TCP listener, one fresh component instance per request
//! through `wasi:http/incoming-handler`. A semaphore bounds live instances to the pool's
//! size, so extra requests wait instead of failing. Shutdown stops accepting, lets
//! requests in flight finish, and waits for every instance to return.

use std::convert::Infallible;
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

/// Longest path logged per request, in bytes.
const LOGGED_PATH_BYTES: usize = 200;

/// State shared by every request handler.
#[derive(Clone)]
struct Shared {
    runtime: Runtime,
    instances: Arc<Semaphore>,
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
        runtime,
        instances: Arc::new(Semaphore::new(max_instances as usize)),
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

    let response = match run_guest(&shared, request).await {
        Ok(response) => response,
        Err(failure) => {
            tracing::error!(%method, path, error = %failure, "the engine returned no response");
            error_response()
        }
    };
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    Ok(response)
}

/// Runs the request in a fresh instance and returns the response once its head is set.
/// The instance keeps running in a tracked task while it streams the body.
async fn run_guest(
    shared: &Shared,
    request: hyper::Request<Incoming>,
) -> anyhow::Result<hyper::Response<HyperOutgoingBody>> {
    let permit: OwnedSemaphorePermit = Arc::clone(&shared.instances).acquire_owned().await?;
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

fn error_response() -> hyper::Response<HyperOutgoingBody> {
    let body = r#"{"errors":["internal error: the engine returned no response; the host log has the cause"]}"#;
    let mut response = hyper::Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
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
