//! The words every other module speaks: which engine (`PodId`), how loaded it is
//! (`PodLoad`), how its hashes become keys (`KeyMode`). Plain data with no dependency on
//! the rest of the crate, so `index`, `pods`, `scoring` and `ingest` all import from here
//! and never from each other in a circle.

use std::fmt;
use std::sync::Arc;

/// One engine (one data-parallel rank of one vLLM pod). Its identity is what routing
/// answers with (its serving `ip:port`) plus its rank, so ranks never share index entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodId {
    /// Where requests for this pod go: the engine's OpenAI server, `ip:port`.
    pub endpoint: Arc<str>,
    pub dp_rank: u32,
}

impl PodId {
    /// Rank 0 of `endpoint` (the whole pod when it runs no data parallelism).
    pub fn new(endpoint: impl Into<Arc<str>>) -> Self {
        Self {
            endpoint: endpoint.into(),
            dp_rank: 0,
        }
    }
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

/// An engine's dense number in the registry, for per-engine state read on every decision
/// (loads, the ledger's books): an array index instead of hashing and comparing an
/// endpoint string per engine. A `PodId` keeps its slot for the process's life (slots are
/// never reused), so state kept by slot cannot pass to another engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodSlot(pub u32);

impl kvroute_scoring::BookIndex for PodSlot {
    fn book_index(self) -> usize {
        self.0 as usize
    }
}

// Load travels in the route answer's candidates: defined with it, in the contract.
pub use kvroute_api::PodLoad;

/// How an engine's published hashes become index keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// Not decided yet: no event could be checked against the shared crate.
    Probing,
    /// The engine's values are the index keys (same hash scheme and seed as ours).
    Native,
    /// Keys recomputed from each event's tokens (other scheme or seed, e.g. `sha256`).
    Rekey,
}

/// Whether an engine answers, as the health checks last saw it. With health checks on,
/// only `Up` engines are routed to: an engine is `Unknown` until its first check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Unknown,
    Up,
    Down,
}
