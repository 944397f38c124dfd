//! HTTP requests into the component's `wasi:http/incoming-handler`, one fresh instance per
//! request as Spin runs them, directly or through a server on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::host::{TestHost, runtime};
use crate::secret_scan;

/// A response read completely.
#[derive(Debug)]
pub struct ApiReply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl ApiReply {
    /// Parses the body as JSON; `Value::Null` when it is empty or not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Returns the body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Returns the `errors` list of an error body.
    pub fn errors(&self) -> Vec<String> {
        self.json()["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|error| error.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

type ResponseBody = UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

impl TestHost {
    /// Sends `method path` with an optional token (`X-Vault-Token`) and JSON body.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> ApiReply {
        let payload = body.map(Value::to_string).unwrap_or_default();
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("http://engine.test{path}"));
        if let Some(token) = token {
            builder = builder.header("x-vault-token", token);
        }
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(payload)))
            .expect("valid request");
        self.send(request)
            .await
            .expect("the component served the request")
    }

    /// Sends a prepared request and reads the whole response.
    pub async fn send<B>(&self, request: http::Request<B>) -> anyhow::Result<ApiReply>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let (response, guest) = self.handle(request).await?;
        let (parts, body) = response.into_parts();
        // The body is read before the guest is awaited: the guest blocks writing a body
        // larger than the stream's buffer until someone reads it.
        let body = body
            .collect()
            .await
            .map_err(|error| anyhow::anyhow!("reading the response body failed: {error:?}"))?
            .to_bytes();
        guest.await_done().await?;
        let reply = ApiReply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        };
        scan_reply(&reply);
        Ok(reply)
    }

    /// Runs the incoming handler of a fresh instance for `request` and returns the response
    /// as soon as its head is set, with the task that finishes the guest's work.
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
    ) -> anyhow::Result<(http::Response<ResponseBody>, GuestTask)>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let (mut store, stderr) = self.new_store();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;

        let host = self.clone();
        let task = tokio::spawn(async move {
            let proxy = runtime().proxy.instantiate_async(&mut store).await?;
            let result = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, incoming, out)
                .await;
            host.keep_logs(&stderr);
            result
        });
        match receiver.await {
            Ok(Ok(response)) => Ok((response.map(|body| body.boxed_unsync()), GuestTask(task))),
            Ok(Err(code)) => anyhow::bail!("the component answered with error code {code:?}"),
            Err(_) => match task.await {
                Ok(Err(trap)) => anyhow::bail!("the component trapped: {trap:?}"),
                _ => anyhow::bail!("the component never set a response"),
            },
        }
    }
}

/// The rest of a guest's work after it set its response.
pub struct GuestTask(JoinHandle<wasmtime::Result<()>>);

impl GuestTask {
    /// Waits for the guest to return; a trap after the response is an error.
    pub async fn await_done(self) -> anyhow::Result<()> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(trap)) => anyhow::bail!("the component trapped after responding: {trap:?}"),
            Err(error) => anyhow::bail!("the guest task failed: {error}"),
        }
    }
}

/// A loopback HTTP server in front of the component.
pub struct ApiServer {
    /// Address it listens on, 127.0.0.1 with a free port.
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// Serves `host`'s component on 127.0.0.1 until dropped.
    pub async fn start(host: TestHost) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let host = host.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let host = host.clone();
                        async move { Ok::<_, Infallible>(respond(&host, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { address, task })
    }

    /// Base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(
    host: &TestHost,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    match host.send(request).await {
        Ok(reply) => {
            let mut response = http::Response::new(Full::new(reply.body));
            *response.status_mut() = http::StatusCode::from_u16(reply.status)
                .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
            *response.headers_mut() = reply.headers;
            response
        }
        Err(error) => {
            let mut response = http::Response::new(Full::new(Bytes::from(format!("{error:?}"))));
            *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

/// Checks a response body for secrets, and records the key a creds response carries.
fn scan_reply(reply: &ApiReply) {
    let value: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let own_key = value.pointer("/data/key").and_then(Value::as_str);
    if let Some(key) = own_key {
        secret_scan::note_minted(key);
    }
    secret_scan::check("an HTTP response", &reply.text(), own_key);
}
