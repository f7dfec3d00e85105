//! kvroute-blockhash: the one place that turns a request into vLLM's block hashes.
//!
//! Precise routing only works when the router computes, for a new request, the very
//! block hashes vLLM will compute for it. This crate owns that whole chain and is shared
//! by the Envoy filter (wasm32-wasip1), the indexer, the simulated engines and the CLI:
//!
//! ```text
//! body bytes --request--> Request --template--> prompt text --tokenize--> token ids
//!            --hasher--> block digests (chained, full blocks only) --> u64 event values
//! ```
//!
//! It does no I/O: tokenizer files are passed in as bytes, so the same code runs inside
//! Envoy's wasm VM and natively. The one exception, for native callers, is reading a
//! tokenizer folder (`tokenizer_dir`, feature `fs`, off by default).

pub mod error;
pub mod extra_keys;
pub mod hasher;
pub mod keys;
pub mod nfc;
pub mod pickle;
pub mod pretokenize;
pub mod request;
pub mod segment_cache;
pub mod template;
pub mod tokenize;
#[cfg(feature = "fs")]
pub mod tokenizer_dir;

pub use error::{Error, Result};
pub use extra_keys::{ExtraKeysStyle, RequestExtras};
pub use hasher::{BlockDigest, BlockHasher, HashConfig, HashScheme};
pub use keys::{PromptEncoder, RequestKeys};
pub use request::{Endpoint, Request};
#[cfg(feature = "fs")]
pub use tokenizer_dir::{TokenizerDirError, TokenizerFiles};
