//! kvroute-indexer: the global view of which vLLM pod holds which KV block.
//!
//! Engines publish every block they store or evict (ZeroMQ, see `kvroute-kvevents`);
//! `ingest` turns those events into index operations per engine (`event_keys` decides how
//! engine hashes become keys), `index` keeps the key -> pods map, `scoring` answers "which
//! pod" for a request's keys balanced against `load`, `route_memory` covers the moments
//! before events arrive, and `http` serves it. `serve` wires them; `kvroute serve` (the cli
//! crate) only parses flags and calls it.

pub mod event_keys;
pub mod http;
pub mod index;
pub mod ingest;
pub mod load;
pub mod metrics;
pub mod models;
pub mod pods;
pub mod route_memory;
pub mod router;
pub mod scoring;
pub mod serve;
