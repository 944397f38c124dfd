//! Config writes, reads and deletes: verification against LiteLLM, URL rules and the
//! master key staying out of every read and error.

use litellm_secrets_tests::expect::{EngineResult, invalid_input, not_found, upstream};
use litellm_secrets_tests::fixture::{Fixture, MASTER_KEY};
use litellm_secrets_tests::host::{ConfigRequest, TestHost};
use litellm_secrets_tests::litellm_double::LiteLlmDouble;

fn config(url: Option<&str>, master_key: Option<&str>) -> ConfigRequest {
    ConfigRequest {
        url: url.map(str::to_owned),
        master_key: master_key.map(str::to_owned),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn config_write_verifies_and_hides_key() {
    let fixture = Fixture::start().await;
    let read = fixture.host.try_read_config().await.value();
    assert_eq!(read.url, fixture.litellm.url());
    assert!(read.master_key_set);
    assert!(read.updated_at >= fixture.host.clock.now_seconds() - 5);

    let checks = fixture.litellm.requests_to("/key/list");
    assert_eq!(checks.len(), 1);
    assert_eq!(
        checks[0].header("authorization"),
        Some(format!("Bearer {MASTER_KEY}").as_str())
    );

    let stored = fixture.host.kv.get_text("config").expect("config record");
    assert!(!stored.contains(MASTER_KEY), "{stored}");
    assert!(!format!("{read:?}").contains(MASTER_KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn config_rejected_key_stores_nothing() {
    let host = TestHost::new();
    let litellm = LiteLlmDouble::start(MASTER_KEY, host.clock.clone())
        .await
        .unwrap();
    let error = host
        .try_write_config(&config(Some(&litellm.url()), Some("sk-wrong-master")))
        .await
        .error();
    let message = invalid_input(&error);
    assert!(
        message.contains("rejected the master key (HTTP 401)"),
        "{message}"
    );
    assert!(message.contains(&litellm.url()), "{message}");
    assert!(!message.contains("sk-wrong-master"));
    not_found(&host.try_read_config().await.error());
    assert!(host.kv.keys_with_prefix("con").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn config_first_write_needs_url_and_key() {
    let host = TestHost::new();
    let litellm = LiteLlmDouble::start(MASTER_KEY, host.clock.clone())
        .await
        .unwrap();

    let error = host
        .try_write_config(&config(None, Some(MASTER_KEY)))
        .await
        .error();
    assert!(invalid_input(&error).contains("url is required"));
    let error = host
        .try_write_config(&config(Some(&litellm.url()), None))
        .await
        .error();
    assert!(invalid_input(&error).contains("master_key is required on the first config write"));
    assert!(litellm.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn config_url_change_requires_master_key() {
    let fixture = Fixture::start().await;
    let other = LiteLlmDouble::start("sk-other-master", fixture.host.clock.clone())
        .await
        .unwrap();

    let error = fixture
        .host
        .try_write_config(&config(Some(&other.url()), None))
        .await
        .error();
    let message = invalid_input(&error);
    assert!(
        message.contains("master_key is required when url changes"),
        "{message}"
    );
    assert!(message.contains(&other.url()), "{message}");
    assert_eq!(
        fixture.host.try_read_config().await.value().url,
        fixture.litellm.url()
    );
    assert!(other.requests().is_empty());

    let moved = fixture
        .host
        .try_write_config(&config(Some(&other.url()), Some("sk-other-master")))
        .await
        .value();
    assert_eq!(moved.url, other.url());
}

#[tokio::test(flavor = "multi_thread")]
async fn config_master_key_rotation_keeps_url() {
    let fixture = Fixture::start().await;
    fixture.litellm.set_master_key("sk-rotated-master");

    let rotated = fixture
        .host
        .try_write_config(&config(None, Some("sk-rotated-master")))
        .await
        .value();
    assert_eq!(rotated.url, fixture.litellm.url());
    let last = fixture.litellm.requests_to("/key/list").pop().unwrap();
    assert_eq!(
        last.header("authorization"),
        Some("Bearer sk-rotated-master")
    );

    // Rewriting the same URL without a key re-verifies the stored one.
    fixture
        .host
        .try_write_config(&config(Some(&fixture.litellm.url()), None))
        .await
        .value();
    assert_eq!(fixture.request_count("/key/list"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_invalid_input_changes_nothing() {
    let fixture = Fixture::start().await;
    let before = fixture.litellm.requests().len();
    let cases = [
        (
            config(Some("127.0.0.1:4000"), Some(MASTER_KEY)),
            "url is invalid",
        ),
        (
            config(Some("ftp://127.0.0.1"), Some(MASTER_KEY)),
            "url is invalid",
        ),
        (
            config(Some("http://127.0.0.1:4000?x=1"), Some(MASTER_KEY)),
            "url is invalid",
        ),
        (
            config(Some("http://user:pw@127.0.0.1"), Some(MASTER_KEY)),
            "url is invalid",
        ),
        (config(None, Some("")), "master_key is empty"),
        (
            config(None, Some("sk-with space")),
            "master_key contains whitespace",
        ),
        (
            config(None, Some(&"k".repeat(2000))),
            "master_key is longer",
        ),
    ];
    for (request, expected) in cases {
        let error = fixture.host.try_write_config(&request).await.error();
        let message = invalid_input(&error);
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains("sk-with space"));
    }
    assert_eq!(fixture.litellm.requests().len(), before);
    assert_eq!(
        fixture.host.try_read_config().await.value().url,
        fixture.litellm.url()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_trailing_slash_is_normalized() {
    let host = TestHost::new();
    let litellm = LiteLlmDouble::start(MASTER_KEY, host.clock.clone())
        .await
        .unwrap();
    let url = format!("{}/", litellm.url());
    let written = host
        .try_write_config(&config(Some(&url), Some(MASTER_KEY)))
        .await
        .value();
    assert_eq!(written.url, litellm.url());
    assert!(
        litellm
            .requests()
            .iter()
            .all(|request| !request.path.contains("//"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_unreachable_litellm_stores_nothing() {
    let host = TestHost::new();
    let litellm = LiteLlmDouble::start(MASTER_KEY, host.clock.clone())
        .await
        .unwrap();
    let url = litellm.url();
    litellm.shutdown().await;

    let error = host
        .try_write_config(&config(Some(&url), Some(MASTER_KEY)))
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
    not_found(&host.try_read_config().await.error());
}

#[tokio::test(flavor = "multi_thread")]
async fn config_delete_blocks_issue_keeps_revoke() {
    let fixture = Fixture::start().await;
    fixture.role("dev", &["gpt-4o-mini"], "1h", "2h").await;
    let credential = fixture.issue("dev").await;

    fixture.host.try_delete_config().await.value();
    fixture.host.try_delete_config().await.value();
    not_found(&fixture.host.try_read_config().await.error());
    let error = fixture.host.try_issue_credential("dev", None).await.error();
    assert!(not_found(&error).contains("not configured"));

    fixture
        .host
        .try_revoke_lease(&credential.lease_id)
        .await
        .value();
    assert!(fixture.litellm.live_keys().is_empty());
}
