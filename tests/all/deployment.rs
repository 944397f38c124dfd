//! What a Spin deployment relies on: the component imports only interfaces Spin 3 and
//! later provide, and `spin.toml` declares what the engine reads.

use std::collections::BTreeSet;
use std::path::Path;

use litellm_secrets_tests::host::{component_interfaces, component_path};

/// Interfaces Spin provides to components, by name without version.
const SPIN_INTERFACES: [&str; 23] = [
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
    "wasi:keyvalue/store",
    "wasi:keyvalue/atomics",
    "wasi:keyvalue/batch",
];

#[test]
fn imports_are_all_spin_provided() {
    let (imports, exports) = component_interfaces();
    for import in &imports {
        let (name, version) = import.split_once('@').unwrap_or((import, ""));
        if name == "wasi:config/store" {
            assert_eq!(version, "0.2.0-draft-2024-09-27", "{import}");
            continue;
        }
        assert!(
            SPIN_INTERFACES.contains(&name),
            "{import} is not provided by Spin"
        );
        if name.starts_with("wasi:keyvalue/") {
            assert_eq!(version, "0.2.0-draft2", "{import}");
        } else {
            let patch: u32 = version
                .strip_prefix("0.2.")
                .and_then(|patch| patch.parse().ok())
                .unwrap_or_else(|| panic!("{import} is not a WASI 0.2 interface"));
            assert!(
                patch <= 6,
                "{import} is newer than the WASI 0.2.6 that Spin 4.0 provides"
            );
        }
    }
    assert!(
        !imports
            .iter()
            .any(|name| name.starts_with("fermyon:") || name.starts_with("spin:"))
    );
    assert!(
        imports
            .iter()
            .any(|name| name.starts_with("wasi:keyvalue/atomics"))
    );
    assert!(
        imports
            .iter()
            .any(|name| name.starts_with("wasi:config/store"))
    );

    let exports: BTreeSet<&str> = exports.iter().map(String::as_str).collect();
    assert!(
        exports.contains("wasi:http/incoming-handler@0.2.6"),
        "{exports:?}"
    );
    assert!(
        exports.contains("litellm-secrets:engine/engine@0.1.0"),
        "{exports:?}"
    );
}

#[test]
fn spin_manifest_matches_the_engine() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("spin.toml")).expect("spin.toml at the top level");
    let manifest: toml::Table = text.parse().expect("spin.toml is valid TOML");

    assert_eq!(manifest["spin_manifest_version"].as_integer(), Some(2));
    let component = manifest["component"]["litellm-secrets-engine"]
        .as_table()
        .expect("component");
    let source = root.join(component["source"].as_str().unwrap());
    assert_eq!(
        source.canonicalize().unwrap(),
        component_path().canonicalize().unwrap()
    );
    assert_eq!(
        component["key_value_stores"].as_array().unwrap()[0].as_str(),
        Some("default")
    );
    assert_eq!(
        component["allowed_outbound_hosts"].as_array().unwrap()[0].as_str(),
        Some("{{ litellm_origin }}")
    );
    assert_eq!(
        component["build"]["command"].as_str(),
        Some("cargo build --profile component --target wasm32-wasip2")
    );

    let variables = manifest["variables"].as_table().unwrap();
    for secret in ["admin_token", "encryption_key", "previous_encryption_key"] {
        assert_eq!(
            variables[secret]["secret"].as_bool(),
            Some(true),
            "{secret} must be secret"
        );
    }
    let component_variables = component["variables"].as_table().unwrap();
    for setting in [
        "admin_token",
        "admin_token_sha256",
        "encryption_key",
        "previous_encryption_key",
        "mount",
        "key_value_store",
        "default_ttl",
        "max_ttl",
        "litellm_timeout",
    ] {
        let template = component_variables[setting].as_str().unwrap();
        assert_eq!(template, format!("{{{{ {setting} }}}}"));
        assert!(
            variables.contains_key(setting),
            "{setting} is not an application variable"
        );
    }
    let route = manifest["trigger"]["http"].as_array().unwrap()[0]
        .as_table()
        .unwrap();
    assert_eq!(route["route"].as_str(), Some("/..."));
}
