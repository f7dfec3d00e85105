//! The global block index: key -> pods holding it (with medium), concurrent lookups while
//! ingesting, bounded memory, per-pod bookkeeping for clears.
//!
//! CONTRACT between the index owner and ingestion. Keys are the u64 values the shared
//! crate computes for a request (`RequestKeys::block_hashes`), so lookups need no
//! translation; ingestion maps engine hashes to these keys when they differ.

use crate::pods::PodId;

/// Where a cached block lives on its pod.
pub use kvroute_kvevents::Medium;

/// One index mutation, as ingestion produces them from KV events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOp {
    Store { keys: Vec<u64>, medium: Medium },
    Remove { keys: Vec<u64>, medium: Option<Medium> },
    ClearPod,
}

/// How much of a request's prefix one pod holds.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMatch {
    pub pod: PodId,
    /// Consecutive keys from the first one held on the GPU.
    pub gpu_blocks: usize,
    /// Consecutive keys from the first one held on any tier (>= gpu_blocks).
    pub any_tier_blocks: usize,
}

/// The index behind a trait so scoring and HTTP do not depend on its layout.
pub trait PodIndex: Send + Sync {
    fn apply(&self, pod: &PodId, op: IndexOp);
    /// Every pod holding at least the first key, with its longest run from the start.
    fn match_prefix(&self, keys: &[u64]) -> Vec<PodMatch>;
    /// Forget a pod entirely (it vanished from discovery or was dropped as dead).
    fn drop_pod(&self, pod: &PodId);
    fn entries(&self) -> usize;
}
