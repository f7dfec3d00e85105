//! kvroute-kvevents: vLLM's KV-event wire format, in one place.
//!
//! CONTRACT (owner fills in): frames `[topic, seq u64 BE, msgpack payload]`, payload
//! `[ts, events, dp_rank]`; events as 0.10 tagged arrays or 0.3x maps tagged by "type".

/// Where a cached block lives on its engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Medium {
    #[default]
    Gpu,
    Cpu,
    Storage,
}
