//! The README's quick start, run as written against the host binary and the real LiteLLM:
//! the curl commands and the hvac lines between the quick-start markers, with only the
//! LiteLLM URL, master key and token put in.

use std::path::Path;
use std::process::Command;

use litellm_secrets_tests::http_client::chat_completion;
use litellm_secrets_tests::hvac::hvac_python;
use litellm_secrets_tests::real_litellm::{RealLiteLlm, real_litellm};
use serde_json::Value;

use crate::support::{ADMIN, HostProcess, TempDir};

const README_URL: &str = "http://127.0.0.1:4000";
const README_MASTER_KEY: &str = "sk-your-master-key";
const README_TOKEN: &str = "<the printed token, lsa.…>";

/// Extracts the quick start's code lines: shell commands (continuations joined) and
/// Python lines.
fn quick_start() -> (Vec<String>, Vec<String>) {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("reading README.md");
    let start = readme
        .find("<!-- quick-start:")
        .expect("quick-start marker");
    let end = readme
        .find("<!-- quick-start end -->")
        .expect("quick-start end marker");
    let code: Vec<&str> = readme[start..end]
        .lines()
        .filter_map(|line| line.strip_prefix("    "))
        .collect();

    let mut shell = Vec::new();
    let mut python = Vec::new();
    let mut pending = String::new();
    for line in code {
        let is_python = !python.is_empty() || line.starts_with("import ");
        if is_python {
            python.push(line.to_owned());
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                shell.push(std::mem::take(&mut pending));
            }
        }
    }
    (shell, python)
}

fn fill_in(text: &str, real: &RealLiteLlm, api_url: &str) -> String {
    text.replace(README_URL, &real.url)
        .replace(README_MASTER_KEY, &real.master_key)
        .replace(README_TOKEN, ADMIN)
        .replace("http://127.0.0.1:8200", api_url)
}

#[test]
fn readme_names_the_run_command() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    assert!(readme.contains("    cargo run --release -p litellm-secrets-host -- serve\n"));
    let (shell, python) = quick_start();
    assert_eq!(shell.len(), 3, "configure, role, creds: {shell:#?}");
    assert!(python.len() >= 5, "{python:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_quick_start_mints_a_working_key() {
    let Some(real) = real_litellm("readme_quick_start_mints_a_working_key") else {
        return;
    };
    let dir = TempDir::new("readme");
    let data = dir.data_file();
    let host = HostProcess::start(&["--data", &data, "--admin-token", ADMIN]).unwrap();
    let (shell, python) = quick_start();

    let mut last_output = String::new();
    for command in &shell {
        let command = fill_in(command, &real, &host.url());
        let output = Command::new("bash")
            .args(["-c", &command])
            .env("VAULT_ADDR", host.url())
            .env("VAULT_TOKEN", ADMIN)
            .output()
            .expect("running bash");
        assert!(
            output.status.success(),
            "{command}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        last_output = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    let creds: Value = serde_json::from_str(&last_output).expect("the creds answer is JSON");
    let key = creds["data"]["key"].as_str().unwrap();
    let chat = chat_completion(&real.url, key, "gpt-4o-mini")
        .await
        .unwrap();
    assert_eq!(chat.status, 200, "{}", chat.text());

    if let Some(interpreter) = hvac_python("readme_quick_start_mints_a_working_key (hvac part)") {
        let script = fill_in(&python.join("\n"), &real, &host.url());
        let output = Command::new(interpreter)
            .args(["-I", "-c", &script])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{script}\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let key = stdout
            .split_whitespace()
            .next()
            .expect("the key is printed");
        let chat = chat_completion(&real.url, key, "gpt-4o-mini")
            .await
            .unwrap();
        assert_eq!(chat.status, 200, "{}", chat.text());
    }

    let revoked = host
        .admin(
            "PUT",
            "/v1/sys/leases/revoke-prefix/litellm/creds/dev",
            None,
        )
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text());
}
