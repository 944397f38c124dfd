//! Integration tests: the built engine component under wasmtime, against the LiteLLM
//! double and, when `LITELLM_URL` and `LITELLM_MASTER_KEY` are set, the real proxy.

mod adversarial;
mod api_adversarial;
mod bad_input;
mod config;
mod creds;
mod deployment;
mod http_api;
mod hvac;
mod leases;
mod litellm_faults;
mod races;
mod real_litellm;
mod roles;
mod sealing;
mod secret_scan;
mod storage_faults;
mod tidy;
mod upstream;
