//! Concurrent calls from parallel instances and replicas sharing one store.

use std::collections::BTreeSet;
use std::time::Duration;

use litellm_secrets_tests::expect::{EngineResult, role_request};
use litellm_secrets_tests::fixture::Fixture;
use litellm_secrets_tests::host::{Error, RoleRequest};
use litellm_secrets_tests::litellm_double::Reply;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn parallel_issues_are_distinct() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;

    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let host = fixture.host.replica();
            tokio::spawn(async move { host.try_issue_credential("dev", None).await.value() })
        })
        .collect();
    let mut credentials = Vec::new();
    for task in tasks {
        credentials.push(task.await.unwrap());
    }

    let lease_ids: BTreeSet<_> = credentials.iter().map(|c| c.lease_id.clone()).collect();
    let aliases: BTreeSet<_> = credentials.iter().map(|c| c.key_alias.clone()).collect();
    let keys: BTreeSet<_> = credentials.iter().map(|c| c.key.clone()).collect();
    assert_eq!((lease_ids.len(), aliases.len(), keys.len()), (16, 16, 16));
    assert_eq!(fixture.litellm.live_keys().len(), 16);
    assert_eq!(fixture.stored("lease/").len(), 16);
    assert!(fixture.stored("pending/").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_racing_revoke_leaves_no_lease() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;

    for _ in 0..8 {
        let credential = fixture.issue("dev").await;
        let renewer = fixture.host.replica();
        let revoker = fixture.host.replica();
        let (renew_id, revoke_id) = (credential.lease_id.clone(), credential.lease_id.clone());
        let renew =
            tokio::spawn(async move { renewer.try_renew_lease(&renew_id, Some("2h")).await });
        let revoke = tokio::spawn(async move { revoker.try_revoke_lease(&revoke_id).await });

        revoke.await.unwrap().value();
        match renew.await.unwrap() {
            Ok(Ok(_)) | Ok(Err(Error::NotFound(_))) | Ok(Err(Error::Upstream(_))) => {}
            Ok(Err(Error::InvalidInput(message))) if message.contains("is being revoked") => {}
            other => panic!("unexpected renewal outcome {other:?}"),
        }
        let lookup = fixture
            .host
            .try_lookup_lease(&credential.lease_id)
            .await
            .error();
        assert!(
            matches!(lookup, Error::NotFound(_)),
            "a revoked lease came back: {lookup:?}"
        );
    }
    assert!(fixture.litellm.live_keys().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_role_updates_both_apply() {
    let fixture = Fixture::start().await;
    for round in 1..=6u64 {
        fixture.role("dev", &["m"], "1h", "2h").await;
        let first = fixture.host.replica();
        let second = fixture.host.replica();
        let rpm = tokio::spawn(async move {
            let request = RoleRequest {
                rpm_limit: Some(round),
                ..role_request()
            };
            first.try_write_role("dev", &request).await.value()
        });
        let tpm = tokio::spawn(async move {
            let request = RoleRequest {
                tpm_limit: Some(round * 10),
                ..role_request()
            };
            second.try_write_role("dev", &request).await.value()
        });
        rpm.await.unwrap();
        tpm.await.unwrap();

        let role = fixture.host.try_read_role("dev").await.value();
        assert_eq!(
            (role.rpm_limit, role.tpm_limit),
            (Some(round), Some(round * 10))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_role_creates_are_all_listed() {
    let fixture = Fixture::start().await;
    let tasks: Vec<_> = (0..12)
        .map(|index| {
            let host = fixture.host.replica();
            tokio::spawn(async move {
                let request = RoleRequest {
                    models: Some(vec!["m".into()]),
                    ..role_request()
                };
                host.try_write_role(&format!("role-{index:02}"), &request)
                    .await
                    .value()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let expected: Vec<String> = (0..12).map(|index| format!("role-{index:02}")).collect();
    assert_eq!(fixture.host.try_list_roles().await.value(), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_tidy_concurrently() {
    let fixture = Fixture::start().await;
    fixture.role("short", &["m"], "60s", "1h").await;
    for _ in 0..20 {
        fixture.issue("short").await;
    }
    fixture.host.clock.advance(61);

    let first = fixture.host.replica();
    let second = fixture.host.replica();
    let a = tokio::spawn(async move { first.try_tidy().await.value() });
    let b = tokio::spawn(async move { second.try_tidy().await.value() });
    let (a, b) = (a.await.unwrap(), b.await.unwrap());

    assert_eq!(a.failed + b.failed, 0);
    assert!(a.revoked_leases + b.revoked_leases >= 20);
    assert!(fixture.stored("lease/").is_empty());
    assert!(fixture.litellm.live_keys().is_empty());
}

/// Spin's SQLite store turns a swap on an absent key into a plain write. The role index
/// exists from the config write on, so concurrent role creation stays atomic there too.
#[tokio::test(flavor = "multi_thread")]
async fn upsert_store_keeps_every_role() {
    let fixture = Fixture::start().await;
    fixture.host.kv.set_upsert_on_absent_swap(true);

    let tasks: Vec<_> = (0..12)
        .map(|index| {
            let host = fixture.host.replica();
            tokio::spawn(async move {
                let request = RoleRequest {
                    models: Some(vec!["m".into()]),
                    ttl: Some("60s".into()),
                    ..role_request()
                };
                host.try_write_role(&format!("role-{index:02}"), &request)
                    .await
                    .value();
                host.try_issue_credential(&format!("role-{index:02}"), None)
                    .await
                    .value()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let expected: Vec<String> = (0..12).map(|index| format!("role-{index:02}")).collect();
    assert_eq!(fixture.host.try_list_roles().await.value(), expected);

    fixture.host.clock.advance(61);
    assert_eq!(fixture.host.try_tidy().await.value().revoked_leases, 12);
    assert!(fixture.litellm.live_keys().is_empty());
}

/// A revoke that deletes the key while a renewal waits for LiteLLM's update: the renewal
/// reports the revocation, not LiteLLM's 404 for the key it no longer finds.
#[tokio::test(flavor = "multi_thread")]
async fn renewal_overtaken_by_revoke_reports_the_revocation() {
    use std::time::Duration;

    use litellm_secrets_tests::expect::not_found;
    use litellm_secrets_tests::litellm_double::Reply;

    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    let credential = fixture.issue("dev").await;
    let slow_update = Reply::Delayed {
        delay: Duration::from_millis(400),
        reply: Box::new(Reply::Normal),
    };
    fixture.litellm.script("/key/update", slow_update);

    let renewer = fixture.host.replica();
    let lease_id = credential.lease_id.clone();
    let renewal = tokio::spawn(async move {
        renewer
            .try_renew_lease(&lease_id, Some("30m"))
            .await
            .error()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    fixture
        .host
        .try_revoke_lease(&credential.lease_id)
        .await
        .value();

    let error = renewal.await.unwrap();
    assert_eq!(
        not_found(&error),
        format!(
            "lease {} was revoked during the renewal",
            credential.lease_id
        )
    );
    assert!(fixture.litellm.live_keys().is_empty());
    assert!(fixture.stored("lease/").is_empty());
}

/// A revocation that fails must not release a claim that another revocation took over
/// while the first waited on LiteLLM, or a renewal could succeed for a key being deleted.
#[tokio::test(flavor = "multi_thread")]
async fn failed_revoke_keeps_takeover_claim() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    let credential = fixture.issue("dev").await;
    let storage_key = fixture.stored("lease/").pop().expect("one stored lease");

    let failure = Reply::Json {
        status: 500,
        body: json!({"error": {"message": "database unavailable"}}),
    };
    fixture.litellm.script(
        "/key/delete",
        Reply::Delayed {
            delay: Duration::from_secs(2),
            reply: Box::new(failure.clone()),
        },
    );
    fixture.litellm.script("/key/delete", failure.clone());
    fixture.litellm.script("/key/delete", failure);

    let revoker = fixture.host.replica();
    let lease_id = credential.lease_id.clone();
    let revoke = tokio::spawn(async move { revoker.try_revoke_lease(&lease_id).await });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Another revocation takes the claim over in the same second, while the first waits
    // for LiteLLM.
    let mut lease = fixture.host.kv.get_json(&storage_key).expect("the lease");
    let first_claim = lease["revoking_claim"].clone();
    assert!(first_claim.is_string(), "the first claim: {lease}");
    let takeover = json!("takeover-claim");
    lease["revoking_claim"] = takeover.clone();
    fixture.host.kv.put_text(&storage_key, &lease.to_string());

    let error = revoke.await.unwrap().error();
    assert!(matches!(error, Error::Upstream(_)), "revoke: {error:?}");
    let lease = fixture.host.kv.get_json(&storage_key).expect("the lease");
    assert_eq!(lease["revoking_claim"], takeover, "the takeover claim");
    assert!(
        lease["revoking_since"].is_u64(),
        "the takeover's start: {lease}"
    );
    assert_eq!(lease["revoke_attempts"], json!(1), "failed attempts");

    let renewal = fixture
        .host
        .try_renew_lease(&credential.lease_id, Some("2h"))
        .await
        .error();
    match renewal {
        Error::InvalidInput(message) => {
            assert!(message.contains("is being revoked"), "renewal: {message}")
        }
        other => panic!("renewal during the takeover revocation: {other:?}"),
    }
}
