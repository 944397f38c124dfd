//! Integration tests: the built engine component under wasmtime, against the LiteLLM
//! double and, when `LITELLM_URL` and `LITELLM_MASTER_KEY` are set, the real proxy.

mod adversarial;
mod config;
mod creds;
mod http_api;
mod leases;
mod races;
mod real_litellm;
mod roles;
mod tidy;
mod upstream;
