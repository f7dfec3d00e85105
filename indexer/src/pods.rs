//! Who the engines are. A pod's identity is what routing answers with (its serving
//! `ip:port`) plus its data-parallel rank, so ranks never share index entries.
//!
//! CONTRACT between ingestion (owner of this file) and index/scoring/HTTP. Extend freely;
//! do not break without updating callers.

use std::fmt;
use std::sync::Arc;

/// One engine (one data-parallel rank of one vLLM pod).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodId {
    /// Where requests for this pod go: the engine's OpenAI server, `ip:port`.
    pub endpoint: Arc<str>,
    pub dp_rank: u32,
}

impl fmt::Display for PodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dp_rank == 0 {
            write!(f, "{}", self.endpoint)
        } else {
            write!(f, "{}#dp{}", self.endpoint, self.dp_rank)
        }
    }
}
