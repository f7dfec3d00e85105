//! KV events for the minimal backends, so the real indexer learns what each one caches:
//! on every chat or completions request the backend computes the prompt's blocks with the
//! shared crate (as vLLM would store them after prefill) and publishes one `BlockStored` in
//! vLLM's wire format (kvroute-kvevents) over ZeroMQ, connecting to the indexer's bound SUB
//! socket with the topic `kv@<ip>@<model>`, exactly like the seed's vLLM configuration.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kvroute_blockhash::{
    BlockHasher, Endpoint, HashConfig, PromptEncoder, Request, RequestExtras, RequestKeys,
};
use kvroute_kvevents::{
    encode_message, BlockStored, EngineHash, EventBatch, KvEvent, Medium, WireGeneration,
};
use zeromq::{Socket, SocketSend, ZmqMessage};

/// One model's encoder, shared by every backend of a stack.
pub struct KvModel {
    pub name: String,
    pub encoder: PromptEncoder,
    pub hasher: BlockHasher,
}

impl KvModel {
    pub fn load(name: &str, dir: &std::path::Path, hash: HashConfig) -> anyhow::Result<Self> {
        let encoder = PromptEncoder::from_dir(dir)?;
        Ok(Self {
            name: name.to_string(),
            encoder,
            hasher: BlockHasher::new(hash),
        })
    }
}

/// A backend's publisher.
pub struct KvPublisher {
    model: Arc<KvModel>,
    topic: String,
    seq: AtomicU64,
    socket: tokio::sync::Mutex<zeromq::PubSocket>,
}

impl KvPublisher {
    /// Connect to the indexer's SUB socket (`tcp://ip:port`) as engine `ip`.
    pub async fn connect(
        model: Arc<KvModel>,
        engine_ip: &str,
        indexer_zmq: &str,
    ) -> anyhow::Result<Self> {
        // From the engine's own address: the indexer believes a topic only from there.
        let mut options = zeromq::SocketOptions::default();
        options.local_address(engine_ip.parse()?);
        let mut socket = zeromq::PubSocket::with_options(options);
        socket.connect(indexer_zmq).await?;
        let topic = format!("kv@{engine_ip}@{}", model.name);
        Ok(Self {
            model,
            topic,
            seq: AtomicU64::new(0),
            socket: tokio::sync::Mutex::new(socket),
        })
    }

    /// Publish the full blocks of the prompt of a request body sent to `path`.
    pub async fn publish_request(&self, path: &str, body: &[u8]) {
        let endpoint = match path {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/completions" => Endpoint::Completions,
            _ => return,
        };
        let Ok(request) = Request::parse(body, Some(endpoint)) else {
            return;
        };
        let extras = RequestExtras {
            cache_salt: request.cache_salt.clone(),
            ..Default::default()
        };
        let Ok(keys) =
            RequestKeys::compute(&self.model.encoder, &self.model.hasher, &request, &extras)
        else {
            return;
        };
        if keys.block_hashes.is_empty() {
            return;
        }
        let block_size = self.model.hasher.config().block_size;
        let stored = BlockStored {
            block_hashes: keys
                .block_hashes
                .iter()
                .map(|h| EngineHash::Int(*h))
                .collect(),
            parent_block_hash: None,
            token_ids: keys.token_ids[..keys.block_hashes.len() * block_size].to_vec(),
            block_size: block_size as u32,
            lora_id: None,
            medium: Some(Medium::Gpu),
            lora_name: None,
            extra_keys: None,
            group_idx: None,
            kv_cache_spec_kind: None,
            session_id: None,
        };
        let batch = EventBatch {
            ts: 0.0,
            events: vec![KvEvent::BlockStored(stored)],
            ..Default::default()
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let [topic, seq, payload] =
            encode_message(&self.topic, seq, &batch, WireGeneration::V03xMaps);
        let mut msg = ZmqMessage::from(topic);
        msg.push_back(seq.into());
        msg.push_back(payload.into());
        let _ = self.socket.lock().await.send(msg).await;
    }
}
