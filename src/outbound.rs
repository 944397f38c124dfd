//! Outbound HTTP over `wasi:http`, with timeouts and a bounded response body.

use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme as WasiScheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::url::{BaseUrl, Scheme};

/// Largest response body read from LiteLLM, in bytes. LiteLLM's key responses are a few KiB.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

const NANOS_PER_SECOND: u64 = 1_000_000_000;
const CONNECT_TIMEOUT_SECONDS: u64 = 5;
const BETWEEN_BYTES_TIMEOUT_SECONDS: u64 = 10;

/// Largest chunk `blocking-write-and-flush` accepts.
const WRITE_CHUNK_BYTES: usize = 4096;
const READ_CHUNK_BYTES: u64 = 64 * 1024;

/// HTTP method of an outbound request.
#[derive(Debug, Clone, Copy)]
pub enum Verb {
    /// GET
    Get,
    /// POST
    Post,
}

/// A response whose body was read completely.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The `location` header, for redirects.
    pub location: Option<String>,
    /// The `retry-after` header in seconds, when it is given as a number.
    pub retry_after: Option<u64>,
    /// The response body.
    pub body: Vec<u8>,
}

/// Cause of a missing or unusable response.
#[derive(Debug)]
pub enum Failure {
    /// The host runtime denied the destination, so the request was never sent.
    Denied(String),
    /// The request never reached LiteLLM: no connection, a DNS or TLS failure, or the
    /// runtime denied the destination.
    NotSent(String),
    /// LiteLLM may have received the request but did not answer in time.
    TimedOut(String),
    /// LiteLLM may have received the request, but the exchange broke off.
    Broken(String),
    /// The response body exceeded [`MAX_RESPONSE_BYTES`].
    TooLarge,
}

impl Failure {
    /// Returns whether LiteLLM may have acted on the request.
    pub fn may_have_reached_server(&self) -> bool {
        !matches!(self, Self::Denied(_) | Self::NotSent(_))
    }
}

/// Sends a request to `route` under `base` and reads the whole response, waiting at most
/// `first_byte_timeout_seconds` for the response to start and as long again for its body.
/// The body is checked between chunks, so a read may overrun that by one between-bytes
/// timeout.
pub fn send(
    verb: Verb,
    base: &BaseUrl,
    route: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    first_byte_timeout_seconds: u64,
) -> Result<Response, Failure> {
    let request = build_request(verb, base, route, headers)
        .map_err(|reason| Failure::NotSent(format!("building the request failed: {reason}")))?;
    let outgoing_body = request
        .body()
        .map_err(|()| Failure::NotSent("the request body was already taken".to_owned()))?;

    let future = outgoing_handler::handle(request, Some(options(first_byte_timeout_seconds)))
        .map_err(|code| classify(base, &code))?;
    // A host that rejects the request closes the body stream, so a write failure is
    // reported only after the response future, which carries the reason.
    let written = write_body(outgoing_body, body.unwrap_or_default());

    let pollable = future.subscribe();
    pollable.block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(classify(base, &code)),
        Some(Err(())) | None => {
            return Err(Failure::Broken("the response was already taken".to_owned()));
        }
    };
    written.map_err(Failure::Broken)?;
    read_response(base, response, first_byte_timeout_seconds)
}

fn build_request(
    verb: Verb,
    base: &BaseUrl,
    route: &str,
    headers: &[(&str, &str)],
) -> Result<OutgoingRequest, String> {
    let entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&entries).map_err(|error| format!("{error:?}"))?;
    let request = OutgoingRequest::new(fields);

    let method = match verb {
        Verb::Get => Method::Get,
        Verb::Post => Method::Post,
    };
    let scheme = match base.scheme() {
        Scheme::Http => WasiScheme::Http,
        Scheme::Https => WasiScheme::Https,
    };
    request.set_method(&method).map_err(|()| "invalid method")?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "invalid scheme")?;
    request
        .set_authority(Some(base.authority()))
        .map_err(|()| "invalid authority")?;
    request
        .set_path_with_query(Some(&base.path_for(route)))
        .map_err(|()| "invalid path")?;
    Ok(request)
}

fn options(first_byte_timeout_seconds: u64) -> RequestOptions {
    let options = RequestOptions::new();
    // A host that does not support a timeout rejects setting it; the request then runs
    // with the host's own limits, so the results are ignored.
    let connect = CONNECT_TIMEOUT_SECONDS.min(first_byte_timeout_seconds);
    let between_bytes = BETWEEN_BYTES_TIMEOUT_SECONDS.min(first_byte_timeout_seconds);
    let _ = options.set_connect_timeout(Some(connect * NANOS_PER_SECOND));
    let _ = options.set_first_byte_timeout(Some(first_byte_timeout_seconds * NANOS_PER_SECOND));
    let _ = options.set_between_bytes_timeout(Some(between_bytes * NANOS_PER_SECOND));
    options
}

