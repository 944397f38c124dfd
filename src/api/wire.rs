//! Reading an incoming `wasi:http` request and writing the response, with a bounded body.

use crate::bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::bindings::wasi::io::streams::StreamError;

/// Largest request body the API reads, in bytes. Role metadata, the largest field, is
/// limited to 64 KiB, so 1 MiB leaves room without letting a client exhaust memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

const READ_CHUNK_BYTES: u64 = 64 * 1024;
const WRITE_CHUNK_BYTES: usize = 4096;

/// An HTTP request read into memory.
pub struct WireRequest {
    /// Upper-case method name, such as `GET` or `LIST`.
    pub method: String,
    /// The path, not yet percent-decoded.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// Header values by lower-case name.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Failure to read a request.
pub enum ReadError {
    /// The body is larger than [`MAX_BODY_BYTES`].
    TooLarge,
    /// The body stream failed.
    Broken(String),
}

impl WireRequest {
    /// Returns the first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads the request, stopping at [`MAX_BODY_BYTES`] of body.
pub fn read(request: IncomingRequest) -> Result<WireRequest, ReadError> {
    let method = method_name(&request.method());
    let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    let (path, query) = match path_with_query.split_once('?') {
        Some((path, query)) => (path.to_owned(), query.to_owned()),
        None => (path_with_query, String::new()),
    };
    let headers: Vec<(String, String)> = request
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(&value).into_owned();
            (name.to_ascii_lowercase(), value)
        })
        .collect();

    let declared = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(ReadError::TooLarge);
    }
    let body = read_body(request)?;
    Ok(WireRequest {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn read_body(request: IncomingRequest) -> Result<Vec<u8>, ReadError> {
    let Ok(incoming) = request.consume() else {
        return Ok(Vec::new());
    };
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| ReadError::Broken("the request body stream was already taken".into()))?;
        loop {
            match stream.blocking_read(READ_CHUNK_BYTES) {
                Ok(chunk) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err(ReadError::TooLarge);
                    }
                    body.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(error)) => {
                    return Err(ReadError::Broken(error.to_debug_string()));
                }
            }
        }
    }
    Ok(body)
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".to_owned(),
        Method::Head => "HEAD".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        Method::Connect => "CONNECT".to_owned(),
        Method::Options => "OPTIONS".to_owned(),
        Method::Trace => "TRACE".to_owned(),
        Method::Patch => "PATCH".to_owned(),
        Method::Other(other) => other.to_ascii_uppercase(),
    }
}

/// Sends a response with `status` and, unless empty, a JSON `body`.
pub fn send(out: ResponseOutparam, status: u16, body: &[u8]) {
    let mut entries: Vec<(String, Vec<u8>)> = vec![("cache-control".into(), b"no-store".to_vec())];
    if !body.is_empty() {
        entries.push(("content-type".into(), b"application/json".to_vec()));
        entries.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let headers = match Fields::from_list(&entries) {
        Ok(headers) => headers,
        Err(_) => Fields::new(),
    };
    let response = OutgoingResponse::new(headers);
    // Every status the API uses is between 200 and 599, which wasi:http accepts.
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));

    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(WRITE_CHUNK_BYTES) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}
