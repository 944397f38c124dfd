//! Builds the engine component for `wasm32-wasip2` and hands its path to the host, which
//! embeds it, so that `cargo run -p litellm-secrets-host` works from a fresh clone.
//!
//! The component is built by a nested `cargo build` into its own target directory: the
//! outer build holds the lock on the workspace's. `LITELLM_SECRETS_COMPONENT` names a
//! prebuilt component to embed instead.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const ARTIFACT: &str = "litellm_secrets_engine.wasm";

fn main() {
    println!("cargo:rerun-if-env-changed=LITELLM_SECRETS_COMPONENT");
    if let Some(prebuilt) = env::var_os("LITELLM_SECRETS_COMPONENT") {
        let path = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", path.display());
        export(&path);
        return;
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ has a parent")
        .to_path_buf();
    for watched in ["src", "wit", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    check_target_installed();
    let target_dir = root.join("target").join("host-component");
    build_component(&root, &target_dir);
    export(&target_dir.join(TARGET).join("component").join(ARTIFACT));
}

fn export(path: &Path) {
    if !path.is_file() {
        panic!("the engine component {} does not exist", path.display());
    }
    println!(
        "cargo:rustc-env=LITELLM_SECRETS_COMPONENT_PATH={}",
        path.display()
    );
}

/// Fails with the fix when the standard library for `wasm32-wasip2` is missing.
fn check_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("running rustc --print sysroot");
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let target_lib = Path::new(&sysroot).join("lib/rustlib").join(TARGET);
    if !target_lib.is_dir() {
        panic!(
            "\n\nthe Rust target {TARGET} is not installed, and the host embeds the engine \
             component built for it.\nInstall it with:\n\n    rustup target add {TARGET}\n\n"
        );
    }
}

fn build_component(root: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args([
            "build",
            "--profile",
            "component",
            "--locked",
            "--target",
            TARGET,
        ])
        .args(["--package", "litellm-secrets-engine"])
        .arg("--target-dir")
        .arg(target_dir);
    // Variables cargo sets for this build script would otherwise steer the nested build.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        let inherited = key.starts_with("CARGO_")
            && !matches!(
                key.as_ref(),
                "CARGO_HOME" | "CARGO_NET_OFFLINE" | "CARGO_REGISTRIES_CRATES_IO_PROTOCOL"
            );
        if inherited
            || matches!(
                key.as_ref(),
                "RUSTFLAGS"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "DEBUG"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
            )
        {
            command.env_remove(key.as_ref());
        }
    }

    let status = command
        .status()
        .expect("running cargo to build the engine component");
    if !status.success() {
        panic!(
            "building the engine component for {TARGET} failed ({status}); see the output above"
        );
    }
}
