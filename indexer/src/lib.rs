//! kvroute-indexer: the global view of which vLLM pod holds which KV block.
//!
//! Engines publish every block they store or evict (ZeroMQ, see `kvroute-kvevents`);
//! `ingest` turns those events into index operations per pod, `index` keeps the
//! key -> pods map, `scoring` answers "which pod" for a request's keys balanced against
//! load, and `http` serves it. `kvroute serve` (the cli crate) only wires these together.

pub mod index;
pub mod pods;
