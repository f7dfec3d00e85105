//! The engine core: one task owns the scheduler, as vLLM's engine core owns its batch, so
//! the cache and the queues need no locks and every step sees a consistent state. Each
//! turn it admits what arrived, runs one step of the model, sleeps the step's duration
//! divided by the time scale, then (as vLLM does once a step's outputs are ready) publishes
//! the step's KV events and hands each request its new token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvroute_blockhash::BlockDigest;
use kvroute_kvevents::{
    BlockRemoved, BlockStored, EngineHash, EventBatch, KvEvent, Medium, WireGeneration,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::scheduler::{Scheduler, SeqId, StepOutcome, StoredBlock};
use crate::server::kv_publisher::KvSink;
use crate::server::metrics::EngineMetrics;
use crate::server::model::{output_token, PromptBlocks, ServedModel};

/// How far behind real time the simulated clock may fall before it stops catching up.
const MAX_LAG: Duration = Duration::from_millis(100);

/// What a waiting response hears about its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEvent {
    /// One more output token; the first one carries the prompt tokens found in cache.
    Token { first: Option<usize> },
    /// The last token was sent.
    Finished {
        prompt_tokens: usize,
        cached_tokens: usize,
        output_tokens: usize,
    },
}

enum Command {
    Submit {
        prompt: Arc<PromptBlocks>,
        max_tokens: usize,
        events: mpsc::UnboundedSender<TokenEvent>,
    },
    Reset(oneshot::Sender<bool>),
}

/// How events are written: which generation, int or bytes hashes.
#[derive(Debug, Clone, Copy)]
pub struct EventStyle {
    pub generation: WireGeneration,
    pub bytes_hashes: bool,
}

/// The handle responses use to reach the engine core.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Command>,
}

/// The engine core task has stopped (the process is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the engine has stopped")]
pub struct EngineStopped;

impl EngineHandle {
    /// Queues a request; its tokens arrive on the returned channel.
    pub fn submit(
        &self,
        prompt: Arc<PromptBlocks>,
        max_tokens: usize,
    ) -> Result<mpsc::UnboundedReceiver<TokenEvent>, EngineStopped> {
        let (events, rx) = mpsc::unbounded_channel();
        self.tx
            .send(Command::Submit {
                prompt,
                max_tokens,
                events,
            })
            .map_err(|_| EngineStopped)?;
        Ok(rx)
    }

    /// vLLM's reset_prefix_cache: false while requests run.
    pub async fn reset_prefix_cache(&self) -> Result<bool, EngineStopped> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Reset(tx))
            .map_err(|_| EngineStopped)?;
        rx.await.map_err(|_| EngineStopped)
    }
}

struct Live {
    prompt: Arc<PromptBlocks>,
    events: mpsc::UnboundedSender<TokenEvent>,
    /// Hashes and digests of the request's full blocks: the prompt's, then those that
    /// generated tokens filled.
    hashes: Vec<u64>,
    digests: Vec<BlockDigest>,
}

impl Live {
    fn new(prompt: Arc<PromptBlocks>, events: mpsc::UnboundedSender<TokenEvent>) -> Self {
        Self {
            hashes: prompt.hashes.clone(),
            digests: prompt.digests.clone(),
            prompt,
            events,
        }
    }

    /// Token `i` of the request's sequence: prompt, then the engine's output.
    fn token(&self, i: usize) -> u32 {
        self.prompt
            .token_ids
            .get(i)
            .copied()
            .unwrap_or_else(|| output_token(i - self.prompt.token_ids.len()).1)
    }

    fn block_tokens(&self, blocks: std::ops::Range<usize>, block_size: usize) -> Vec<u32> {
        (blocks.start * block_size..blocks.end * block_size)
            .map(|i| self.token(i))
            .collect()
    }

    /// Hashes the next block, which generated tokens just filled.
    fn hash_decode_block(&mut self, model: &ServedModel, block_index: usize) -> Option<u64> {
        if block_index != self.digests.len() {
            return None;
        }
        let block_size = model.block_size();
        let tokens = self.block_tokens(block_index..block_index + 1, block_size);
        let digest = model.hash_block(
            self.digests.last(),
            &tokens,
            block_index,
            self.prompt.cache_salt.as_deref(),
        );
        self.digests.push(digest);
        self.hashes.push(digest.event_value());
        Some(digest.event_value())
    }
}

