//! Simulated vLLM engine. The pure model (`prefix_cache`, `scheduler`, `timing`, `fleet`)
//! does no I/O, so its cache semantics and its timing calibration are unit-tested and a
//! benchmark can run it in virtual time; [`server`] wraps it in vLLM's HTTP API and KV-event
//! sockets for the `kvroute-engine-sim` binary.

pub mod fleet;
pub mod prefix_cache;
pub mod scheduler;
pub mod server;
pub mod timing;

pub use prefix_cache::{CacheFull, PrefixCache};
pub use scheduler::{Finished, FirstToken, Scheduler, SeqId, StepOutcome, StoredBlock};
pub use timing::{Profile, TimingModel};
