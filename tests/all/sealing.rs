//! Encryption at rest: with `encryption_key` set, stored master keys are sealed with
//! ChaCha20-Poly1305 and open only with the same key.

use litellm_secrets_tests::expect::{EngineResult, invalid_input, storage};
use litellm_secrets_tests::fixture::{Fixture, MASTER_KEY};
use litellm_secrets_tests::host::{ConfigRequest, TestHost};

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff";
const OTHER_KEY: &str = "ff00112233445566778899aabbccddeeff00112233445566778899aabbccddee";

fn stored_connection(fixture: &Fixture) -> serde_json::Value {
    let key = fixture
        .stored("connection/")
        .pop()
        .expect("a connection record");
    fixture.host.kv.get_json(&key).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn master_key_is_sealed_at_rest() {
    let fixture = Fixture::start_with(TestHost::new().with_setting("encryption_key", KEY)).await;
    let record = stored_connection(&fixture);
    assert!(record.get("master_key").is_none(), "{record}");
    assert_eq!(
        record["sealed_master_key"]["nonce"].as_str().unwrap().len(),
        24
    );
    for (name, value) in fixture.host.kv.snapshot() {
        assert!(
            !String::from_utf8_lossy(&value).contains(MASTER_KEY),
            "{name} holds the master key"
        );
    }

    fixture.role("dev", &["m"], "1h", "2h").await;
    let credential = fixture.issue("dev").await;
    fixture
        .host
        .try_revoke_lease(&credential.lease_id)
        .await
        .value();
    assert!(fixture.litellm.live_keys().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sealed_key_needs_the_same_key() {
    let fixture = Fixture::start_with(TestHost::new().with_setting("encryption_key", KEY)).await;
    fixture.role("dev", &["m"], "1h", "2h").await;

    let without = fixture.host.replica().with_setting("encryption_key", "");
    let error = without.try_issue_credential("dev", None).await.error();
    assert!(
        storage(&error).contains("no encryption_key is set"),
        "{error:?}"
    );

    let wrong = fixture
        .host
        .replica()
        .with_setting("encryption_key", OTHER_KEY);
    let error = wrong.try_issue_credential("dev", None).await.error();
    assert!(
        storage(&error).contains("was sealed with another key"),
        "{error:?}"
    );
    assert_eq!(fixture.request_count("/key/generate"), 0);

    // Reading the config opens the master key too, so a host can check its key at start.
    let error = without.try_read_config().await.error();
    assert!(
        storage(&error).contains("no encryption_key is set"),
        "{error:?}"
    );
    let error = wrong.try_read_config().await.error();
    assert!(
        storage(&error).contains("was sealed with another key"),
        "{error:?}"
    );
    let config = fixture.host.try_read_config().await.value();
    assert!(config.master_key_set);

    // The URL is authenticated with the ciphertext: a record whose URL was changed in the
    // store does not open.
    let key = fixture.stored("connection/").pop().unwrap();
    let mut record = stored_connection(&fixture);
    record["url"] = serde_json::json!(format!("{}/moved", fixture.litellm.url()));
    fixture.host.kv.put_text(&key, &record.to_string());
    let error = fixture.host.try_issue_credential("dev", None).await.error();
    assert!(
        storage(&error).contains("must be the key it was written with"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_key_is_sealed_on_next_write() {
    let fixture = Fixture::start().await;
    assert_eq!(stored_connection(&fixture)["master_key"], MASTER_KEY);

    let sealed_host = fixture.host.replica().with_setting("encryption_key", KEY);
    sealed_host.try_read_config().await.value();
    let rotate = ConfigRequest {
        url: None,
        master_key: Some(MASTER_KEY.into()),
    };
    sealed_host.try_write_config(&rotate).await.value();
    assert!(stored_connection(&fixture).get("master_key").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_encryption_key_is_rejected() {
    for value in ["short", &"g".repeat(64), &"a".repeat(66)] {
        let host = TestHost::new().with_setting("encryption_key", value);
        let error = host.try_list_roles().await.error();
        let message = invalid_input(&error);
        assert!(message.contains("encryption_key is invalid"), "{message}");
        assert!(!message.contains(value), "the setting's value is echoed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn encryption_key_rotation() {
    let fixture = Fixture::start_with(TestHost::new().with_setting("encryption_key", KEY)).await;
    fixture.role("dev", &["m"], "1h", "2h").await;
    let credential = fixture.issue("dev").await;
    let first_id = stored_connection(&fixture)["sealed_master_key"]["key_id"].clone();

    // During the rotation both keys open records; a config write re-seals with the new one.
    let rotating = fixture
        .host
        .replica()
        .with_setting("encryption_key", OTHER_KEY)
        .with_setting("previous_encryption_key", KEY);
    rotating.try_issue_credential("dev", None).await.value();
    let rotate = ConfigRequest {
        url: None,
        master_key: Some(MASTER_KEY.into()),
    };
    rotating.try_write_config(&rotate).await.value();
    let second_id = stored_connection(&fixture)["sealed_master_key"]["key_id"].clone();
    assert_ne!(first_id, second_id);
    assert_eq!(second_id.as_str().unwrap().len(), 16);

    // Afterwards the old key is no longer needed.
    let rotated = fixture
        .host
        .replica()
        .with_setting("encryption_key", OTHER_KEY);
    rotated.try_revoke_lease(&credential.lease_id).await.value();
    let old_only = fixture.host.replica().with_setting("encryption_key", KEY);
    let error = old_only.try_issue_credential("dev", None).await.error();
    assert!(
        storage(&error).contains("sealed with another key"),
        "{error:?}"
    );
}
