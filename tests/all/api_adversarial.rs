//! Adversarial requests against the HTTP API: path and header tricks, lease ids that point
//! elsewhere, hostile bodies, token edge cases and encryption at rest seen over HTTP.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use litellm_secrets_tests::fixture::{Fixture, MASTER_KEY};
use litellm_secrets_tests::host::TestHost;
use litellm_secrets_tests::http_api::ApiReply;
use litellm_secrets_tests::litellm_double::LiteLlmDouble;
use serde_json::{Value, json};

const ADMIN: &str = "adversarial-admin-token";
const SEALING_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const OTHER_SEALING_KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

/// Largest request body the API accepts, as the README documents (1 MiB).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A fixture with the admin token set and role `dev` written.
async fn api() -> Fixture {
    api_with(TestHost::new().with_admin_token(ADMIN)).await
}

async fn api_with(host: TestHost) -> Fixture {
    let fixture = Fixture::start_with(host).await;
    write_role(&fixture, "dev").await;
    fixture
}

async fn write_role(fixture: &Fixture, name: &str) {
    let role = json!({"models": ["gpt-4o-mini"], "ttl": "1h", "max_ttl": "24h"});
    let path = format!("/v1/litellm/roles/{name}");
    let reply = admin(fixture, "POST", &path, Some(&role)).await;
    assert_eq!(reply.status, 200, "writing role {name}: {}", reply.text());
}

async fn admin(fixture: &Fixture, method: &str, path: &str, body: Option<&Value>) -> ApiReply {
    fixture.host.http(method, path, Some(ADMIN), body).await
}

