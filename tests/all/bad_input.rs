//! A table of malformed and hostile HTTP requests. Each one gets its exact 4xx status and
//! an error that names what was wrong, echoes no secret, leaves the store byte-identical
//! and sends nothing to LiteLLM.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use http_body_util::Full;
use litellm_secrets_tests::fixture::{Fixture, MASTER_KEY};
use litellm_secrets_tests::host::TestHost;
use litellm_secrets_tests::http_api::ApiReply;
use serde_json::{Value, json};

const ADMIN: &str = "bad-input-admin-token";

/// Largest request body the API reads, in bytes (1 MiB, as the README documents).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Largest error body a row may get. The API cuts every value it quotes, so huge input
/// must not come back whole.
const MAX_ERROR_BODY_BYTES: usize = 2048;

/// Who sends a row's request.
#[derive(Clone, Copy)]
enum Sender {
    Admin,
    /// The client token scoped to role `dev`, which owns the issued lease.
    Client,
    /// No token at all.
    Anonymous,
    /// A well-formed client token that the engine never issued.
    Forged,
}

/// One request and the response the API must return.
struct Row {
    label: &'static str,
    method: &'static str,
    path: String,
    sender: Sender,
    content_type: &'static str,
    declare_length: bool,
    body: Vec<u8>,
    status: u16,
    /// Text the first entry of `errors` must contain.
    expected: String,
}

/// Creates a row sent by the admin with `Content-Type: application/json`.
fn row(
    label: &'static str,
    method: &'static str,
    path: impl Into<String>,
    body: impl Into<Vec<u8>>,
    status: u16,
    expected: impl Into<String>,
) -> Row {
    Row {
        label,
        method,
        path: path.into(),
        sender: Sender::Admin,
        content_type: "application/json",
        declare_length: false,
        body: body.into(),
        status,
        expected: expected.into(),
    }
}

impl Row {
    fn by(mut self, sender: Sender) -> Self {
        self.sender = sender;
        self
    }

    fn content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = content_type;
        self
    }

    /// Sends a `Content-Length` header. Without one, the engine finds the size by reading the
    /// body.
    fn declared_length(mut self) -> Self {
        self.declare_length = true;
        self
    }
}

/// The state the rows aim at: the config, roles `dev` and `ops`, a client token for `dev`
/// and one lease that token owns.
struct Targets {
    fixture: Fixture,
    client_token: String,
    lease_id: String,
    key: String,
}

async fn setup() -> Targets {
    let fixture = Fixture::start_with(TestHost::new().with_admin_token(ADMIN)).await;
    for (name, role) in [
        (
            "dev",
            json!({"models": ["gpt-4o-mini"], "ttl": "1h", "max_ttl": "24h"}),
        ),
        (
            "ops",
            json!({"models": ["gpt-4o"], "max_budget": 5, "rpm_limit": 10}),
        ),
    ] {
        let path = format!("/v1/litellm/roles/{name}");
        let reply = fixture
            .host
            .http("POST", &path, Some(ADMIN), Some(&role))
            .await;
        assert_eq!(reply.status, 200, "writing role {name}: {}", reply.text());
    }

    let body = json!({"roles": ["dev"], "ttl": "1h"});
    let reply = fixture
        .host
        .http("POST", "/v1/auth/token/create", Some(ADMIN), Some(&body))
        .await;
    assert_eq!(
        reply.status,
        200,
        "creating the client token: {}",
        reply.text()
    );
    let client_token = string_at(&reply, &["auth", "client_token"]);

    let reply = fixture
        .host
        .http("GET", "/v1/litellm/creds/dev", Some(&client_token), None)
        .await;
    assert_eq!(reply.status, 200, "issuing the lease: {}", reply.text());
    let lease_id = string_at(&reply, &["lease_id"]);
    let key = string_at(&reply, &["data", "key"]);

    Targets {
        fixture,
        client_token,
        lease_id,
        key,
    }
}

fn string_at(reply: &ApiReply, pointer: &[&str]) -> String {
    let mut value = reply.json();
    for name in pointer {
        value = value[*name].take();
    }
    value
        .as_str()
        .unwrap_or_else(|| panic!("no string at {pointer:?} in {}", reply.text()))
        .to_owned()
}

async fn send(targets: &Targets, row: &Row) -> ApiReply {
    let forged = format!("lse.{}", "0".repeat(64));
    let token = match row.sender {
        Sender::Admin => Some(ADMIN),
        Sender::Client => Some(targets.client_token.as_str()),
        Sender::Anonymous => None,
        Sender::Forged => Some(forged.as_str()),
    };
    let mut builder = http::Request::builder()
        .method(row.method)
        .uri(format!("http://engine.test{}", row.path));
    if let Some(token) = token {
        builder = builder.header("x-vault-token", token);
    }
    if !row.body.is_empty() {
        builder = builder.header("content-type", row.content_type);
    }
    if row.declare_length {
        builder = builder.header("content-length", row.body.len());
    }
    let request = builder
        .body(Full::new(Bytes::from(row.body.clone())))
        .unwrap_or_else(|error| panic!("{}: building the request failed: {error}", row.label));
    targets
        .fixture
        .host
        .send(request)
        .await
        .unwrap_or_else(|error| panic!("{}: the component did not respond: {error:#}", row.label))
}

/// Returns the keys whose presence or bytes differ between two snapshots.
fn changed_keys(
    before: &BTreeMap<String, Vec<u8>>,
    after: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(*key) != after.get(*key))
        .cloned()
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect()
}

/// Returns `json` after enough spaces to make the body one byte over the limit, so that
/// only the size is wrong.
fn oversized(json: &str) -> Vec<u8> {
    let mut body = vec![b' '; MAX_BODY_BYTES + 1 - json.len()];
    body.extend_from_slice(json.as_bytes());
    body
}

