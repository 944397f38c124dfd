//! The Python Vault client hvac drives the HTTP API, unchanged, through a server on
//! 127.0.0.1. It runs with the Python named by `HVAC_PYTHON` (`.ci/run` installs hvac
//! 2.4.0 into a virtual environment), else with `python3` if it can import hvac, and
//! reports that it was skipped otherwise. With `HVAC_REQUIRED=1` a missing hvac fails it.

use std::path::Path;
use std::process::Command;

use litellm_secrets_tests::fixture::{Fixture, MASTER_KEY};
use litellm_secrets_tests::host::TestHost;
use litellm_secrets_tests::http_api::ApiServer;

const ADMIN: &str = "hvac-admin-token";

fn hvac_python() -> Option<String> {
    let candidate = std::env::var("HVAC_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let imports = Command::new(&candidate)
        .args(["-I", "-c", "import hvac"])
        .output()
        .is_ok_and(|output| output.status.success());
    if imports {
        return Some(candidate);
    }
    let required = std::env::var("HVAC_REQUIRED").is_ok_and(|value| value == "1");
    assert!(
        !required,
        "HVAC_REQUIRED=1 but {candidate} cannot import hvac"
    );
    eprintln!("SKIPPED hvac_drives_the_api: {candidate} cannot import hvac; set HVAC_PYTHON");
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn hvac_drives_the_api() {
    let Some(python) = hvac_python() else { return };
    let fixture = Fixture::start_with(TestHost::new().with_admin_token(ADMIN)).await;
    let server = ApiServer::start(fixture.host.clone())
        .await
        .expect("serving the component");

    // -I keeps the working directory off Python's path, so only an installed hvac counts.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/hvac_client.py");
    let arguments = [
        "-I".to_owned(),
        script.display().to_string(),
        server.url(),
        ADMIN.to_owned(),
        fixture.litellm.url(),
        MASTER_KEY.to_owned(),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new(python).args(arguments).output())
        .await
        .unwrap()
        .expect("running the hvac script");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "hvac script failed:\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["ok"], true);
    assert!(report["checks"].as_u64().unwrap() >= 30, "{report}");

    assert_eq!(fixture.request_count("/key/generate"), 3);
    assert_eq!(fixture.request_count("/key/update"), 2);
    assert!(
        fixture.litellm.live_keys().is_empty(),
        "every key the script got was revoked"
    );
}
