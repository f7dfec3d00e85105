//! The daemon's entry, as tokio's mini-redis has it: configuration in, then
//! `serve(config, listener, shutdown)` runs the HTTP API and ingestion on a socket the
//! caller bound until a future the caller owns completes. Signals are the binary's business
//! (`kvroute serve`); tests and benches run this same entry with their own listener and
//! shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kvroute_blockhash::{ExtraKeysStyle, HashConfig, HashScheme};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::defaults;
use crate::http::{app, AppState, LoraAdapter};
use crate::http_limits::HttpLimits;
use crate::http_server;
use crate::index::{BlockIndex, PodIndex};
use crate::ingest::{Ingest, IngestConfig};
use crate::load::InFlight;
use crate::metrics::Metrics;
use crate::models::Models;
use crate::pods::PodRegistry;
use crate::route_memory::RouteMemory;
use crate::router::{RouteMode, Router};
use crate::scoring::ScoringWeights;

#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct ServeConfig {
    /// HTTP API address.
    #[arg(long, default_value = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// A served model and its tokenizer folder, NAME=DIR (repeatable).
    #[arg(long = "model", value_name = "NAME=DIR")]
    pub models: Vec<String>,
    /// A LoRA adapter served on a base model, ADAPTER=BASE[=PATH] (repeatable). PATH is the
    /// adapter's path as the engines load it: vLLM >= 0.31 hashes it into the tagged LoRA key.
    #[arg(long = "lora", value_name = "ADAPTER=BASE[=PATH]")]
    pub loras: Vec<String>,
    /// The engines' --prefix-caching-hash-algo: sha256 (vLLM's default), sha256_cbor,
    /// xxhash, xxhash_cbor or sha256_cbor_64bit.
    #[arg(long, default_value_t = defaults::HASH_ALGO)]
    pub hash_algo: HashScheme,
    /// The engines' PYTHONHASHSEED (default: vLLM's "vllm-none-hash").
    #[arg(long)]
    pub hash_seed: Option<String>,
    /// Block size until the engines' events tell it.
    #[arg(long, default_value_t = defaults::BLOCK_SIZE)]
    pub block_size: usize,
    /// Extra keys as today's vLLM tags them, or bare as older versions did.
    #[arg(long, default_value_t = defaults::EXTRA_KEYS)]
    pub extra_keys: ExtraKeysStyle,
    /// precise (KV events) or estimate (no events: remember routes).
    #[arg(long, value_enum, default_value_t = defaults::MODE)]
    pub mode: RouteMode,
    /// Most (block, engine) entries the index holds: each engine keeps at most its share
    /// (this over the engines known) and forgets its oldest first.
    #[arg(long, default_value_t = defaults::MAX_ENTRIES)]
    pub max_entries: usize,
    /// How long a route is remembered in estimate mode.
    #[arg(long, default_value_t = defaults::ESTIMATE_TTL_SECS)]
    pub estimate_ttl_secs: u64,
    /// An in-flight decision is released after this long without a completion report.
    #[arg(long, default_value_t = defaults::IN_FLIGHT_TTL_SECS)]
    pub in_flight_ttl_secs: u64,
    #[command(flatten)]
    pub http: HttpLimits,
    #[command(flatten)]
    pub ingest: IngestConfig,
    #[command(flatten)]
    pub weights: ScoringWeights,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: defaults::LISTEN
                .parse()
                .expect("defaults::LISTEN is an address"),
            models: Vec::new(),
            loras: Vec::new(),
            hash_algo: defaults::HASH_ALGO,
            hash_seed: None,
            block_size: defaults::BLOCK_SIZE,
            extra_keys: defaults::EXTRA_KEYS,
            mode: defaults::MODE,
            max_entries: defaults::MAX_ENTRIES,
            estimate_ttl_secs: defaults::ESTIMATE_TTL_SECS,
            in_flight_ttl_secs: defaults::IN_FLIGHT_TTL_SECS,
            http: HttpLimits::default(),
            ingest: IngestConfig::default(),
            weights: ScoringWeights::default(),
        }
    }
}

impl LoraAdapter {
    /// `ADAPTER=BASE[=PATH]` -> (adapter name, adapter).
    pub fn parse(spec: &str) -> anyhow::Result<(String, LoraAdapter)> {
        let mut parts = spec.splitn(3, '=');
        let (Some(name), Some(base)) = (parts.next(), parts.next()) else {
            anyhow::bail!("--lora {spec:?}: expected ADAPTER=BASE[=PATH]");
        };
        if name.is_empty() || base.is_empty() {
            anyhow::bail!("--lora {spec:?}: expected ADAPTER=BASE[=PATH]");
        }
        let path = parts.next().filter(|p| !p.is_empty()).map(str::to_owned);
        Ok((
            name.to_owned(),
            LoraAdapter {
                base: base.to_owned(),
                path,
            },
        ))
    }
}

/// The daemon built from its configuration, before any socket is opened: what the HTTP
/// API serves and what ingestion feeds. Benches reach into `state` (e.g. to preload the
/// index) before [`Daemon::run`].
pub struct Daemon {
    pub state: Arc<AppState>,
    pub ingest: Arc<Ingest>,
}

