//! Lease renewal, revocation, lookup and listing, including roles deleted and config
//! changed under live leases.

use litellm_secrets_tests::expect::{EngineResult, invalid_input, not_found, upstream};
use litellm_secrets_tests::fixture::Fixture;
use litellm_secrets_tests::host::ConfigRequest;
use litellm_secrets_tests::litellm_double::{LiteLlmDouble, Reply};
use serde_json::json;
use sha2::{Digest, Sha256};

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// C06: renewal and the key's LiteLLM expiry stay in step.
#[tokio::test(flavor = "multi_thread")]
async fn c06_renew_moves_litellm_expiry() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["gpt-4o-mini"], "60s", "600s").await;
    let credential = fixture.issue("dev").await;
    let hash = sha256_hex(&credential.key);
    let issued_at = fixture.host.clock.now_seconds();

    fixture.host.clock.advance(30);
    let renewal = fixture
        .host
        .try_renew_lease(&credential.lease_id, Some("300"))
        .await
        .value();
    assert_eq!(renewal.lease_duration, 300);
    assert!(renewal.warnings.is_empty());
    let renewed_at = fixture.host.clock.now_seconds();
    assert!(
        renewal.lease.expires_at >= renewed_at + 299
            && renewal.lease.expires_at <= renewed_at + 300
    );
    assert_eq!(
        renewal
            .lease
            .last_renewed_at
            .map(|at| at.abs_diff(renewed_at) <= 1),
        Some(true)
    );

    let update = fixture.litellm.requests_to("/key/update");
    assert_eq!(update.len(), 1);
    assert_eq!(update[0].json(), json!({ "key": hash, "duration": "360s" }));

    fixture.host.clock.advance(60);
    let key = fixture.litellm.key_by_hash(&hash).unwrap();
    let expires = key.expires.expect("the key has an expiry");
    assert!(
        expires >= renewal.lease.expires_at,
        "key expires {expires}, lease {}",
        renewal.lease.expires_at
    );
    assert!(expires > issued_at + 120, "the key expiry did not move");

    let lease = fixture
        .host
        .try_lookup_lease(&credential.lease_id)
        .await
        .value();
    assert_eq!(lease.expires_at, renewal.lease.expires_at);
}

