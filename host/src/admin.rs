//! The admin token: given by the operator, or generated on first start. A generated token
//! is printed once and only its SHA-256 digest is stored; the component then receives the
//! digest as its `admin_token_sha256` setting.

use sha2::{Digest, Sha256};

use crate::kv::{Backend, HostWrite};

/// Name of the stored digest among the host's own values.
const DIGEST_NAME: &str = "admin_token_sha256";

/// The setting through which the component learns the admin token.
pub enum AdminSetting {
    /// The operator's token, passed as `admin_token`.
    Token(String),
    /// A stored digest, passed as `admin_token_sha256`.
    Digest(String),
}

impl AdminSetting {
    /// Returns the `wasi:config` key and value for the component.
    pub fn setting(&self) -> (&'static str, &str) {
        match self {
            Self::Token(token) => ("admin_token", token),
            Self::Digest(digest) => ("admin_token_sha256", digest),
        }
    }
}

/// Shortest admin token accepted, in characters.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Decides the admin setting. `print` shows a newly generated token to the operator, the
/// only time it exists outside the client that keeps it.
pub async fn resolve(
    kv: &Backend,
    operator_token: Option<String>,
    rotate: bool,
    print: impl FnOnce(&str) -> std::io::Result<()>,
) -> anyhow::Result<AdminSetting> {
    let stored = kv.host_value(DIGEST_NAME).await.map_err(|error| {
        anyhow::anyhow!("reading the stored admin token digest failed: {error}")
    })?;
    if let Some(token) = operator_token.map(|token| token.trim().to_owned()) {
        if stored.is_some() {
            tracing::info!(
                "admin token: the operator's; the stored generated token is ignored while \
                 --admin-token is set"
            );
        }
        return Ok(AdminSetting::Token(token));
    }

    if let (Some(digest), false) = (stored, rotate) {
        tracing::info!(
            "admin token: the one whose digest is stored (lost it? start once with \
             --rotate-admin-token)"
        );
        return Ok(AdminSetting::Digest(digest));
    }

    let token = generate()?;
    let digest = sha256_hex(&token);
    let mode = if rotate {
        HostWrite::Replace
    } else {
        HostWrite::IfAbsent
    };
    let written = kv
        .set_host_value(DIGEST_NAME, &digest, mode)
        .await
        .map_err(|error| anyhow::anyhow!("storing the admin token digest failed: {error}"))?;
    if !written {
        return stored_after_race(kv).await;
    }
    print(&token).map_err(|error| {
        anyhow::anyhow!(
            "printing the new admin token failed ({error}), so no one has it; start again \
             with --rotate-admin-token and a writable stdout"
        )
    })?;
    tracing::info!(
        "admin token: generated; it was printed once on stdout and is stored only as a digest"
    );
    Ok(AdminSetting::Digest(digest))
}

/// Returns the digest another host stored between this host's read and its write.
async fn stored_after_race(kv: &Backend) -> anyhow::Result<AdminSetting> {
    let stored = kv.host_value(DIGEST_NAME).await.map_err(|error| {
        anyhow::anyhow!("reading the stored admin token digest failed: {error}")
    })?;
    let digest = stored.ok_or_else(|| {
        anyhow::anyhow!("the admin token digest vanished while this host started; start it again")
    })?;
    tracing::info!("admin token: another host generated it first; use the token that host printed");
    Ok(AdminSetting::Digest(digest))
}

fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)
        .map_err(|error| anyhow::anyhow!("no randomness for the admin token: {error}"))?;
    Ok(format!("lsa.{}", hex(&bytes)))
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_distinct_and_hex() {
        let first = generate().unwrap();
        let second = generate().unwrap();
        assert_ne!(first, second);
        assert_eq!(first.len(), 4 + 48);
        assert!(first[4..].bytes().all(|byte| byte.is_ascii_hexdigit()));
    }

    #[test]
    fn digest_matches_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
