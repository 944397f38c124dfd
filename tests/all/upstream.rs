//! LiteLLM failing or misbehaving: unreachable, denied by the host, redirecting, sending
//! endless bodies, and secrets kept out of every response and log line.

use std::time::Duration;

use litellm_secrets_tests::expect::{EngineResult, upstream};
use litellm_secrets_tests::fixture::{Fixture, MASTER_KEY};
use litellm_secrets_tests::host::{ConfigRequest, TestHost};
use litellm_secrets_tests::litellm_double::{LiteLlmDouble, Reply};
use serde_json::json;

fn unavailable() -> Reply {
    Reply::Json {
        status: 503,
        body: json!({"error": {"message": "service unavailable"}}),
    }
}

/// C15: revoke while LiteLLM is unreachable or failing.
#[tokio::test(flavor = "multi_thread")]
async fn c15_revoke_while_litellm_fails() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["gpt-4o-mini"], "1h", "2h").await;
    let credential = fixture.issue("dev").await;

    for _ in 0..3 {
        fixture.litellm.script("/key/delete", unavailable());
    }
    let error = fixture
        .host
        .try_revoke_lease(&credential.lease_id)
        .await
        .error();
    let failure = upstream(&error);
    assert_eq!(failure.status, Some(503));
    assert!(
        failure.message.contains("service unavailable"),
        "{}",
        failure.message
    );
    assert_eq!(
        fixture.request_count("/key/delete"),
        3,
        "three attempts with backoff"
    );

    let renewal = fixture
        .host
        .try_renew_lease(&credential.lease_id, None)
        .await
        .value();
    assert_eq!(renewal.lease_duration, 3600);
    assert_eq!(renewal.lease.revoke_attempts, 1);

    // No instance outlives its call, so nothing retries in the background.
    let seen = fixture.litellm.requests().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fixture.litellm.requests().len(), seen);

    fixture
        .host
        .try_revoke_lease(&credential.lease_id)
        .await
        .value();
    assert!(fixture.litellm.live_keys().is_empty());

    let second = fixture.issue("dev").await;
    let url = fixture.litellm.url();
    fixture.litellm.shutdown().await;
    let error = fixture
        .host
        .try_revoke_lease(&second.lease_id)
        .await
        .error();
    let failure = upstream(&error);
    assert_eq!(failure.status, None);
    assert!(failure.message.contains(&url), "{}", failure.message);
    assert!(
        failure.message.contains("connection refused"),
        "{}",
        failure.message
    );
    let kept_lease = fixture
        .host
        .try_lookup_lease(&second.lease_id)
        .await
        .value();
    assert_eq!(kept_lease.revoke_attempts, 1);
}

/// C23: the LiteLLM URL is not among the host's allowed outbound hosts.
#[tokio::test(flavor = "multi_thread")]
async fn c23_outbound_host_denied() {
    let probe = TestHost::new();
    let litellm = LiteLlmDouble::start(MASTER_KEY, probe.clock.clone())
        .await
        .unwrap();
    let allowed = format!("127.0.0.1:{}", litellm.port());
    let host = TestHost::new().with_allowed_hosts(&[&allowed]);

    for url in [
        "http://10.255.0.1:4000".to_owned(),
        format!("http://localhost:{}", litellm.port()),
    ] {
        let request = ConfigRequest {
            url: Some(url.clone()),
            master_key: Some(MASTER_KEY.into()),
        };
        let error = host.try_write_config(&request).await.error();
        let failure = upstream(&error);
        assert_eq!(failure.status, None);
        assert!(
            failure
                .message
                .contains(&format!("denied the outbound request to {url}")),
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains("allowed_outbound_hosts"),
            "{}",
            failure.message
        );
    }
    assert!(host.kv.get_text("config").is_none());

    let request = ConfigRequest {
        url: Some(format!("http://{allowed}/")),
        master_key: Some(MASTER_KEY.into()),
    };
    host.try_write_config(&request).await.value();
    let fixture = Fixture { host, litellm };
    fixture.role("dev", &["gpt-4o-mini"], "1h", "2h").await;
    fixture.issue("dev").await;

    // A replica whose allow list lacks the proxy: no key can exist, so nothing is cleaned up.
    let denied = fixture.host.replica().with_allowed_hosts(&["127.0.0.1:1"]);
    let requests_before = fixture.litellm.requests().len();
    let error = denied.try_issue_credential("dev", None).await.error();
    assert!(
        upstream(&error).message.contains("allowed_outbound_hosts"),
        "{error:?}"
    );
    assert_eq!(fixture.litellm.requests().len(), requests_before);
    assert!(fixture.stored("pending/").is_empty());
    assert_eq!(fixture.stored("lease/").len(), 1);
    fixture.issue("dev").await;
}

/// C25: the LiteLLM URL responds with a redirect.
#[tokio::test(flavor = "multi_thread")]
async fn c25_redirect_is_not_followed() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["gpt-4o-mini"], "1h", "2h").await;
    let target = LiteLlmDouble::start(MASTER_KEY, fixture.host.clock.clone())
        .await
        .unwrap();

    let locations = [
        (307, format!("{}/key/generate", target.url())),
        (301, "https://127.0.0.1:4443/key/generate".to_owned()),
    ];
    for (status, location) in locations {
        fixture.litellm.script(
            "/key/generate",
            Reply::Redirect {
                status,
                location: location.clone(),
            },
        );
        let error = fixture.host.try_issue_credential("dev", None).await.error();
        let failure = upstream(&error);
        assert_eq!(failure.status, Some(status));
        assert!(
            failure
                .message
                .contains(&format!("redirect (HTTP {status}) to {location}")),
            "{}",
            failure.message
        );
        assert!(
            failure.message.contains("set the config url"),
            "{}",
            failure.message
        );
    }
    assert!(
        target.requests().is_empty(),
        "the master key went to the redirect target"
    );
    assert!(fixture.stored("lease/").is_empty());
    assert!(fixture.stored("pending/").is_empty());
}

