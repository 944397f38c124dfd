//! Edge cases from an adversarial review: inputs, LiteLLM replies, store faults and timings
//! that try to trap the engine, drop a lease or leave a key in LiteLLM without a lease.

use std::time::Duration;

use litellm_secrets_tests::expect::{
    EngineResult, invalid_input, not_found, role_request, role_with_models, upstream,
};
use litellm_secrets_tests::fixture::Fixture;
use litellm_secrets_tests::host::{ConfigRequest, Error, RoleRequest, TestHost};
use litellm_secrets_tests::litellm_double::Reply;
use serde_json::json;
use sha2::{Digest, Sha256};

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Returns the storage key `lease/<role>/<id>` of a lease id `litellm/creds/<role>/<id>`.
fn lease_storage_key(lease_id: &str) -> String {
    let rest = lease_id
        .strip_prefix("litellm/creds/")
        .expect("lease id under the default mount");
    format!("lease/{rest}")
}

/// Only LiteLLM's own 404 "No keys found" means the key is gone. A 404 from a reverse proxy
/// or an unknown route (the real proxy returns `{"detail":"Not Found"}` for one) does not
/// show whether the key exists, so the revocation fails and the lease stays.
#[tokio::test(flavor = "multi_thread")]
async fn revoke_foreign_404_keeps_lease() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    let replies = [
        Reply::Raw {
            status: 404,
            content_type: "text/html".into(),
            body: b"<html><body><h1>404 Not Found</h1>nginx</body></html>".to_vec(),
        },
        Reply::Json {
            status: 404,
            body: json!({"detail": "Not Found"}),
        },
    ];
    for reply in replies {
        let credential = fixture.issue("dev").await;
        fixture.litellm.script("/key/delete", reply.clone());

        let outcome = fixture.host.try_revoke_lease(&credential.lease_id).await;
        let lease = fixture.host.try_lookup_lease(&credential.lease_id).await;
        let key = fixture
            .litellm
            .key_by_hash(&sha256_hex(&credential.key))
            .expect("the double minted the key");

        assert!(!key.deleted, "the key is still live in LiteLLM ({reply:?})");
        assert!(
            matches!(outcome, Ok(Err(Error::Upstream(_)))),
            "revoke must report the failure, got {outcome:?} ({reply:?})"
        );
        assert!(
            matches!(lease, Ok(Ok(_))),
            "the lease of a live key must be kept, got {lease:?} ({reply:?})"
        );
    }
}

/// After a timed-out generate the pending entry stays, so tidy deletes a key that LiteLLM
/// stores after the engine's immediate cleanup found nothing. The real proxy keeps
/// processing a request after the client went away, but the double drops it, so the test
/// adds the late key itself with the alias the engine sent.
#[tokio::test(flavor = "multi_thread")]
async fn timed_out_generate_late_key_is_tidied() {
    let fixture = Fixture::start_with(TestHost::new().with_setting("litellm_timeout", "1s")).await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    fixture.litellm.script(
        "/key/generate",
        Reply::Delayed {
            delay: Duration::from_secs(3),
            reply: Box::new(Reply::Normal),
        },
    );

    let error = fixture.host.try_issue_credential("dev", None).await.error();
    assert!(upstream(&error).timed_out, "{error:?}");
    let generates = fixture.litellm.requests_to("/key/generate");
    let alias = generates[0].json()["key_alias"]
        .as_str()
        .expect("generate sends key_alias")
        .to_owned();

    tokio::time::sleep(Duration::from_millis(3500)).await;
    if fixture.litellm.key_by_alias(&alias).is_none() {
        fixture
            .litellm
            .insert_key("sk-adversarial-late-commit-0001", |row| {
                row.key_alias = Some(alias.clone());
            });
    }

    fixture.host.clock.advance(301);
    fixture.host.try_tidy().await.value();
    fixture.host.clock.advance(3600);
    fixture.host.try_tidy().await.value();

    assert!(
        fixture.litellm.key_by_alias(&alias).is_none(),
        "key {alias} has no lease and no pending entry, and tidy never deletes it"
    );
}

/// A lease record tidy cannot decode is reported and retried later, and tidy still revokes
/// the other leases.
#[tokio::test(flavor = "multi_thread")]
async fn tidy_continues_past_corrupt_lease() {
    let fixture = Fixture::start().await;
    fixture.role("short", &["m"], "60s", "1h").await;
    let corrupt = fixture.issue("short").await;
    let healthy = fixture.issue("short").await;
    fixture.host.kv.put_text(
        &lease_storage_key(&corrupt.lease_id),
        "{\"role\": \"short\", trunc",
    );

    fixture.host.clock.advance(61);
    let first = fixture.host.try_tidy().await;
    fixture.host.clock.advance(3600);
    let second = fixture.host.try_tidy().await;

    assert!(matches!(first, Ok(Ok(_))), "first tidy: {first:?}");
    assert!(matches!(second, Ok(Ok(_))), "second tidy: {second:?}");
    not_found(
        &fixture
            .host
            .try_lookup_lease(&healthy.lease_id)
            .await
            .error(),
    );
    let healthy_key = fixture
        .litellm
        .key_by_hash(&sha256_hex(&healthy.key))
        .unwrap();
    assert!(
        healthy_key.deleted,
        "the healthy lease's key must be revoked"
    );
}

