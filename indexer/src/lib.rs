//! kvroute-indexer: the global view of which vLLM pod holds which KV block.
//!
//! Engines publish every block they store or evict (ZeroMQ, see `kvroute-kvevents`);
//! `ingest` turns those events into index operations per engine (`event_keys` decides how
//! engine hashes become keys), `index` keeps the key -> pods map behind the `PodIndex`
//! seam, `scoring` answers "which pod" for a request's keys balanced against `load`,
//! `route_memory` covers the moments before events arrive, `router` puts them together and
//! `http` serves it (`http_limits` says what a request may cost, `http_server` what a
//! connection may). `types` holds the words they all share (no module imports another in a
//! circle), `defaults` every default once. `serve` wires them; `kvroute serve` (the cli
//! crate) only binds the socket, handles signals and calls it.

pub mod defaults;
pub mod event_keys;
pub mod http;
pub mod http_limits;
pub mod http_server;
pub mod index;
pub mod ingest;
pub mod load;
pub mod metrics;
pub mod models;
pub mod pods;
pub mod prompt;
pub mod route_memory;
pub mod router;
pub mod scoring;
pub mod serve;
pub mod types;
