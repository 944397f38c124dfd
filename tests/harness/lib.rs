//! Test host for the engine component: a wasmtime embedding with its own `wasi:keyvalue`
//! (draft2) and `wasi:config` implementations, a movable wall clock, and a LiteLLM double
//! that behaves as the real proxy's key API does.

pub mod clock;
pub mod expect;
pub mod fault_proxy;
pub mod fixture;
pub mod host;
pub mod http_api;
pub mod http_client;
pub mod hvac;
pub mod keyvalue;
pub mod litellm_double;
pub mod outbound;
pub mod real_litellm;
pub mod secret_scan;
