//! A small HTTP/1 client for tests that talk to LiteLLM directly, such as a chat completion
//! made with a minted key.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A response read completely.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// Parses the body as JSON; `Value::Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Returns the body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method url` with a bearer token and an optional JSON body.
pub async fn send(
    method: &str,
    url: &str,
    bearer: &str,
    body: Option<&Value>,
) -> anyhow::Result<Reply> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut builder = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {bearer}"));
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder.body(Full::new(Bytes::from(payload)))?;

    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Reply { status, body })
}

/// Sends a one-message chat completion for `model` with `key`.
pub async fn chat_completion(base_url: &str, key: &str, model: &str) -> anyhow::Result<Reply> {
    let body = serde_json::json!({
        "model": model,
        "messages": [{ "role": "user", "content": "hello from the engine tests" }],
    });
    send(
        "POST",
        &format!("{base_url}/v1/chat/completions"),
        key,
        Some(&body),
    )
    .await
}

/// Reads `/key/info` for `key` (plaintext or hash) with the master key.
pub async fn key_info(base_url: &str, master_key: &str, key: &str) -> anyhow::Result<Reply> {
    send(
        "GET",
        &format!("{base_url}/key/info?key={key}"),
        master_key,
        None,
    )
    .await
}
