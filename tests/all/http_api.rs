//! The Vault-compatible HTTP API: routes, methods, status codes, envelopes and auth, with
//! requests into the component's `wasi:http/incoming-handler`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use litellm_secrets_tests::fixture::{Fixture, MASTER_KEY};
use litellm_secrets_tests::host::TestHost;
use litellm_secrets_tests::http_api::ApiReply;
use litellm_secrets_tests::litellm_double::Reply;
use serde_json::{Value, json};

const ADMIN: &str = "test-root-token";

/// A fixture with the admin token set and role `dev` written.
async fn api() -> Fixture {
    let fixture = Fixture::start_with(TestHost::new().with_admin_token(ADMIN)).await;
    let role = json!({"models": ["gpt-4o-mini"], "ttl": "1h", "max_ttl": "24h"});
    let reply = admin(&fixture, "POST", "/v1/litellm/roles/dev", Some(&role)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    fixture
}

async fn admin(fixture: &Fixture, method: &str, path: &str, body: Option<&Value>) -> ApiReply {
    fixture.host.http(method, path, Some(ADMIN), body).await
}

/// Creates a client token for `roles` and returns it.
async fn client_token(fixture: &Fixture, roles: &[&str]) -> String {
    let reply = admin(
        fixture,
        "POST",
        "/v1/auth/token/create",
        Some(&json!({"roles": roles, "ttl": "1h"})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn issue(fixture: &Fixture, token: &str) -> Value {
    let reply = fixture
        .host
        .http("GET", "/v1/litellm/creds/dev", Some(token), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Health reads storage: a store that fails makes the engine report 503, so that a load
/// balancer stops sending it requests it could only fail.
#[tokio::test(flavor = "multi_thread")]
async fn health_reports_unreachable_storage() {
    use litellm_secrets_tests::keyvalue::{Effect, Op};

    let host = TestHost::new();
    host.kv.inject(
        Op::Read,
        "config",
        Effect::Fail("connection refused".into()),
        1,
    );
    let reply = host.http("GET", "/v1/sys/health", None, None).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.json()["sealed"], json!(true));

    let reply = host.http("GET", "/v1/sys/health", None, None).await;
    assert_eq!(reply.status, 200, "healthy again once storage answers");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_needs_no_token() {
    let host = TestHost::new();
    for method in ["GET", "HEAD"] {
        let reply = host.http(method, "/v1/sys/health", None, None).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let reply = host.http("GET", "/v1/sys/health", None, None).await;
    assert_eq!(reply.json()["sealed"], json!(false));
    assert_eq!(reply.json()["initialized"], json!(true));
    assert_eq!(
        host.http("POST", "/v1/sys/health", None, None).await.status,
        405
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_admin_token_refuses_everything() {
    let fixture = Fixture::start().await;
    for (method, path) in [
        ("GET", "/v1/litellm/config"),
        ("LIST", "/v1/litellm/roles"),
        ("GET", "/v1/litellm/creds/dev"),
        ("PUT", "/v1/sys/leases/renew"),
        ("POST", "/v1/auth/token/create"),
    ] {
        let reply = fixture
            .host
            .http(method, path, Some("anything"), None)
            .await;
        assert_eq!(reply.status, 403, "{method} {path}");
        assert!(
            reply.errors()[0].contains("no admin_token or admin_token_sha256 configured"),
            "{:?}",
            reply.errors()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_missing_token_is_403_everywhere() {
    let fixture = api().await;
    let paths = [
        ("GET", "/v1/litellm/config"),
        ("POST", "/v1/litellm/config"),
        ("DELETE", "/v1/litellm/config"),
        ("LIST", "/v1/litellm/roles"),
        ("GET", "/v1/litellm/roles/dev"),
        ("POST", "/v1/litellm/roles/dev"),
        ("DELETE", "/v1/litellm/roles/dev"),
        ("GET", "/v1/litellm/creds/dev"),
        ("POST", "/v1/litellm/creds/dev"),
        ("POST", "/v1/litellm/tidy"),
        ("PUT", "/v1/sys/leases/renew"),
        ("PUT", "/v1/sys/leases/revoke"),
        ("PUT", "/v1/sys/leases/lookup"),
        ("LIST", "/v1/sys/leases/lookup/litellm/creds/"),
        ("PUT", "/v1/sys/leases/revoke-prefix/litellm/creds/dev"),
        ("POST", "/v1/auth/token/create"),
        ("GET", "/v1/auth/token/lookup-self"),
        ("POST", "/v1/auth/token/revoke-self"),
        ("GET", "/v1/nothing/here"),
    ];
    for (method, path) in paths {
        for token in [
            None,
            Some("wrong-token"),
            Some("test-root-token "),
            Some("lse.0000"),
        ] {
            let reply = fixture
                .host
                .http(method, path, token, Some(&json!({})))
                .await;
            assert_eq!(
                reply.status,
                403,
                "{method} {path} with {token:?}: {}",
                reply.text()
            );
            assert_eq!(reply.errors(), ["permission denied"]);
        }
    }
    assert_eq!(fixture.request_count("/key/generate"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_header_is_accepted() {
    let fixture = api().await;
    let request = http::Request::builder()
        .method("GET")
        .uri("http://engine.test/v1/litellm/roles/dev")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = fixture.host.send(request).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn config_routes() {
    let fixture = api().await;
    let reply = admin(&fixture, "GET", "/v1/litellm/config", None).await;
    assert_eq!(reply.status, 200);
    let data = &reply.json()["data"];
    assert_eq!(data["url"], json!(fixture.litellm.url()));
    assert_eq!(data["master_key_set"], json!(true));
    assert!(data["updated_at"].as_str().unwrap().ends_with('Z'));
    assert!(!reply.text().contains(MASTER_KEY));

    let rotate = json!({"master_key": MASTER_KEY, "extra": 1});
    let reply = admin(&fixture, "POST", "/v1/litellm/config", Some(&rotate)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.json()["warnings"][0]
            .as_str()
            .unwrap()
            .contains("[extra]")
    );
    let reply = admin(
        &fixture,
        "PUT",
        "/v1/litellm/config",
        Some(&json!({"master_key": MASTER_KEY})),
    )
    .await;
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_empty());

    let reply = admin(
        &fixture,
        "POST",
        "/v1/litellm/config",
        Some(&json!({"master_key": "sk-wrong"})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert!(reply.errors()[0].contains("rejected the master key"));
    assert!(!reply.text().contains("sk-wrong"));

    assert_eq!(
        admin(&fixture, "PATCH", "/v1/litellm/config", None)
            .await
            .status,
        405
    );
    assert_eq!(
        admin(&fixture, "DELETE", "/v1/litellm/config", None)
            .await
            .status,
        204
    );
    assert_eq!(
        admin(&fixture, "GET", "/v1/litellm/config", None)
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn role_routes_and_types() {
    let fixture = api().await;
    let body = json!({
        "models": ["gpt-4o-mini", "gpt-4o"],
        "max_budget": "2.5",
        "budget_duration": "30d",
        "tpm_limit": "1000",
        "rpm_limit": 60,
        "max_parallel_requests": 2,
        "key_alias_prefix": "team-a",
        "metadata": {"team": "a", "cost_center": 1234},
        "ttl": 600,
        "max_ttl": "2h",
    });
    let reply = admin(&fixture, "PUT", "/v1/litellm/roles/ops", Some(&body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = admin(&fixture, "GET", "/v1/litellm/roles/ops", None).await;
    let data = &reply.json()["data"];
    assert_eq!(data["models"], json!(["gpt-4o-mini", "gpt-4o"]));
    assert_eq!(data["max_budget"], json!(2.5));
    assert_eq!(data["tpm_limit"], json!(1000));
    assert_eq!(data["rpm_limit"], json!(60));
    assert_eq!(data["metadata"], json!({"team": "a", "cost_center": 1234}));
    assert_eq!(
        (data["ttl"].clone(), data["max_ttl"].clone()),
        (json!(600), json!(7200))
    );

    let open = admin(
        &fixture,
        "POST",
        "/v1/litellm/roles/open",
        Some(&json!({"models": []})),
    )
    .await;
    assert_eq!(open.status, 200);
    assert!(
        open.json()["warnings"][0]
            .as_str()
            .unwrap()
            .contains("every model")
    );

    for (body, expected) in [
        (
            json!({"tpm_limit": -1}),
            "tpm_limit must be a non-negative integer, got -1",
        ),
        (json!({"ttl": -5}), "ttl must not be negative"),
        (
            json!({"ttl": true}),
            "ttl must be whole seconds or a duration string",
        ),
        (json!({"max_budget": "five"}), "max_budget must be a number"),
        (
            json!({"models": "gpt-4o-mini"}),
            "models must be a list of strings, got a JSON string",
        ),
        (
            json!({"models": [1]}),
            "models must be a list of strings, got a JSON number",
        ),
        (
            json!({"metadata": "team=a"}),
            "metadata must be a JSON object, got a JSON string",
        ),
        (
            json!({"metadata": ["a"]}),
            "metadata must be a JSON object, got a JSON array",
        ),
    ] {
        let reply = admin(&fixture, "POST", "/v1/litellm/roles/bad", Some(&body)).await;
        assert_eq!(reply.status, 400, "{body}");
        assert!(
            reply.errors()[0].contains(expected),
            "{:?} lacks {expected}",
            reply.errors()
        );
    }
    assert_eq!(
        admin(&fixture, "GET", "/v1/litellm/roles/bad", None)
            .await
            .status,
        404
    );
    assert_eq!(
        admin(
            &fixture,
            "POST",
            "/v1/litellm/roles/a%2Fb",
            Some(&json!({}))
        )
        .await
        .status,
        400
    );
    assert_eq!(
        admin(&fixture, "POST", "/v1/litellm/roles/a/b", Some(&json!({})))
            .await
            .status,
        404
    );
    assert_eq!(
        admin(&fixture, "PATCH", "/v1/litellm/roles/dev", None)
            .await
            .status,
        405
    );
    assert_eq!(
        admin(&fixture, "POST", "/v1/litellm/roles", Some(&json!({})))
            .await
            .status,
        405
    );
    assert_eq!(
        admin(&fixture, "DELETE", "/v1/litellm/roles/ops", None)
            .await
            .status,
        204
    );
    assert_eq!(
        admin(&fixture, "GET", "/v1/litellm/roles/ops", None)
            .await
            .status,
        404
    );
}

/// C19: LIST on empty storage.
#[tokio::test(flavor = "multi_thread")]
async fn c19_list_empty_is_vault_404() {
    let fixture = Fixture::start_with(TestHost::new().with_admin_token(ADMIN)).await;
    let empty = |reply: &ApiReply| reply.status == 404 && reply.json() == json!({"errors": []});
    for (method, path) in [
        ("LIST", "/v1/litellm/roles"),
        ("GET", "/v1/litellm/roles?list=true"),
        ("LIST", "/v1/litellm/roles/"),
    ] {
        let reply = admin(&fixture, method, path, None).await;
        assert!(
            empty(&reply),
            "fresh {method} {path}: {} {}",
            reply.status,
            reply.text()
        );
    }
    admin(
        &fixture,
        "POST",
        "/v1/litellm/roles/x",
        Some(&json!({"models": ["m"]})),
    )
    .await;
    admin(&fixture, "DELETE", "/v1/litellm/roles/x", None).await;
    for (method, path) in [
        ("LIST", "/v1/litellm/roles"),
        ("GET", "/v1/litellm/roles?list=true"),
        ("LIST", "/v1/litellm/roles/"),
    ] {
        assert!(
            empty(&admin(&fixture, method, path, None).await),
            "after delete {method} {path}"
        );
    }

    for name in ["b", "a"] {
        admin(
            &fixture,
            "POST",
            &format!("/v1/litellm/roles/{name}"),
            Some(&json!({"models": ["m"]})),
        )
        .await;
    }
    assert_eq!(
        admin(&fixture, "GET", "/v1/litellm/creds/a", None)
            .await
            .status,
        200
    );
    for (method, path) in [
        ("LIST", "/v1/litellm/roles"),
        ("GET", "/v1/litellm/roles?list=True"),
    ] {
        let reply = admin(&fixture, method, path, None).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["data"]["keys"], json!(["a", "b"]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn creds_get_and_post_with_ttl() {
    let fixture = api().await;
    let body = issue(&fixture, ADMIN).await;
    assert!(
        body["lease_id"]
            .as_str()
            .unwrap()
            .starts_with("litellm/creds/dev/")
    );
    assert_eq!(body["renewable"], json!(true));
    assert_eq!(body["lease_duration"], json!(3600));
    assert!(body["data"]["key"].as_str().unwrap().starts_with("sk-"));
    for field in ["request_id", "wrap_info", "warnings", "auth", "data"] {
        assert!(body.get(field).is_some(), "envelope lacks {field}");
    }

    let reply = admin(
        &fixture,
        "POST",
        "/v1/litellm/creds/dev",
        Some(&json!({"ttl": "10m"})),
    )
    .await;
    assert_eq!(reply.json()["lease_duration"], json!(600));
    let reply = admin(
        &fixture,
        "POST",
        "/v1/litellm/creds/dev",
        Some(&json!({"ttl": 172800})),
    )
    .await;
    assert_eq!(reply.json()["lease_duration"], json!(86400));
    assert!(
        reply.json()["warnings"][0]
            .as_str()
            .unwrap()
            .contains("capped")
    );
    assert_eq!(
        admin(
            &fixture,
            "POST",
            "/v1/litellm/creds/dev",
            Some(&json!({"ttl": "-1"}))
        )
        .await
        .status,
        400
    );
    assert_eq!(
        admin(&fixture, "GET", "/v1/litellm/creds/missing", None)
            .await
            .status,
        404
    );
    assert_eq!(
        admin(&fixture, "DELETE", "/v1/litellm/creds/dev", None)
            .await
            .status,
        405
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn litellm_failures_map_to_502_and_504() {
    let fixture = Fixture::start_with(
        TestHost::new()
            .with_admin_token(ADMIN)
            .with_setting("litellm_timeout", "1s"),
    )
    .await;
    admin(
        &fixture,
        "POST",
        "/v1/litellm/roles/dev",
        Some(&json!({"models": ["m"]})),
    )
    .await;

    fixture.litellm.script(
        "/key/generate",
        Reply::Json {
            status: 500,
            body: json!({"error": {"message": "no database"}}),
        },
    );
    let reply = admin(&fixture, "GET", "/v1/litellm/creds/dev", None).await;
    assert_eq!(reply.status, 502);
    assert!(reply.errors()[0].contains("no database"));

    fixture.litellm.script(
        "/key/generate",
        Reply::Delayed {
            delay: std::time::Duration::from_secs(3),
            reply: Box::new(Reply::Normal),
        },
    );
    let reply = admin(&fixture, "GET", "/v1/litellm/creds/dev", None).await;
    assert_eq!(reply.status, 504, "{}", reply.text());
}

/// C22: renew and revoke request forms that Vault clients send.
#[tokio::test(flavor = "multi_thread")]
async fn c22_renew_and_revoke_forms() {
    let fixture = api().await;
    let lease_id = issue(&fixture, ADMIN).await["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let ok_forms = [
        (
            "PUT",
            "/v1/sys/leases/renew".to_owned(),
            json!({"lease_id": lease_id, "increment": 0}),
        ),
        (
            "POST",
            "/v1/sys/leases/renew".to_owned(),
            json!({"lease_id": lease_id, "increment": 0}),
        ),
        (
            "PUT",
            format!("/v1/sys/leases/renew/{lease_id}"),
            json!({"increment": "5m"}),
        ),
        (
            "PUT",
            "/v1/sys/leases/renew".to_owned(),
            json!({"lease_id": lease_id}),
        ),
    ];
    for (method, path, body) in ok_forms {
        let reply = admin(&fixture, method, &path, Some(&body)).await;
        assert_eq!(
            reply.status,
            200,
            "{method} {path} {body}: {}",
            reply.text()
        );
        let json = reply.json();
        assert_eq!(json["lease_id"], json!(lease_id));
        assert_eq!(json["renewable"], json!(true));
        assert!(json["lease_duration"].as_u64().unwrap() > 0);
    }
    let five_minutes = admin(
        &fixture,
        "PUT",
        &format!("/v1/sys/leases/renew/{lease_id}"),
        Some(&json!({"increment": "5m"})),
    )
    .await;
    assert_eq!(five_minutes.json()["lease_duration"], json!(300));

    let bad_forms = [
        (
            json!({"lease_id": lease_id, "increment": -1}),
            "increment must not be negative",
        ),
        (json!({}), "missing lease_id"),
        (json!({"lease_id": 123}), "lease_id must be a string"),
    ];
    for (body, expected) in bad_forms {
        let reply = admin(&fixture, "PUT", "/v1/sys/leases/renew", Some(&body)).await;
        assert_eq!(reply.status, 400, "{body}");
        assert!(reply.errors()[0].contains(expected), "{:?}", reply.errors());
    }
    let invalid_utf8 = http::Request::builder()
        .method("PUT")
        .uri("http://engine.test/v1/sys/leases/renew")
        .header("x-vault-token", ADMIN)
        .body(Full::new(Bytes::from_static(
            b"{\"lease_id\":\"\xff\xfe\"}",
        )))
        .unwrap();
    let reply = fixture.host.send(invalid_utf8).await.unwrap();
    assert_eq!(reply.status, 400);
    assert!(reply.errors()[0].contains("not valid UTF-8"));

    let reply = admin(
        &fixture,
        "PUT",
        &format!("/v1/sys/leases/revoke/{lease_id}"),
        None,
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(fixture.litellm.live_keys().is_empty());
    assert_eq!(
        admin(
            &fixture,
            "PUT",
            "/v1/sys/leases/revoke",
            Some(&json!({"lease_id": lease_id}))
        )
        .await
        .status,
        204
    );
    assert_eq!(
        admin(&fixture, "GET", "/v1/sys/leases/revoke", None)
            .await
            .status,
        405
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_lookup_list_and_revoke_prefix() {
    let fixture = api().await;
    admin(
        &fixture,
        "POST",
        "/v1/litellm/roles/ops",
        Some(&json!({"models": ["m"]})),
    )
    .await;
    let first = issue(&fixture, ADMIN).await["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    issue(&fixture, ADMIN).await;
    admin(&fixture, "GET", "/v1/litellm/creds/ops", None).await;

    let reply = admin(
        &fixture,
        "PUT",
        "/v1/sys/leases/lookup",
        Some(&json!({"lease_id": first})),
    )
    .await;
    assert_eq!(reply.status, 200);
    let data = &reply.json()["data"];
    assert_eq!(data["id"], json!(first));
    assert_eq!(data["ttl"], json!(3600));
    assert!(data["expire_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(data["last_renewal"], json!(null));

    let reply = admin(
        &fixture,
        "LIST",
        "/v1/sys/leases/lookup/litellm/creds/",
        None,
    )
    .await;
    assert_eq!(reply.json()["data"]["keys"], json!(["dev/", "ops/"]));
    let reply = admin(
        &fixture,
        "GET",
        "/v1/sys/leases/lookup/litellm/creds/dev?list=true",
        None,
    )
    .await;
    assert_eq!(reply.json()["data"]["keys"].as_array().unwrap().len(), 2);
    let reply = admin(
        &fixture,
        "LIST",
        "/v1/sys/leases/lookup/litellm/creds/none/",
        None,
    )
    .await;
    assert_eq!((reply.status, reply.json()), (404, json!({"errors": []})));

    let reply = admin(
        &fixture,
        "PUT",
        "/v1/sys/leases/revoke-prefix/litellm/creds/dev",
        None,
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert_eq!(fixture.litellm.live_keys().len(), 1);
    let reply = admin(
        &fixture,
        "LIST",
        "/v1/sys/leases/lookup/litellm/creds/",
        None,
    )
    .await;
    assert_eq!(reply.json()["data"]["keys"], json!(["ops/"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn tidy_route() {
    let fixture = api().await;
    admin(
        &fixture,
        "POST",
        "/v1/litellm/creds/dev",
        Some(&json!({"ttl": "60s"})),
    )
    .await;
    fixture.host.clock.advance(61);
    let reply = admin(&fixture, "POST", "/v1/litellm/tidy", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["data"]["revoked_leases"], json!(1));
    assert_eq!(reply.json()["data"]["complete"], json!(true));
    assert_eq!(
        admin(&fixture, "GET", "/v1/litellm/tidy", None)
            .await
            .status,
        405
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_token_is_scoped() {
    let fixture = api().await;
    admin(
        &fixture,
        "POST",
        "/v1/litellm/roles/other",
        Some(&json!({"models": ["m"]})),
    )
    .await;
    let token = client_token(&fixture, &["dev"]).await;
    let other_token = client_token(&fixture, &["dev"]).await;
    let mine = issue(&fixture, &token).await["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = issue(&fixture, &other_token).await["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let admins = issue(&fixture, ADMIN).await["lease_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let forbidden = [
        ("GET", "/v1/litellm/config".to_owned(), None),
        (
            "POST",
            "/v1/litellm/config".to_owned(),
            Some(json!({"master_key": "x"})),
        ),
        ("DELETE", "/v1/litellm/config".to_owned(), None),
        ("LIST", "/v1/litellm/roles".to_owned(), None),
        ("GET", "/v1/litellm/roles/dev".to_owned(), None),
        (
            "POST",
            "/v1/litellm/roles/dev".to_owned(),
            Some(json!({"models": []})),
        ),
        ("DELETE", "/v1/litellm/roles/dev".to_owned(), None),
        ("GET", "/v1/litellm/creds/other".to_owned(), None),
        ("POST", "/v1/litellm/tidy".to_owned(), None),
        (
            "POST",
            "/v1/auth/token/create".to_owned(),
            Some(json!({"roles": ["other"]})),
        ),
        (
            "PUT",
            "/v1/sys/leases/renew".to_owned(),
            Some(json!({"lease_id": theirs})),
        ),
        (
            "PUT",
            "/v1/sys/leases/revoke".to_owned(),
            Some(json!({"lease_id": admins})),
        ),
        (
            "PUT",
            "/v1/sys/leases/lookup".to_owned(),
            Some(json!({"lease_id": theirs})),
        ),
        (
            "LIST",
            "/v1/sys/leases/lookup/litellm/creds/".to_owned(),
            None,
        ),
        (
            "PUT",
            "/v1/sys/leases/revoke-prefix/litellm/creds/dev".to_owned(),
            None,
        ),
    ];
    for (method, path, body) in &forbidden {
        let reply = fixture
            .host
            .http(method, path, Some(&token), body.as_ref())
            .await;
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text());
    }
    assert_eq!(fixture.litellm.live_keys().len(), 3);
    assert_eq!(
        admin(&fixture, "GET", "/v1/litellm/roles/dev", None)
            .await
            .json()["data"]["models"],
        json!(["gpt-4o-mini"])
    );

    let renew = fixture
        .host
        .http(
            "PUT",
            "/v1/sys/leases/renew",
            Some(&token),
            Some(&json!({"lease_id": mine})),
        )
        .await;
    assert_eq!(renew.status, 200, "{}", renew.text());
    let lookup = fixture
        .host
        .http(
            "PUT",
            "/v1/sys/leases/lookup",
            Some(&token),
            Some(&json!({"lease_id": mine})),
        )
        .await;
    assert_eq!(lookup.status, 200);
    let revoke = fixture
        .host
        .http(
            "PUT",
            &format!("/v1/sys/leases/revoke/{mine}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(revoke.status, 204);
    assert_eq!(fixture.litellm.live_keys().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_lifecycle() {
    let fixture = api().await;
    let reply = admin(
        &fixture,
        "POST",
        "/v1/auth/token/create",
        Some(&json!({"policies": ["dev"], "ttl": "2h", "display_name": "app"})),
    )
    .await;
    assert_eq!(reply.status, 200);
    let auth = &reply.json()["auth"];
    let token = auth["client_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("lse."));
    assert_eq!(auth["policies"], json!(["dev"]));
    assert_eq!(auth["lease_duration"], json!(7200));
    let stored = fixture.stored("token/");
    assert_eq!(stored.len(), 1);
    assert!(
        !fixture
            .host
            .kv
            .get_text(&stored[0])
            .unwrap()
            .contains(&token),
        "the token itself is stored"
    );

    let lookup = fixture
        .host
        .http("GET", "/v1/auth/token/lookup-self", Some(&token), None)
        .await;
    assert_eq!(lookup.status, 200);
    assert_eq!(lookup.json()["data"]["display_name"], json!("app"));
    assert_eq!(lookup.json()["data"]["ttl"], json!(7200));
    assert!(!lookup.text().contains(&token));
    let admin_lookup = admin(&fixture, "GET", "/v1/auth/token/lookup-self", None).await;
    assert_eq!(admin_lookup.json()["data"]["policies"], json!(["root"]));
    assert_eq!(
        admin(&fixture, "POST", "/v1/auth/token/revoke-self", None)
            .await
            .status,
        400
    );

    for body in [
        json!({}),
        json!({"roles": []}),
        json!({"roles": ["a/b"]}),
        json!({"roles": ["dev"], "ttl": "9999h"}),
    ] {
        assert_eq!(
            admin(&fixture, "POST", "/v1/auth/token/create", Some(&body))
                .await
                .status,
            400,
            "{body}"
        );
    }

    let revoke = fixture
        .host
        .http("POST", "/v1/auth/token/revoke-self", Some(&token), None)
        .await;
    assert_eq!(revoke.status, 204);
    assert_eq!(
        fixture
            .host
            .http("GET", "/v1/auth/token/lookup-self", Some(&token), None)
            .await
            .status,
        403
    );

    let short = admin(
        &fixture,
        "POST",
        "/v1/auth/token/create",
        Some(&json!({"roles": ["dev"], "ttl": "60s"})),
    )
    .await;
    let short = short.json()["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    fixture.host.clock.advance(61);
    assert_eq!(
        fixture
            .host
            .http("GET", "/v1/litellm/creds/dev", Some(&short), None)
            .await
            .status,
        403
    );
    fixture.host.clock.advance(400);
    admin(&fixture, "POST", "/v1/litellm/tidy", None).await;
    assert!(fixture.stored("token/").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_are_404() {
    let fixture = api().await;
    for path in [
        "/v1/other/config",
        "/v1/litellm/unknown",
        "/v1/sys/leases/frob",
        "/v2/sys/health",
        "/v1/auth/token/frob",
    ] {
        let reply = admin(&fixture, "GET", path, None).await;
        assert_eq!(reply.status, 404, "{path}");
        assert!(
            reply.errors()[0].contains("no handler for route"),
            "{path}: {:?}",
            reply.errors()
        );
    }
    assert_eq!(
        admin(&fixture, "GET", "/v1/litellm/roles/%zz", None)
            .await
            .status,
        400
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_mount_path() {
    let fixture = Fixture::start_with(
        TestHost::new()
            .with_admin_token(ADMIN)
            .with_setting("mount", "ai/litellm"),
    )
    .await;
    let reply = admin(
        &fixture,
        "POST",
        "/v1/ai/litellm/roles/dev",
        Some(&json!({"models": ["m"]})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = admin(&fixture, "GET", "/v1/ai/litellm/creds/dev", None).await;
    assert!(
        reply.json()["lease_id"]
            .as_str()
            .unwrap()
            .starts_with("ai/litellm/creds/dev/")
    );
    assert_eq!(
        admin(&fixture, "GET", "/v1/litellm/roles/dev", None)
            .await
            .status,
        404
    );
}

/// C26: oversized and malformed request bodies.
#[tokio::test(flavor = "multi_thread")]
async fn c26_oversized_and_malformed_bodies() {
    let fixture = api().await;
    let check_dev = || async {
        assert_eq!(
            admin(&fixture, "GET", "/v1/litellm/roles/dev", None)
                .await
                .status,
            200
        )
    };

    let huge = format!(
        r#"{{"metadata":{{"blob":"{}"}}}}"#,
        "x".repeat(20 * 1024 * 1024)
    );
    let request = http::Request::builder()
        .method("POST")
        .uri("http://engine.test/v1/litellm/roles/x")
        .header("x-vault-token", ADMIN)
        .header("content-length", huge.len())
        .body(Full::new(Bytes::from(huge.clone())))
        .unwrap();
    let reply = fixture.host.send(request).await.unwrap();
    assert_eq!(reply.status, 413, "{}", reply.text());
    check_dev().await;

    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = (0..20)
        .map(|_| Ok(Frame::data(Bytes::from(vec![b' '; 1024 * 1024]))))
        .collect();
    let request = http::Request::builder()
        .method("POST")
        .uri("http://engine.test/v1/litellm/roles/x")
        .header("x-vault-token", ADMIN)
        .body(StreamBody::new(futures::stream::iter(chunks)))
        .unwrap();
    let reply = fixture.host.send(request).await.unwrap();
    assert_eq!(reply.status, 413, "{}", reply.text());
    check_dev().await;

    for (body, expected) in [
        (&b"{"[..], "not valid JSON"),
        (b"[]", "must be a JSON object, got array"),
        (
            br#"{"models":"gpt-4o-mini"}"#,
            "models must be a list of strings",
        ),
        (b"", "request body is empty"),
    ] {
        let request = http::Request::builder()
            .method("POST")
            .uri("http://engine.test/v1/litellm/roles/x")
            .header("x-vault-token", ADMIN)
            .body(Full::new(Bytes::from_static(body)))
            .unwrap();
        let reply = fixture.host.send(request).await.unwrap();
        assert_eq!(reply.status, 400, "{:?}", String::from_utf8_lossy(body));
        assert!(reply.errors()[0].contains(expected), "{:?}", reply.errors());
        check_dev().await;
    }

    let plain = http::Request::builder()
        .method("POST")
        .uri("http://engine.test/v1/litellm/roles/x")
        .header("x-vault-token", ADMIN)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(br#"{"models":["m"]}"#)))
        .unwrap();
    assert_eq!(
        fixture.host.send(plain).await.unwrap().status,
        200,
        "text/plain JSON is accepted"
    );
    assert_eq!(fixture.stored("role/").len(), 2);
}

/// C23: the LiteLLM URL is not among the host's allowed outbound hosts.
#[tokio::test(flavor = "multi_thread")]
async fn c23_denied_outbound_host_is_502() {
    let probe = Fixture::start().await;
    let allowed = format!("127.0.0.1:{}", probe.litellm.port());
    let host = TestHost::new()
        .with_admin_token(ADMIN)
        .with_allowed_hosts(&[&allowed]);
    let fixture = Fixture {
        host,
        litellm: probe.litellm,
    };

    for url in [
        "http://10.255.0.1:4000".to_owned(),
        format!("http://localhost:{}", fixture.litellm.port()),
    ] {
        let reply = admin(
            &fixture,
            "POST",
            "/v1/litellm/config",
            Some(&json!({"url": url, "master_key": MASTER_KEY})),
        )
        .await;
        assert_eq!(reply.status, 502, "{url}: {}", reply.text());
        assert!(
            reply.errors()[0].contains(&format!("denied the outbound request to {url}")),
            "{:?}",
            reply.errors()
        );
        assert!(reply.errors()[0].contains("allowed_outbound_hosts"));
    }
    assert_eq!(
        admin(&fixture, "GET", "/v1/litellm/config", None)
            .await
            .status,
        404
    );

    let url = format!("http://{allowed}/");
    let reply = admin(
        &fixture,
        "POST",
        "/v1/litellm/config",
        Some(&json!({"url": url, "master_key": MASTER_KEY})),
    )
    .await;
    assert_eq!(reply.status, 204, "{}", reply.text());
    admin(
        &fixture,
        "POST",
        "/v1/litellm/roles/dev",
        Some(&json!({"models": ["gpt-4o-mini"]})),
    )
    .await;
    assert_eq!(
        admin(&fixture, "GET", "/v1/litellm/creds/dev", None)
            .await
            .status,
        200
    );
}

/// C25: the LiteLLM URL responds with a redirect.
#[tokio::test(flavor = "multi_thread")]
async fn c25_redirect_is_502() {
    let fixture = api().await;
    let target = litellm_secrets_tests::litellm_double::LiteLlmDouble::start(
        MASTER_KEY,
        fixture.host.clock.clone(),
    )
    .await
    .unwrap();
    for (status, location) in [
        (307, format!("{}/key/generate", target.url())),
        (301, "https://127.0.0.1:4443/key/generate".to_owned()),
    ] {
        fixture.litellm.script(
            "/key/generate",
            Reply::Redirect {
                status,
                location: location.clone(),
            },
        );
        let reply = admin(&fixture, "GET", "/v1/litellm/creds/dev", None).await;
        assert_eq!(reply.status, 502);
        assert!(
            reply.errors()[0].contains(&format!("redirect (HTTP {status}) to {location}")),
            "{:?}",
            reply.errors()
        );
    }
    assert!(target.requests().is_empty());
    assert!(fixture.stored("lease/").is_empty());
}

/// C27: LiteLLM sends an unbounded response body.
#[tokio::test(flavor = "multi_thread")]
async fn c27_unbounded_response_is_502() {
    let fixture = api().await;
    let replies = [
        Reply::Padded {
            status: 200,
            padding: 64 * 1024 * 1024,
            tail: br#"{"key":"sk-PaddedKey0000000000"}"#.to_vec(),
        },
        Reply::Endless { status: 200 },
    ];
    for reply in replies {
        fixture.litellm.script("/key/generate", reply);
        let response = admin(&fixture, "GET", "/v1/litellm/creds/dev", None).await;
        assert_eq!(response.status, 502);
        assert!(
            response.errors()[0].contains("exceeded the limit of 1048576 bytes"),
            "{:?}",
            response.errors()
        );
    }
    assert_eq!(
        admin(&fixture, "GET", "/v1/litellm/creds/dev", None)
            .await
            .status,
        200
    );
}

/// C28: listing roles with thousands of leases, and key-value key lengths.
#[tokio::test(flavor = "multi_thread")]
async fn c28_many_leases_and_long_names() {
    let fixture = api().await;
    for name in ["r1", "r2"] {
        admin(
            &fixture,
            "POST",
            &format!("/v1/litellm/roles/{name}"),
            Some(&json!({"models": ["m"]})),
        )
        .await;
    }
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let host = fixture.host.replica();
            tokio::spawn(async move {
                for _ in 0..1250 {
                    let reply = host
                        .http("GET", "/v1/litellm/creds/dev", Some(ADMIN), None)
                        .await;
                    assert_eq!(reply.status, 200, "{}", reply.text());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(fixture.stored("lease/").len(), 5000);

    fixture.host.kv.take_reads();
    let reply = admin(&fixture, "LIST", "/v1/litellm/roles", None).await;
    assert_eq!(reply.json()["data"]["keys"], json!(["dev", "r1", "r2"]));
    let reads = fixture.host.kv.take_reads();
    assert!(
        reads.iter().all(|key| !key.starts_with("lease/")),
        "role listing read leases"
    );
    assert!(reads.len() <= 6, "role listing read {} keys", reads.len());

    let long = "n".repeat(128);
    admin(
        &fixture,
        "POST",
        &format!("/v1/litellm/roles/{long}"),
        Some(&json!({"models": ["m"], "key_alias_prefix": "p".repeat(64)})),
    )
    .await;
    let reply = admin(&fixture, "GET", &format!("/v1/litellm/creds/{long}"), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let longest = fixture
        .host
        .kv
        .snapshot()
        .into_keys()
        .map(|key| key.len())
        .max()
        .unwrap();
    assert!(longest < 255, "a key-value key has {longest} bytes");

    let big = json!({"models": ["m"], "metadata": {"blob": "x".repeat(900 * 1024)}});
    let reply = admin(&fixture, "POST", "/v1/litellm/roles/big", Some(&big)).await;
    assert_eq!(reply.status, 400);
    assert!(reply.errors()[0].contains("64 KiB"));
}

/// A response larger than the output stream's buffer reaches the client whole.
#[tokio::test(flavor = "multi_thread")]
async fn large_response_body_streams() {
    let fixture = api().await;
    for _ in 0..3000 {
        fixture
            .host
            .try_issue_credential("dev", None)
            .await
            .unwrap()
            .unwrap();
    }
    let reply = admin(
        &fixture,
        "LIST",
        "/v1/sys/leases/lookup/litellm/creds/dev/",
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.len() > 100_000, "{} bytes", reply.body.len());
    assert_eq!(reply.json()["data"]["keys"].as_array().unwrap().len(), 3000);
}

/// Invalid settings are reported in full to the admin only, and health reports them.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_settings_hidden_from_others() {
    let host = TestHost::new()
        .with_admin_token(ADMIN)
        .with_setting("encryption_key", "not-hex");
    let anonymous = host
        .http("GET", "/v1/litellm/config", Some("someone"), None)
        .await;
    assert_eq!(anonymous.status, 500);
    assert!(
        !anonymous.text().contains("encryption_key"),
        "{}",
        anonymous.text()
    );
    let admin_reply = host
        .http("GET", "/v1/litellm/config", Some(ADMIN), None)
        .await;
    assert_eq!(admin_reply.status, 400);
    assert!(admin_reply.errors()[0].contains("encryption_key is invalid"));
    let health = host.http("GET", "/v1/sys/health", None, None).await;
    assert_eq!(health.status, 503);
    assert!(host.logs().contains("settings are invalid"));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_roles_deduplicated_and_limited() {
    let fixture = api().await;
    let reply = admin(
        &fixture,
        "POST",
        "/v1/auth/token/create",
        Some(&json!({"roles": ["dev", "ops", "dev"]})),
    )
    .await;
    assert_eq!(reply.json()["auth"]["policies"], json!(["dev", "ops"]));
    let many: Vec<String> = (0..1001).map(|index| format!("r{index}")).collect();
    let reply = admin(
        &fixture,
        "POST",
        "/v1/auth/token/create",
        Some(&json!({"roles": many})),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert!(reply.errors()[0].contains("the maximum is 1000"));
}
