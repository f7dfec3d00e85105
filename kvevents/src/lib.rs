//! vLLM KV-event wire format. SKELETON: owner fills in.
