//! End-to-end tests against the real LiteLLM proxy. They run when `LITELLM_URL` and
//! `LITELLM_MASTER_KEY` are set (`.ci/run` starts the proxy and sets them) and report that
//! they were skipped otherwise. With `LITELLM_REQUIRED=1` a missing proxy fails them.
//!
//! Each proves the outcome with the minted key itself, through LiteLLM's chat completions.

use litellm_secrets_tests::expect::{EngineResult, invalid_input, role_request};
use litellm_secrets_tests::host::{ConfigRequest, Credential, RoleRequest, TestHost};
use litellm_secrets_tests::http_client::{self, chat_completion, key_info};
use litellm_secrets_tests::real_litellm::{RealLiteLlm, real_litellm};
use serde_json::Value;

/// Creates a host configured for the real proxy, with role `name` written from `request`.
async fn configured_host(real: &RealLiteLlm, name: &str, request: RoleRequest) -> TestHost {
    let host = TestHost::new();
    let config = ConfigRequest {
        url: Some(real.url.clone()),
        master_key: Some(real.master_key.clone()),
    };
    host.try_write_config(&config).await.value();
    host.try_write_role(name, &request).await.value();
    host
}

fn scoped_role(models: &[&str], ttl: &str) -> RoleRequest {
    RoleRequest {
        models: Some(models.iter().map(|model| model.to_string()).collect()),
        ttl: Some(ttl.into()),
        max_ttl: Some("1h".into()),
        ..role_request()
    }
}

async fn chat_status(real: &RealLiteLlm, credential: &Credential, model: &str) -> (u16, Value) {
    let reply = chat_completion(&real.url, &credential.key, model)
        .await
        .expect("chat request");
    (reply.status, reply.json())
}

