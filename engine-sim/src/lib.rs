//! Simulated vLLM engine. SKELETON: owner fills in.
