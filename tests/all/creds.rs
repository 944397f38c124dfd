//! Credential issuance: the `/key/generate` request, lease TTLs, the stored lease, and
//! cleanup when LiteLLM or the store fails.

use litellm_secrets_tests::expect::{
    EngineResult, invalid_input, not_found, role_request, storage, upstream,
};
use litellm_secrets_tests::fixture::Fixture;
use litellm_secrets_tests::host::{RoleRequest, TestHost};
use litellm_secrets_tests::keyvalue::{Effect, Op};
use litellm_secrets_tests::litellm_double::Reply;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Returns the 32-hex id at the end of a lease id.
fn lease_suffix(lease_id: &str) -> &str {
    lease_id.rsplit('/').next().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_sends_role_scope_to_litellm() {
    let fixture = Fixture::start().await;
    let request = RoleRequest {
        models: Some(vec!["gpt-4o-mini".into()]),
        max_budget: Some(5.0),
        budget_duration: Some("30d".into()),
        tpm_limit: Some(1000),
        rpm_limit: Some(10),
        max_parallel_requests: Some(2),
        key_alias_prefix: Some("team-a".into()),
        metadata: Some(r#"{"team":"a","cost_center":1234}"#.into()),
        ttl: Some("1h".into()),
        max_ttl: Some("24h".into()),
    };
    fixture.host.try_write_role("dev", &request).await.value();
    let credential = fixture.issue("dev").await;

    let id = lease_suffix(&credential.lease_id);
    assert_eq!(credential.lease_id, format!("litellm/creds/dev/{id}"));
    assert_eq!(credential.key_alias, format!("team-a-dev-{id}"));
    assert!(credential.key.starts_with("sk-"));
    assert_eq!(credential.lease_duration, 3600);
    assert!(credential.renewable);
    assert!(credential.warnings.is_empty());

    let generate = fixture.litellm.requests_to("/key/generate");
    assert_eq!(generate.len(), 1);
    let body = generate[0].json();
    assert_eq!(body["models"], json!(["gpt-4o-mini"]));
    assert_eq!(body["max_budget"], json!(5.0));
    assert_eq!(body["budget_duration"], json!("30d"));
    assert_eq!(body["tpm_limit"], json!(1000));
    assert_eq!(body["rpm_limit"], json!(10));
    assert_eq!(body["max_parallel_requests"], json!(2));
    assert_eq!(body["key_alias"], json!(credential.key_alias));
    assert_eq!(body["key_type"], json!("llm_api"));
    assert_eq!(body["duration"], json!("3660s"));
    assert_eq!(
        body["metadata"],
        json!({
            "team": "a",
            "cost_center": 1234,
            "secrets_engine_role": "dev",
            "secrets_engine_lease_id": credential.lease_id,
        })
    );
    assert_eq!(generate[0].header("content-type"), Some("application/json"));

    let key = fixture
        .litellm
        .key_by_hash(&sha256_hex(&credential.key))
        .expect("key in LiteLLM");
    assert_eq!(
        key.key_alias.as_deref(),
        Some(credential.key_alias.as_str())
    );
    assert_eq!(key.allowed_routes, ["llm_api_routes"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unset_limits_are_not_sent() {
    let fixture = Fixture::start().await;
    fixture.role("plain", &["m"], "0", "0").await;
    fixture.issue("plain").await;
    let body = fixture.litellm.requests_to("/key/generate")[0].json();
    let sent: std::collections::BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        sent,
        ["duration", "key_alias", "key_type", "metadata", "models"].into()
    );
}

/// C07: the lease stores the token hash, never the key.
#[tokio::test(flavor = "multi_thread")]
async fn c07_lease_stores_hash_not_key() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["gpt-4o-mini"], "1h", "24h").await;
    let credential = fixture.issue("dev").await;
    let hash = sha256_hex(&credential.key);

    let key = format!("lease/dev/{}", lease_suffix(&credential.lease_id));
    let record = fixture.host.kv.get_text(&key).expect("lease record");
    assert!(record.contains(&hash), "{record}");
    for (name, value) in fixture.host.kv.snapshot() {
        let text = String::from_utf8_lossy(&value);
        assert!(
            !text.contains(&credential.key),
            "{name} stores the plaintext key"
        );
    }

    fixture
        .host
        .try_revoke_lease(&credential.lease_id)
        .await
        .value();
    let delete = fixture.litellm.requests_to("/key/delete");
    assert_eq!(delete.len(), 1);
    assert_eq!(delete[0].json(), json!({ "keys": [hash] }));
    assert!(fixture.litellm.key_by_hash(&hash).unwrap().deleted);
}

/// C07, last bullet: a generate response without `token` gets the hash computed locally.
#[tokio::test(flavor = "multi_thread")]
async fn c07_missing_token_hash_is_computed() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["gpt-4o-mini"], "1h", "24h").await;
    let key = "sk-ScriptedKeyWithoutToken1";
    fixture.litellm.script(
        "/key/generate",
        Reply::Json {
            status: 200,
            body: json!({ "key": key, "key_alias": "x" }),
        },
    );
    let credential = fixture.issue("dev").await;
    assert_eq!(credential.key, key);

    let record = fixture
        .host
        .kv
        .get_json(&format!("lease/dev/{}", lease_suffix(&credential.lease_id)))
        .unwrap();
    assert_eq!(record["token_hash"], json!(sha256_hex(key)));
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_ttl_resolution_and_caps() {
    let fixture = Fixture::start().await;
    fixture.role("capped", &["m"], "10m", "30m").await;

    let default = fixture
        .host
        .try_issue_credential("capped", None)
        .await
        .value();
    assert_eq!(default.lease_duration, 600);
    let shorter = fixture
        .host
        .try_issue_credential("capped", Some("5m"))
        .await
        .value();
    assert_eq!(shorter.lease_duration, 300);
    assert!(shorter.warnings.is_empty());
    let at_cap = fixture
        .host
        .try_issue_credential("capped", Some("30m"))
        .await
        .value();
    assert_eq!(at_cap.lease_duration, 1800);
    assert!(!at_cap.renewable);
    let over = fixture
        .host
        .try_issue_credential("capped", Some("2h"))
        .await
        .value();
    assert_eq!(over.lease_duration, 1800);
    assert_eq!(over.warnings.len(), 1);
    assert!(
        over.warnings[0].contains("capped at 30m0s"),
        "{}",
        over.warnings[0]
    );
    let zero = fixture
        .host
        .try_issue_credential("capped", Some("0"))
        .await
        .value();
    assert_eq!(zero.lease_duration, 600);

    fixture.role("open", &["m"], "0", "0").await;
    let engine_default = fixture.issue("open").await;
    assert_eq!(engine_default.lease_duration, 3600);

    let generated = fixture.litellm.requests_to("/key/generate");
    let durations: Vec<Value> = generated
        .iter()
        .map(|request| request.json()["duration"].clone())
        .collect();
    assert_eq!(
        durations,
        [
            json!("660s"),
            json!("360s"),
            json!("1860s"),
            json!("1860s"),
            json!("660s"),
            json!("3660s")
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn host_settings_set_defaults_and_mount() {
    let host = TestHost::new()
        .with_setting("mount", "ai/litellm")
        .with_setting("default_ttl", "15m")
        .with_setting("max_ttl", "1h");
    let fixture = Fixture::start_with(host).await;
    fixture.role("dev", &["m"], "0", "0").await;

    let credential = fixture.issue("dev").await;
    assert!(
        credential.lease_id.starts_with("ai/litellm/creds/dev/"),
        "{}",
        credential.lease_id
    );
    assert_eq!(credential.lease_duration, 900);
    let capped = fixture
        .host
        .try_issue_credential("dev", Some("3h"))
        .await
        .value();
    assert_eq!(capped.lease_duration, 3600);

    let too_long = RoleRequest {
        max_ttl: Some("2h".into()),
        ..role_request()
    };
    let error = fixture.host.try_write_role("dev", &too_long).await.error();
    assert!(invalid_input(&error).contains("engine's maximum lease TTL (1h0m0s)"));

    let lease = fixture
        .host
        .try_lookup_lease(&credential.lease_id)
        .await
        .value();
    assert_eq!(lease.lease_id, credential.lease_id);
    let error = fixture
        .host
        .try_lookup_lease(&credential.lease_id.replace("ai/litellm", "litellm"))
        .await
        .error();
    invalid_input(&error);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_settings_are_reported() {
    let host = TestHost::new().with_setting("default_ttl", "banana");
    let error = host.try_list_roles().await.error();
    assert!(invalid_input(&error).contains("host setting default_ttl"));

    let host = TestHost::new().with_setting("mount", "a b");
    assert!(invalid_input(&host.try_list_roles().await.error()).contains("host setting mount"));

    for reserved in ["sys", "auth/litellm"] {
        let host = TestHost::new().with_setting("mount", reserved);
        let error = host.try_list_roles().await.error();
        assert!(
            invalid_input(&error).contains("which the API uses for its own paths"),
            "{reserved}: {error:?}"
        );
    }

    let host = TestHost::new().with_setting("previous_encryption_key", "00");
    let error = host.try_list_roles().await.error();
    assert!(
        invalid_input(&error).starts_with("host setting previous_encryption_key is invalid"),
        "{error:?}"
    );

    let host = TestHost::new().with_setting("key_value_store", "missing");
    let error = host.try_list_roles().await.error();
    assert!(storage(&error).contains("\"missing\""), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_rejections_send_nothing() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    let before = fixture.litellm.requests().len();

    assert_eq!(
        not_found(
            &fixture
                .host
                .try_issue_credential("nope", None)
                .await
                .error()
        ),
        "role nope not found"
    );
    for ttl in ["-1", "banana", "1mo"] {
        let error = fixture
            .host
            .try_issue_credential("dev", Some(ttl))
            .await
            .error();
        assert!(invalid_input(&error).starts_with("ttl "), "{error:?}");
    }
    assert_eq!(fixture.litellm.requests().len(), before);
    assert!(fixture.stored("pending/").is_empty());
    assert!(fixture.stored("lease/").is_empty());
}

/// C08: LiteLLM error bodies in several shapes.
#[tokio::test(flavor = "multi_thread")]
async fn c08_litellm_error_shapes() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["gpt-4o-mini"], "1h", "2h").await;
    let alias_taken = json!({"error": {"message": "alias taken", "type": "bad_request_error", "param": "key_alias", "code": "400"}});
    let numeric_code = json!({"error": {"message": "alias taken", "type": "bad_request_error", "param": "key_alias", "code": 400}});
    let cases: Vec<(Reply, Option<u16>, &str)> = vec![
        (
            Reply::Json {
                status: 400,
                body: alias_taken,
            },
            Some(400),
            "HTTP 400 for /key/generate: alias taken",
        ),
        (
            Reply::Json {
                status: 400,
                body: numeric_code,
            },
            Some(400),
            "HTTP 400 for /key/generate: alias taken",
        ),
        (
            Reply::Json {
                status: 422,
                body: json!({"detail": [{"type": "missing", "loc": ["body", "x"], "msg": "required"}]}),
            },
            Some(422),
            "HTTP 422 for /key/generate: required at body.x",
        ),
        (
            Reply::Json {
                status: 500,
                body: json!({"error": {"message": "no database"}}),
            },
            Some(500),
            "HTTP 500 for /key/generate: no database",
        ),
        (
            Reply::Raw {
                status: 502,
                content_type: "text/html".into(),
                body: b"<html><body>Bad gateway</body></html>".to_vec(),
            },
            Some(502),
            "HTTP 502 for /key/generate: <html><body>Bad gateway</body></html>",
        ),
        (
            Reply::Json {
                status: 200,
                body: json!({}),
            },
            Some(200),
            "response without a key",
        ),
        (
            Reply::Raw {
                status: 200,
                content_type: "application/json".into(),
                body: b"not json".to_vec(),
            },
            Some(200),
            "not valid JSON",
        ),
    ];
    for (reply, status, expected) in cases {
        fixture.litellm.script("/key/generate", reply);
        let error = fixture.host.try_issue_credential("dev", None).await.error();
        let failure = upstream(&error);
        assert_eq!(failure.status, status, "{}", failure.message);
        assert!(!failure.timed_out);
        assert!(
            failure.message.contains(expected),
            "{:?} lacks {expected:?}",
            failure.message
        );
        assert!(failure.message.contains(&fixture.litellm.url()));
        assert!(!failure.message.contains("sk-test-master"));
    }
    assert!(fixture.stored("lease/").is_empty());
    assert!(fixture.stored("pending/").is_empty());
    assert!(fixture.litellm.live_keys().is_empty());

    // The key may exist after a 5xx or an unusable 200, so those were deleted by alias.
    let alias_deletes = fixture
        .litellm
        .requests_to("/key/delete")
        .iter()
        .filter(|request| request.json().get("key_aliases").is_some())
        .count();
    assert_eq!(alias_deletes, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn long_error_text_is_cut_and_masked() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    let hash = "ab".repeat(32);
    let text = format!("bad key sk-LeakedKey123 hash {hash} {}", "x".repeat(5000));
    fixture.litellm.script(
        "/key/generate",
        Reply::Json {
            status: 400,
            body: json!({"error": {"message": text}}),
        },
    );

    let error = fixture.host.try_issue_credential("dev", None).await.error();
    let message = &upstream(&error).message;
    assert!(message.contains("bad key sk-*** hash [hash]"), "{message}");
    assert!(!message.contains("LeakedKey123"));
    assert!(message.len() < 1400, "{} bytes", message.len());
}

/// C09: LiteLLM rejects the configured master key.
#[tokio::test(flavor = "multi_thread")]
async fn c09_rejected_master_key_at_issue() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["gpt-4o-mini"], "1h", "2h").await;
    fixture.litellm.set_master_key("sk-rotated-elsewhere");

    let error = fixture.host.try_issue_credential("dev", None).await.error();
    let failure = upstream(&error);
    assert_eq!(failure.status, Some(401));
    assert!(
        failure
            .message
            .contains("rejected the configured master key with HTTP 401"),
        "{}",
        failure.message
    );
    assert!(
        failure
            .message
            .contains("write the config again with a valid master_key")
    );
    assert!(!failure.message.contains("sk-test-master"));
    assert!(
        !failure
            .message
            .chars()
            .collect::<Vec<_>>()
            .windows(64)
            .any(|w| w.iter().all(char::is_ascii_hexdigit))
    );

    assert!(fixture.stored("lease/").is_empty());
    assert!(fixture.stored("pending/").is_empty());
    assert!(fixture.litellm.live_keys().is_empty());
    assert!(!fixture.host.logs().contains("sk-test-master"));
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_write_failure_deletes_key() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    fixture
        .host
        .kv
        .inject(Op::Write, "lease/", Effect::Fail("disk full".into()), 1);

    let error = fixture.host.try_issue_credential("dev", None).await.error();
    assert!(storage(&error).contains("disk full"), "{error:?}");
    assert!(fixture.litellm.live_keys().is_empty());
    assert!(fixture.stored("lease/").is_empty());
    assert!(fixture.stored("pending/").is_empty());
    let deletes = fixture.litellm.requests_to("/key/delete");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].json()["keys"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_write_failure_sends_nothing() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    fixture
        .host
        .kv
        .inject(Op::Write, "pending/", Effect::Fail("read-only".into()), 1);

    storage(&fixture.host.try_issue_credential("dev", None).await.error());
    assert_eq!(fixture.request_count("/key/generate"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_generate_is_tidied() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    fixture.host.kv.inject(Op::Write, "lease/", Effect::Trap, 1);

    let trap = fixture.host.try_issue_credential("dev", None).await;
    assert!(
        trap.is_err(),
        "the injected crash must trap the instance: {trap:?}"
    );
    assert_eq!(fixture.litellm.live_keys().len(), 1);
    assert_eq!(fixture.stored("pending/").len(), 1);

    // Within the grace period tidy leaves the issuance alone: it may still be running.
    let early = fixture.host.try_tidy().await.value();
    assert_eq!(early.cleaned_pending, 0);
    assert_eq!(fixture.litellm.live_keys().len(), 1);

    fixture.host.clock.advance(301);
    let report = fixture.host.try_tidy().await.value();
    assert_eq!(report.cleaned_pending, 1);
    assert_eq!(report.failed, 0);
    assert!(fixture.litellm.live_keys().is_empty());
    assert!(fixture.stored("pending/").is_empty());
    assert!(fixture.stored("lease/").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_lease_write_keeps_key() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    fixture
        .host
        .kv
        .inject(Op::Delete, "pending/", Effect::Trap, 1);

    let trap = fixture.host.try_issue_credential("dev", None).await;
    assert!(trap.is_err(), "{trap:?}");
    let leases = fixture.stored("lease/");
    assert_eq!(leases.len(), 1);

    fixture.host.clock.advance(301);
    let report = fixture.host.try_tidy().await.value();
    assert_eq!(report.cleaned_pending, 0);
    assert_eq!(
        fixture.litellm.live_keys().len(),
        1,
        "a key with a lease must survive"
    );
    assert!(fixture.stored("pending/").is_empty());
    assert_eq!(fixture.stored("lease/"), leases);
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_retries_while_litellm_is_down() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    fixture.host.kv.inject(Op::Write, "lease/", Effect::Trap, 1);
    let _ = fixture.host.try_issue_credential("dev", None).await;

    fixture.host.clock.advance(301);
    for _ in 0..3 {
        fixture.litellm.script(
            "/key/delete",
            Reply::Json {
                status: 503,
                body: json!({"error": {"message": "busy"}}),
            },
        );
    }
    let report = fixture.host.try_tidy().await.value();
    assert_eq!((report.cleaned_pending, report.failed), (0, 1));
    let pending = fixture.stored("pending/");
    assert_eq!(pending.len(), 1);
    assert_eq!(
        fixture.host.kv.get_json(&pending[0]).unwrap()["cleanup_attempts"],
        json!(1)
    );

    // The retry is filed a minute later.
    assert_eq!(fixture.host.try_tidy().await.value().cleaned_pending, 0);
    fixture.host.clock.advance(61);
    let report = fixture.host.try_tidy().await.value();
    assert_eq!((report.cleaned_pending, report.failed), (1, 0));
    assert!(fixture.litellm.live_keys().is_empty());
}