fn error_type(body: &Value) -> &str {
    body.pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn real_key_is_scoped_then_revoked() {
    let Some(real) = real_litellm("real_key_is_scoped_then_revoked") else {
        return;
    };
    let host = configured_host(&real, "scoped", scoped_role(&["gpt-4o-mini"], "10m")).await;
    let credential = host.try_issue_credential("scoped", None).await.value();

    let (status, body) = chat_status(&real, &credential, "gpt-4o-mini").await;
    assert_eq!(status, 200, "allowed model: {body}");
    assert_eq!(
        body.pointer("/choices/0/message/role")
            .and_then(Value::as_str),
        Some("assistant")
    );

    let (status, body) = chat_status(&real, &credential, "gpt-4o").await;
    assert_eq!(status, 403, "other model: {body}");
    assert_eq!(error_type(&body), "key_model_access_denied");

    host.try_revoke_lease(&credential.lease_id).await.value();
    let (status, body) = chat_status(&real, &credential, "gpt-4o-mini").await;
    assert_eq!(status, 401, "after revoke: {body}");
    assert_eq!(error_type(&body), "token_not_found_in_db");

    let info = key_info(&real.url, &real.master_key, &credential.key)
        .await
        .expect("key info");
    assert_eq!(
        info.json().pointer("/info/status").and_then(Value::as_str),
        Some("deleted")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn real_tidy_revokes_expired_lease() {
    let Some(real) = real_litellm("real_tidy_revokes_expired_lease") else {
        return;
    };
    let host = configured_host(&real, "short", scoped_role(&["gpt-4o-mini"], "30s")).await;
    let credential = host.try_issue_credential("short", None).await.value();
    assert_eq!(credential.lease_duration, 30);
    assert_eq!(chat_status(&real, &credential, "gpt-4o-mini").await.0, 200);

    // The lease expires on the host's clock; LiteLLM's own expiry lies 60 s later, so only
    // tidy's revocation can end the key now.
    host.clock.advance(31);
    let report = host.try_tidy().await.value();
    assert_eq!(report.revoked_leases, 1);
    assert_eq!(report.failed, 0);

    let (status, body) = chat_status(&real, &credential, "gpt-4o-mini").await;
    assert_eq!(status, 401, "after tidy: {body}");
    host.try_lookup_lease(&credential.lease_id).await.error();
}

#[tokio::test(flavor = "multi_thread")]
async fn real_renew_moves_litellm_expiry() {
    let Some(real) = real_litellm("real_renew_moves_litellm_expiry") else {
        return;
    };
    let host = configured_host(&real, "renewable", scoped_role(&["gpt-4o-mini"], "60s")).await;
    let credential = host.try_issue_credential("renewable", None).await.value();

    let before = expires_of(&real, &credential).await;
    let renewal = host
        .try_renew_lease(&credential.lease_id, Some("600"))
        .await
        .value();
    assert_eq!(renewal.lease_duration, 600);
    let after = expires_of(&real, &credential).await;

    // Issue set LiteLLM's expiry to about now + 60 + 60 s, the renewal to now + 600 + 60 s.
    let moved = after - before;
    assert!(
        (530..=560).contains(&moved),
        "expires moved by {moved} s: {before} -> {after}"
    );
    assert!(
        after >= renewal.lease.expires_at as i64 - 5,
        "key ends before its lease"
    );
    assert_eq!(chat_status(&real, &credential, "gpt-4o-mini").await.0, 200);

    host.try_revoke_lease(&credential.lease_id).await.value();
}

#[tokio::test(flavor = "multi_thread")]
async fn real_key_carries_role_scope() {
    let Some(real) = real_litellm("real_key_carries_role_scope") else {
        return;
    };
    let request = RoleRequest {
        max_budget: Some(3.5),
        tpm_limit: Some(5000),
        rpm_limit: Some(50),
        key_alias_prefix: Some("ci-team".into()),
        metadata: Some(r#"{"team":"a","cost_center":1234,"nested":{"k":true}}"#.into()),
        ..scoped_role(&["gpt-4o-mini"], "5m")
    };
    let host = configured_host(&real, "scope", request).await;
    let credential = host.try_issue_credential("scope", None).await.value();
    assert!(
        credential.key_alias.starts_with("ci-team-scope-"),
        "{}",
        credential.key_alias
    );

    let info = key_info(&real.url, &real.master_key, &credential.key)
        .await
        .expect("key info")
        .json();
    let info = &info["info"];
    assert_eq!(info["key_alias"], Value::from(credential.key_alias.clone()));
    assert_eq!(info["models"], serde_json::json!(["gpt-4o-mini"]));
    assert_eq!(info["max_budget"], serde_json::json!(3.5));
    assert_eq!(info["tpm_limit"], serde_json::json!(5000));
    assert_eq!(info["rpm_limit"], serde_json::json!(50));
    assert_eq!(info["metadata"]["team"], "a");
    assert_eq!(info["metadata"]["cost_center"], 1234);
    assert_eq!(info["metadata"]["nested"]["k"], true);
    assert_eq!(info["metadata"]["secrets_engine_role"], "scope");
    assert_eq!(
        info["metadata"]["secrets_engine_lease_id"],
        Value::from(credential.lease_id.clone())
    );

    // key_type llm_api: the minted key cannot manage keys.
    let generate = http_client::send(
        "POST",
        &format!("{}/key/generate", real.url),
        &credential.key,
        Some(&serde_json::json!({})),
    )
    .await
    .expect("generate with minted key");
    assert_eq!(generate.status, 403, "{}", generate.text());

    host.try_revoke_lease(&credential.lease_id).await.value();
}

#[tokio::test(flavor = "multi_thread")]
async fn real_revoke_after_out_of_band_delete() {
    let Some(real) = real_litellm("real_revoke_after_out_of_band_delete") else {
        return;
    };
    let host = configured_host(&real, "gone", scoped_role(&["gpt-4o-mini"], "5m")).await;
    let credential = host.try_issue_credential("gone", None).await.value();

    let delete = http_client::send(
        "POST",
        &format!("{}/key/delete", real.url),
        &real.master_key,
        Some(&serde_json::json!({ "keys": [credential.key] })),
    )
    .await
    .expect("delete out of band");
    assert_eq!(delete.status, 200, "{}", delete.text());

    host.try_revoke_lease(&credential.lease_id).await.value();
    host.try_lookup_lease(&credential.lease_id).await.error();
}

#[tokio::test(flavor = "multi_thread")]
async fn real_wrong_master_key_stores_nothing() {
    let Some(real) = real_litellm("real_wrong_master_key_stores_nothing") else {
        return;
    };
    let host = TestHost::new();
    let config = ConfigRequest {
        url: Some(real.url.clone()),
        master_key: Some("sk-wrong-master".into()),
    };
    let error = host.try_write_config(&config).await.error();
    let message = invalid_input(&error);
    assert!(
        message.contains("rejected the master key (HTTP 401)"),
        "{message}"
    );
    assert!(!message.contains("sk-wrong-master"));
    host.try_read_config().await.error();
}

/// C03 and C10 on the real proxy: every prefix the engine accepts mints a key, and role
/// metadata of any JSON shape reaches the key unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn real_c03_c10_accepted_input_mints() {
    let Some(real) = real_litellm("real_c03_c10_accepted_input_mints") else {
        return;
    };
    let metadata = r#"{"team":"a","cost_center":1234,"tags":["x"],"nested":{"k":true}}"#;
    let longest_prefix = format!(
        "p{}",
        "a.b_c-".repeat(10).chars().take(63).collect::<String>()
    );
    let longest_role = "r".repeat(128);
    let cases = [
        ("team-a", "m3"),
        ("svc.example.com", "dotted"),
        ("A_1", "Upper_1"),
        (longest_prefix.as_str(), longest_role.as_str()),
    ];
    for (prefix, role) in cases {
        let request = RoleRequest {
            key_alias_prefix: Some(prefix.into()),
            metadata: Some(metadata.into()),
            ..scoped_role(&["gpt-4o-mini"], "5m")
        };
        let host = configured_host(&real, role, request).await;
        let credential = host.try_issue_credential(role, None).await.value();
        assert!(
            credential
                .key_alias
                .starts_with(&format!("{prefix}-{role}-"))
        );
        assert_eq!(
            chat_status(&real, &credential, "gpt-4o-mini").await.0,
            200,
            "prefix {prefix}"
        );

        let info = key_info(&real.url, &real.master_key, &credential.key)
            .await
            .expect("key info")
            .json();
        assert_eq!(info["info"]["metadata"]["tags"], serde_json::json!(["x"]));
        assert_eq!(info["info"]["metadata"]["cost_center"], 1234);
        assert_eq!(
            info["info"]["key_alias"],
            Value::from(credential.key_alias.clone())
        );
        host.try_revoke_lease(&credential.lease_id).await.value();
    }
}

/// Returns LiteLLM's `expires` of the credential's key as Unix seconds.
async fn expires_of(real: &RealLiteLlm, credential: &Credential) -> i64 {
    let info = key_info(&real.url, &real.master_key, &credential.key)
        .await
        .expect("key info")
        .json();
    let text = info
        .pointer("/info/expires")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("key info without expires: {info}"));
    unix_seconds(text).unwrap_or_else(|| panic!("unreadable expires {text:?}"))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff](Z|+00:00)` into Unix seconds.
fn unix_seconds(text: &str) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let utc = text.ends_with('Z') || text.ends_with("+00:00");
    if !utc {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[test]
fn unix_seconds_parses_both_forms() {
    assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        unix_seconds("2026-12-04T15:47:05.251807Z"),
        Some(1_796_399_225)
    );
    assert_eq!(
        unix_seconds("2026-12-04T15:47:05.251000+00:00"),
        Some(1_796_399_225)
    );
    assert_eq!(unix_seconds("2026-12-04T15:47:05+01:00"), None);
}
