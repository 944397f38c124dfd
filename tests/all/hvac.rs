//! The Python Vault client hvac drives the HTTP API, unchanged, through a server on
//! 127.0.0.1.

use litellm_secrets_tests::fixture::{Fixture, MASTER_KEY};
use litellm_secrets_tests::host::TestHost;
use litellm_secrets_tests::http_api::ApiServer;
use litellm_secrets_tests::hvac::{hvac_python, run_client_script};

const ADMIN: &str = "hvac-admin-token";

#[tokio::test(flavor = "multi_thread")]
async fn hvac_drives_the_api() {
    let Some(python) = hvac_python("hvac_drives_the_api") else {
        return;
    };
    let fixture = Fixture::start_with(TestHost::new().with_admin_token(ADMIN)).await;
    let server = ApiServer::start(fixture.host.clone())
        .await
        .expect("serving the component");

    let report = run_client_script(
        python,
        &server.url(),
        ADMIN,
        &fixture.litellm.url(),
        MASTER_KEY,
    )
    .await;
    assert_eq!(report["ok"], true);
    assert!(report["checks"].as_u64().unwrap() >= 30, "{report}");

    assert_eq!(fixture.request_count("/key/generate"), 3);
    assert_eq!(fixture.request_count("/key/update"), 2);
    assert!(
        fixture.litellm.live_keys().is_empty(),
        "every key the script got was revoked"
    );
}
