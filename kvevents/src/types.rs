//! The decoded shape of vLLM's KV events, whatever wire generation carried them.
//!
//! These are the types the indexer and the simulated engines share; how each generation
//! lays them out on the wire is [`crate::wire`]'s business, reading and writing them is
//! [`crate::decode`]'s and [`crate::encode`]'s.

use rmpv::Value;

/// Where a cached block lives on its engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Medium {
    #[default]
    Gpu,
    Cpu,
    Storage,
}

impl Medium {
    /// vLLM's medium names ("GPU", "CPU", ...); unknown names are lower tiers.
    pub fn parse(s: &str) -> Medium {
        match s.to_ascii_uppercase().as_str() {
            "GPU" | "CUDA" | "HBM" => Medium::Gpu,
            "CPU" | "CPU_TIER" | "DRAM" => Medium::Cpu,
            _ => Medium::Storage,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Medium::Gpu => "GPU",
            Medium::Cpu => "CPU",
            Medium::Storage => "STORAGE",
        }
    }
}

/// A block hash as the engine published it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EngineHash {
    Int(u64),
    Bytes(Vec<u8>),
}

impl EngineHash {
    /// The 64-bit value: the int, or the digest's low 64 bits (last 8 bytes, big-endian).
    pub fn as_u64(&self) -> u64 {
        match self {
            EngineHash::Int(v) => *v,
            EngineHash::Bytes(b) => {
                let tail = &b[b.len().saturating_sub(8)..];
                tail.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockStored {
    pub block_hashes: Vec<EngineHash>,
    pub parent_block_hash: Option<EngineHash>,
    pub token_ids: Vec<u32>,
    pub block_size: u32,
    pub lora_id: Option<i64>,
    pub medium: Option<Medium>,
    pub lora_name: Option<String>,
    /// One entry per block (usually nil; a cache salt on block 0, untagged).
    pub extra_keys: Option<Vec<Option<Value>>>,
    /// KV-cache group (hybrid models); 0.3x only.
    pub group_idx: Option<u32>,
    /// "full_attention", "sliding_window", ...; 0.3x only.
    pub kv_cache_spec_kind: Option<String>,
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockRemoved {
    pub block_hashes: Vec<EngineHash>,
    pub medium: Option<Medium>,
    pub group_idx: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KvEvent {
    BlockStored(BlockStored),
    BlockRemoved(BlockRemoved),
    AllBlocksCleared,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventBatch {
    pub ts: f64,
    pub events: Vec<KvEvent>,
    pub data_parallel_rank: Option<u32>,
    /// Events of a type this decoder does not know (or not events at all), skipped.
    pub skipped_unknown: u32,
    /// Events of a known type that vLLM could not have sent (a field unreadable, a
    /// `block_size` or a count out of bounds: see [`crate::limits`]), skipped.
    pub skipped_invalid: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KvMessage {
    pub topic: String,
    pub seq: u64,
    pub batch: EventBatch,
}
