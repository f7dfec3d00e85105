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

// --- the HTTP API (`HttpLimits`): what one client may cost --------------------------

/// Connections open at once; past it new ones wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections open at once from one address; past it its new ones are closed at once, so
/// one client cannot take every connection slot from the others.
pub const MAX_CONNECTIONS_PER_IP: usize = 1024;
/// How long a client may take to send a request head, and may stay idle between two
/// requests on a kept-alive connection (hyper starts the same timer for both).
pub const HEADER_TIMEOUT_MS: u64 = 5_000;
/// Longest one request may take from its head to its answer (body read included).
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Requests handled at once; past it the API answers 503 at once rather than queue.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 1024;
/// `/v1/route/prompt` bodies tokenized at once on the blocking pool; past it 503. Each
/// costs a core and, for a multi-megabyte prompt, ~200 MB while it runs.
pub const MAX_TOKENIZING: usize = 2;
/// `/v1/route` bodies over [`INLINE_ROUTE_BODY_BYTES`] parsed and decided at once on the
/// blocking pool; past it 503. One: a flood of such bodies then takes at most one core
/// from the small routes (a 95,000-hash flood on all cores raised their p99 tenfold).
pub const MAX_LARGE_ROUTES: usize = 1;
/// Largest `/v1/route` body: 16,384 hashes written as JSON take ~350 KiB.
pub const ROUTE_BODY_BYTES: usize = 2 << 20;
/// Largest `/v1/route/prompt` body (an OpenAI or Anthropic request).
pub const PROMPT_BODY_BYTES: usize = 8 << 20;
/// `/v1/route` bodies larger than this (~3,000 hashes) are parsed and decided on the
/// blocking pool rather than on the async workers.
pub const INLINE_ROUTE_BODY_BYTES: usize = 64 << 10;
/// Largest body of `/v1/route/complete` (and of any route that reads none).
pub const SMALL_BODY_BYTES: usize = 4 << 10;
/// Most block hashes one decision reads: a longer prefix (over a million tokens at 64-token
/// blocks) is routed on its first blocks.
pub const MAX_ROUTE_BLOCKS: usize = 16_384;
/// Decisions counted in flight at once; past it the oldest is released early, so callers
/// that never report completion cannot grow the ledger or pin load.
pub const MAX_TICKETS: usize = 65_536;
/// Completions that came before their decision (a caller gave up on a route call and
/// released the ticket it named), remembered so the late decision is not counted as load;
/// past it the oldest is forgotten.
pub const MAX_EARLY_COMPLETIONS: usize = 4_096;
/// How long such a completion is remembered: far longer than any route call waits.
pub const EARLY_COMPLETION_SECS: u64 = 30;
/// Keys the in-flight ledger holds over all its decisions (~32 bytes each); past it the
/// oldest decisions are released early.
pub const MAX_TICKET_KEYS: usize = 4_000_000;
/// Largest request head (start line and headers).
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// How long open connections get to finish at shutdown.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;