fn config_rows(targets: &Targets) -> Vec<Row> {
    let config = "/v1/litellm/config";
    let url = targets.fixture.litellm.url();
    let with_url = |master_key: &str| json!({"url": url, "master_key": master_key}).to_string();
    let with_key = |url: &str| json!({"url": url, "master_key": "sk-new-key"}).to_string();
    let long_url = format!("http://127.0.0.1:4000/{}", "a".repeat(3000));
    let with_credentials = format!("http://admin:{MASTER_KEY}@127.0.0.1:4000");

    vec![
        row(
            "config url number",
            "POST",
            config,
            r#"{"url": 4000}"#,
            400,
            "url must be a string, got a JSON number",
        ),
        row(
            "config url list",
            "POST",
            config,
            json!({"url": ["http://127.0.0.1:1"]}).to_string(),
            400,
            "url must be a string, got a JSON array",
        ),
        row(
            "config master_key boolean",
            "PUT",
            config,
            r#"{"master_key": true}"#,
            400,
            "master_key must be a string, got a JSON boolean",
        ),
        row(
            "config master_key object",
            "POST",
            config,
            r#"{"master_key": {"key": "sk-x"}}"#,
            400,
            "master_key must be a string, got a JSON object",
        ),
        row(
            "config master_key empty",
            "POST",
            config,
            with_url(""),
            400,
            "master_key is empty",
        ),
        row(
            "config master_key blank",
            "POST",
            config,
            with_url("   "),
            400,
            "master_key is empty",
        ),
        row(
            "config master_key newline",
            "POST",
            config,
            with_url("sk-new\nkey"),
            400,
            "master_key contains whitespace or control characters",
        ),
        row(
            "config master_key NUL",
            "POST",
            config,
            with_url("sk-new\u{0}"),
            400,
            "master_key contains whitespace or control characters",
        ),
        row(
            "config master_key over 1 KiB",
            "POST",
            config,
            with_url(&"k".repeat(1025)),
            400,
            "master_key is longer than 1024 bytes",
        ),
        row(
            "config url without scheme",
            "POST",
            config,
            with_key("127.0.0.1:4000"),
            400,
            r#"url is invalid: "127.0.0.1:4000" does not start with http:// or https://"#,
        ),
        row(
            "config url ftp",
            "POST",
            config,
            with_key("ftp://127.0.0.1:4000"),
            400,
            r#"url is invalid: "ftp://127.0.0.1:4000" does not start with http:// or https://"#,
        ),
        row(
            "config url empty",
            "POST",
            config,
            with_key(""),
            400,
            r#"url is invalid: "" does not start with http:// or https://"#,
        ),
        row(
            "config url credentials",
            "POST",
            config,
            with_key(&with_credentials),
            400,
            r#"url is invalid: "http://***@127.0.0.1:4000" contains user information"#,
        ),
        row(
            "config url space",
            "POST",
            config,
            with_key("http://127.0.0.1:4000/lite llm"),
            400,
            "contains whitespace or control characters",
        ),
        row(
            "config url NUL",
            "POST",
            config,
            with_key("http://127.0.0.1:4000\u{0}"),
            400,
            "contains whitespace or control characters",
        ),
        row(
            "config url no host",
            "POST",
            config,
            with_key("http://"),
            400,
            r#"url is invalid: "http://" has no host"#,
        ),
        row(
            "config url port 0",
            "POST",
            config,
            with_key("http://127.0.0.1:0"),
            400,
            "has an invalid port",
        ),
        row(
            "config url port 65536",
            "POST",
            config,
            with_key("http://127.0.0.1:65536"),
            400,
            "has an invalid port",
        ),
        row(
            "config url non-ASCII host",
            "POST",
            config,
            with_key("http://exämple.test"),
            400,
            "has an invalid host",
        ),
        row(
            "config url query",
            "POST",
            config,
            with_key("http://127.0.0.1:4000/?token=x"),
            400,
            "has a query or fragment",
        ),
        row(
            "config url dot segment",
            "POST",
            config,
            with_key("http://127.0.0.1:4000/a/../b"),
            400,
            "has an empty, '.' or '..' path segment",
        ),
        row(
            "config url over 2 KiB",
            "POST",
            config,
            with_key(&long_url),
            400,
            "is longer than 2048 bytes",
        ),
        row(
            "config url change without key",
            "POST",
            config,
            r#"{"url": "http://127.0.0.1:1"}"#,
            400,
            "master_key is required when url changes",
        ),
        row(
            "config body array",
            "POST",
            config,
            "[]",
            400,
            "request body must be a JSON object, got array",
        ),
        row(
            "config body null",
            "PUT",
            config,
            "null",
            400,
            "request body must be a JSON object, got null",
        ),
        row(
            "config body empty",
            "POST",
            config,
            "",
            400,
            "request body is empty; send a JSON object",
        ),
        row(
            "config form-encoded body",
            "POST",
            config,
            "url=http%3A%2F%2F127.0.0.1%3A4000&master_key=sk-x",
            400,
            "request body is not valid JSON",
        )
        .content_type("application/x-www-form-urlencoded"),
        row(
            "config PATCH",
            "PATCH",
            config,
            with_url("sk-new-key"),
            405,
            "method PATCH is not supported on /v1/litellm/config",
        ),
        row(
            "config without token",
            "POST",
            config,
            with_url("sk-new-key"),
            403,
            "permission denied",
        )
        .by(Sender::Anonymous),
        row(
            "config forged token",
            "GET",
            config,
            "",
            403,
            "permission denied",
        )
        .by(Sender::Forged),
        row(
            "config client token",
            "POST",
            config,
            with_url("sk-new-key"),
            403,
            "permission denied",
        )
        .by(Sender::Client),
        row(
            "config over 1 MiB",
            "POST",
            config,
            oversized(&with_url("sk-new-key")),
            413,
            "request body exceeds 1048576 bytes",
        ),
    ]
}

