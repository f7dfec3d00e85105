//! The simulated engine as a process: the pure model of this crate behind vLLM's HTTP API
//! and vLLM's KV-event sockets, so routers, indexers and benchmarks meet an engine that
//! behaves like vLLM where routing can tell (which prompt tokens are cached, what events say
//! so, how long a prefill takes) without a GPU. One concern per module:
//!
//! * [`config`]: the command line;
//! * [`model`]: prompt tokens and block hashes through the shared crate;
//! * [`engine_loop`]: the task that owns the scheduler and runs it in scaled real time;
//! * [`kv_publisher`] and [`replay`]: the ZeroMQ sockets;
//! * [`metrics`]: vLLM's Prometheus names;
//! * [`openai`] and [`http`]: the API's shapes and its routes.

pub mod config;
pub mod engine_loop;
pub mod http;
pub mod kv_publisher;
pub mod metrics;
pub mod model;
pub mod openai;
pub mod replay;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

pub use config::{EngineConfig, KvWire};

use crate::scheduler::Scheduler;
use engine_loop::EventStyle;
use kv_publisher::{KvEndpoint, KvPublisherConfig, KvSink};
use metrics::EngineMetrics;
use model::ServedModel;

/// Why the engine could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ZeroMQ: {0}")]
    Zmq(String),
    #[error(transparent)]
    Tokenizer(#[from] kvroute_blockhash::TokenizerDirError),
}

/// Runs the engine until `shutdown` resolves. The model is loaded and every socket bound
/// before the HTTP server accepts, so `/health` answering means ready.
pub async fn run(
    config: EngineConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    config.check()?;
    let hash = config.hash_config()?;
    let style = config.extra_keys_style()?;
    let name = config.model.clone();
    let dir = config.tokenizer.clone();
    let model = tokio::task::spawn_blocking(move || ServedModel::load(&name, &dir, hash, style))
        .await
        .map_err(|e| ServerError::Config(format!("loading the model: {e}")))??;
    let generation = config.kv_wire.generation();
    let endpoint = match (&config.kv_bind, &config.kv_connect) {
        (Some(addr), _) => Some(KvEndpoint::Bind(addr.clone())),
        (None, Some(addr)) => Some(KvEndpoint::Connect(
            addr.clone(),
            (!config.host.is_unspecified()).then_some(config.host),
        )),
        (None, None) => None,
    };
    let sink = match endpoint {
        Some(endpoint) => {
            let (sink, buffer) = kv_publisher::start(KvPublisherConfig {
                endpoint,
                topic: config.topic(),
                generation,
                replay_capacity: if config.kv_replay_bind.is_some() {
                    config.kv_replay_buffer
                } else {
                    0
                },
            })
            .await?;
            if let Some(addr) = &config.kv_replay_bind {
                replay::start(addr, buffer, generation).await?;
            }
            sink
        }
        None if config.kv_replay_bind.is_some() => {
            return Err(ServerError::Config(
                "--kv-replay-bind needs --kv-bind or --kv-connect".into(),
            ))
        }
        None => KvSink::disabled(),
    };
    let timing = config.timing();
    let first_token_delay =
        Duration::from_secs_f64(timing.first_token_overhead / config.time_scale);
    // vLLM's block pool keeps one block aside (the null block): a cache of N blocks caches
    // N - 1.
    let scheduler = Scheduler::new(
        timing,
        config.kv_capacity_tokens.saturating_sub(config.block_size),
        config.block_size,
    );
    // A request larger than the whole cache could never be admitted: it is refused.
    let cache_tokens = scheduler.cache.capacity() * config.block_size;
    let max_model_len = config
        .max_model_len
        .unwrap_or(cache_tokens)
        .min(cache_tokens);
    let metrics = Arc::new(EngineMetrics::new(&config.model));
    let model = Arc::new(model);
    let engine = engine_loop::spawn(
        scheduler,
        model.clone(),
        config.time_scale,
        sink,
        EventStyle {
            generation,
            bytes_hashes: config.kv_bytes_hashes,
        },
        metrics.clone(),
    );
    let addr = SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Io {
            what: format!("binding {addr}"),
            source,
        })?;
    let served_by = format!("{}:{}", config.engine_ip(), config.port);
    let state = Arc::new(http::AppState {
        model,
        engine,
        metrics,
        default_max_tokens: config.default_max_tokens,
        max_model_len,
        first_token_delay,
        time_scale: config.time_scale,
        served_by,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        next_id: AtomicU64::new(1),
    });
    tracing::info!(
        %addr,
        model = %config.model,
        topic = %config.topic(),
        kv_bind = ?config.kv_bind,
        kv_connect = ?config.kv_connect,
        time_scale = config.time_scale,
        "kvroute-engine-sim ready"
    );
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServerError::Io {
            what: "serving HTTP".into(),
            source,
        })
}