/// Creates a client token for `roles` and returns it.
async fn client_token(fixture: &Fixture, roles: &[&str]) -> String {
    let body = json!({"roles": roles, "ttl": "1h"});
    let reply = admin(fixture, "POST", "/v1/auth/token/create", Some(&body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["auth"]["client_token"]
        .as_str()
        .expect("client_token in the auth block")
        .to_owned()
}

/// Issues credentials for `role` with `token` and returns the lease id.
async fn issue(fixture: &Fixture, token: &str, role: &str) -> String {
    let path = format!("/v1/litellm/creds/{role}");
    let reply = fixture.host.http("GET", &path, Some(token), None).await;
    assert_eq!(reply.status, 200, "issuing for {role}: {}", reply.text());
    reply.json()["lease_id"]
        .as_str()
        .expect("lease_id in the envelope")
        .to_owned()
}

/// Sends a request with a raw body and the given headers.
async fn raw(
    fixture: &Fixture,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> ApiReply {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("http://engine.test{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body.into())).expect("valid request");
    fixture
        .host
        .send(request)
        .await
        .expect("the component served the request")
}

async fn lookup_status(fixture: &Fixture, lease_id: &str) -> u16 {
    let body = json!({"lease_id": lease_id});
    admin(fixture, "PUT", "/v1/sys/leases/lookup", Some(&body))
        .await
        .status
}

/// Revoke-prefix on a whole lease id revokes that lease, as in Vault.
#[tokio::test(flavor = "multi_thread")]
async fn revoke_prefix_exact_lease_id() {
    let fixture = api().await;
    let lease_id = issue(&fixture, ADMIN, "dev").await;

    let path = format!("/v1/sys/leases/revoke-prefix/{lease_id}");
    let reply = admin(&fixture, "PUT", &path, None).await;
    assert_eq!(reply.status, 204, "{}", reply.text());

    assert!(
        fixture.litellm.live_keys().is_empty(),
        "the key of {lease_id} is still live after revoke-prefix on its id"
    );
    assert_eq!(lookup_status(&fixture, &lease_id).await, 404);
}

/// A prefix that stops inside a role name matches no role, as in Vault: `litellm/creds/de`
/// touches neither `dev` nor `dev2`, and `litellm/creds/dev` leaves `dev2` alone.
#[tokio::test(flavor = "multi_thread")]
async fn revoke_prefix_partial_name_spares_sibling() {
    let fixture = api().await;
    write_role(&fixture, "dev2").await;
    let dev = issue(&fixture, ADMIN, "dev").await;
    let dev2 = issue(&fixture, ADMIN, "dev2").await;

    for prefix in ["litellm/creds/de", "litellm/cre", "other/creds/dev", "lite"] {
        let path = format!("/v1/sys/leases/revoke-prefix/{prefix}");
        let reply = admin(&fixture, "PUT", &path, None).await;
        assert_eq!(reply.status, 204, "{prefix}: {}", reply.text());
        assert_eq!(
            fixture.litellm.live_keys().len(),
            2,
            "{prefix} revoked a key"
        );
    }

    let reply = admin(
        &fixture,
        "LIST",
        "/v1/sys/leases/lookup/litellm/creds/de",
        None,
    )
    .await;
    assert_eq!((reply.status, reply.json()), (404, json!({"errors": []})));

    let reply = admin(&fixture, "PUT", "/v1/sys/leases/revoke-prefix/", None).await;
    assert_eq!(reply.status, 400, "an empty prefix: {}", reply.text());
    assert_eq!(fixture.litellm.live_keys().len(), 2);

    let reply = admin(
        &fixture,
        "PUT",
        "/v1/sys/leases/revoke-prefix/litellm/creds/dev/",
        None,
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert_eq!(lookup_status(&fixture, &dev).await, 404);
    assert_eq!(lookup_status(&fixture, &dev2).await, 200);

    let reply = admin(
        &fixture,
        "PUT",
        "/v1/sys/leases/revoke-prefix/litellm%2Fcreds%2Fdev2",
        None,
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(fixture.litellm.live_keys().is_empty());
}

/// Percent-encoding, dot segments, double slashes, trailing slashes and case in the mount
/// never widen what a client token reaches.
#[tokio::test(flavor = "multi_thread")]
async fn path_tricks_keep_client_scope() {
    let fixture = api().await;
    write_role(&fixture, "other").await;
    let token = client_token(&fixture, &["dev"]).await;

    let cases = [
        ("GET", "/v1/litellm/creds/%64ev", 200),
        ("GET", "/v1/litellm/creds/dev/", 200),
        ("GET", "/v1/litellm/creds/Dev", 403),
        ("GET", "/v1/litellm/creds/other", 403),
        ("GET", "/v1/litellm/creds/%6Fther", 403),
        ("GET", "/v1/litellm/creds/dev%2F..%2Fother", 403),
        ("GET", "/v1/litellm/creds/dev/../other", 404),
        ("GET", "/v1/litellm/creds/dev/../../config", 404),
        ("GET", "/v1/litellm/roles/..", 403),
        ("GET", "/v1/litellm/roles/dev", 403),
        ("GET", "/v1/litellm/config/", 403),
        ("GET", "/v1/litellm/%63onfig", 403),
        ("GET", "/v1//litellm/config", 404),
        ("GET", "/v1/LITELLM/config", 404),
        ("GET", "/v1/litellm/roles?list=true", 403),
        ("LIST", "/v1/litellm/roles/", 403),
        ("POST", "/v1/auth/token/create-orphan", 403),
        (
            "GET",
            "/v1/sys/leases/lookup/litellm/creds/dev?list=true",
            403,
        ),
        ("PUT", "/v1/sys/leases/revoke-prefix/litellm/creds/dev", 403),
    ];
    let mut issued = 0;
    for (method, path, expected) in cases {
        let body = json!({"roles": ["other"]});
        let reply = fixture
            .host
            .http(method, path, Some(&token), Some(&body))
            .await;
        assert_eq!(reply.status, expected, "{method} {path}: {}", reply.text());
        if expected == 200 {
            issued += 1;
            let lease_id = reply.json()["lease_id"].as_str().unwrap().to_owned();
            assert!(lease_id.starts_with("litellm/creds/dev/"), "{lease_id}");
        } else {
            assert!(
                !reply.text().contains(&fixture.litellm.url()),
                "{method} {path} returned the config"
            );
        }
    }
    assert_eq!(fixture.request_count("/key/generate"), issued);
    assert_eq!(fixture.stored("token/").len(), 1, "a token was created");
}

/// The lease id in the path decides which lease a request acts on, for the owner check as
/// for the operation. The body, the query string, a duplicated key or another encoding
/// cannot point the check at one lease and the operation at another.
#[tokio::test(flavor = "multi_thread")]
async fn lease_id_forms_keep_owner_check() {
    let fixture = api().await;
    let token = client_token(&fixture, &["dev"]).await;
    let other = client_token(&fixture, &["dev"]).await;
    let mine = issue(&fixture, &token, "dev").await;
    let theirs = issue(&fixture, &other, "dev").await;

    let reply = fixture
        .host
        .http(
            "PUT",
            &format!("/v1/sys/leases/revoke/{theirs}"),
            Some(&token),
            Some(&json!({"lease_id": mine})),
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text());

    let encoded = theirs.replace('/', "%2F");
    let reply = fixture
        .host
        .http(
            "PUT",
            &format!("/v1/sys/leases/revoke/{encoded}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(fixture.litellm.live_keys().len(), 2);

    let headers = [("x-vault-token", token.as_str())];
    let theirs_last = format!(r#"{{"lease_id":"{mine}","lease_id":"{theirs}"}}"#);
    let reply = raw(
        &fixture,
        "PUT",
        "/v1/sys/leases/renew",
        &headers,
        theirs_last,
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    let mine_last = format!(r#"{{"lease_id":"{theirs}","lease_id":"{mine}"}}"#);
    let reply = raw(&fixture, "PUT", "/v1/sys/leases/renew", &headers, mine_last).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["lease_id"], json!(mine));

    let path = format!("/v1/sys/leases/lookup/{mine}?lease_id={theirs}");
    let reply = fixture.host.http("PUT", &path, Some(&token), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["data"]["id"], json!(mine));

    // An id that differs only in case names no stored lease, so it revokes nothing.
    let (head, id) = theirs.rsplit_once('/').unwrap();
    let upper = format!("{head}/{}", id.to_ascii_uppercase());
    let reply = fixture
        .host
        .http(
            "PUT",
            "/v1/sys/leases/revoke",
            Some(&token),
            Some(&json!({"lease_id": upper})),
        )
        .await;
    assert_ne!(reply.status, 500, "{}", reply.text());
    assert_eq!(lookup_status(&fixture, &theirs).await, 200);

    let reply = fixture
        .host
        .http(
            "PUT",
            &format!("/v1/sys/leases/revoke/{mine}"),
            Some(&token),
            Some(&json!({"lease_id": theirs})),
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert_eq!(lookup_status(&fixture, &mine).await, 404);
    assert_eq!(lookup_status(&fixture, &theirs).await, 200);
    assert_eq!(fixture.litellm.live_keys().len(), 1);
}

/// `X-Vault-Token` takes precedence over `Authorization` whenever it is non-empty, only the
/// Bearer scheme counts, and the first of two `X-Vault-Token` headers is the one used.
#[tokio::test(flavor = "multi_thread")]
async fn token_header_precedence() {
    let fixture = api().await;
    let client = client_token(&fixture, &["dev"]).await;
    let bearer_admin = format!("Bearer {ADMIN}");
    let basic_admin = format!("Basic {ADMIN}");
    let lower_bearer_admin = format!("bearer {ADMIN}");

    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (
            vec![("x-vault-token", "wrong"), ("authorization", &bearer_admin)],
            403,
        ),
        (
            vec![("x-vault-token", ""), ("authorization", &bearer_admin)],
            200,
        ),
        (
            vec![("x-vault-token", &client), ("authorization", &bearer_admin)],
            403,
        ),
        (vec![("authorization", &basic_admin)], 403),
        (vec![("authorization", "Bearer")], 403),
        (vec![("authorization", "Bearer ")], 403),
        (vec![("authorization", ADMIN)], 403),
        (vec![("authorization", &lower_bearer_admin)], 200),
        (
            vec![("x-vault-token", "wrong"), ("x-vault-token", ADMIN)],
            403,
        ),
        (
            vec![("x-vault-token", ADMIN), ("x-vault-token", "wrong")],
            200,
        ),
    ];
    for (headers, expected) in cases {
        let reply = raw(&fixture, "GET", "/v1/litellm/config", &headers, "").await;
        assert_eq!(reply.status, expected, "{headers:?}: {}", reply.text());
        assert!(
            !reply.text().contains(ADMIN),
            "{headers:?} echoed the token"
        );
    }
}

/// A revoked client token loses its leases' management, the leases stay, and the admin
/// can still renew and revoke them.
#[tokio::test(flavor = "multi_thread")]
async fn revoked_token_leases_stay_manageable() {
    let fixture = api().await;
    let token = client_token(&fixture, &["dev"]).await;
    let lease_id = issue(&fixture, &token, "dev").await;

    let reply = fixture
        .host
        .http("POST", "/v1/auth/token/revoke-self", Some(&token), None)
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(fixture.stored("token/").is_empty());

    let body = json!({"lease_id": lease_id});
    for (method, path) in [
        ("PUT", "/v1/sys/leases/renew"),
        ("PUT", "/v1/sys/leases/revoke"),
        ("PUT", "/v1/sys/leases/lookup"),
        ("GET", "/v1/litellm/creds/dev"),
        ("POST", "/v1/auth/token/revoke-self"),
    ] {
        let reply = fixture
            .host
            .http(method, path, Some(&token), Some(&body))
            .await;
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text());
    }
    assert_eq!(fixture.litellm.live_keys().len(), 1);

    let reply = admin(&fixture, "PUT", "/v1/sys/leases/renew", Some(&body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = admin(&fixture, "PUT", "/v1/sys/leases/revoke", Some(&body)).await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(fixture.litellm.live_keys().is_empty());
}

/// LIST, and `GET ?list=true`, on paths that are not lists get 405 and start no work.
#[tokio::test(flavor = "multi_thread")]
async fn list_refused_on_non_list_paths() {
    let fixture = api().await;
    let lease_id = issue(&fixture, ADMIN, "dev").await;
    let generated = fixture.request_count("/key/generate");

    let renew_path = format!("/v1/sys/leases/renew/{lease_id}");
    let revoke_path = format!("/v1/sys/leases/revoke/{lease_id}");
    for (method, path) in [
        ("LIST", "/v1/litellm/config"),
        ("LIST", "/v1/litellm/tidy"),
        ("LIST", "/v1/litellm/roles/dev"),
        ("LIST", "/v1/litellm/creds/dev"),
        ("LIST", renew_path.as_str()),
        ("LIST", revoke_path.as_str()),
        ("LIST", "/v1/sys/leases/revoke-prefix/litellm"),
        ("LIST", "/v1/auth/token/create"),
        ("LIST", "/v1/auth/token/lookup-self"),
        ("LIST", "/v1/sys/health"),
        ("GET", "/v1/litellm/tidy?list=true"),
    ] {
        let reply = admin(&fixture, method, path, None).await;
        assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text());
    }
    assert_eq!(fixture.request_count("/key/generate"), generated);
    assert_eq!(lookup_status(&fixture, &lease_id).await, 200);
    assert!(fixture.stored("token/").is_empty());
}

/// `GET creds/<role>?list=true` is a LIST, which the creds path refuses with 405.
#[tokio::test(flavor = "multi_thread")]
async fn creds_list_query_mints_nothing() {
    let fixture = api().await;
    let reply = admin(&fixture, "GET", "/v1/litellm/creds/dev?list=true", None).await;
    assert_eq!(
        fixture.request_count("/key/generate"),
        0,
        "a key was minted"
    );
    assert_eq!(reply.status, 405, "{}", reply.text());
}

/// Malformed and hostile JSON is a 400 that names the problem, and never traps.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_json_bodies_are_400() {
    let fixture = api().await;
    let depth = 100_000;
    let deep = format!(
        r#"{{"metadata":{{"a":{}{}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("/v1/litellm/roles/x", deep, "not valid JSON"),
        (
            "/v1/litellm/roles/x",
            r#"{"tpm_limit": 1e400}"#.to_owned(),
            "not valid JSON",
        ),
        (
            "/v1/litellm/roles/x",
            r#"{"tpm_limit": 1.5}"#.to_owned(),
            "tpm_limit must be a non-negative integer",
        ),
        (
            "/v1/litellm/roles/x",
            r#"{"max_budget": "NaN"}"#.to_owned(),
            "max_budget",
        ),
        (
            "/v1/litellm/roles/x",
            r#"{"max_budget": "inf"}"#.to_owned(),
            "max_budget",
        ),
        (
            "/v1/litellm/roles/x",
            r#"{"models": ["\ud800"]}"#.to_owned(),
            "not valid JSON",
        ),
        (
            "/v1/litellm/roles/x",
            "\u{feff}{\"models\": [\"m\"]}".to_owned(),
            "not valid JSON",
        ),
        (
            "/v1/litellm/roles/x",
            r#"{"models": ["m"]} {"models": []}"#.to_owned(),
            "not valid JSON",
        ),
        (
            "/v1/litellm/creds/dev",
            r#"{"ttl": 18446744073709551615}"#.to_owned(),
            "ttl must be whole seconds",
        ),
        (
            "/v1/litellm/creds/dev",
            r#"{"ttl": "99999999999999999999h"}"#.to_owned(),
            "ttl",
        ),
        (
            "/v1/litellm/creds/dev",
            "null".to_owned(),
            "must be a JSON object",
        ),
        (
            "/v1/auth/token/create",
            r#"{"roles": ["dev"], "display_name": 7}"#.to_owned(),
            "display_name must be a string",
        ),
    ];
    for (path, body, expected) in cases {
        let body_start: String = body.chars().take(60).collect();
        let reply = raw(&fixture, "POST", path, &[("x-vault-token", ADMIN)], body).await;
        assert_eq!(reply.status, 400, "{path} {body_start}: {}", reply.text());
        let errors = reply.errors();
        assert!(
            errors.first().is_some_and(|error| error.contains(expected)),
            "{path} {body_start}: {errors:?} lacks {expected:?}"
        );
        let check = admin(&fixture, "GET", "/v1/litellm/roles/dev", None).await;
        assert_eq!(check.status, 200, "after {path} {body_start}");
    }
    assert_eq!(fixture.request_count("/key/generate"), 0);
    assert!(fixture.stored("role/x").is_empty());
    assert!(fixture.stored("token/").is_empty());
}

/// A body of exactly the limit is read whole. One byte more is a 413, whether or not the
/// request declares its length.
#[tokio::test(flavor = "multi_thread")]
async fn body_limit_boundary() {
    let fixture = api().await;
    let json = br#"{"models": ["m"]}"#;
    let mut at_limit = vec![b' '; MAX_BODY_BYTES - json.len()];
    at_limit.extend_from_slice(json);
    assert_eq!(at_limit.len(), MAX_BODY_BYTES);

    let headers = [("x-vault-token", ADMIN)];
    let reply = raw(
        &fixture,
        "POST",
        "/v1/litellm/roles/edge",
        &headers,
        at_limit.clone(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let mut over = at_limit.clone();
    over.insert(0, b' ');
    let length = over.len().to_string();
    let declared = [
        ("x-vault-token", ADMIN),
        ("content-length", length.as_str()),
    ];
    let reply = raw(
        &fixture,
        "POST",
        "/v1/litellm/roles/over",
        &declared,
        over.clone(),
    )
    .await;
    assert_eq!(reply.status, 413, "{}", reply.text());

    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = over
        .chunks(7919)
        .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
        .collect();
    let request = http::Request::builder()
        .method("POST")
        .uri("http://engine.test/v1/litellm/roles/over")
        .header("x-vault-token", ADMIN)
        .body(StreamBody::new(futures::stream::iter(chunks)))
        .unwrap();
    let reply = fixture.host.send(request).await.unwrap();
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(fixture.stored("role/over").is_empty());
}

/// The 404 and 400 errors for a bad path quote only its start.
#[tokio::test(flavor = "multi_thread")]
async fn long_path_not_echoed_whole() {
    let fixture = api().await;
    let filler = "a".repeat(60_000);
    for (path, status) in [
        (format!("/v1/litellm/{filler}"), 404),
        (format!("/v1/litellm/roles/%zz{filler}"), 400),
        (format!("/{filler}"), 404),
    ] {
        let reply = admin(&fixture, "GET", &path, None).await;
        assert_eq!(reply.status, status);
        assert!(
            reply.body.len() < 1024,
            "a {status} for a {}-byte path has a {}-byte body",
            path.len(),
            reply.body.len()
        );
    }
}

/// Token create without `ttl` gets the 24h default, lowered to the engine's `max_ttl`.
#[tokio::test(flavor = "multi_thread")]
async fn token_default_ttl_respects_max_ttl() {
    let fixture = Fixture::start_with(
        TestHost::new()
            .with_admin_token(ADMIN)
            .with_setting("max_ttl", "1h"),
    )
    .await;
    let body = json!({"roles": ["dev"]});
    let reply = admin(&fixture, "POST", "/v1/auth/token/create", Some(&body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["auth"]["lease_duration"], json!(3600));
}

/// Token TTLs up to the engine maximum are accepted and one second more is not. A long
/// role list is stored and scopes the token to exactly those roles.
#[tokio::test(flavor = "multi_thread")]
async fn token_create_limits() {
    let fixture = api().await;
    for (ttl, expected) in [("768h", 200), ("768h1s", 400), ("0", 200), ("1.5s", 400)] {
        let body = json!({"roles": ["dev"], "ttl": ttl});
        let reply = admin(&fixture, "POST", "/v1/auth/token/create", Some(&body)).await;
        assert_eq!(reply.status, expected, "ttl {ttl}: {}", reply.text());
    }

    let roles: Vec<String> = (0..200).map(|index| format!("r{index}")).collect();
    let body = json!({"roles": roles, "ttl": "1h"});
    let reply = admin(&fixture, "POST", "/v1/auth/token/create", Some(&body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let token = reply.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let reply = fixture
        .host
        .http("GET", "/v1/auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["data"]["policies"].as_array().map(Vec::len),
        Some(200)
    );
    assert!(!reply.text().contains(&token));
    let reply = fixture
        .host
        .http("GET", "/v1/litellm/creds/r199", Some(&token), None)
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    let reply = fixture
        .host
        .http("GET", "/v1/litellm/creds/dev", Some(&token), None)
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
}

/// Token create and creds POST warn about fields they ignore, such as `num_uses`.
#[tokio::test(flavor = "multi_thread")]
async fn ignored_fields_get_a_warning() {
    let fixture = api().await;
    let warnings = |reply: &ApiReply| reply.json()["warnings"].to_string();

    let body = json!({"roles": ["dev"], "ttl": "1h", "num_uses": 1});
    let reply = admin(&fixture, "POST", "/v1/auth/token/create", Some(&body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        warnings(&reply).contains("num_uses"),
        "token create warnings: {}",
        warnings(&reply)
    );

    let body = json!({"tll": "10m"});
    let reply = admin(&fixture, "POST", "/v1/litellm/creds/dev", Some(&body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        warnings(&reply).contains("tll"),
        "creds warnings: {}",
        warnings(&reply)
    );
}

/// `admin_token` is trimmed, so a value ending in a newline still matches.
#[tokio::test(flavor = "multi_thread")]
async fn admin_token_setting_is_trimmed() {
    let host = TestHost::new().with_admin_token(&format!("{ADMIN}\n"));
    let reply = host
        .http("LIST", "/v1/litellm/roles", Some(ADMIN), None)
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert_eq!(reply.json(), json!({"errors": []}));
}

/// `admin_token_sha256` admits the token whose SHA-256 digest it holds, and only that one.
#[tokio::test(flavor = "multi_thread")]
async fn admin_token_digest_setting_admits_its_token() {
    let digest = sha256_hex(ADMIN);
    let host = TestHost::new().with_setting("admin_token_sha256", &digest.to_uppercase());

    let reply = host
        .http("LIST", "/v1/litellm/roles", Some(ADMIN), None)
        .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert_eq!(reply.json(), json!({"errors": []}));

    let reply = host
        .http("LIST", "/v1/litellm/roles", Some(&digest), None)
        .await;
    assert_eq!(
        reply.status,
        403,
        "the digest itself is not a token: {}",
        reply.text()
    );
}

/// A malformed digest, or both admin settings at once, is a 500 that names the setting.
#[tokio::test(flavor = "multi_thread")]
async fn admin_token_digest_setting_rejects_bad_values() {
    let short = TestHost::new().with_setting("admin_token_sha256", "abc123");
    let reply = short
        .http("LIST", "/v1/litellm/roles", Some(ADMIN), None)
        .await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(
        reply.errors()[0].contains("admin_token_sha256 is invalid: it must be 64 hex digits"),
        "{}",
        reply.text()
    );

    let both = TestHost::new()
        .with_admin_token(ADMIN)
        .with_setting("admin_token_sha256", &sha256_hex(ADMIN));
    let reply = both
        .http("LIST", "/v1/litellm/roles", Some(ADMIN), None)
        .await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(
        reply.errors()[0].contains("admin_token and admin_token_sha256 are both set"),
        "{}",
        reply.text()
    );
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Setting `encryption_key` seals earlier URLs' master keys on the next config write.
#[tokio::test(flavor = "multi_thread")]
async fn enabling_encryption_seals_old_connections() {
    let fixture = api().await;
    let old_lease = issue(&fixture, ADMIN, "dev").await;
    let second = LiteLlmDouble::start(MASTER_KEY, fixture.host.clock.clone())
        .await
        .expect("starting a second LiteLLM double");
    let body = json!({"url": second.url(), "master_key": MASTER_KEY});
    let reply = admin(&fixture, "POST", "/v1/litellm/config", Some(&body)).await;
    assert_eq!(reply.status, 204, "{}", reply.text());

    let sealed = fixture
        .host
        .replica()
        .with_setting("encryption_key", SEALING_KEY);
    let body = json!({"master_key": MASTER_KEY});
    let reply = sealed
        .http("POST", "/v1/litellm/config", Some(ADMIN), Some(&body))
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());

    let plaintext: Vec<String> = fixture
        .host
        .kv
        .snapshot()
        .into_iter()
        .filter(|(_, value)| String::from_utf8_lossy(value).contains(MASTER_KEY))
        .map(|(key, _)| key)
        .collect();
    assert!(
        plaintext.is_empty(),
        "records holding the master key in plaintext: {plaintext:?}"
    );

    let reply = sealed
        .http(
            "PUT",
            "/v1/sys/leases/revoke",
            Some(ADMIN),
            Some(&json!({"lease_id": old_lease})),
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(fixture.litellm.live_keys().is_empty());
}

/// Over HTTP, a sealed master key needs the key it was written with (500 without it, on
/// creds and on config reads),
/// rewriting the config with the master key moves it to a new key, and a tampered
/// ciphertext is a 500. No error shows the master key and no LiteLLM call is made with a
/// key that did not open.
#[tokio::test(flavor = "multi_thread")]
async fn sealed_key_rotation_over_http() {
    let fixture = api_with(
        TestHost::new()
            .with_admin_token(ADMIN)
            .with_setting("encryption_key", SEALING_KEY),
    )
    .await;
    let rotated = fixture
        .host
        .replica()
        .with_setting("encryption_key", OTHER_SEALING_KEY);
    let unsealed = fixture.host.replica().with_setting("encryption_key", "");

    for (host, expected) in [
        (&rotated, "was sealed with another key"),
        (&unsealed, "no encryption_key is set"),
    ] {
        let reply = host
            .http("GET", "/v1/litellm/creds/dev", Some(ADMIN), None)
            .await;
        assert_eq!(reply.status, 500, "{}", reply.text());
        assert!(reply.errors()[0].contains(expected), "{:?}", reply.errors());
        assert!(!reply.text().contains(MASTER_KEY));
        // Reading the config opens the master key too, so the operator sees the cause.
        let config = host
            .http("GET", "/v1/litellm/config", Some(ADMIN), None)
            .await;
        assert_eq!(config.status, 500, "{}", config.text());
        assert!(
            config.errors()[0].contains(expected),
            "{:?}",
            config.errors()
        );
        assert!(!config.text().contains(MASTER_KEY));
    }
    assert_eq!(fixture.request_count("/key/generate"), 0);

    let reply = rotated
        .http(
            "PUT",
            "/v1/litellm/config",
            Some(ADMIN),
            Some(&json!({"url": fixture.litellm.url()})),
        )
        .await;
    assert_eq!(reply.status, 500, "a URL-only write needs the old key");
    let reply = rotated
        .http(
            "PUT",
            "/v1/litellm/config",
            Some(ADMIN),
            Some(&json!({"master_key": MASTER_KEY})),
        )
        .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    let reply = rotated
        .http("GET", "/v1/litellm/creds/dev", Some(ADMIN), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = fixture
        .host
        .http("GET", "/v1/litellm/creds/dev", Some(ADMIN), None)
        .await;
    assert_eq!(reply.status, 500, "the old key still opens the record");

    let key = fixture.stored("connection/").pop().unwrap();
    let mut record = fixture.host.kv.get_json(&key).unwrap();
    let ciphertext = record["sealed_master_key"]["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();
    let flipped = if ciphertext.starts_with('0') {
        "1"
    } else {
        "0"
    };
    record["sealed_master_key"]["ciphertext"] = json!(format!("{flipped}{}", &ciphertext[1..]));
    fixture.host.kv.put_text(&key, &record.to_string());
    let generated = fixture.request_count("/key/generate");
    let reply = rotated
        .http("GET", "/v1/litellm/creds/dev", Some(ADMIN), None)
        .await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(!reply.text().contains(MASTER_KEY));
    assert_eq!(fixture.request_count("/key/generate"), generated);
}

/// A store failure while a token is checked reaches an unidentified caller as a generic
/// 500, with the store's details in the log only.
#[tokio::test(flavor = "multi_thread")]
async fn token_lookup_failure_hides_store_details() {
    use litellm_secrets_tests::keyvalue::{Effect, Op};

    let host = TestHost::new().with_admin_token(ADMIN);
    host.kv.inject(
        Op::Read,
        "token/",
        Effect::Fail("Redis: connection refused".into()),
        1,
    );
    let reply = host
        .http(
            "LIST",
            "/v1/litellm/roles",
            Some("lse.not-a-real-token"),
            None,
        )
        .await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(
        reply.errors(),
        ["the engine's storage failed while checking the token; retry later"]
    );
    assert!(host.logs().contains("looking up a client token failed"));
    assert!(host.logs().contains("connection refused"));
}
