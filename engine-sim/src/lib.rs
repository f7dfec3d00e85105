//! Simulated vLLM engine. The pure model lives here (no I/O) so its cache semantics and its
//! timing calibration are unit-tested; servers and load generators wrap it.

pub mod fleet;
pub mod prefix_cache;
pub mod scheduler;
pub mod timing;

pub use prefix_cache::{Allocation, CacheFull, PrefixCache};
pub use scheduler::{Finished, FirstToken, Scheduler, SeqId, StepOutcome};
pub use timing::TimingModel;