/// C06, last bullet: LiteLLM refuses the update, so the lease keeps its expiry.
#[tokio::test(flavor = "multi_thread")]
async fn c06_refused_update_keeps_expiry() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["gpt-4o-mini"], "60s", "600s").await;
    let credential = fixture.issue("dev").await;
    let before = fixture
        .host
        .try_lookup_lease(&credential.lease_id)
        .await
        .value();

    fixture.litellm.script(
        "/key/update",
        Reply::Json {
            status: 404,
            body: json!({"error": {"message": "Key not found."}}),
        },
    );
    let error = fixture
        .host
        .try_renew_lease(&credential.lease_id, Some("300"))
        .await
        .error();
    let failure = upstream(&error);
    assert_eq!(failure.status, Some(404));
    assert!(
        failure.message.contains("Key not found."),
        "{}",
        failure.message
    );

    let after = fixture
        .host
        .try_lookup_lease(&credential.lease_id)
        .await
        .value();
    assert_eq!(after.expires_at, before.expires_at);
    assert_eq!(after.last_renewed_at, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_caps_at_max_ttl_then_refuses() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "60s", "120s").await;
    let credential = fixture.issue("dev").await;
    let issued = fixture
        .host
        .try_lookup_lease(&credential.lease_id)
        .await
        .value();
    assert_eq!(issued.max_expires_at, issued.issued_at + 120);

    fixture.host.clock.advance(50);
    let renewal = fixture
        .host
        .try_renew_lease(&credential.lease_id, Some("1h"))
        .await
        .value();
    assert_eq!(renewal.lease.expires_at, issued.max_expires_at);
    assert_eq!(
        renewal.lease_duration,
        issued.max_expires_at - fixture.host.clock.now_seconds()
    );
    assert_eq!(renewal.warnings.len(), 1);
    assert!(
        renewal.warnings[0].contains("exceeded the lease's max TTL"),
        "{}",
        renewal.warnings[0]
    );
    assert!(!renewal.lease.renewable);

    fixture.host.clock.advance(70);
    let error = fixture
        .host
        .try_renew_lease(&credential.lease_id, None)
        .await
        .error();
    let message = invalid_input(&error);
    assert!(
        message.contains("expired") || message.contains("max TTL"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_increment_defaults_and_validation() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "2m", "1h").await;
    let credential = fixture.issue("dev").await;

    for increment in [None, Some("0"), Some(""), Some("0s")] {
        let renewal = fixture
            .host
            .try_renew_lease(&credential.lease_id, increment)
            .await
            .value();
        assert_eq!(renewal.lease_duration, 120, "increment {increment:?}");
    }
    for increment in ["5m", "300"] {
        let renewal = fixture
            .host
            .try_renew_lease(&credential.lease_id, Some(increment))
            .await
            .value();
        assert_eq!(renewal.lease_duration, 300);
    }
    for increment in ["-1", "-5", "banana", "1x", "1mo"] {
        let error = fixture
            .host
            .try_renew_lease(&credential.lease_id, Some(increment))
            .await
            .error();
        assert!(invalid_input(&error).starts_with("increment "), "{error:?}");
    }
    assert_eq!(fixture.request_count("/key/update"), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_expired_lease_is_refused() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "60s", "1h").await;
    let credential = fixture.issue("dev").await;
    fixture.host.clock.advance(60);
    let error = fixture
        .host
        .try_renew_lease(&credential.lease_id, None)
        .await
        .error();
    assert!(invalid_input(&error).contains("expired"));
    assert_eq!(fixture.request_count("/key/update"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_is_idempotent() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    let credential = fixture.issue("dev").await;

    fixture
        .host
        .try_revoke_lease(&credential.lease_id)
        .await
        .value();
    fixture
        .host
        .try_revoke_lease(&credential.lease_id)
        .await
        .value();
    assert_eq!(fixture.request_count("/key/delete"), 1);
    assert!(fixture.litellm.live_keys().is_empty());
    let error = fixture
        .host
        .try_lookup_lease(&credential.lease_id)
        .await
        .error();
    assert_eq!(
        not_found(&error),
        format!("lease {} not found", credential.lease_id)
    );
    not_found(
        &fixture
            .host
            .try_renew_lease(&credential.lease_id, None)
            .await
            .error(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_after_key_deleted_elsewhere() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    let credential = fixture.issue("dev").await;
    fixture.litellm.script(
        "/key/delete",
        Reply::Json {
            status: 404,
            body: json!({"error": {"message": "{'error': 'No keys found'}", "type": "internal_server_error", "param": null, "code": "404"}}),
        },
    );

    fixture
        .host
        .try_revoke_lease(&credential.lease_id)
        .await
        .value();
    not_found(
        &fixture
            .host
            .try_lookup_lease(&credential.lease_id)
            .await
            .error(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_lease_ids_are_invalid() {
    let fixture = Fixture::start().await;
    let long = format!("litellm/creds/{}/{}", "a".repeat(300), "0".repeat(32));
    for lease_id in [
        "",
        "litellm/creds/dev",
        "litellm/creds/dev/short",
        "other/creds/dev/0123456789abcdef0123456789abcdef",
        "litellm/creds/../0123456789abcdef0123456789abcdef",
        "litellm/creds/dev/0123456789abcdef0123456789abcdeg",
        long.as_str(),
    ] {
        for error in [
            fixture.host.try_lookup_lease(lease_id).await.error(),
            fixture.host.try_renew_lease(lease_id, None).await.error(),
            fixture.host.try_revoke_lease(lease_id).await.error(),
        ] {
            assert!(
                invalid_input(&error).contains("lease_id is invalid"),
                "{lease_id}: {error:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lookup_and_list_leases() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    fixture.role("ops", &["m"], "10m", "1h").await;
    let dev_one = fixture.issue("dev").await;
    let dev_two = fixture.issue("dev").await;
    let ops = fixture.issue("ops").await;

    let lease = fixture.host.try_lookup_lease(&ops.lease_id).await.value();
    assert_eq!(lease.role, "ops");
    assert_eq!(lease.key_alias, ops.key_alias);
    assert_eq!(lease.litellm_url, fixture.litellm.url());
    assert_eq!(lease.ttl, 600);
    assert!(lease.renewable);
    assert_eq!(
        (
            lease.revoke_attempts,
            lease.irrevocable,
            lease.last_revoke_error.clone()
        ),
        (0, false, None)
    );
    assert!(!format!("{lease:?}").contains(&ops.key));

    let mut dev = vec![dev_one.lease_id.clone(), dev_two.lease_id.clone()];
    dev.sort();
    assert_eq!(
        fixture
            .host
            .try_list_leases("litellm/creds/dev/")
            .await
            .value(),
        dev
    );
    assert_eq!(
        fixture
            .host
            .try_list_leases("litellm/creds/ops")
            .await
            .value(),
        [ops.lease_id.clone()]
    );
    assert_eq!(fixture.host.try_list_leases("").await.value().len(), 3);
    assert!(
        fixture
            .host
            .try_list_leases("litellm/creds/none/")
            .await
            .value()
            .is_empty()
    );

    fixture
        .host
        .try_revoke_lease(&dev_one.lease_id)
        .await
        .value();
    assert_eq!(
        fixture
            .host
            .try_list_leases("litellm/creds/dev/")
            .await
            .value(),
        [dev_two.lease_id]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn role_deleted_under_live_leases() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "90s", "1h").await;
    let credential = fixture.issue("dev").await;
    fixture.host.try_delete_role("dev").await.value();

    not_found(&fixture.host.try_issue_credential("dev", None).await.error());
    let renewal = fixture
        .host
        .try_renew_lease(&credential.lease_id, None)
        .await
        .value();
    assert_eq!(
        renewal.lease_duration, 90,
        "the lease's own TTL applies without its role"
    );
    fixture
        .host
        .try_revoke_lease(&credential.lease_id)
        .await
        .value();
    assert!(fixture.litellm.live_keys().is_empty());
}

/// C17: master key or URL changed while leases exist.
#[tokio::test(flavor = "multi_thread")]
async fn c17_config_changed_under_live_leases() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["gpt-4o-mini"], "1h", "2h").await;
    let first = fixture.issue("dev").await;

    // A wrong key is rejected at config write, so the stored config stays usable.
    let wrong = ConfigRequest {
        url: None,
        master_key: Some("sk-rotated-wrong".into()),
    };
    invalid_input(&fixture.host.try_write_config(&wrong).await.error());
    fixture.host.try_revoke_lease(&first.lease_id).await.value();
    assert!(
        fixture
            .litellm
            .key_by_hash(&sha256_hex(&first.key))
            .unwrap()
            .deleted
    );

    // The proxy rotated its key after the config was written: revocation reports it and
    // keeps the lease until the config is fixed.
    let second = fixture.issue("dev").await;
    fixture.litellm.set_master_key("sk-rotated-master");
    let error = fixture
        .host
        .try_revoke_lease(&second.lease_id)
        .await
        .error();
    let failure = upstream(&error);
    assert_eq!(failure.status, Some(401));
    assert!(
        failure
            .message
            .contains("rejected the configured master key")
    );
    let kept_lease = fixture
        .host
        .try_lookup_lease(&second.lease_id)
        .await
        .value();
    assert_eq!(kept_lease.revoke_attempts, 1);
    assert!(kept_lease.last_revoke_error.unwrap().contains("HTTP 401"));
    assert_eq!(
        fixture.request_count("/key/delete"),
        2,
        "a 401 is not retried"
    );

    let fixed = ConfigRequest {
        url: None,
        master_key: Some("sk-rotated-master".into()),
    };
    fixture.host.try_write_config(&fixed).await.value();
    fixture
        .host
        .try_revoke_lease(&second.lease_id)
        .await
        .value();
    assert!(fixture.litellm.live_keys().is_empty());

    // Moving to another proxy keeps revoking old leases at the proxy that minted them.
    let third = fixture.issue("dev").await;
    let other = LiteLlmDouble::start("sk-other-master", fixture.host.clock.clone())
        .await
        .unwrap();
    let moved = ConfigRequest {
        url: Some(other.url()),
        master_key: Some("sk-other-master".into()),
    };
    fixture.host.try_write_config(&moved).await.value();
    fixture.host.try_revoke_lease(&third.lease_id).await.value();
    assert!(fixture.litellm.live_keys().is_empty());
    assert!(other.requests_to("/key/delete").is_empty());
    let last_delete = fixture.litellm.requests_to("/key/delete").pop().unwrap();
    assert_eq!(
        last_delete.header("authorization"),
        Some("Bearer sk-rotated-master")
    );

    let fourth = fixture.issue("dev").await;
    assert_eq!(
        fixture
            .host
            .try_lookup_lease(&fourth.lease_id)
            .await
            .value()
            .litellm_url,
        other.url()
    );
    assert_eq!(other.live_keys().len(), 1);
}

/// A revocation in progress claims the lease, and a renewal meeting a live claim fails, so
/// no renewal reports success for a key being deleted. A claim older than ten minutes
/// belongs to a revocation that died and no longer blocks.
#[tokio::test(flavor = "multi_thread")]
async fn renew_refused_during_revocation() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    let credential = fixture.issue("dev").await;
    let key = fixture.stored("lease/").pop().unwrap();
    let mut record = fixture.host.kv.get_json(&key).unwrap();

    record["revoking_since"] = json!(fixture.host.clock.now_seconds());
    fixture.host.kv.put_text(&key, &record.to_string());
    let error = fixture
        .host
        .try_renew_lease(&credential.lease_id, None)
        .await
        .error();
    assert!(
        invalid_input(&error).contains("is being revoked"),
        "{error:?}"
    );
    assert_eq!(fixture.request_count("/key/update"), 0);

    record["revoking_since"] = json!(fixture.host.clock.now_seconds() - 601);
    fixture.host.kv.put_text(&key, &record.to_string());
    fixture
        .host
        .try_renew_lease(&credential.lease_id, None)
        .await
        .value();
    assert_eq!(
        fixture.host.kv.get_json(&key).unwrap()["revoking_since"],
        json!(null)
    );
}
