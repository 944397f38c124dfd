//! The command line: help text, and settings that stop the host at start with a message
//! that names the value and the fix.

use std::time::Duration;

use crate::support::{ADMIN, HostProcess, TempDir};

#[test]
fn help_documents_every_option_with_its_default() {
    let (status, stdout, _) = HostProcess::run_to_end(&["serve", "--help"]);
    assert!(status.success());
    for (option, default) in [
        ("--listen", Some("127.0.0.1:8200")),
        ("--data", Some("litellm-secrets.redb")),
        ("--redis-url", None),
        ("--redis-prefix", Some("litellm-secrets")),
        ("--admin-token", None),
        ("--rotate-admin-token", None),
        ("--encryption-key", None),
        ("--previous-encryption-key", None),
        ("--mount", Some("litellm")),
        ("--default-ttl", Some("1h")),
        ("--max-ttl", Some("768h")),
        ("--litellm-timeout", Some("30s")),
        ("--tidy-interval", Some("60s")),
        ("--max-concurrency", Some("128")),
        ("--shutdown-timeout", Some("30s")),
        ("--component", None),
        ("--log", Some("info")),
        ("--log-format", Some("text")),
    ] {
        let start = stdout
            .find(&format!("{option} "))
            .or_else(|| stdout.find(&format!("{option}\n")))
            .unwrap_or_else(|| panic!("{option} is not in the help:\n{stdout}"));
        let section = &stdout[start..];
        let end = section[2..]
            .find("\n      --")
            .map_or(section.len(), |end| end + 2);
        let section = &section[..end];
        if let Some(default) = default {
            assert!(
                section.contains(&format!("[default: {default}]")),
                "{option} does not show its default {default}:\n{section}"
            );
        }
        if option != "--rotate-admin-token" {
            assert!(
                section.contains("[env: LITELLM_SECRETS_"),
                "{option} names no variable:\n{section}"
            );
        }
    }
    assert!(!stdout.contains(ADMIN));
}

#[test]
fn invalid_settings_stop_the_host_at_start() {
    let dir = TempDir::new("bad-settings");
    let data = dir.data_file();
    let cases: [(&[&str], &str); 10] = [
        (
            &["--encryption-key", " "],
            "--encryption-key (LITELLM_SECRETS_ENCRYPTION_KEY) is empty",
        ),
        (&["--mount", ""], "--mount (LITELLM_SECRETS_MOUNT) is empty"),
        (&["--mount", "sys"], "which the API uses for its own paths"),
        (
            &["--tidy-interval", "1ns"],
            "--tidy-interval 1ns is below 1s",
        ),
        (&["--log", ""], "--log (LITELLM_SECRETS_LOG) is empty"),
        (
            &["--encryption-key", "not-hex"],
            "encryption_key is invalid: it must be 64 hex digits",
        ),
        (
            &["--litellm-timeout", "10m"],
            "litellm_timeout (600s) exceeds 120s",
        ),
        (
            &["--default-ttl", "2h", "--max-ttl", "1h"],
            "default_ttl (7200s) exceeds max_ttl (3600s)",
        ),
        (&["--mount", "a b"], "host setting mount is invalid"),
        (
            &["--admin-token", "short"],
            "the admin token is too short (5 characters)",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data", &data];
        if !flags.contains(&"--admin-token") {
            args.extend(["--admin-token", ADMIN]);
        }
        args.extend(flags);
        let (status, _, stderr) = HostProcess::run_to_end(&args);
        assert!(!status.success(), "{flags:?} started the host");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        assert!(
            !stderr.contains("serving the HTTP API"),
            "{flags:?}: {stderr}"
        );
    }

    let missing = dir.data_file().replace("data.redb", "typo/data.redb");
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        &missing,
        "--admin-token",
        ADMIN,
    ];
    let (status, _, stderr) = HostProcess::run_to_end(&args);
    assert!(!status.success());
    assert!(
        stderr.contains("of the data file does not exist; create it, or fix --data"),
        "{stderr}"
    );
    assert!(
        !std::path::Path::new(&missing).exists(),
        "nothing is created"
    );

    let (status, _, stderr) = HostProcess::run_to_end(&["serve", "--tidy-interval", "soon"]);
    assert!(!status.success());
    assert!(stderr.contains("write a duration such as 30s"), "{stderr}");
}

#[test]
fn data_file_in_use_is_rejected() {
    let dir = TempDir::new("in-use");
    let data = dir.data_file();
    let mut first = HostProcess::start(&["--data", &data, "--admin-token", ADMIN]).unwrap();
    let (status, _, stderr) = HostProcess::run_to_end(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        &data,
        "--admin-token",
        ADMIN,
    ]);
    assert!(!status.success());
    assert!(stderr.contains("is in use by another process"), "{stderr}");
    assert!(stderr.contains("--redis-url"), "{stderr}");
    assert!(first.terminate(Duration::from_secs(10)).success());
}

/// Every `LITELLM_SECRETS_*` variable the Dockerfile and docker-compose.yml set is one the
/// host reads.
#[test]
fn container_files_set_only_variables_the_host_reads() {
    let (_, help, _) = HostProcess::run_to_end(&["serve", "--help"]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for file in ["Dockerfile", "docker-compose.yml"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for (start, _) in text.match_indices("LITELLM_SECRETS_") {
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            assert!(
                help.contains(&format!("[env: {name}")),
                "{file} sets {name}, which the host does not read"
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "found {checked} variables");
}