/// Everything built from the configuration; a configuration that cannot work is refused
/// here, before anything runs.
pub fn build(config: &ServeConfig) -> anyhow::Result<Daemon> {
    let models = Models::load(&config.models)?;
    let metrics = Arc::new(Metrics::new());
    let registry = PodRegistry::new(models.single());
    let registry = Arc::new(if config.ingest.health_checked() {
        registry.with_health_checks()
    } else {
        registry
    });
    let index: Arc<dyn PodIndex> = Arc::new(BlockIndex::new(config.max_entries));
    let hash = HashConfig {
        scheme: config.hash_algo,
        block_size: config.block_size,
        seed: config.hash_seed.clone(),
    };
    // Refuse at start what no engine can match (an unseeded scheme is seeded randomly by
    // vLLM, block size 0) rather than serve lookups that all miss.
    hash.check()
        .context("--hash-algo/--hash-seed/--block-size")?;
    let ingest = Arc::new(Ingest::new(
        config.ingest.clone(),
        index.clone(),
        registry.clone(),
        metrics.clone(),
        hash.clone(),
        config.extra_keys,
    )?);
    // Precise mode needs no memory of routes beyond the ledger of decisions in flight.
    let memory_ttl = match config.mode {
        RouteMode::Precise => Duration::ZERO,
        RouteMode::Estimate => Duration::from_secs(config.estimate_ttl_secs),
    };
    let lora_bases = config
        .loras
        .iter()
        .map(|spec| LoraAdapter::parse(spec))
        .collect::<anyhow::Result<HashMap<_, _>>>()?;
    let router = Router {
        index,
        registry,
        memory: RouteMemory::new(memory_ttl, config.max_entries.max(1024)),
        in_flight: Arc::new(InFlight::bounded(
            Duration::from_secs(config.in_flight_ttl_secs),
            config.http.max_tickets,
            defaults::MAX_TICKET_KEYS,
        )),
        weights: config.weights.clone(),
        mode: config.mode,
        metrics,
        default_block_size: config.block_size,
        configured_models: models.names(),
    };
    let state = Arc::new(AppState {
        router,
        models,
        hash,
        extra_keys: config.extra_keys,
        lora_bases,
        api_token: config.http.api_token()?,
        tokenizing: Arc::new(tokio::sync::Semaphore::new(
            config
                .http
                .max_tokenizing
                .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        )),
        large_routes: Arc::new(tokio::sync::Semaphore::new(
            config
                .http
                .max_large_routes
                .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        )),
        limits: config.http.clone(),
    });
    Ok(Daemon { state, ingest })
}

impl Daemon {
    /// Serve the HTTP API on `listener` and ingest events until `shutdown` completes, then
    /// stop every task and return.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let addr = listener.local_addr().context("the API socket's address")?;
        tracing::info!(listen = %addr, models = ?self.state.models.names(), mode = ?self.state.router.mode, "kvroute indexer up");
        let ingest_task = tokio::spawn(self.ingest.clone().run(stopped.clone()));
        let scrape_task = tokio::spawn(
            self.ingest
                .scrape(self.state.router.in_flight.clone(), stopped.clone()),
        );
        let mut http_stopped = stopped.clone();
        let limits = self.state.limits.clone();
        let evicted = self.state.router.metrics.http_connections_evicted.clone();
        let mut server = tokio::spawn(async move {
            http_server::serve(listener, app(self.state), &limits, evicted, async move {
                let _ = http_stopped.changed().await;
            })
            .await
        });
        let result = tokio::select! {
            _ = shutdown => {
                tracing::info!("shutting down");
                Ok(())
            }
            served = &mut server => Err(match served {
                Ok(()) => anyhow::anyhow!("the HTTP server stopped"),
                Err(e) => anyhow::Error::from(e).context("the HTTP server panicked"),
            }),
        };
        let _ = stop.send(true);
        if !server.is_finished() {
            let _ = server.await;
        }
        let _ = ingest_task.await;
        let _ = scrape_task.await;
        result
    }
}

/// The daemon: build it from `config`, serve on `listener` until `shutdown` completes.
/// `kvroute serve` passes a bound socket and its termination signals; tests and benches
/// their own.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    build(&config)?.run(listener, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults and `Default` both read `crate::defaults`; this proves they
    /// read the same ones.
    #[test]
    fn the_command_line_defaults_are_the_default_config() {
        let command = <ServeConfig as clap::Args>::augment_args(clap::Command::new("serve"));
        let parsed = <ServeConfig as clap::FromArgMatches>::from_arg_matches(
            &command.get_matches_from(["serve"]),
        )
        .expect("the defaults parse");
        assert_eq!(parsed, ServeConfig::default());
    }

    #[test]
    fn lora_spec_takes_an_optional_path() {
        let (name, a) = LoraAdapter::parse("sql-lora=Qwen3-32B").expect("valid");
        assert_eq!(
            (name.as_str(), a.base.as_str(), a.path),
            ("sql-lora", "Qwen3-32B", None)
        );
        let (_, a) = LoraAdapter::parse("sql-lora=Qwen3-32B=/adapters/sql").expect("valid");
        assert_eq!(a.path.as_deref(), Some("/adapters/sql"));
        for bad in ["sql-lora", "=Qwen3-32B", "sql-lora="] {
            assert!(LoraAdapter::parse(bad).is_err(), "{bad}");
        }
    }
}
