//! The engine's command line. Flags are named after vLLM's where vLLM has one
//! (`--served-model-name`, `--block-size`, `--max-num-seqs`, `--max-num-batched-tokens`,
//! `--prefix-caching-hash-algo`), so scripts read the same for a simulated and a real engine;
//! the rest (`--kv-*`, `--time-scale`, `--kv-capacity-tokens`) stand for what vLLM takes from
//! `--kv-events-config`, the GPU and the clock.

use std::net::IpAddr;
use std::path::PathBuf;

use kvroute_blockhash::{ExtraKeysStyle, HashConfig, HashScheme};
use kvroute_kvevents::WireGeneration;

use crate::server::ServerError;
use crate::timing::{Profile, TimingModel};

/// Which generation of vLLM's KV-event wire to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvWire {
    /// vLLM 0.10/0.11: events as msgspec tagged arrays.
    #[value(name = "0.10")]
    V010,
    /// vLLM 0.3x: events as maps tagged by "type".
    #[value(name = "0.3x")]
    V03x,
}

impl KvWire {
    pub fn generation(self) -> WireGeneration {
        match self {
            KvWire::V010 => WireGeneration::V010Arrays,
            KvWire::V03x => WireGeneration::V03xMaps,
        }
    }
}

/// `kvroute-engine-sim`: a simulated vLLM engine (OpenAI API, prefix cache, KV events).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "kvroute-engine-sim", version, about)]
pub struct EngineConfig {
    /// Address the OpenAI server binds (a pod's IP; distinct loopback IPs on one host).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The model name requests must name (vLLM's --served-model-name).
    #[arg(
        long = "model",
        alias = "served-model-name",
        default_value = "Qwen3-32B"
    )]
    pub model: String,
    /// Directory with the model's tokenizer.json and tokenizer_config.json (and optionally
    /// chat_template.jinja), e.g. testdata/tokenizers/qwen3.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// vLLM's --prefix-caching-hash-algo (sha256, sha256_cbor, xxhash, xxhash_cbor,
    /// sha256_cbor_64bit).
    #[arg(
        long = "hash-algo",
        alias = "prefix-caching-hash-algo",
        default_value = "sha256_cbor"
    )]
    pub hash_algo: String,
    /// The engine's PYTHONHASHSEED (absent: vLLM's default "vllm-none-hash").
    #[arg(long)]
    pub hash_seed: Option<String>,
    /// Extra-key form: tagged (vLLM 0.31+) or bare (earlier).
    #[arg(long, default_value = "tagged")]
    pub extra_keys: String,
    #[arg(long, default_value_t = 64)]
    pub block_size: usize,
    /// KV cache size in tokens (vLLM's GPU blocks x block size, the "GPU KV cache size" it
    /// logs; one block is kept aside as vLLM does); default: the seed's pods.
    #[arg(long, default_value_t = 307_328)]
    pub kv_capacity_tokens: usize,
    /// Longest prompt + output accepted (vLLM's --max-model-len); default: the cache size.
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Simulated time runs this many times faster than real time (10: a 4.3 s prefill
    /// takes 0.43 s).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Output tokens when a request sets neither max_tokens nor max_completion_tokens.
    #[arg(long, default_value_t = 16)]
    pub default_max_tokens: usize,
    /// The engine's timing profile (docs/engine-sim.md derives each).
    #[arg(long, value_enum, default_value_t = Profile::default())]
    pub profile: Profile,
    /// vLLM's --max-num-seqs.
    #[arg(long)]
    pub max_num_seqs: Option<usize>,
    /// vLLM's --max-num-batched-tokens (also the prefill chunk).
    #[arg(long)]
    pub max_num_batched_tokens: Option<usize>,
    /// Bind the KV-event PUB socket here (the indexer connects), e.g. tcp://*:5557.
    #[arg(long, conflicts_with = "kv_connect")]
    pub kv_bind: Option<String>,
    /// Connect the KV-event PUB socket to the indexer's bound SUB, e.g. tcp://indexer:5557,
    /// from --host's address (an indexer believes a bound-socket publisher only from the
    /// address of the engine its topic names); re-dialed when the connection drops.
    #[arg(long)]
    pub kv_connect: Option<String>,
    /// Bind a replay ROUTER socket here (vLLM's replay_endpoint), e.g. tcp://*:5558.
    #[arg(long)]
    pub kv_replay_bind: Option<String>,
    /// Messages kept for replay (vLLM's buffer_steps).
    #[arg(long, default_value_t = 10_000)]
    pub kv_replay_buffer: usize,
    /// KV-event wire generation.
    #[arg(long, value_enum, default_value_t = KvWire::V03x)]
    pub kv_wire: KvWire,
    /// Publish block hashes as raw digest bytes (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0)
    /// instead of ints.
    #[arg(long)]
    pub kv_bytes_hashes: bool,
    /// The events' topic; default kv@<advertised ip>@<model>, as the seed configures vLLM.
    #[arg(long)]
    pub kv_topic: Option<String>,
    /// This engine's IP as others see it (a pod's POD_IP); default: --host.
    #[arg(long, env = "POD_IP")]
    pub advertise_ip: Option<String>,
}

impl EngineConfig {
    pub fn hash_config(&self) -> Result<HashConfig, ServerError> {
        let scheme: HashScheme = self
            .hash_algo
            .parse()
            .map_err(|e: kvroute_blockhash::Error| ServerError::Config(e.to_string()))?;
        let config = HashConfig {
            scheme,
            block_size: self.block_size,
            seed: self.hash_seed.clone(),
        };
        config
            .check()
            .map_err(|e| ServerError::Config(e.to_string()))?;
        Ok(config)
    }

    pub fn extra_keys_style(&self) -> Result<ExtraKeysStyle, ServerError> {
        self.extra_keys
            .parse()
            .map_err(|e: kvroute_blockhash::Error| ServerError::Config(e.to_string()))
    }

    pub fn timing(&self) -> TimingModel {
        let mut timing = self.profile.timing();
        if let Some(n) = self.max_num_seqs {
            timing.max_running = n.max(1);
        }
        if let Some(n) = self.max_num_batched_tokens {
            timing.token_budget = n.max(1);
        }
        timing
    }

    /// The IP the topic names: the advertised one, else the bound one.
    pub fn engine_ip(&self) -> String {
        self.advertise_ip
            .clone()
            .unwrap_or_else(|| self.host.to_string())
    }

    pub fn topic(&self) -> String {
        self.kv_topic
            .clone()
            .unwrap_or_else(|| format!("kv@{}@{}", self.engine_ip(), self.model))
    }

    /// Refuses settings that cannot run (a time scale that is not a positive number).
    pub fn check(&self) -> Result<(), ServerError> {
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(ServerError::Config(format!(
                "--time-scale must be a positive number, got {}",
                self.time_scale
            )));
        }
        if self.block_size == 0 || self.kv_capacity_tokens < 2 * self.block_size {
            return Err(ServerError::Config(
                "--kv-capacity-tokens must hold at least two blocks (vLLM keeps one aside)".into(),
            ));
        }
        Ok(())
    }
}
