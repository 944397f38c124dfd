//! The common test setup: a host configured against a LiteLLM double, with helpers for
//! the steps most tests repeat.

use crate::expect::{EngineResult, role_with_models};
use crate::host::{ConfigRequest, Credential, RoleRequest, TestHost};
use crate::litellm_double::LiteLlmDouble;

/// Master key of the LiteLLM double.
pub const MASTER_KEY: &str = "sk-test-master";

/// A host whose config points at a running LiteLLM double.
pub struct Fixture {
    /// The engine host.
    pub host: TestHost,
    /// The LiteLLM double the config points at.
    pub litellm: LiteLlmDouble,
}

impl Fixture {
    /// Starts a double and writes the config for it.
    pub async fn start() -> Self {
        Self::start_with(TestHost::new()).await
    }

    /// Starts a double sharing `host`'s clock and writes the config for it.
    pub async fn start_with(host: TestHost) -> Self {
        let litellm = LiteLlmDouble::start(MASTER_KEY, host.clock.clone())
            .await
            .expect("starting the LiteLLM double");
        let request = ConfigRequest {
            url: Some(litellm.url()),
            master_key: Some(MASTER_KEY.into()),
        };
        host.try_write_config(&request).await.value();
        Self { host, litellm }
    }

    /// Writes role `name` with `models` and the given TTLs.
    pub async fn role(&self, name: &str, models: &[&str], ttl: &str, max_ttl: &str) {
        let request = RoleRequest {
            ttl: Some(ttl.into()),
            max_ttl: Some(max_ttl.into()),
            ..role_with_models(models)
        };
        self.host.try_write_role(name, &request).await.value();
    }

    /// Issues a credential for `role` with its default TTL.
    pub async fn issue(&self, role: &str) -> Credential {
        self.host.try_issue_credential(role, None).await.value()
    }

    /// Returns the number of requests the double received for `path`.
    pub fn request_count(&self, path: &str) -> usize {
        self.litellm.requests_to(path).len()
    }

    /// Returns the storage keys that start with `prefix`.
    pub fn stored(&self, prefix: &str) -> Vec<String> {
        self.host.kv.keys_with_prefix(prefix)
    }
}