/// Role writes reject limits that LiteLLM 1.108.7 cannot store, which would fail every issue.
///
/// Measured with curl on the real 1.108.7 proxy with PostgreSQL: `/key/generate` returns
/// HTTP 500 for `max_parallel_requests` 2^31 and for `tpm_limit` 2^63, and HTTP 400 for
/// `budget_duration` "999999999d" because the reset date overflows. The role write rejects
/// them, as it does for alias prefixes.
#[tokio::test(flavor = "multi_thread")]
async fn role_rejects_limits_litellm_cannot_store() {
    let fixture = Fixture::start().await;
    let cases = [
        (
            "max_parallel_requests 2^31",
            RoleRequest {
                max_parallel_requests: Some(1 << 31),
                ..role_with_models(&["m"])
            },
        ),
        (
            "tpm_limit u64::MAX",
            RoleRequest {
                tpm_limit: Some(u64::MAX),
                ..role_with_models(&["m"])
            },
        ),
        (
            "rpm_limit u64::MAX",
            RoleRequest {
                rpm_limit: Some(u64::MAX),
                ..role_with_models(&["m"])
            },
        ),
        (
            "budget_duration 999999999d",
            RoleRequest {
                budget_duration: Some("999999999d".into()),
                ..role_with_models(&["m"])
            },
        ),
    ];
    let mut accepted = Vec::new();
    for (case, request) in cases {
        match fixture.host.try_write_role("limits", &request).await {
            Ok(Err(Error::InvalidInput(_))) => {}
            other => accepted.push(format!("{case}: {other:?}")),
        }
        fixture.host.try_delete_role("limits").await.value();
    }
    assert!(accepted.is_empty(), "accepted: {accepted:#?}");
}

/// A lease filed after its bucket was retired is still revoked. Here the wall clock steps
/// forward while an issuance waits for LiteLLM: the lease's expiry, computed at the start,
/// lies behind the cursor a tidy moved meanwhile, so it is filed at the current time.
#[tokio::test(flavor = "multi_thread")]
async fn slow_issue_lease_still_tidied() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "60s", "1h").await;
    fixture.litellm.script(
        "/key/generate",
        Reply::Delayed {
            delay: Duration::from_secs(3),
            reply: Box::new(Reply::Normal),
        },
    );

    let issuer = fixture.host.replica();
    let issue = tokio::spawn(async move { issuer.try_issue_credential("dev", None).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // 1000 s puts the cursor at least 700 s past the issue time, so the lease's bucket
    // (60 s after the issue time) is always behind it.
    fixture.host.clock.advance(1000);
    fixture.host.try_tidy().await.value();
    let credential = issue.await.unwrap().value();

    fixture.host.clock.advance(3600);
    let report = fixture.host.try_tidy().await.value();
    assert_eq!(report.revoked_leases, 1, "{report:?}");
    not_found(
        &fixture
            .host
            .try_lookup_lease(&credential.lease_id)
            .await
            .error(),
    );
    let key = fixture
        .litellm
        .key_by_hash(&sha256_hex(&credential.key))
        .unwrap();
    assert!(key.deleted, "the expired lease's key must be deleted");
}

/// Entries that are not due yet do not count toward tidy's 500-record limit, so 501 leases
/// expiring later in the current minute leave tidy complete.
#[tokio::test(flavor = "multi_thread")]
async fn tidy_completes_when_nothing_is_due() {
    let fixture = Fixture::start().await;
    let now = fixture.host.clock.now_seconds();
    // Leases expire 5 s or more into the bucket after next.
    let ttl = 120 - now % 60 + 5;
    fixture
        .role("later", &["m"], &format!("{ttl}s"), "1h")
        .await;
    let mut expiries = Vec::new();
    for _ in 0..501 {
        expiries.push(fixture.issue("later").await.expires_at);
    }
    let first_expiry = *expiries.iter().min().unwrap();
    let last_expiry = *expiries.iter().max().unwrap();
    assert_eq!(
        first_expiry / 60,
        last_expiry / 60,
        "setup: issuing took too long, the leases span two buckets"
    );

    // One second into the leases' bucket: all 501 are filed there, none is due.
    let bucket_start = first_expiry / 60 * 60;
    let target = bucket_start + 1;
    assert!(target < first_expiry, "setup: no lease may be due yet");
    fixture
        .host
        .clock
        .advance(target - fixture.host.clock.now_seconds());

    let report = fixture.host.try_tidy().await.value();
    assert_eq!(report.revoked_leases, 0);
    assert!(
        report.complete,
        "nothing is due, yet tidy asks to be called again: {report:?}"
    );
}

/// Error messages quote only the start of oversized input, as they do LiteLLM's own text.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_input_is_not_echoed_whole() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    let huge_number = "9".repeat(100_000);
    let huge_url = format!("http://{}", "a".repeat(100_000));

    let ttl_error = fixture
        .host
        .try_issue_credential("dev", Some(&huge_number))
        .await
        .error();
    let ttl_message = invalid_input(&ttl_error).to_owned();
    let url_request = ConfigRequest {
        url: Some(huge_url),
        master_key: None,
    };
    let url_error = fixture.host.try_write_config(&url_request).await.error();
    let url_message = invalid_input(&url_error).to_owned();

    assert!(
        ttl_message.len() < 4096,
        "ttl error has {} bytes",
        ttl_message.len()
    );
    assert!(
        url_message.len() < 4096,
        "url error has {} bytes",
        url_message.len()
    );
}

