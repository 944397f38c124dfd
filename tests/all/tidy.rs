//! Tidy: expired leases revoked, renewed ones spared, failures retried with backoff and
//! then marked irrevocable, and work bounded by due records rather than all leases.

use litellm_secrets_tests::expect::{EngineResult, not_found, storage};
use litellm_secrets_tests::fixture::Fixture;
use litellm_secrets_tests::keyvalue::{Effect, Op};
use litellm_secrets_tests::litellm_double::Reply;
use serde_json::json;

fn unavailable() -> Reply {
    Reply::Json {
        status: 503,
        body: json!({"error": {"message": "service unavailable"}}),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tidy_revokes_only_expired() {
    let fixture = Fixture::start().await;
    fixture.role("short", &["m"], "60s", "1h").await;
    fixture.role("long", &["m"], "10m", "1h").await;
    let short = fixture.issue("short").await;
    let long = fixture.issue("long").await;

    assert_eq!(fixture.host.try_tidy().await.value().revoked_leases, 0);
    fixture.host.clock.advance(59);
    assert_eq!(fixture.host.try_tidy().await.value().revoked_leases, 0);
    fixture.host.clock.advance(1);
    let report = fixture.host.try_tidy().await.value();
    assert_eq!(report.revoked_leases, 1);
    assert!(report.complete);

    not_found(&fixture.host.try_lookup_lease(&short.lease_id).await.error());
    fixture.host.try_lookup_lease(&long.lease_id).await.value();
    assert_eq!(fixture.litellm.live_keys().len(), 1);

    fixture.host.clock.advance(600);
    assert_eq!(fixture.host.try_tidy().await.value().revoked_leases, 1);
    assert!(fixture.litellm.live_keys().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tidy_spares_renewed_lease() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "60s", "1h").await;
    let credential = fixture.issue("dev").await;

    fixture.host.clock.advance(50);
    fixture
        .host
        .try_renew_lease(&credential.lease_id, Some("10m"))
        .await
        .value();
    fixture.host.clock.advance(120);
    assert_eq!(fixture.host.try_tidy().await.value().revoked_leases, 0);
    fixture
        .host
        .try_lookup_lease(&credential.lease_id)
        .await
        .value();

    fixture.host.clock.advance(600);
    assert_eq!(fixture.host.try_tidy().await.value().revoked_leases, 1);
    not_found(
        &fixture
            .host
            .try_lookup_lease(&credential.lease_id)
            .await
            .error(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tidy_retries_then_marks_irrevocable() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "60s", "1h").await;
    let credential = fixture.issue("dev").await;
    fixture.host.clock.advance(61);

    // Each tidy attempt makes up to three requests; six failed attempts mark the lease.
    let mut marked = 0;
    for attempt in 1..=6 {
        for _ in 0..3 {
            fixture.litellm.script("/key/delete", unavailable());
        }
        let report = fixture.host.try_tidy().await.value();
        assert_eq!(
            (report.revoked_leases, report.failed),
            (0, 1),
            "attempt {attempt}"
        );
        marked += report.marked_irrevocable;

        let lease = fixture
            .host
            .try_lookup_lease(&credential.lease_id)
            .await
            .value();
        assert_eq!(lease.revoke_attempts, attempt);
        assert_eq!(lease.irrevocable, attempt >= 6);
        assert!(lease.last_revoke_error.unwrap().contains("HTTP 503"));

        // Nothing is retried before the backoff ends: one minute, doubling.
        assert_eq!(fixture.host.try_tidy().await.value().failed, 0);
        fixture.host.clock.advance(60 << (attempt - 1));
    }
    assert_eq!(marked, 1);
    assert_eq!(fixture.request_count("/key/delete"), 18);

    let report = fixture.host.try_tidy().await.value();
    assert_eq!(report.revoked_leases, 1);
    assert!(fixture.litellm.live_keys().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tidy_work_grows_with_expired_leases() {
    let fixture = Fixture::start().await;
    fixture.role("long", &["m"], "1h", "2h").await;
    fixture.role("short", &["m"], "60s", "2h").await;
    for _ in 0..150 {
        fixture.issue("long").await;
    }
    let expiring = [fixture.issue("short").await, fixture.issue("short").await];

    fixture.host.clock.advance(120);
    fixture.host.kv.take_reads();
    let report = fixture.host.try_tidy().await.value();
    assert_eq!(report.revoked_leases, 2);
    let reads = fixture.host.kv.take_reads();
    let lease_reads: std::collections::BTreeSet<&String> = reads
        .iter()
        .filter(|key| key.starts_with("lease/"))
        .collect();
    assert_eq!(lease_reads.len(), 2, "tidy read leases {lease_reads:?}");
    assert!(reads.len() < 30, "tidy read {} keys", reads.len());
    for credential in &expiring {
        not_found(
            &fixture
                .host
                .try_lookup_lease(&credential.lease_id)
                .await
                .error(),
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tidy_stops_at_work_limit() {
    let fixture = Fixture::start().await;
    fixture.role("short", &["m"], "60s", "1h").await;
    for _ in 0..260 {
        fixture.issue("short").await;
    }
    // Each issue files a lease and a pending entry, so 260 issues leave 520 entries.
    fixture.host.clock.advance(400);

    let first = fixture.host.try_tidy().await.value();
    assert!(!first.complete);
    let second = fixture.host.try_tidy().await.value();
    assert!(second.complete);
    assert_eq!(first.revoked_leases + second.revoked_leases, 260);
    assert!(fixture.litellm.live_keys().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tidy_retires_buckets() {
    let fixture = Fixture::start().await;
    fixture.role("short", &["m"], "60s", "1h").await;
    fixture.issue("short").await;
    fixture.issue("short").await;

    fixture.host.clock.advance(1000);
    assert_eq!(fixture.host.try_tidy().await.value().revoked_leases, 2);
    assert_eq!(fixture.stored("due/"), ["due/cursor"]);
    assert!(fixture.stored("pending/").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tidy_rebuilds_missing_cursor() {
    let fixture = Fixture::start().await;
    fixture.role("short", &["m"], "60s", "1h").await;

    // The first tidy runs after the lease expired: the cursor starts at the earliest bucket.
    let first = fixture.issue("short").await;
    fixture.host.clock.advance(61);
    assert_eq!(fixture.host.try_tidy().await.value().revoked_leases, 1);
    not_found(&fixture.host.try_lookup_lease(&first.lease_id).await.error());

    // A lost cursor is found again by one scan of the index.
    let second = fixture.issue("short").await;
    fixture.host.kv.delete("due/cursor");
    fixture.host.clock.advance(61);
    assert_eq!(fixture.host.try_tidy().await.value().revoked_leases, 1);
    not_found(
        &fixture
            .host
            .try_lookup_lease(&second.lease_id)
            .await
            .error(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tidy_reports_unreadable_cursor() {
    let fixture = Fixture::start().await;
    fixture.host.kv.put_text("due/cursor", "not a number");
    let error = fixture.host.try_tidy().await.error();
    assert!(storage(&error).contains("due/cursor"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tidy_survives_clock_going_back() {
    let fixture = Fixture::start().await;
    fixture.role("short", &["m"], "60s", "1h").await;

    // A tidy that ran while the host clock was a day ahead left the cursor a day ahead.
    let day_ahead = (fixture.host.clock.now_seconds() + 86_400) / 60;
    fixture
        .host
        .kv
        .put_text("due/cursor", &day_ahead.to_string());

    // Back on the right time, a lease expires and tidy must still find it.
    let credential = fixture.issue("short").await;
    fixture.host.clock.advance(61);
    assert_eq!(fixture.host.try_tidy().await.value().revoked_leases, 1);
    not_found(
        &fixture
            .host
            .try_lookup_lease(&credential.lease_id)
            .await
            .error(),
    );
}

/// Tidy leaves a lease that another revocation claimed, and looks again once the claim
/// would have ended.
#[tokio::test(flavor = "multi_thread")]
async fn tidy_skips_claimed_lease_until_claim_ends() {
    let fixture = Fixture::start().await;
    fixture.role("short", &["m"], "60s", "1h").await;
    let credential = fixture.issue("short").await;
    fixture.host.clock.advance(61);

    let key = fixture.stored("lease/").pop().unwrap();
    let mut record = fixture.host.kv.get_json(&key).unwrap();
    record["revoking_since"] = serde_json::json!(fixture.host.clock.now_seconds());
    fixture.host.kv.put_text(&key, &record.to_string());

    let report = fixture.host.try_tidy().await.value();
    assert_eq!((report.revoked_leases, report.failed), (0, 0));
    assert_eq!(fixture.request_count("/key/delete"), 0);

    fixture.host.clock.advance(601);
    assert_eq!(fixture.host.try_tidy().await.value().revoked_leases, 1);
    not_found(
        &fixture
            .host
            .try_lookup_lease(&credential.lease_id)
            .await
            .error(),
    );
}

/// Moves the shared clock forward to `target` seconds since the Unix epoch.
fn advance_to(fixture: &Fixture, target: u64) {
    let now = fixture.host.clock.now_seconds();
    assert!(target >= now, "the clock is already past {target}");
    fixture.host.clock.advance(target - now);
}

/// A revocation that crashed after deleting the key keeps its claim for 600 s. Tidy then
/// finishes it on its first run after the claim ends, not one claim period later.
#[tokio::test(flavor = "multi_thread")]
async fn tidy_finishes_crashed_revocation() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["m"], "720h", "768h").await;
    let credential = fixture.issue("dev").await;
    let storage_key = fixture.stored("lease/").pop().expect("one lease");

    // The claim starts half a minute into a bucket, so its end is too.
    let now = fixture.host.clock.now_seconds();
    advance_to(&fixture, (now / 60 + 1) * 60 + 30);
    fixture
        .host
        .kv
        .inject(Op::Delete, "lease/", Effect::Trap, 1);
    let crashed = fixture.host.try_revoke_lease(&credential.lease_id).await;
    assert!(
        crashed.is_err(),
        "the revocation did not crash: {crashed:?}"
    );
    fixture.host.kv.clear_faults();
    assert!(
        fixture.litellm.live_keys().is_empty(),
        "the key outlived the revocation"
    );
    let lease = fixture
        .host
        .kv
        .get_json(&storage_key)
        .expect("the lease outlived the crash");
    let claim_end = lease["revoking_since"].as_u64().expect("a claim") + 600;

    advance_to(&fixture, claim_end / 60 * 60);
    let due_entries = fixture.stored("due/").len();
    let early = fixture.host.try_tidy().await.value();
    assert_eq!(early.revoked_leases, 0, "tidy revoked during the claim");
    assert!(
        early.complete,
        "tidy during the claim stopped early: {early:?}"
    );
    assert!(
        fixture.stored("due/").len() <= due_entries,
        "tidy during the claim filed the lease again"
    );
    assert!(
        fixture.host.kv.get_text(&storage_key).is_some(),
        "lease during the claim"
    );

    advance_to(&fixture, claim_end + 1);
    let late = fixture.host.try_tidy().await.value();
    assert_eq!(late.revoked_leases, 1, "tidy after the claim ended");
    assert!(
        fixture.host.kv.get_text(&storage_key).is_none(),
        "lease after tidy"
    );
}
