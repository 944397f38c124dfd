//! Placeholder: the LiteLLM double is being written.
