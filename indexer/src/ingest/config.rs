//! How the indexer meets the engines' event streams: the `kvroute serve` flags of
//! ingestion. Defaults live in `crate::defaults`.

use crate::defaults;

/// How the indexer meets the engines' event streams.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct IngestConfig {
    /// Bind a SUB socket here for engines to connect to (e.g. tcp://0.0.0.0:5557).
    /// Without it the indexer connects to each engine's PUB socket.
    #[arg(long)]
    pub zmq_bind: Option<String>,
    /// A known engine, HOST[:ZMQ_PORT][=HTTP_PORT] (repeatable). The HTTP port defaults to
    /// --engine-port; give it when engines share a host (local stacks).
    #[arg(long = "engine", value_name = "HOST[:ZMQ_PORT][=HTTP_PORT]")]
    pub engines: Vec<String>,
    /// Discover engines by resolving this name (a headless Service), NAME[:ZMQ_PORT].
    #[arg(long, value_name = "NAME[:ZMQ_PORT]")]
    pub engine_dns: Option<String>,
    /// How often discovery re-resolves.
    #[arg(long, default_value_t = defaults::DNS_INTERVAL_SECS)]
    pub dns_interval_secs: u64,
    /// ZeroMQ port of engines listed without one.
    #[arg(long, default_value_t = defaults::ZMQ_PORT)]
    pub zmq_port: u16,
    /// The engines' OpenAI server port: what routing answers with.
    #[arg(long, default_value_t = defaults::ENGINE_PORT)]
    pub engine_port: u16,
    /// The engines' replay (ROUTER) port, when they offer one.
    #[arg(long)]
    pub replay_port: Option<u16>,
    /// Topic layout; `{host}` is the engine (IP, optionally :port) and `{model}` its model.
    #[arg(long, default_value = defaults::TOPIC_PATTERN)]
    pub topic_pattern: String,
    /// How often every engine's /health is checked; an engine that refuses, fails or does
    /// not answer within --health-timeout-ms is out of routing until it answers again.
    /// 0: no checks, every known engine is routed to.
    #[arg(long, default_value_t = defaults::HEALTH_INTERVAL_MS)]
    pub health_interval_ms: u64,
    /// How often each engine's /metrics is scraped (load, restarts; a failed scrape takes
    /// the engine out of routing as a failed health check does).
    #[arg(long, default_value_t = defaults::SCRAPE_INTERVAL_MS)]
    pub scrape_interval_ms: u64,
    /// How long a health check (or a metrics scrape) may take before it counts as failed.
    #[arg(long, default_value_t = defaults::HEALTH_TIMEOUT_MS)]
    pub health_timeout_ms: u64,
    /// Data-parallel ranks accepted per engine: events for a rank at or past this are
    /// dropped and counted (each rank is a pod the index and every route answer carry).
    #[arg(long, default_value_t = defaults::MAX_DP_RANKS)]
    pub max_dp_ranks: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            zmq_bind: None,
            engines: Vec::new(),
            engine_dns: None,
            dns_interval_secs: defaults::DNS_INTERVAL_SECS,
            zmq_port: defaults::ZMQ_PORT,
            engine_port: defaults::ENGINE_PORT,
            replay_port: None,
            topic_pattern: defaults::TOPIC_PATTERN.to_owned(),
            health_interval_ms: defaults::HEALTH_INTERVAL_MS,
            scrape_interval_ms: defaults::SCRAPE_INTERVAL_MS,
            health_timeout_ms: defaults::HEALTH_TIMEOUT_MS,
            max_dp_ranks: defaults::MAX_DP_RANKS,
        }
    }
}

impl IngestConfig {
    /// Whether engines are health-checked (and only healthy ones routed to).
    pub fn health_checked(&self) -> bool {
        self.health_interval_ms > 0
    }

    /// The defaults with these engines, for code embedding the ingestion (tests, benches).
    pub fn with_engines<S: Into<String>>(engines: impl IntoIterator<Item = S>) -> Self {
        Self {
            engines: engines.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}
