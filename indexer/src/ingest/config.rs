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
    /// An engine silent this long is health-checked, and dropped if it does not answer.
    #[arg(long, default_value_t = defaults::SILENCE_TIMEOUT_SECS)]
    pub silence_timeout_secs: u64,
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
            silence_timeout_secs: defaults::SILENCE_TIMEOUT_SECS,
        }
    }
}

impl IngestConfig {
    /// The defaults with these engines, for code embedding the ingestion (tests, benches).
    pub fn with_engines<S: Into<String>>(engines: impl IntoIterator<Item = S>) -> Self {
        Self {
            engines: engines.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}
