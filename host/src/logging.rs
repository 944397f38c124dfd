//! Log setup: `tracing` to stderr, as text or JSON, and the component's own stderr lines
//! passed on as events. Nothing logged here carries a secret: the component masks keys in
//! its lines, and the host logs counts, addresses and ids only.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::cli::LogFormat;

/// Installs the global subscriber.
pub fn init(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    if filter.trim().is_empty() {
        anyhow::bail!("--log (LITELLM_SECRETS_LOG) is empty; use a level such as info, or off");
    }
    let directives = with_quiet_compiler(filter);
    let filter = EnvFilter::try_new(&directives)
        .map_err(|error| anyhow::anyhow!("--log {filter:?} is not a valid filter: {error}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Adds directives that keep the code generator's debug output (hundreds of thousands of
/// lines per start) out of a `debug` or `trace` log, unless the filter names it.
fn with_quiet_compiler(filter: &str) -> String {
    if filter.contains("cranelift") || filter.contains("regalloc") {
        return filter.to_owned();
    }
    format!(
        "{filter},cranelift_codegen=warn,cranelift_frontend=warn,wasmtime_internal_cranelift=warn,regalloc2=warn"
    )
}

/// Emits each line the component wrote to stderr, as a warning when it is marked as one.
pub fn forward_guest_log(stderr: &MemoryOutputPipe) {
    let contents = stderr.contents();
    for line in String::from_utf8_lossy(&contents).lines() {
        let line = line
            .strip_prefix("litellm-secrets-engine: ")
            .unwrap_or(line);
        match line.strip_prefix("warning: ") {
            Some(message) => tracing::warn!(target: "engine", "{message}"),
            None => tracing::info!(target: "engine", "{line}"),
        }
    }
}
