//! kvroute-scoring: which pod serves a request, as pure code (no I/O, no clock).
//!
//! Two consumers need the same answer: the indexer's router (live traffic) and the
//! simulator's virtual-time fleet model, which replays a workload through this exact code so
//! the model cross-checks the product rather than a look-alike. [`choose`] prices each pod by
//! the time to first token it predicts, counted in prefill tokens; [`Ledger`] keeps the
//! router's own decisions that have not been prefilled yet (the work it knows it queued) and
//! the keys they will hold. Both take identities as a type parameter, so the indexer keys
//! them by its engine slot and the model by an engine number ([`BookIndex`]).

mod choose;
mod ledger;

pub use choose::{choose, choose_into, Decision, PodView, Reason, Request, Score, Weights};
pub use ledger::{BookIndex, Ledger, Pending, CONFIRM_PER_DECISION};