struct Core {
    scheduler: Scheduler,
    model: Arc<ServedModel>,
    time_scale: f64,
    sink: KvSink,
    style: EventStyle,
    metrics: Arc<EngineMetrics>,
    live: HashMap<SeqId, Live>,
    next_id: SeqId,
    /// Digests of cached blocks, only for bytes hashes (a removal names the digest).
    digests: HashMap<u64, BlockDigest>,
    counters: (u64, u64),
    /// The cache was reset: `AllBlocksCleared` goes out with the next step's events.
    pending_clear: bool,
}

/// Starts the engine core on the current runtime.
pub fn spawn(
    scheduler: Scheduler,
    model: Arc<ServedModel>,
    time_scale: f64,
    sink: KvSink,
    style: EventStyle,
    metrics: Arc<EngineMetrics>,
) -> EngineHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let core = Core {
        scheduler,
        model,
        time_scale,
        sink,
        style,
        metrics,
        live: HashMap::new(),
        next_id: 1,
        digests: HashMap::new(),
        counters: (0, 0),
        pending_clear: false,
    };
    tokio::spawn(core.run(rx));
    EngineHandle { tx }
}

impl Core {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        // The real instant the simulated clock has reached. Steps are scheduled against it
        // rather than slept one by one, so the timer's millisecond granularity and the
        // loop's own cost do not stretch a run at a high time scale: a step that ends late
        // is followed at once by the next.
        let mut clock: Option<Instant> = None;
        loop {
            if self.scheduler.is_idle() {
                clock = None;
                match rx.recv().await {
                    Some(cmd) => self.command(cmd),
                    None => return,
                }
            }
            while let Ok(cmd) = rx.try_recv() {
                self.command(cmd);
            }
            if self.scheduler.is_idle() {
                continue;
            }
            let (live, model) = (&mut self.live, &self.model);
            let out = self.scheduler.step_with(&mut |id, block_index| {
                live.get_mut(&id)?.hash_decode_block(model, block_index)
            });
            self.update_gauges();
            let pause = if out.is_idle() {
                // Nothing could run (the cache is held by running requests): wait for the
                // world to change rather than spin.
                0.01
            } else {
                out.duration / self.time_scale
            };
            let now = Instant::now();
            // A stall (a loaded machine) is not made up beyond MAX_LAG: what it loses beyond
            // that dilates engine time, and is counted so a benchmark can say so.
            let floor = now.checked_sub(MAX_LAG).unwrap_or(now);
            if let Some(c) = clock {
                if c < floor {
                    self.metrics.add_dilation((floor - c).as_secs_f64());
                }
            }
            let from = clock.map_or(now, |c| c.max(floor));
            let until = from + Duration::from_secs_f64(pause);
            tokio::time::sleep_until(until).await;
            clock = Some(until);
            self.publish(&out);
            self.deliver(&out);
            self.update_gauges();
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit {
                prompt,
                max_tokens,
                events,
            } => {
                let id = self.next_id;
                self.next_id += 1;
                self.scheduler.submit(
                    id,
                    prompt.hashes.clone(),
                    prompt.token_ids.len(),
                    max_tokens,
                );
                self.live.insert(id, Live::new(prompt, events));
                self.update_gauges();
            }
            Command::Reset(reply) => {
                let cleared = self.scheduler.reset_prefix_cache();
                if cleared {
                    self.digests.clear();
                    self.pending_clear = true;
                }
                let _ = reply.send(cleared);
            }
        }
    }

    fn update_gauges(&mut self) {
        self.metrics.set_queues(
            self.scheduler.num_running(),
            self.scheduler.num_waiting(),
            self.scheduler.cache.usage(),
        );
        let (queries, hits) = self.scheduler.cache.counters();
        let (q0, h0) = self.counters;
        self.metrics
            .add_prefix_lookup(queries.saturating_sub(q0), hits.saturating_sub(h0));
        self.counters = (queries, hits);
    }

    fn batch(&self, events: Vec<KvEvent>) -> EventBatch {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        EventBatch {
            ts,
            events,
            data_parallel_rank: Some(0),
            skipped_unknown: 0,
            skipped_invalid: 0,
        }
    }

    fn engine_hash(&self, hash: u64) -> EngineHash {
        match (self.style.bytes_hashes, self.digests.get(&hash)) {
            (true, Some(d)) => EngineHash::Bytes(d.as_bytes()),
            _ => EngineHash::Int(hash),
        }
    }

    /// The step's events in vLLM's order: evictions, then one `BlockStored` per run of
    /// consecutive blocks of one request (with its parent and tokens).
    fn publish(&mut self, out: &StepOutcome) {
        let mut events = Vec::new();
        // vLLM reports a reset at the next step, first in that step's batch.
        if std::mem::take(&mut self.pending_clear) {
            events.push(KvEvent::AllBlocksCleared);
        }
        // One BlockRemoved per evicted block, as vLLM's block pool emits them.
        for h in &out.removed {
            events.push(KvEvent::BlockRemoved(BlockRemoved {
                block_hashes: vec![self.engine_hash(*h)],
                medium: self.maps().then_some(Medium::Gpu),
                group_idx: self.maps().then_some(0),
            }));
            self.digests.remove(h);
        }
        if self.style.bytes_hashes {
            for b in &out.stored_blocks {
                if let Some(d) = self
                    .live
                    .get(&b.id)
                    .and_then(|l| l.digests.get(b.block_index))
                {
                    self.digests.insert(b.hash, *d);
                }
            }
        }
        for run in runs(&out.stored_blocks) {
            if let Some(stored) = self.stored_event(run) {
                events.push(KvEvent::BlockStored(stored));
            }
        }
        if !events.is_empty() {
            self.sink.publish(self.batch(events));
        }
    }

    fn maps(&self) -> bool {
        self.style.generation == WireGeneration::V03xMaps
    }

    fn stored_event(&self, run: &[StoredBlock]) -> Option<BlockStored> {
        let first = run.first()?;
        let live = self.live.get(&first.id)?;
        let prompt = &live.prompt;
        let block_size = self.scheduler.block_size();
        let start = first.block_index;
        let end = start + run.len();
        let token_ids = live.block_tokens(start..end, block_size);
        let parent_block_hash = start
            .checked_sub(1)
            .and_then(|p| live.hashes.get(p))
            .map(|h| self.engine_hash(*h));
        let maps = self.maps();
        // 0.3x publishes one extra-keys entry per block: the salt on the request's first.
        let extra_keys = maps.then(|| {
            (start..end)
                .map(|i| match (&prompt.cache_salt, i) {
                    (Some(salt), 0) => Some(rmpv::Value::Array(vec![salt.as_str().into()])),
                    _ => None,
                })
                .collect()
        });
        Some(BlockStored {
            block_hashes: run.iter().map(|b| self.engine_hash(b.hash)).collect(),
            parent_block_hash,
            token_ids,
            block_size: u32::try_from(block_size).unwrap_or(u32::MAX),
            lora_id: None,
            medium: maps.then_some(Medium::Gpu),
            lora_name: None,
            extra_keys,
            group_idx: maps.then_some(0),
            kv_cache_spec_kind: maps.then(|| "full_attention".to_string()),
            session_id: prompt.session_id.clone().filter(|_| maps),
        })
    }

    fn deliver(&mut self, out: &StepOutcome) {
        for id in &out.decoded {
            let first = out
                .first_tokens
                .iter()
                .find(|f| f.id == *id)
                .map(|f| f.cached_tokens);
            if let Some(live) = self.live.get(id) {
                let _ = live.events.send(TokenEvent::Token { first });
            }
        }
        for f in &out.finished {
            if let Some(live) = self.live.remove(&f.id) {
                let _ = live.events.send(TokenEvent::Finished {
                    prompt_tokens: f.prompt_tokens,
                    cached_tokens: f.cached_tokens,
                    output_tokens: f.output_tokens,
                });
            }
            self.metrics
                .add_finished(f.prompt_tokens as u64, f.output_tokens as u64);
        }
    }
}

/// Splits stored blocks into runs of one request's consecutive blocks.
fn runs(blocks: &[StoredBlock]) -> impl Iterator<Item = &[StoredBlock]> {
    blocks.chunk_by(|a, b| a.id == b.id && b.block_index == a.block_index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(id: SeqId, block_index: usize) -> StoredBlock {
        StoredBlock {
            id,
            block_index,
            hash: id * 100 + block_index as u64,
        }
    }

    #[test]
    fn stored_blocks_split_into_runs_per_request_and_gap() {
        let blocks = [
            block(1, 0),
            block(1, 1),
            block(2, 5),
            block(2, 7),
            block(2, 8),
        ];
        let lens: Vec<usize> = runs(&blocks).map(<[_]>::len).collect();
        assert_eq!(lens, vec![2, 1, 2]);
    }
}