fn role_field_rows() -> Vec<Row> {
    let dev = "/v1/litellm/roles/dev";
    let fresh = "/v1/litellm/roles/fresh";
    let many_models: Vec<String> = (0..257).map(|index| format!("m{index}")).collect();
    let many_models = json!({"models": many_models}).to_string();
    let big_metadata = json!({"metadata": {"blob": "x".repeat(70_000)}}).to_string();

    vec![
        row(
            "role models string",
            "POST",
            dev,
            r#"{"models": "gpt-4o"}"#,
            400,
            "models must be a list of strings, got a JSON string",
        ),
        row(
            "role models number item",
            "POST",
            fresh,
            r#"{"models": [1]}"#,
            400,
            "models must be a list of strings, got a JSON number",
        ),
        row(
            "role models empty name",
            "POST",
            dev,
            r#"{"models": [""]}"#,
            400,
            r#"models contains ""; model names must be non-empty"#,
        ),
        row(
            "role models padded name",
            "POST",
            dev,
            r#"{"models": [" gpt-4o"]}"#,
            400,
            r#"models contains " gpt-4o""#,
        ),
        row(
            "role models duplicate",
            "POST",
            fresh,
            r#"{"models": ["m", "m"]}"#,
            400,
            r#"models lists "m" twice"#,
        ),
        row(
            "role models 257 entries",
            "POST",
            dev,
            many_models,
            400,
            "models has 257 entries; the maximum is 256",
        ),
        row(
            "role max_budget word",
            "POST",
            dev,
            r#"{"max_budget": "lots"}"#,
            400,
            r#"max_budget must be a number, got "lots""#,
        ),
        row(
            "role max_budget boolean",
            "POST",
            dev,
            r#"{"max_budget": true}"#,
            400,
            "max_budget must be a number, got a JSON boolean",
        ),
        row(
            "role max_budget negative",
            "POST",
            dev,
            r#"{"max_budget": -1}"#,
            400,
            "max_budget must be a finite number of USD at least 0, got -1",
        ),
        row(
            "role max_budget NaN",
            "POST",
            fresh,
            r#"{"max_budget": "NaN"}"#,
            400,
            "max_budget must be a finite number of USD at least 0, got NaN",
        ),
        row(
            "role max_budget -inf",
            "POST",
            dev,
            r#"{"max_budget": "-inf"}"#,
            400,
            "max_budget must be a finite number of USD at least 0, got -inf",
        ),
        row(
            "role max_budget 1e400",
            "POST",
            dev,
            r#"{"max_budget": 1e400}"#,
            400,
            "request body is not valid JSON: number out of range",
        ),
        row(
            "role budget_duration number",
            "POST",
            dev,
            r#"{"budget_duration": 30}"#,
            400,
            "budget_duration must be a string, got a JSON number",
        ),
        row(
            "role budget_duration year",
            "POST",
            dev,
            r#"{"budget_duration": "1y"}"#,
            400,
            r#"budget_duration is invalid: "1y""#,
        ),
        row(
            "role budget_duration too long",
            "POST",
            dev,
            r#"{"budget_duration": "99999d"}"#,
            400,
            r#"budget_duration is invalid: "99999d""#,
        ),
        row(
            "role tpm_limit negative",
            "POST",
            dev,
            r#"{"tpm_limit": -1}"#,
            400,
            "tpm_limit must be a non-negative integer, got -1",
        ),
        row(
            "role tpm_limit -0",
            "POST",
            dev,
            r#"{"tpm_limit": -0}"#,
            400,
            "tpm_limit must be a non-negative integer, got -0.0",
        ),
        row(
            "role tpm_limit fraction",
            "POST",
            dev,
            r#"{"tpm_limit": 1.5}"#,
            400,
            "tpm_limit must be a non-negative integer, got 1.5",
        ),
        row(
            "role tpm_limit u64 max",
            "POST",
            dev,
            r#"{"tpm_limit": 18446744073709551615}"#,
            400,
            "tpm_limit is 18446744073709551615; the maximum LiteLLM stores is 9223372036854775807",
        ),
        row(
            "role tpm_limit u64 overflow",
            "POST",
            dev,
            r#"{"tpm_limit": 18446744073709551616}"#,
            400,
            "tpm_limit is too large: 1.8446744073709552e+19 does not fit in 64 bits",
        ),
        row(
            "role rpm_limit word",
            "POST",
            dev,
            r#"{"rpm_limit": "lots"}"#,
            400,
            r#"rpm_limit must be a non-negative integer, got "lots""#,
        ),
        row(
            "role rpm_limit string overflow",
            "POST",
            dev,
            r#"{"rpm_limit": "99999999999999999999"}"#,
            400,
            r#"rpm_limit is too large: "99999999999999999999" does not fit in 64 bits"#,
        ),
        row(
            "role rpm_limit array",
            "POST",
            dev,
            r#"{"rpm_limit": []}"#,
            400,
            "rpm_limit must be a non-negative integer, got a JSON array",
        ),
        row(
            "role max_parallel_requests over i32",
            "POST",
            dev,
            r#"{"max_parallel_requests": 2147483648}"#,
            400,
            "max_parallel_requests is 2147483648; the maximum LiteLLM stores is 2147483647",
        ),
        row(
            "role key_alias_prefix dots",
            "POST",
            dev,
            r#"{"key_alias_prefix": "../x"}"#,
            400,
            r#"key_alias_prefix is invalid: "../x""#,
        ),
        row(
            "role key_alias_prefix number",
            "POST",
            dev,
            r#"{"key_alias_prefix": 5}"#,
            400,
            "key_alias_prefix must be a string, got a JSON number",
        ),
        row(
            "role metadata string",
            "POST",
            dev,
            r#"{"metadata": "team=a"}"#,
            400,
            "metadata must be a JSON object, got a JSON string",
        ),
        row(
            "role metadata reserved key",
            "POST",
            dev,
            r#"{"metadata": {"secrets_engine_role": "ops"}}"#,
            400,
            r#"metadata key "secrets_engine_role" is reserved"#,
        ),
        row(
            "role metadata over 64 KiB",
            "POST",
            dev,
            big_metadata,
            400,
            "metadata has 70011 bytes; the maximum is 65536 bytes (64 KiB)",
        ),
        row(
            "role ttl boolean",
            "POST",
            dev,
            r#"{"ttl": true}"#,
            400,
            "ttl must be whole seconds or a duration string, got a JSON boolean",
        ),
        row(
            "role ttl negative text",
            "POST",
            dev,
            r#"{"ttl": "-1h"}"#,
            400,
            r#"ttl must not be negative, got "-1h""#,
        ),
        row(
            "role ttl months",
            "POST",
            dev,
            r#"{"ttl": "1mo"}"#,
            400,
            r#"ttl is not a valid duration: "1mo""#,
        ),
        row(
            "role ttl fraction of a second",
            "POST",
            dev,
            r#"{"ttl": "1.5s"}"#,
            400,
            r#"ttl must be a whole number of seconds, got "1.5s""#,
        ),
        row(
            "role ttl over 100 years",
            "POST",
            fresh,
            r#"{"ttl": "4000000000"}"#,
            400,
            r#"ttl is too long: "4000000000"; the maximum is 3153600000 seconds"#,
        ),
        row(
            "role max_ttl over engine max",
            "POST",
            dev,
            r#"{"max_ttl": "800h"}"#,
            400,
            "max_ttl (800h0m0s) exceeds the engine's maximum lease TTL (768h0m0s)",
        ),
        row(
            "role ttl over max_ttl",
            "POST",
            dev,
            r#"{"ttl": "2h", "max_ttl": "1h"}"#,
            400,
            "ttl (2h0m0s) exceeds max_ttl (1h0m0s)",
        ),
        row(
            "role max_ttl NaN",
            "POST",
            dev,
            r#"{"max_ttl": "NaN"}"#,
            400,
            r#"max_ttl is not a valid duration: "NaN""#,
        ),
        row(
            "role duplicate key, last negative",
            "POST",
            dev,
            r#"{"ttl": "1h", "ttl": "-1h"}"#,
            400,
            r#"ttl must not be negative, got "-1h""#,
        ),
        row(
            "role duplicate key, last wrong type",
            "POST",
            fresh,
            r#"{"models": ["m"], "models": "m"}"#,
            400,
            "models must be a list of strings, got a JSON string",
        ),
        row(
            "role unknown field beside bad one",
            "POST",
            dev,
            r#"{"colour": "red", "rpm_limit": -1}"#,
            400,
            "rpm_limit must be a non-negative integer, got -1",
        ),
    ]
}

