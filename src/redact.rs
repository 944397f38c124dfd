//! Masking of secrets in text that came from LiteLLM before it reaches a message or a log.

/// Maximum length of LiteLLM's text copied into a message, in bytes.
pub const MAX_QUOTED_BYTES: usize = 1024;

/// Shortest run of hex digits that is masked. SHA-256 key hashes have 64; 32 also covers
/// shorter ids derived from them.
const MIN_HEX_RUN: usize = 32;

/// Returns `text` with every `sk-` key, every long hex run (key hashes) and every exact
/// occurrence of `secrets` masked, cut to [`MAX_QUOTED_BYTES`].
pub fn mask(text: &str, secrets: &[&str]) -> String {
    let mut masked = text.to_owned();
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        masked = masked.replace(secret, "[redacted]");
    }
    let masked = mask_hex_runs(&mask_keys(&masked));
    truncate(&masked, MAX_QUOTED_BYTES)
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Replaces `sk-` followed by key characters with `sk-***`.
fn mask_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("sk-") {
        out.push_str(&rest[..start]);
        out.push_str("sk-***");
        let after = &rest[start + 3..];
        let key_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(after.len());
        rest = &after[key_len..];
    }
    out.push_str(rest);
    out
}

fn mask_hex_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        flush_run(&mut out, &mut run);
        out.push(c);
    }
    flush_run(&mut out, &mut run);
    out
}

fn flush_run(out: &mut String, run: &mut String) {
    if run.len() >= MIN_HEX_RUN {
        out.push_str("[hash]");
    } else {
        out.push_str(run);
    }
    run.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keys_hashes_and_secrets() {
        let hash = "fa58314e198a40e2b91bd87a52a8f23dd4311f1a6b6aa3d404e43edab29ea9cf";
        let text = format!("key sk-GBNOD2lmRpche3Kw8J9UUQ hash {hash} master m-123, ok");
        assert_eq!(
            mask(&text, &["m-123"]),
            "key sk-*** hash [hash] master [redacted], ok"
        );
    }

    #[test]
    fn keeps_short_hex_and_truncates() {
        assert_eq!(mask("code 404 abc", &[]), "code 404 abc");
        let long = "é".repeat(MAX_QUOTED_BYTES);
        let cut = mask(&long, &[]);
        assert!(cut.ends_with("..."));
        assert!(cut.len() <= MAX_QUOTED_BYTES + 3);
    }
}