/// C27: LiteLLM sends an unbounded response body.
#[tokio::test(flavor = "multi_thread")]
async fn c27_unbounded_response_body() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["gpt-4o-mini"], "1h", "2h").await;
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
        let error = fixture.host.try_issue_credential("dev", None).await.error();
        let failure = upstream(&error);
        assert!(
            failure
                .message
                .contains("exceeded the limit of 1048576 bytes"),
            "{}",
            failure.message
        );
    }
    let alias_deletes = fixture
        .litellm
        .requests_to("/key/delete")
        .iter()
        .filter(|request| request.json().get("key_aliases").is_some())
        .count();
    assert_eq!(
        alias_deletes, 2,
        "a key may exist, so each was deleted by alias"
    );
    assert!(fixture.stored("lease/").is_empty());

    let credential = fixture.issue("dev").await;
    assert!(credential.key.starts_with("sk-"));
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_litellm_times_out() {
    let fixture = Fixture::start_with(TestHost::new().with_setting("litellm_timeout", "1s")).await;
    fixture.role("dev", &["gpt-4o-mini"], "1h", "2h").await;
    let credential = fixture.issue("dev").await;
    for _ in 0..3 {
        fixture.litellm.script(
            "/key/update",
            Reply::Delayed {
                delay: Duration::from_secs(5),
                reply: Box::new(Reply::Normal),
            },
        );
    }
    let error = fixture
        .host
        .try_renew_lease(&credential.lease_id, None)
        .await
        .error();
    let failure = upstream(&error);
    assert!(failure.timed_out, "{failure:?}");
    assert!(
        failure.message.contains("did not respond in time"),
        "{}",
        failure.message
    );
    assert_eq!(
        fixture.request_count("/key/update"),
        3,
        "a timed-out update is retried"
    );
}

/// C20: secrets in read responses, errors and logs.
#[tokio::test(flavor = "multi_thread")]
async fn c20_secrets_stay_out_of_reads_errors_logs() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["gpt-4o-mini"], "1h", "2h").await;
    let credential = fixture.issue("dev").await;
    let mut seen = Vec::new();

    seen.push(format!(
        "{:?}",
        fixture.host.try_read_config().await.value()
    ));
    seen.push(format!(
        "{:?}",
        fixture.host.try_read_role("dev").await.value()
    ));
    seen.push(format!(
        "{:?}",
        fixture
            .host
            .try_renew_lease(&credential.lease_id, None)
            .await
            .value()
    ));
    seen.push(format!(
        "{:?}",
        fixture
            .host
            .try_lookup_lease(&credential.lease_id)
            .await
            .value()
    ));
    seen.push(format!(
        "{:?}",
        fixture.host.try_list_leases("").await.value()
    ));

    let echo = format!("key {} and master {MASTER_KEY}", credential.key);
    fixture.litellm.script(
        "/key/generate",
        Reply::Json {
            status: 400,
            body: json!({"error": {"message": echo}}),
        },
    );
    seen.push(format!(
        "{:?}",
        fixture.host.try_issue_credential("dev", None).await.error()
    ));
    fixture.litellm.script(
        "/key/generate",
        Reply::Raw {
            status: 500,
            content_type: "text/plain".into(),
            body: echo.into_bytes(),
        },
    );
    seen.push(format!(
        "{:?}",
        fixture.host.try_issue_credential("dev", None).await.error()
    ));
    for _ in 0..3 {
        fixture.litellm.script("/key/delete", unavailable());
    }
    seen.push(format!(
        "{:?}",
        fixture
            .host
            .try_revoke_lease(&credential.lease_id)
            .await
            .error()
    ));
    fixture.litellm.set_master_key("sk-rotated");
    seen.push(format!(
        "{:?}",
        fixture.host.try_issue_credential("dev", None).await.error()
    ));
    let wrong = ConfigRequest {
        url: None,
        master_key: Some("sk-wrong-master".into()),
    };
    seen.push(format!(
        "{:?}",
        fixture.host.try_write_config(&wrong).await.error()
    ));
    fixture.litellm.set_master_key(MASTER_KEY);

    // Tidy logs the failed revocation of the expired lease, with LiteLLM's text masked.
    fixture.host.clock.advance(4000);
    for _ in 0..3 {
        fixture.litellm.script(
            "/key/delete",
            Reply::Json {
                status: 503,
                body: json!({"error": {"message": echo_for_logs(&credential.key)}}),
            },
        );
    }
    seen.push(format!("{:?}", fixture.host.try_tidy().await.value()));
    seen.push(fixture.host.logs());

    for text in &seen {
        assert!(!text.contains(MASTER_KEY), "master key in {text}");
        assert!(!text.contains("sk-wrong-master"), "rejected key in {text}");
        assert!(!text.contains(&credential.key), "minted key in {text}");
    }
    assert!(
        fixture.host.logs().contains("revoking expired lease"),
        "{}",
        fixture.host.logs()
    );
}

fn echo_for_logs(key: &str) -> String {
    format!("cannot delete {key} with {MASTER_KEY}")
}
