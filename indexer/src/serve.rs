//! `kvroute serve`: configuration in, running daemon out, until SIGTERM or ctrl-c.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kvroute_blockhash::{ExtraKeysStyle, HashConfig, HashScheme};
use tokio::sync::watch;

use crate::http::{app, AppState, LoraAdapter};
use crate::index::BlockIndex;
use crate::ingest::{Ingest, IngestConfig};
use crate::load::{scrape_loop, InFlight};
use crate::metrics::Metrics;
use crate::models::Models;
use crate::pods::PodRegistry;
use crate::route_memory::RouteMemory;
use crate::router::{RouteMode, Router};
use crate::scoring::ScoringWeights;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// HTTP API address.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// A served model and its tokenizer folder, NAME=DIR (repeatable).
    #[arg(long = "model", value_name = "NAME=DIR")]
    pub models: Vec<String>,
    /// A LoRA adapter served on a base model, ADAPTER=BASE[=PATH] (repeatable). PATH is the
    /// adapter's path as the engines load it: vLLM >= 0.31 hashes it into the tagged LoRA key.
    #[arg(long = "lora", value_name = "ADAPTER=BASE[=PATH]")]
    pub loras: Vec<String>,
    /// The engines' --prefix-caching-hash-algo.
    #[arg(long, default_value = "sha256_cbor")]
    pub hash_algo: HashScheme,
    /// The engines' PYTHONHASHSEED (default: vLLM's "vllm-none-hash").
    #[arg(long)]
    pub hash_seed: Option<String>,
    /// Block size until the engines' events tell it.
    #[arg(long, default_value_t = 64)]
    pub block_size: usize,
    /// Extra keys as today's vLLM tags them, or bare as older versions did.
    #[arg(long, default_value = "tagged")]
    pub extra_keys: ExtraKeysStyle,
    /// precise (KV events) or estimate (no events: remember routes).
    #[arg(long, value_enum, default_value_t = RouteMode::Precise)]
    pub mode: RouteMode,
    /// Most keys the index holds; the oldest go first.
    #[arg(long, default_value_t = 4_000_000)]
    pub max_entries: usize,
    /// How long a decision counts as the pod holding its keys (precise mode).
    #[arg(long, default_value_t = 2000)]
    pub provisional_ttl_ms: u64,
    /// How long a route is remembered in estimate mode.
    #[arg(long, default_value_t = 600)]
    pub estimate_ttl_secs: u64,
    /// An in-flight decision is released after this long without a completion report.
    #[arg(long, default_value_t = 300)]
    pub in_flight_ttl_secs: u64,
    /// How often each engine's /metrics is scraped.
    #[arg(long, default_value_t = 1000)]
    pub scrape_interval_ms: u64,
    #[command(flatten)]
    pub ingest: IngestConfig,
    #[command(flatten)]
    pub weights: ScoringWeights,
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

/// Everything built from the configuration, before any socket is opened.
pub fn build(config: &ServeConfig) -> anyhow::Result<(Arc<AppState>, Arc<Ingest>)> {
    let models = Models::load(&config.models)?;
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(PodRegistry::new(models.single()));
    let index = Arc::new(BlockIndex::new(config.max_entries));
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
    ));
    let memory_ttl = match config.mode {
        RouteMode::Precise => Duration::from_millis(config.provisional_ttl_ms),
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
        in_flight: Arc::new(InFlight::new(Duration::from_secs(
            config.in_flight_ttl_secs,
        ))),
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
    });
    Ok((state, ingest))
}

/// Run the daemon until a termination signal.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let (state, ingest) = build(&config)?;
    let (stop, shutdown) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(listen = %config.listen, models = ?state.models.names(), mode = ?config.mode, "kvroute indexer up");
    let ingest_task = tokio::spawn(ingest.run(shutdown.clone()));
    let scrape_task = tokio::spawn(scrape_loop(
        state.router.registry.clone(),
        state.router.in_flight.clone(),
        Duration::from_millis(config.scrape_interval_ms.max(50)),
        shutdown.clone(),
    ));
    let mut http_shutdown = shutdown.clone();
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        let _ = http_shutdown.changed().await;
    });
    let server = tokio::spawn(async move { server.await });
    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    let _ = server.await;
    let _ = ingest_task.await;
    let _ = scrape_task.await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

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