/// A lease whose expiry is exactly a due-bucket boundary is revoked at that second, not a
/// bucket later, and not a second early.
#[tokio::test(flavor = "multi_thread")]
async fn tidy_revokes_at_bucket_boundary() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    let mut credential = None;
    for _ in 0..3 {
        let now = fixture.host.clock.now_seconds();
        let ttl = 120 - now % 60;
        let issued = fixture
            .host
            .try_issue_credential("dev", Some(&ttl.to_string()))
            .await
            .value();
        if issued.expires_at % 60 == 0 {
            credential = Some(issued);
            break;
        }
    }
    let credential = credential.expect("setup: no lease expired on a bucket boundary");

    fixture
        .host
        .clock
        .advance(credential.expires_at - 1 - fixture.host.clock.now_seconds());
    assert_eq!(fixture.host.try_tidy().await.value().revoked_leases, 0);
    fixture.host.clock.advance(1);
    assert_eq!(fixture.host.try_tidy().await.value().revoked_leases, 1);
    not_found(
        &fixture
            .host
            .try_lookup_lease(&credential.lease_id)
            .await
            .error(),
    );
}

/// A role deleted and written again with a larger max TTL does not lift the cap a lease got
/// at issue, and the new role's TTL becomes the default increment.
#[tokio::test(flavor = "multi_thread")]
async fn renew_after_role_recreated_keeps_cap() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "60s", "10m").await;
    let credential = fixture.issue("dev").await;
    let issued = fixture
        .host
        .try_lookup_lease(&credential.lease_id)
        .await
        .value();

    fixture.host.try_delete_role("dev").await.value();
    fixture.role("dev", &["m"], "5m", "24h").await;

    let default_step = fixture
        .host
        .try_renew_lease(&credential.lease_id, None)
        .await
        .value();
    assert_eq!(default_step.lease_duration, 300);

    let capped = fixture
        .host
        .try_renew_lease(&credential.lease_id, Some("12h"))
        .await
        .value();
    assert_eq!(capped.lease.expires_at, issued.max_expires_at);
    assert_eq!(capped.lease.max_expires_at, issued.issued_at + 600);
    assert_eq!(capped.warnings.len(), 1, "{:?}", capped.warnings);
}

/// Input far beyond every limit is rejected as invalid input, and never traps an instance.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_inputs_never_trap() {
    let fixture = Fixture::start().await;
    let huge = "x".repeat(4 * 1024 * 1024);

    invalid_input(
        &fixture
            .host
            .try_write_role(&huge, &role_request())
            .await
            .error(),
    );
    invalid_input(&fixture.host.try_read_role(&huge).await.error());
    invalid_input(&fixture.host.try_delete_role(&huge).await.error());
    invalid_input(&fixture.host.try_lookup_lease(&huge).await.error());
    invalid_input(&fixture.host.try_revoke_lease(&huge).await.error());
    invalid_input(&fixture.host.try_renew_lease(&huge, None).await.error());

    let metadata = RoleRequest {
        metadata: Some(format!("{{\"k\":\"{huge}\"}}")),
        ..role_with_models(&["m"])
    };
    invalid_input(&fixture.host.try_write_role("dev", &metadata).await.error());
    let models = RoleRequest {
        models: Some(vec![huge.clone()]),
        ..role_request()
    };
    invalid_input(&fixture.host.try_write_role("dev", &models).await.error());
    let key = ConfigRequest {
        url: None,
        master_key: Some(huge.clone()),
    };
    invalid_input(&fixture.host.try_write_config(&key).await.error());

    // The engine still works afterwards.
    fixture.role("dev", &["m"], "1h", "2h").await;
    fixture.issue("dev").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn litellm_timeout_above_limit_is_rejected() {
    let host = TestHost::new().with_setting("litellm_timeout", "10m");
    let error = host.try_list_roles().await.error();
    assert!(
        invalid_input(&error).contains("litellm_timeout (600s) exceeds 120s"),
        "{error:?}"
    );
}