/// Maximum time one `send` can take with `first_byte_timeout_seconds`, in seconds: the
/// connect timeout, the wait for the response, the body deadline and one between-bytes
/// overrun.
pub fn longest_exchange_seconds(first_byte_timeout_seconds: u64) -> u64 {
    CONNECT_TIMEOUT_SECONDS.min(first_byte_timeout_seconds)
        + 2 * first_byte_timeout_seconds
        + BETWEEN_BYTES_TIMEOUT_SECONDS.min(first_byte_timeout_seconds)
}

fn write_body(outgoing_body: OutgoingBody, bytes: &[u8]) -> Result<(), String> {
    {
        let stream = outgoing_body
            .write()
            .map_err(|()| "the request body stream was already taken".to_owned())?;
        for chunk in bytes.chunks(WRITE_CHUNK_BYTES) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|error| format!("writing the request body failed: {error:?}"))?;
        }
    }
    OutgoingBody::finish(outgoing_body, None)
        .map_err(|code| format!("finishing the request body failed: {code:?}"))
}

fn read_response(
    base: &BaseUrl,
    response: IncomingResponse,
    body_timeout_seconds: u64,
) -> Result<Response, Failure> {
    let deadline = monotonic_clock::now() + body_timeout_seconds * NANOS_PER_SECOND;
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .first()
        .map(|value| String::from_utf8_lossy(value).into_owned());

    let retry_after = response
        .headers()
        .get("retry-after")
        .first()
        .and_then(|value| std::str::from_utf8(value).ok()?.trim().parse().ok());

    let incoming_body = response
        .consume()
        .map_err(|()| Failure::Broken("the response body was already taken".to_owned()))?;
    let mut body = Vec::new();
    {
        let stream = incoming_body.stream().map_err(|()| {
            Failure::Broken("the response body stream was already taken".to_owned())
        })?;
        loop {
            match stream.blocking_read(READ_CHUNK_BYTES) {
                Ok(chunk) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(Failure::TooLarge);
                    }
                    body.extend_from_slice(&chunk);
                    if monotonic_clock::now() > deadline {
                        return Err(Failure::TimedOut(format!(
                            "LiteLLM at {base} did not finish its response within \
                             {body_timeout_seconds}s"
                        )));
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(error)) => {
                    let code = crate::bindings::wasi::http::types::http_error_code(&error);
                    return Err(body_failure(base, body.len(), code));
                }
            }
        }
    }
    Ok(Response {
        status,
        location,
        retry_after,
        body,
    })
}

/// Describes a response body that broke off after `received` bytes.
fn body_failure(base: &BaseUrl, received: usize, code: Option<ErrorCode>) -> Failure {
    match code {
        Some(code @ (ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout)) => {
            classify(base, &code)
        }
        _ => Failure::Broken(format!(
            "the response body from LiteLLM at {base} broke off after {received} bytes, \
             before it was complete"
        )),
    }
}

/// Sorts a `wasi:http` error code by whether LiteLLM may have seen the request.
fn classify(base: &BaseUrl, code: &ErrorCode) -> Failure {
    match code {
        ErrorCode::HttpRequestDenied => Failure::Denied(format!(
            "the host runtime denied the outbound request to {base}; add this host to the \
             component's allowed outbound hosts (allowed_outbound_hosts in spin.toml)"
        )),
        ErrorCode::DnsTimeout
        | ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionLimitReached
        | ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => Failure::NotSent(format!(
            "could not connect to LiteLLM at {base}: {}",
            describe(code)
        )),
        ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
            Failure::TimedOut(format!("LiteLLM at {base} did not respond in time"))
        }
        _ => Failure::Broken(format!(
            "the exchange with LiteLLM at {base} failed: {}",
            describe(code)
        )),
    }
}

fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::ConnectionRefused => "connection refused".to_owned(),
        ErrorCode::ConnectionTimeout => {
            format!("connection timed out after {CONNECT_TIMEOUT_SECONDS}s")
        }
        ErrorCode::DnsError(payload) => format!(
            "DNS lookup failed ({})",
            payload
                .rcode
                .clone()
                .unwrap_or_else(|| "no response code".to_owned())
        ),
        ErrorCode::HttpProtocolError => {
            "the connection closed without a valid HTTP response".to_owned()
        }
        ErrorCode::ConnectionTerminated => "the connection closed mid-response".to_owned(),
        ErrorCode::HttpResponseIncomplete => {
            "the response body ended before its announced length".to_owned()
        }
        ErrorCode::InternalError(Some(message)) => message.clone(),
        other => format!("{other:?}"),
    }
}
