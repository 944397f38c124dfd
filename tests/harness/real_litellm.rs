//! The real LiteLLM proxy that `.ci/run` starts: found through `LITELLM_URL` and
//! `LITELLM_MASTER_KEY`. Tests that need it report that they were skipped when it is
//! absent, and fail instead with `LITELLM_REQUIRED=1`.

/// The real proxy's address and master key.
pub struct RealLiteLlm {
    /// Base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    /// The proxy's master key.
    pub master_key: String,
}

/// Returns the proxy, or `None` after printing that `test` was skipped.
pub fn real_litellm(test: &str) -> Option<RealLiteLlm> {
    let url = std::env::var("LITELLM_URL")
        .ok()
        .filter(|url| !url.is_empty());
    let master_key = std::env::var("LITELLM_MASTER_KEY")
        .ok()
        .filter(|key| !key.is_empty());
    match (url, master_key) {
        (Some(url), Some(master_key)) => Some(RealLiteLlm { url, master_key }),
        _ => {
            let required = std::env::var("LITELLM_REQUIRED").is_ok_and(|value| value == "1");
            assert!(
                !required,
                "{test}: LITELLM_REQUIRED=1 but LITELLM_URL or LITELLM_MASTER_KEY is not set"
            );
            eprintln!(
                "SKIPPED {test}: set LITELLM_URL and LITELLM_MASTER_KEY to run it against a real LiteLLM"
            );
            None
        }
    }
}
