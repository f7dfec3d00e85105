//! Block hashing, byte-exact to vLLM's prefix-cache hashes.
//!
//! SKELETON: the owner of this module fills it in (see the issue). The public API below
//! is the contract other crates compile against; keep it or extend it, do not break it
//! without updating every caller.

use crate::extra_keys::BlockExtraKeys;

/// Which of vLLM's `--prefix-caching-hash-algo` values the engines run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashScheme {
    /// Today's vLLM: sha256 over canonical CBOR, chained as 32-byte digests.
    Sha256Cbor,
    /// vLLM 0.10.0-0.10.1: the same, chained as 64-bit ints.
    Sha256Cbor64Bit,
    /// xxh3-128 over canonical CBOR.
    XxhashCbor,
}

/// How to hash: scheme, block size and the `NONE_HASH` seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashConfig {
    pub scheme: HashScheme,
    pub block_size: usize,
    /// vLLM's `PYTHONHASHSEED`; `None` means vLLM's default `"vllm-none-hash"`.
    pub seed: Option<String>,
}

/// One block's full hash, as vLLM chains it (the parent of the next block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockDigest {
    Sha256([u8; 32]),
    Xxh128([u8; 16]),
    U64(u64),
}

impl BlockDigest {
    /// The 64-bit value vLLM publishes in KV events for this block.
    pub fn event_value(&self) -> u64 {
        todo!()
    }
}

/// Chains block hashes for one [`HashConfig`]. Cheap to clone; holds `NONE_HASH`.
#[derive(Debug, Clone)]
pub struct BlockHasher {
    config: HashConfig,
}

impl BlockHasher {
    pub fn new(config: HashConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &HashConfig {
        &self.config
    }

    /// `NONE_HASH`: the parent of the first block.
    pub fn none_hash(&self) -> BlockDigest {
        todo!()
    }

    /// `H((parent, tuple(tokens), extra_keys_or_None))` for one full block.
    pub fn hash_block(&self, parent: &BlockDigest, tokens: &[u32], extra: Option<&BlockExtraKeys>) -> BlockDigest {
        let _ = (parent, tokens, extra);
        todo!()
    }

    /// Digests of every full block of `tokens`, chained from `parent` (or `NONE_HASH`).
    /// `extra_for_block(i)` gives block i's extra keys.
    pub fn chain(
        &self,
        parent: Option<&BlockDigest>,
        tokens: &[u32],
        extra_for_block: &dyn Fn(usize) -> Option<BlockExtraKeys>,
    ) -> Vec<BlockDigest> {
        let _ = (parent, tokens, extra_for_block);
        todo!()
    }
}
