//! The real LiteLLM proxy that `.ci/run` starts: found through `LITELLM_URL` and
//! `LITELLM_MASTER_KEY`. Tests that need it report that they were skipped when it is
//! absent, and fail instead with `LITELLM_REQUIRED=1`.

use std::collections::BTreeSet;
use std::io::Read;

use crate::http_client;

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

impl RealLiteLlm {
    /// Returns the aliases of the live keys whose alias starts with `prefix`, read page by
    /// page from `/key/list`.
    pub async fn live_aliases(&self, prefix: &str) -> BTreeSet<String> {
        let mut aliases = BTreeSet::new();
        for page in 1.. {
            let url = format!(
                "{}/key/list?return_full_object=true&size=100&page={page}",
                self.url
            );
            let reply = http_client::send("GET", &url, &self.master_key, None)
                .await
                .expect("listing keys in the real LiteLLM");
            assert_eq!(reply.status, 200, "{}", reply.text());
            let body = reply.json();
            let keys = body["keys"].as_array().cloned().unwrap_or_default();
            let matching = keys
                .iter()
                .filter_map(|key| key["key_alias"].as_str())
                .filter(|alias| alias.starts_with(prefix));
            aliases.extend(matching.map(str::to_owned));
            if page >= body["total_pages"].as_u64().unwrap_or(0) {
                break;
            }
        }
        aliases
    }
}

/// Returns `len` random lowercase hex digits, so that aliases from several runs never
/// collide.
pub fn unique(len: usize) -> String {
    let mut bytes = vec![0u8; len.div_ceil(2)];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    hex[..len].to_owned()
}
