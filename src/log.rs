//! Log lines on the host's stderr. Callers pass ids and masked messages, never secrets.

/// Writes a warning: an error the engine handled or deferred instead of returning.
pub fn warn(message: &str) {
    eprintln!("litellm-secrets-engine: warning: {message}");
}
