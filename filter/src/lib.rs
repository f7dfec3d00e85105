//! kvroute-filter: the proxy-wasm filter that makes Envoy route each LLM request to the
//! vLLM pod already holding the longest prefix of its prompt in KV cache.
//!
//! Per request (see `stream.rs` for why the flow has this shape):
//!
//! ```text
//! headers: Continue (only JSON POSTs to configured paths are touched)
//! body:    Pause until end of stream -> parse, template, tokenize, hash (kvroute-blockhash)
//!          -> dispatch_http_call(indexer, POST /v1/route {model, block_hashes})
//! answer:  set_envoy_filter_state(original_dst_address = pod ip:port) + clear_route_cache
//!          -> resume; the route table sends the request to the ORIGINAL_DST cluster
//! failure: resume with no state -> the fallback route serves it (fail open, counted)
//! ```
//!
//! Pure parts (configuration, gating, indexer answers, the filter-state wire format,
//! tokenizer fetch bookkeeping) are separate modules tested natively; the modules that
//! talk to the host use only the status-returning host calls, so nothing can panic on a
//! host error.

pub mod allow_list;
pub mod config;
pub mod fail_open;
pub mod filter_state;
pub mod request_gate;
pub mod route_api;
pub mod tokenizer_fetch;

mod abi;
mod host;
mod metrics;
mod root;
mod stream;
mod vm_state;

/// The root context Envoy instantiates per VM (exported for embedding in other proxy-wasm hosts).
pub use root::KvRouteRoot;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::KvRouteRoot::new(context_id))
    });
}}