fn role_body_rows() -> Vec<Row> {
    let dev = "/v1/litellm/roles/dev";
    let fresh = "/v1/litellm/roles/fresh";
    let mut bom = "\u{feff}".as_bytes().to_vec();
    bom.extend_from_slice(br#"{"models": ["m"]}"#);
    let not_utf8 = b"{\"models\": [\"\xff\"]}".to_vec();

    vec![
        row(
            "role body null",
            "POST",
            dev,
            "null",
            400,
            "request body must be a JSON object, got null",
        ),
        row(
            "role body string",
            "POST",
            fresh,
            r#""models""#,
            400,
            "request body must be a JSON object, got string",
        ),
        row(
            "role body empty",
            "POST",
            fresh,
            "",
            400,
            "request body is empty; send a JSON object",
        ),
        row(
            "role body truncated",
            "POST",
            fresh,
            r#"{"models": ["m""#,
            400,
            "request body is not valid JSON: EOF while parsing",
        ),
        row(
            "role body trailing garbage",
            "POST",
            dev,
            r#"{"models": ["m"]} x"#,
            400,
            "request body is not valid JSON: trailing characters",
        ),
        row(
            "role body second object",
            "POST",
            dev,
            r#"{"models": ["m"]}{"models": []}"#,
            400,
            "request body is not valid JSON: trailing characters",
        ),
        row(
            "role body BOM",
            "POST",
            fresh,
            bom,
            400,
            "request body is not valid JSON: expected value at line 1 column 1",
        ),
        row(
            "role body not UTF-8",
            "POST",
            fresh,
            not_utf8,
            400,
            "request body is not valid UTF-8 (invalid byte at position 13)",
        ),
        row(
            "role body lone surrogate",
            "POST",
            fresh,
            r#"{"models": ["\ud800"]}"#,
            400,
            "request body is not valid JSON: unexpected end of hex escape at line 1 column 20",
        ),
        row(
            "role body single quotes",
            "POST",
            fresh,
            "{'models': ['m']}",
            400,
            "request body is not valid JSON: key must be a string",
        ),
        row(
            "role over 1 MiB, declared",
            "POST",
            fresh,
            oversized(r#"{"models": ["m"]}"#),
            413,
            "request body exceeds 1048576 bytes",
        )
        .declared_length(),
        row(
            "role over 1 MiB, streamed",
            "POST",
            dev,
            oversized(r#"{"models": ["m"]}"#),
            413,
            "request body exceeds 1048576 bytes",
        ),
    ]
}

fn role_name_rows() -> Vec<Row> {
    let body = r#"{"models": ["m"]}"#;
    let invalid = |name: &str| format!("role name is invalid: {name:?}");
    let roles = |name: &str| format!("/v1/litellm/roles/{name}");
    let long_start = format!("role name is invalid: \"{}...\"", "a".repeat(80));

    vec![
        row(
            "role name ..",
            "POST",
            roles(".."),
            body,
            400,
            invalid(".."),
        ),
        row(
            "role name %2e%2e",
            "POST",
            roles("%2e%2e"),
            body,
            400,
            invalid(".."),
        ),
        row(
            "role name %2F",
            "POST",
            roles("dev%2F..%2Fops"),
            body,
            400,
            invalid("dev/../ops"),
        ),
        row(
            "role name NUL",
            "POST",
            roles("dev%00"),
            body,
            400,
            invalid("dev\0"),
        ),
        row(
            "role name RTL override",
            "POST",
            roles("dev%E2%80%AEved"),
            body,
            400,
            invalid("dev\u{202e}ved"),
        ),
        row(
            "role name zero-width space",
            "POST",
            roles("dev%E2%80%8B"),
            body,
            400,
            invalid("dev\u{200b}"),
        ),
        row(
            "role name emoji",
            "POST",
            roles("%F0%9F%94%91"),
            body,
            400,
            invalid("\u{1f511}"),
        ),
        row(
            "role name Cyrillic e",
            "POST",
            roles("d%D0%B5v"),
            body,
            400,
            invalid("d\u{435}v"),
        ),
        row(
            "role name leading dash",
            "POST",
            roles("-dev"),
            body,
            400,
            invalid("-dev"),
        ),
        row(
            "role name 129 bytes",
            "POST",
            roles(&"a".repeat(129)),
            body,
            400,
            long_start.clone(),
        ),
        row(
            "role name 20000 bytes",
            "POST",
            roles(&"a".repeat(20_000)),
            body,
            400,
            long_start,
        ),
        row(
            "role name bad escape",
            "POST",
            roles("%zz"),
            body,
            400,
            r#"path segment "%zz" has an invalid percent-encoding or is not UTF-8"#,
        ),
        row(
            "role name cut escape",
            "POST",
            roles("dev%"),
            body,
            400,
            r#"path segment "dev%" has an invalid percent-encoding"#,
        ),
        row(
            "role name not UTF-8",
            "POST",
            roles("%FF"),
            body,
            400,
            r#"path segment "%FF" has an invalid percent-encoding or is not UTF-8"#,
        ),
        row(
            "role path double trailing slash",
            "POST",
            roles("dev//"),
            body,
            404,
            "no handler for route /v1/litellm/roles/dev//",
        ),
        row(
            "role path double slash",
            "POST",
            "/v1/litellm//roles/dev",
            body,
            404,
            "no handler for route /v1/litellm//roles/dev",
        ),
        row(
            "role path extra segment",
            "POST",
            roles("dev/extra"),
            body,
            404,
            "no handler for route /v1/litellm/roles/dev/extra",
        ),
        row(
            "role delete ..",
            "DELETE",
            roles("%2e%2e"),
            "",
            400,
            invalid(".."),
        ),
        row(
            "role read NUL",
            "GET",
            roles("dev%00"),
            "",
            400,
            invalid("dev\0"),
        ),
        row(
            "role PATCH",
            "PATCH",
            roles("dev"),
            body,
            405,
            "method PATCH is not supported on /v1/litellm/roles/dev",
        ),
        row(
            "role list POST",
            "POST",
            "/v1/litellm/roles",
            body,
            405,
            "method POST is not supported on /v1/litellm/roles",
        ),
        row(
            "role write client token",
            "POST",
            roles("dev"),
            body,
            403,
            "permission denied",
        )
        .by(Sender::Client),
    ]
}

fn creds_rows() -> Vec<Row> {
    let dev = "/v1/litellm/creds/dev";
    let whole = r#"ttl must be whole seconds up to 3153600000 (100 years) or a duration string such as "1h""#;

    vec![
        row(
            "creds ttl boolean",
            "POST",
            dev,
            r#"{"ttl": true}"#,
            400,
            "ttl must be whole seconds or a duration string, got a JSON boolean",
        ),
        row(
            "creds ttl array",
            "PUT",
            dev,
            r#"{"ttl": [60]}"#,
            400,
            "ttl must be whole seconds or a duration string, got a JSON array",
        ),
        row(
            "creds ttl negative",
            "POST",
            dev,
            r#"{"ttl": -60}"#,
            400,
            "ttl must not be negative, got -60",
        ),
        row(
            "creds ttl -0",
            "POST",
            dev,
            r#"{"ttl": -0}"#,
            400,
            "ttl must not be negative, got -0.0",
        ),
        row(
            "creds ttl negative text",
            "POST",
            dev,
            r#"{"ttl": "-1m"}"#,
            400,
            r#"ttl must not be negative, got "-1m""#,
        ),
        row(
            "creds ttl huge negative",
            "POST",
            dev,
            r#"{"ttl": -99999999999999999999}"#,
            400,
            "ttl must not be negative, got -1e+20",
        ),
        row(
            "creds ttl fraction",
            "POST",
            dev,
            r#"{"ttl": 1.5}"#,
            400,
            format!("{whole}, got 1.5"),
        ),
        row(
            "creds ttl huge",
            "POST",
            dev,
            r#"{"ttl": 99999999999999999999}"#,
            400,
            format!("{whole}, got 1e+20"),
        ),
        row(
            "creds ttl 1e400",
            "POST",
            dev,
            r#"{"ttl": 1e400}"#,
            400,
            "request body is not valid JSON: number out of range",
        ),
        row(
            "creds ttl 1e400 text",
            "POST",
            dev,
            r#"{"ttl": "1e400"}"#,
            400,
            r#"ttl is not a valid duration: "1e400""#,
        ),
        row(
            "creds ttl NaN text",
            "POST",
            dev,
            r#"{"ttl": "NaN"}"#,
            400,
            r#"ttl is not a valid duration: "NaN""#,
        ),
        row(
            "creds ttl huge hours",
            "POST",
            dev,
            r#"{"ttl": "99999999999999999999h"}"#,
            400,
            r#"ttl is too long: "99999999999999999999h""#,
        ),
        row(
            "creds body array",
            "POST",
            dev,
            "[]",
            400,
            "request body must be a JSON object, got array",
        ),
        row(
            "creds body trailing brace",
            "POST",
            dev,
            r#"{"ttl": "1h"}}"#,
            400,
            "request body is not valid JSON: trailing characters",
        ),
        row(
            "creds unknown role",
            "GET",
            "/v1/litellm/creds/nope",
            "",
            404,
            "role nope not found",
        ),
        row(
            "creds role ..",
            "GET",
            "/v1/litellm/creds/%2e%2e",
            "",
            400,
            r#"role name is invalid: "..""#,
        ),
        row(
            "creds role %2F to config",
            "POST",
            "/v1/litellm/creds/..%2Fconfig",
            "",
            400,
            r#"role name is invalid: "../config""#,
        ),
        row(
            "creds client ttl negative",
            "POST",
            dev,
            r#"{"ttl": -1}"#,
            400,
            "ttl must not be negative, got -1",
        )
        .by(Sender::Client),
        row(
            "creds client %2F escape",
            "GET",
            "/v1/litellm/creds/dev%2F..%2Fops",
            "",
            403,
            "permission denied",
        )
        .by(Sender::Client),
        row(
            "creds client other role",
            "GET",
            "/v1/litellm/creds/ops",
            "",
            403,
            "permission denied",
        )
        .by(Sender::Client),
        row(
            "creds DELETE",
            "DELETE",
            dev,
            "",
            405,
            "method DELETE is not supported on /v1/litellm/creds/dev",
        ),
        row(
            "creds list query",
            "GET",
            "/v1/litellm/creds/dev?list=true",
            "",
            405,
            "method LIST is not supported on /v1/litellm/creds/dev",
        ),
        row(
            "creds over 1 MiB",
            "POST",
            dev,
            oversized(r#"{"ttl": "1h"}"#),
            413,
            "request body exceeds 1048576 bytes",
        ),
    ]
}

fn lease_rows(targets: &Targets) -> Vec<Row> {
    let lease = targets.lease_id.as_str();
    let (head, hex) = lease
        .rsplit_once('/')
        .expect("lease id has a / before its id");
    let upper = format!("{head}/{}", hex.to_ascii_uppercase());
    assert_ne!(
        upper, lease,
        "the lease id has no hex letter to change case"
    );
    let unknown = format!("{head}/{}", "0".repeat(32));
    let escaped = format!("litellm%2Fcreds%2Fdev%2F%2e%2e%2F{hex}");
    let long_id = format!("litellm/creds/dev/{}", "a".repeat(10_000));
    let renew = "/v1/sys/leases/renew";
    let revoke = "/v1/sys/leases/revoke";
    let lookup = "/v1/sys/leases/lookup";
    let invalid = |id: &str| format!("lease_id is invalid: {id:?}");
    let with_increment =
        |increment: &str| format!(r#"{{"lease_id": "{lease}", "increment": {increment}}}"#);
    let whole = r#"increment must be whole seconds up to 3153600000 (100 years) or a duration string such as "1h""#;

    vec![
        row(
            "renew lease_id number",
            "PUT",
            renew,
            r#"{"lease_id": 5}"#,
            400,
            "lease_id must be a string, got a JSON number",
        ),
        row(
            "renew lease_id array",
            "PUT",
            renew,
            json!({"lease_id": [lease]}).to_string(),
            400,
            "lease_id must be a string, got a JSON array",
        ),
        row(
            "renew lease_id null",
            "PUT",
            renew,
            r#"{"lease_id": null}"#,
            400,
            "missing lease_id; send it in the body or append it to the path",
        ),
        row(
            "renew lease_id empty",
            "PUT",
            renew,
            r#"{"lease_id": ""}"#,
            400,
            invalid(""),
        ),
        row(
            "renew body empty",
            "PUT",
            renew,
            "",
            400,
            "request body is empty; send a JSON object",
        ),
        row(
            "renew increment boolean",
            "PUT",
            renew,
            with_increment("true"),
            400,
            "increment must be whole seconds or a duration string, got a JSON boolean",
        ),
        row(
            "renew increment negative",
            "PUT",
            renew,
            with_increment("-60"),
            400,
            "increment must not be negative, got -60",
        ),
        row(
            "renew increment -0",
            "POST",
            renew,
            with_increment("-0"),
            400,
            "increment must not be negative, got -0.0",
        ),
        row(
            "renew increment negative text",
            "PUT",
            renew,
            with_increment(r#""-1h""#),
            400,
            r#"increment must not be negative, got "-1h""#,
        ),
        row(
            "renew increment months",
            "PUT",
            renew,
            with_increment(r#""1mo""#),
            400,
            r#"increment is not a valid duration: "1mo""#,
        ),
        row(
            "renew increment fraction text",
            "PUT",
            renew,
            with_increment(r#""1.5s""#),
            400,
            r#"increment must be a whole number of seconds, got "1.5s""#,
        ),
        row(
            "renew increment 1e400",
            "PUT",
            renew,
            with_increment("1e400"),
            400,
            "request body is not valid JSON: number out of range",
        ),
        row(
            "renew increment u64 overflow",
            "PUT",
            renew,
            with_increment("18446744073709551616"),
            400,
            format!("{whole}, got 1.8446744073709552e+19"),
        ),
        row(
            "renew increment huge hours",
            "PUT",
            renew,
            with_increment(r#""99999999999h""#),
            400,
            r#"increment is too long: "99999999999h""#,
        ),
        row(
            "renew lease_id dot segment",
            "PUT",
            renew,
            json!({"lease_id": format!("litellm/creds/dev/../ops/{hex}")}).to_string(),
            400,
            invalid(&format!("litellm/creds/dev/../ops/{hex}")),
        ),
        row(
            "renew path %2F and %2e",
            "PUT",
            format!("{renew}/{escaped}"),
            "",
            400,
            invalid(&format!("litellm/creds/dev/../{hex}")),
        ),
        row(
            "renew uppercase id",
            "PUT",
            format!("{renew}/{upper}"),
            "",
            404,
            format!("lease {upper} not found"),
        ),
        row(
            "renew client increment negative",
            "PUT",
            renew,
            with_increment("-1"),
            400,
            "increment must not be negative, got -1",
        )
        .by(Sender::Client),
        row(
            "renew client unknown lease",
            "PUT",
            format!("{renew}/{unknown}"),
            "",
            404,
            format!("lease {unknown} not found"),
        )
        .by(Sender::Client),
        row(
            "renew GET",
            "GET",
            renew,
            "",
            405,
            "method GET is not supported on /v1/sys/leases/renew",
        ),
        row(
            "renew over 1 MiB",
            "PUT",
            renew,
            oversized(&json!({"lease_id": lease}).to_string()),
            413,
            "request body exceeds 1048576 bytes",
        ),
        row(
            "lookup path NUL",
            "PUT",
            format!("{lookup}/{lease}%00"),
            "",
            400,
            invalid(&format!("{lease}\0")),
        ),
        row(
            "lookup path RTL override",
            "PUT",
            format!("{lookup}/{head}/%E2%80%AE{}", &hex[1..]),
            "",
            400,
            invalid(&format!("{head}/\u{202e}{}", &hex[1..])),
        ),
        row(
            "lookup path double trailing slash",
            "PUT",
            format!("{lookup}/{lease}//"),
            "",
            400,
            invalid(&format!("{lease}/")),
        ),
        row(
            "lookup path double slash",
            "PUT",
            format!("{lookup}/litellm//creds/dev/{hex}"),
            "",
            400,
            invalid(&format!("litellm//creds/dev/{hex}")),
        ),
        row(
            "lookup lease_id 10000 bytes",
            "PUT",
            lookup,
            json!({"lease_id": long_id}).to_string(),
            400,
            format!(
                "lease_id is invalid: \"litellm/creds/dev/{}...\"",
                "a".repeat(182)
            ),
        ),
        row(
            "lookup other mount",
            "PUT",
            lookup,
            json!({"lease_id": format!("vault/creds/dev/{hex}")}).to_string(),
            400,
            "lease ids look like litellm/creds/<role>/<id>",
        ),
        row(
            "lookup lease_id object",
            "POST",
            lookup,
            r#"{"lease_id": {}}"#,
            400,
            "lease_id must be a string, got a JSON object",
        ),
        row(
            "lookup unknown lease",
            "PUT",
            lookup,
            json!({"lease_id": unknown}).to_string(),
            404,
            format!("lease {unknown} not found"),
        ),
        row(
            "lookup DELETE",
            "DELETE",
            format!("{lookup}/{lease}"),
            "",
            405,
            format!("method DELETE is not supported on {lookup}/{lease}"),
        ),
        row(
            "lookup list by client",
            "LIST",
            format!("{lookup}/litellm/creds/dev"),
            "",
            403,
            "permission denied",
        )
        .by(Sender::Client),
        row(
            "revoke lease_id number",
            "PUT",
            revoke,
            r#"{"lease_id": 7}"#,
            400,
            "lease_id must be a string, got a JSON number",
        ),
        row(
            "revoke lease_id dot segment",
            "PUT",
            revoke,
            json!({"lease_id": format!("litellm/creds/../creds/dev/{hex}")}).to_string(),
            400,
            invalid(&format!("litellm/creds/../creds/dev/{hex}")),
        ),
        row(
            "revoke body truncated",
            "PUT",
            revoke,
            format!(r#"{{"lease_id": "{lease}"#),
            400,
            "request body is not valid JSON: EOF while parsing",
        ),
        row(
            "revoke client trailing slash",
            "PUT",
            revoke,
            json!({"lease_id": format!("{lease}/")}).to_string(),
            400,
            invalid(&format!("{lease}/")),
        )
        .by(Sender::Client),
        row(
            "revoke-prefix empty",
            "PUT",
            "/v1/sys/leases/revoke-prefix/",
            "",
            400,
            "revoke-prefix needs a prefix",
        ),
        row(
            "revoke-prefix client",
            "PUT",
            "/v1/sys/leases/revoke-prefix/litellm/creds/dev",
            "",
            403,
            "permission denied",
        )
        .by(Sender::Client),
        row(
            "lease operation unknown",
            "PUT",
            "/v1/sys/leases/extend",
            json!({"lease_id": lease}).to_string(),
            404,
            "no handler for route /v1/sys/leases/extend",
        ),
    ]
}

fn token_rows() -> Vec<Row> {
    let create = "/v1/auth/token/create";
    let many_roles: Vec<String> = (0..1001).map(|index| format!("r{index}")).collect();
    let many_roles = json!({"roles": many_roles}).to_string();

    vec![
        row(
            "token roles string",
            "POST",
            create,
            r#"{"roles": "dev"}"#,
            400,
            "roles must be a list of strings, got a JSON string",
        ),
        row(
            "token roles number item",
            "POST",
            create,
            r#"{"roles": [1]}"#,
            400,
            "roles must be a list of strings, got a JSON number",
        ),
        row(
            "token roles empty",
            "POST",
            create,
            r#"{"roles": []}"#,
            400,
            "roles is missing or empty",
        ),
        row(
            "token roles missing",
            "POST",
            create,
            r#"{"display_name": "ci"}"#,
            400,
            "roles is missing or empty",
        ),
        row(
            "token policies number",
            "POST",
            "/v1/auth/token/create-orphan",
            r#"{"policies": 5}"#,
            400,
            "policies must be a list of strings, got a JSON number",
        ),
        row(
            "token role dot segment",
            "POST",
            create,
            r#"{"roles": ["../dev"]}"#,
            400,
            r#"role name is invalid: "../dev""#,
        ),
        row(
            "token role NUL",
            "POST",
            create,
            r#"{"roles": ["dev\u0000"]}"#,
            400,
            r#"role name is invalid: "dev\0""#,
        ),
        row(
            "token role emoji",
            "POST",
            create,
            r#"{"roles": ["\ud83d\udd11"]}"#,
            400,
            "role name is invalid: \"\u{1f511}\"",
        ),
        row(
            "token roles 1001 entries",
            "POST",
            create,
            many_roles,
            400,
            "roles has 1001 entries; the maximum is 1000",
        ),
        row(
            "token ttl negative",
            "POST",
            create,
            r#"{"roles": ["dev"], "ttl": -1}"#,
            400,
            "ttl must not be negative, got -1",
        ),
        row(
            "token ttl over engine max",
            "POST",
            create,
            r#"{"roles": ["dev"], "ttl": "769h"}"#,
            400,
            "ttl (769h0m0s) exceeds the engine's maximum TTL (768h0m0s)",
        ),
        row(
            "token ttl object",
            "POST",
            create,
            r#"{"roles": ["dev"], "ttl": {}}"#,
            400,
            "ttl must be whole seconds or a duration string, got a JSON object",
        ),
        row(
            "token display_name number",
            "POST",
            create,
            r#"{"roles": ["dev"], "display_name": 7}"#,
            400,
            "display_name must be a string, got a JSON number",
        ),
        row(
            "token display_name array",
            "PUT",
            create,
            r#"{"roles": ["dev"], "display_name": ["ci"]}"#,
            400,
            "display_name must be a string, got a JSON array",
        ),
        row(
            "token body empty",
            "POST",
            create,
            "",
            400,
            "request body is empty; send a JSON object",
        ),
        row(
            "token client create",
            "POST",
            create,
            r#"{"roles": ["ops"]}"#,
            403,
            "permission denied",
        )
        .by(Sender::Client),
        row(
            "token anonymous create",
            "POST",
            create,
            r#"{"roles": ["ops"]}"#,
            403,
            "permission denied",
        )
        .by(Sender::Anonymous),
        row(
            "token GET create",
            "GET",
            create,
            "",
            405,
            "method GET is not supported on /v1/auth/token/create",
        ),
        row(
            "token over 1 MiB",
            "POST",
            create,
            oversized(r#"{"roles": ["dev"]}"#),
            413,
            "request body exceeds 1048576 bytes",
        ),
        row(
            "token admin revoke-self",
            "POST",
            "/v1/auth/token/revoke-self",
            "",
            400,
            "the admin token comes from the host settings and cannot be revoked here",
        ),
        row(
            "token unknown operation",
            "POST",
            "/v1/auth/token/renew-self",
            "",
            404,
            "no handler for route /v1/auth/token/renew-self",
        ),
    ]
}

fn other_rows() -> Vec<Row> {
    vec![
        row(
            "tidy GET",
            "GET",
            "/v1/litellm/tidy",
            "",
            405,
            "method GET is not supported on /v1/litellm/tidy",
        ),
        row(
            "unknown mount path",
            "GET",
            "/v1/litellm/keys",
            "",
            404,
            "no handler for route /v1/litellm/keys",
        ),
        row(
            "path without /v1",
            "GET",
            "/litellm/config",
            "",
            404,
            "API paths start with /v1/",
        ),
        row(
            "health POST",
            "POST",
            "/v1/sys/health",
            "",
            405,
            "method POST is not supported on /v1/sys/health",
        )
        .by(Sender::Anonymous),
    ]
}

/// Every bad request gets its 4xx and a message naming the problem, and changes nothing:
/// no stored byte and no LiteLLM request.
#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_change_nothing() {
    let targets = setup().await;
    let mut rows = config_rows(&targets);
    rows.extend(role_field_rows());
    rows.extend(role_body_rows());
    rows.extend(role_name_rows());
    rows.extend(creds_rows());
    rows.extend(lease_rows(&targets));
    rows.extend(token_rows());
    rows.extend(other_rows());
    assert!(rows.len() >= 60, "only {} rows", rows.len());
    let mut labels: Vec<&str> = rows.iter().map(|row| row.label).collect();
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), rows.len(), "two rows share a label");

    let secrets = [
        ("the master key", MASTER_KEY),
        ("the admin token", ADMIN),
        ("the client token", targets.client_token.as_str()),
        ("the issued key", targets.key.as_str()),
    ];
    let host = &targets.fixture.host;
    let litellm = &targets.fixture.litellm;
    // Every row runs even after a failure, so one run lists all of them.
    let mut failures = Vec::new();
    for row in &rows {
        let label = row.label;
        assert!(
            (400..500).contains(&row.status),
            "{label}: the table expects a non-4xx"
        );
        let before = host.kv.snapshot();
        let requests_before = litellm.requests().len();

        let reply = send(&targets, row).await;
        let text = reply.text();

        if reply.status != row.status {
            failures.push(format!(
                "{label}: status {} instead of {}: {text}",
                reply.status, row.status
            ));
        }
        let errors = reply.errors();
        if !errors
            .first()
            .is_some_and(|error| error.contains(&row.expected))
        {
            failures.push(format!("{label}: {errors:?} lacks {:?}", row.expected));
        }
        for (name, secret) in secrets {
            if text.contains(secret) {
                failures.push(format!("{label}: the response contains {name}"));
            }
        }
        if reply.body.len() > MAX_ERROR_BODY_BYTES {
            failures.push(format!(
                "{label}: the error body has {} bytes",
                reply.body.len()
            ));
        }
        let after = host.kv.snapshot();
        if after != before {
            failures.push(format!(
                "{label}: stored keys changed: {:?}",
                changed_keys(&before, &after)
            ));
        }
        let requests_after = litellm.requests().len();
        if requests_after != requests_before {
            failures.push(format!(
                "{label}: LiteLLM received {} requests",
                requests_after - requests_before
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    println!(
        "bad input: {} requests, all 4xx, stored state unchanged",
        rows.len()
    );
}

/// A role write with only an unknown field is accepted, as Vault does: it warns, names the
/// field and leaves the stored role byte-identical.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_role_field_only_warns() {
    let targets = setup().await;
    let host = &targets.fixture.host;
    let before = host.kv.snapshot();
    let requests_before = targets.fixture.litellm.requests().len();

    let body = json!({"colour": "red"});
    let reply = host
        .http("POST", "/v1/litellm/roles/dev", Some(ADMIN), Some(&body))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let warnings: Vec<Value> = reply.json()["warnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        warnings.iter().any(|warning| warning
            .as_str()
            .is_some_and(|text| text.contains("[colour]"))),
        "warnings: {warnings:?}"
    );
    assert_eq!(reply.json()["data"]["models"], json!(["gpt-4o-mini"]));

    let after = host.kv.snapshot();
    assert!(
        after == before,
        "stored keys changed: {:?}",
        changed_keys(&before, &after)
    );
    assert_eq!(targets.fixture.litellm.requests().len(), requests_before);
}
