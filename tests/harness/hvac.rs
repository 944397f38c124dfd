//! The Python Vault client hvac, run as a child process against an API URL. It runs with
//! the Python named by `HVAC_PYTHON` (`.ci/run` installs hvac 2.4.0 into a virtual
//! environment), else with `python3` if it can import hvac. Tests that need it report that
//! they were skipped otherwise, and fail instead with `HVAC_REQUIRED=1`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Returns a Python that imports hvac, or `None` after printing that `test` was skipped.
pub fn hvac_python(test: &str) -> Option<String> {
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
    eprintln!("SKIPPED {test}: {candidate} cannot import hvac; set HVAC_PYTHON");
    None
}

/// Runs `tests/clients/hvac_client.py` with `python` against the API at `api_url`, and
/// returns its one-line JSON report. Panics with the script's output when it fails.
pub async fn run_client_script(
    python: String,
    api_url: &str,
    admin_token: &str,
    litellm_url: &str,
    master_key: &str,
) -> Value {
    // -I keeps the working directory off Python's path, so only an installed hvac counts.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/hvac_client.py");
    let arguments = [
        "-I".to_owned(),
        script.display().to_string(),
        api_url.to_owned(),
        admin_token.to_owned(),
        litellm_url.to_owned(),
        master_key.to_owned(),
    ];
    let output = tokio::task::spawn_blocking(move || Command::new(python).args(arguments).output())
        .await
        .expect("the hvac task")
        .expect("running the hvac script");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "hvac script failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}
