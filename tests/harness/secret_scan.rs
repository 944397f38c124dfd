//! A scan for secrets in everything the component returns or logs, across every test in
//! the process. The harness checks each engine result, each HTTP response body and each
//! chunk of component log as it arrives. None may contain a master key the tests use. None
//! may contain a key the engine minted, except the creds response that carries that key.
//! A leak fails the test that caused it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::fixture::MASTER_KEY;

/// Prefix of LiteLLM keys, master keys included.
const KEY_PREFIX: &str = "sk-";

#[derive(Default)]
struct Secrets {
    secrets: HashSet<String>,
    minted: HashSet<String>,
}

static SECRETS: OnceLock<Mutex<Secrets>> = OnceLock::new();
static CHECKED: AtomicUsize = AtomicUsize::new(0);

fn secrets() -> MutexGuard<'static, Secrets> {
    SECRETS
        .get_or_init(|| {
            let mut secrets = Secrets::default();
            secrets.secrets.insert(MASTER_KEY.to_owned());
            if let Ok(key) = std::env::var("LITELLM_MASTER_KEY")
                && !key.is_empty()
            {
                secrets.secrets.insert(key);
            }
            Mutex::new(secrets)
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records a secret that no text may contain: a master key a test wrote into a config,
/// or an admin token.
pub fn note_secret(secret: &str) {
    if secret.len() > KEY_PREFIX.len() {
        secrets().secrets.insert(secret.to_owned());
    }
}

/// Records a key the engine minted.
pub fn note_minted(key: &str) {
    secrets().minted.insert(key.to_owned());
}

/// Panics when `text` contains a recorded secret, or a minted key other than `own_key`.
/// `source` names where the text came from, for the message.
pub fn check(source: &str, text: &str, own_key: Option<&str>) {
    CHECKED.fetch_add(1, Ordering::Relaxed);
    let secrets = secrets();
    for secret in &secrets.secrets {
        assert!(
            !text.contains(secret.as_str()),
            "secret scan: {source} contains a master key or an admin token"
        );
    }
    for candidate in key_candidates(text) {
        let leaked = secrets.minted.contains(candidate) && own_key != Some(candidate);
        assert!(
            !leaked,
            "secret scan: {source} contains a minted key that is not its own"
        );
    }
}

/// Returns the number of texts checked and of minted keys known so far in this process.
pub fn counts() -> (usize, usize) {
    (CHECKED.load(Ordering::Relaxed), secrets().minted.len())
}

/// Returns every `sk-` token in `text`: the prefix and the key characters after it.
fn key_candidates(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices(KEY_PREFIX).map(move |(start, _)| {
        let rest = &text[start..];
        let end = rest
            .char_indices()
            .skip(KEY_PREFIX.len())
            .find(|(_, character)| {
                !(character.is_ascii_alphanumeric() || *character == '-' || *character == '_')
            })
            .map_or(rest.len(), |(index, _)| index);
        &rest[..end]
    })
}

#[cfg(test)]
mod tests {
    use super::key_candidates;

    #[test]
    fn candidates_end_at_key_characters() {
        let text = r#"{"key":"sk-abc_1-Z","x":"sk-","y":"(sk-q)"}"#;
        let found: Vec<&str> = key_candidates(text).collect();
        assert_eq!(found, ["sk-abc_1-Z", "sk-", "sk-q"]);
    }
}
