//! Every default of `kvroute serve`, stated once. The flags read these
//! (`default_value_t = ...`), the configurations' `Default` impls read these, and a test
//! (`tests/docs_defaults.rs`) checks the tables of docs/indexer.md against them, so a
//! default changes here and nowhere else.

use kvroute_blockhash::{ExtraKeysStyle, HashScheme};

use crate::router::RouteMode;

// --- the daemon (`ServeConfig`) -------------------------------------------------------

/// HTTP API address.
pub const LISTEN: &str = "0.0.0.0:8080";
/// vLLM's `--prefix-caching-hash-algo` of the seed's engines.
pub const HASH_ALGO: HashScheme = HashScheme::Sha256Cbor;
/// vLLM's default block size on GPUs until the engines' events say otherwise.
pub const BLOCK_SIZE: usize = 64;
/// Extra keys as vLLM >= 0.31 tags them.
pub const EXTRA_KEYS: ExtraKeysStyle = ExtraKeysStyle::Tagged;
/// KV events are the knowledge; route memory only covers their blind spot.
pub const MODE: RouteMode = RouteMode::Precise;
/// Keys the index holds before forgetting the oldest (~60 bytes each).
pub const MAX_ENTRIES: usize = 4_000_000;
/// How long a route is remembered in estimate mode.
pub const ESTIMATE_TTL_SECS: u64 = 600;
/// An in-flight decision without a completion report is released after this long.
pub const IN_FLIGHT_TTL_SECS: u64 = 300;
/// How often each engine's `/metrics` is scraped.
pub const SCRAPE_INTERVAL_MS: u64 = 1000;

// --- the engines' event streams (`IngestConfig`) --------------------------------------

/// How often DNS discovery re-resolves.
pub const DNS_INTERVAL_SECS: u64 = 10;
/// ZeroMQ port of engines listed without one (vLLM's default publisher port).
pub const ZMQ_PORT: u16 = 5557;
/// The engines' OpenAI server port (vLLM's default).
pub const ENGINE_PORT: u16 = 8000;
/// The topic layout of the seed's `--kv-events-config`.
pub const TOPIC_PATTERN: &str = "kv@{host}@{model}";
/// Data-parallel ranks accepted per engine (vLLM numbers them 0..DP; 32 is past any DP
/// size served today); a message for a higher rank is dropped and counted.
pub const MAX_DP_RANKS: u32 = 32;
/// How often every engine's `/health` is checked: with the timeout below, a dead engine
/// is out of routing within ~1.5 s (refused: within 0.5 s).
pub const HEALTH_INTERVAL_MS: u64 = 500;
/// A check slower than this failed: vLLM answers `/health` in milliseconds even under load
/// (the API server answers it, not the engine loop).
pub const HEALTH_TIMEOUT_MS: u64 = 1000;

// --- scoring: its weights and defaults live in `kvroute-scoring` (shared with the fleet
// model), re-exported as `ScoringWeights`.
