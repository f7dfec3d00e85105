//! How each routing policy is deployed live: kvroute's modes are the filter plus
//! `kvroute serve` with different flags; the baselines are Envoy's own load balancers on the
//! engines' cluster with no filter at all. The policies themselves are one enum,
//! `kvroute_engine_sim::fleet::Policy`, shared with the fleet model.

pub use kvroute_engine_sim::fleet::Policy;
use kvroute_harness::envoy::PodsLbPolicy;

pub enum Deployment {
    /// The filter and `kvroute serve` with these extra flags.
    Kvroute(Vec<String>),
    /// No filter; Envoy balances the engines' cluster with this `lb_policy`.
    Envoy(PodsLbPolicy),
}

/// The policies a live run can deploy, in report order.
pub fn live_policies() -> Vec<Policy> {
    Policy::ALL.into_iter().filter(Policy::is_live).collect()
}

/// How `policy` is deployed; None for the model-only heuristic.
pub fn deployment(policy: Policy) -> Option<Deployment> {
    Some(match policy {
        Policy::Precise => Deployment::Kvroute(vec![]),
        Policy::Estimate => Deployment::Kvroute(vec!["--mode".into(), "estimate".into()]),
        Policy::LoadOnly => Deployment::Kvroute(vec!["--cache-weight".into(), "0".into()]),
        Policy::Random => Deployment::Envoy(PodsLbPolicy::Random),
        Policy::RoundRobin => Deployment::Envoy(PodsLbPolicy::RoundRobin),
        Policy::LeastRequest => Deployment::Envoy(PodsLbPolicy::LeastRequest),
        Policy::LongestHolder => return None,
    })
}
