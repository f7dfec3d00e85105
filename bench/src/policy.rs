//! The routing policies compared, as the live run deploys them: kvroute's modes are the
//! filter plus `kvroute serve` with different flags; the baselines are Envoy's own load
//! balancers on the engines' cluster with no filter at all.

use kvroute_engine_sim::fleet::Policy as FleetPolicy;
use kvroute_tests::envoy::PodsLbPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LivePolicy {
    /// Filter + indexer fed by the engines' KV events.
    Precise,
    /// Filter + indexer in estimate mode (its own routing history only).
    Estimate,
    /// Envoy RANDOM.
    Random,
    /// Envoy ROUND_ROBIN.
    RoundRobin,
    /// Envoy LEAST_REQUEST (power of two choices on active requests).
    LeastRequest,
    /// Filter + indexer with --cache-weight 0: least loaded by queue, cache ignored.
    LoadOnly,
}

pub enum Deployment {
    /// The filter and `kvroute serve` with these extra flags.
    Kvroute(Vec<String>),
    /// No filter; Envoy balances the engines' cluster with this `lb_policy`.
    Envoy(PodsLbPolicy),
}

impl LivePolicy {
    pub const ALL: [LivePolicy; 6] = [
        LivePolicy::Precise,
        LivePolicy::Estimate,
        LivePolicy::Random,
        LivePolicy::RoundRobin,
        LivePolicy::LeastRequest,
        LivePolicy::LoadOnly,
    ];

    pub fn fleet(self) -> FleetPolicy {
        match self {
            LivePolicy::Precise => FleetPolicy::Precise,
            LivePolicy::Estimate => FleetPolicy::Estimate,
            LivePolicy::Random => FleetPolicy::Random,
            LivePolicy::RoundRobin => FleetPolicy::RoundRobin,
            LivePolicy::LeastRequest => FleetPolicy::LeastRequest,
            LivePolicy::LoadOnly => FleetPolicy::LoadOnly,
        }
    }

    pub fn name(self) -> &'static str {
        self.fleet().name()
    }

    /// Stable file-name form.
    pub fn slug(self) -> &'static str {
        match self {
            LivePolicy::Precise => "precise",
            LivePolicy::Estimate => "estimate",
            LivePolicy::Random => "random",
            LivePolicy::RoundRobin => "round-robin",
            LivePolicy::LeastRequest => "least-request",
            LivePolicy::LoadOnly => "load-only",
        }
    }

    pub fn deployment(self) -> Deployment {
        match self {
            LivePolicy::Precise => Deployment::Kvroute(vec![]),
            LivePolicy::Estimate => Deployment::Kvroute(vec!["--mode".into(), "estimate".into()]),
            LivePolicy::LoadOnly => Deployment::Kvroute(vec!["--cache-weight".into(), "0".into()]),
            LivePolicy::Random => Deployment::Envoy(PodsLbPolicy::Random),
            LivePolicy::RoundRobin => Deployment::Envoy(PodsLbPolicy::RoundRobin),
            LivePolicy::LeastRequest => Deployment::Envoy(PodsLbPolicy::LeastRequest),
        }
    }
}
