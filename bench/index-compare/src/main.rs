//! kvroute's `BlockIndex` against NVIDIA Dynamo's `ConcurrentRadixTreeCompressed` (the
//! index behind Dynamo's KV router, crate `dynamo-kv-router` 1.6.1): the seed's fleet
//! (`indexer/benches/fleet/workload.rs`) at each size, the same `BlockStored` events and
//! the same 112-key queries, every hit's answer checked against the workload's on both.
//! Each (index, size, run) runs in its own process (this binary re-invoked with `one`);
//! the table shows medians.
//!
//! `cargo run --release -- [--engines 8,64] [--runs 3]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_kv_router::indexer::concurrent_radix_tree_compressed::ConcurrentRadixTreeCompressed;
use dynamo_kv_router::indexer::{SyncIndexer, WorkerTask};
use dynamo_kv_router::protocols::{
    ExternalSequenceBlockHash, KvCacheEvent, KvCacheEventData, KvCacheStoreData,
    KvCacheStoredBlockData, LocalBlockHash, RouterEvent,
};
use kvroute_indexer::index::{BlockIndex, IndexOp, Medium, PodIndex};
use kvroute_indexer::types::PodId;

#[path = "../../../indexer/benches/fleet/workload.rs"]
mod workload;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const QUERIES: usize = 2_000;
const LOOKUPS: usize = 20_000;
const CLEARS: usize = 8;

/// One run's numbers.
#[derive(Debug, Clone, Copy, Default)]
struct Row {
    ingest_m_per_s: f64,
    hit_p50_us: f64,
    hit_p99_us: f64,
    miss_p50_us: f64,
    bytes_per_entry: f64,
    clear_us: f64,
    first_p50_us: f64,
}

const FIELDS: usize = 7;

impl Row {
    fn fields(&self) -> [f64; FIELDS] {
        [
            self.ingest_m_per_s,
            self.hit_p50_us,
            self.hit_p99_us,
            self.miss_p50_us,
            self.bytes_per_entry,
            self.clear_us,
            self.first_p50_us,
        ]
    }
    fn from_fields(f: &[f64]) -> Self {
        Self {
            ingest_m_per_s: f[0],
            hit_p50_us: f[1],
            hit_p99_us: f[2],
            miss_p50_us: f[3],
            bytes_per_entry: f[4],
            clear_us: f[5],
            first_p50_us: f[6],
        }
    }
}

/// The operations every index under test offers.
trait Index {
    /// Applies every event (engine, parent, keys), returning when all are in.
    fn ingest(&mut self, events: Vec<(usize, workload::Event)>);
    /// Blocks each engine holds from the first key: (engine, run), sorted.
    fn lookup(&self, keys: &Query) -> Vec<(usize, usize)>;
    fn clear(&mut self, engine: usize);
}

/// A query in both indexes' key types, built before timing.
struct Query {
    keys: Vec<u64>,
    local: Vec<LocalBlockHash>,
}

struct Kvroute {
    index: BlockIndex,
    pods: Vec<PodId>,
}

impl Index for Kvroute {
    fn ingest(&mut self, events: Vec<(usize, workload::Event)>) {
        for (e, (_, keys)) in events {
            self.index.apply(
                &self.pods[e],
                IndexOp::Store {
                    keys,
                    medium: Medium::Gpu,
                },
            );
        }
    }
    fn lookup(&self, q: &Query) -> Vec<(usize, usize)> {
        let mut got: Vec<(usize, usize)> = self
            .index
            .match_prefix(&q.keys)
            .into_iter()
            .map(|m| (engine_of(&m.pod), m.gpu_blocks))
            .collect();
        got.sort();
        got
    }
    fn clear(&mut self, engine: usize) {
        self.index.apply(&self.pods[engine], IndexOp::ClearPod);
    }
}

fn engine_of(pod: &PodId) -> usize {
    pod.endpoint
        .trim_start_matches("e")
        .parse()
        .expect("engine number")
}

/// Dynamo's tree with its event worker on its own thread, fed by a channel as Dynamo's
/// `ThreadPoolIndexer` does; lookups run on the caller's thread, as there.
struct Dynamo {
    tree: Arc<ConcurrentRadixTreeCompressed>,
    tx: Option<flume::Sender<WorkerTask>>,
    worker: Option<std::thread::JoinHandle<()>>,
    next_id: u64,
}

impl Dynamo {
    fn new() -> Self {
        let tree = Arc::new(ConcurrentRadixTreeCompressed::new());
        let (tx, rx) = flume::bounded(1024);
        let t = tree.clone();
        let worker = std::thread::spawn(move || {
            let _ = t.worker(rx, None);
        });
        Self {
            tree,
            tx: Some(tx),
            worker: Some(worker),
            next_id: 0,
        }
    }

    fn send(&mut self, engine: usize, data: KvCacheEventData, ack: bool) {
        self.next_id += 1;
        let event = RouterEvent::new(
            engine as u64,
            KvCacheEvent {
                event_id: self.next_id,
                data,
                dp_rank: 0,
            },
        );
        let tx = self.tx.as_ref().expect("open");
        if ack {
            let (resp, done) = tokio::sync::oneshot::channel();
            tx.send(WorkerTask::EventWithAck { event, resp })
                .expect("worker alive");
            assert!(done.blocking_recv().expect("ack"), "event refused");
        } else {
            tx.send(WorkerTask::Event(event)).expect("worker alive");
        }
    }
}

impl Drop for Dynamo {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Index for Dynamo {
    fn ingest(&mut self, events: Vec<(usize, workload::Event)>) {
        let last = events.len().saturating_sub(1);
        for (i, (e, (parent, keys))) in events.into_iter().enumerate() {
            let data = KvCacheEventData::Stored(KvCacheStoreData {
                parent_hash: parent.map(ExternalSequenceBlockHash),
                start_position: None,
                blocks: keys
                    .into_iter()
                    .map(|k| KvCacheStoredBlockData {
                        block_hash: ExternalSequenceBlockHash(k),
                        tokens_hash: LocalBlockHash(k),
                        mm_extra_info: None,
                    })
                    .collect(),
            });
            self.send(e, data, i == last);
        }
    }
    fn lookup(&self, q: &Query) -> Vec<(usize, usize)> {
        let scores = self.tree.find_matches(&q.local, false);
        let mut got: Vec<(usize, usize)> = scores
            .scores
            .into_iter()
            .map(|(w, n)| (w.worker_id as usize, n as usize))
            .collect();
        got.sort();
        got
    }
    fn clear(&mut self, engine: usize) {
        self.send(engine, KvCacheEventData::Cleared, true);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6
}

/// One index at one size, in this process.
fn run_one(which: &str, engines: usize) -> Row {
    let fleet = workload::fleet(engines, QUERIES);
    let entries = fleet.entries();
    let query = |keys: &[u64]| Query {
        keys: keys.to_vec(),
        local: keys.iter().map(|&k| LocalBlockHash(k)).collect(),
    };
    let hits: Vec<(Query, Vec<(usize, usize)>)> = fleet
        .hits
        .iter()
        .map(|(k, want)| (query(k), want.clone()))
        .collect();
    let misses: Vec<Query> = fleet.misses.iter().map(|k| query(k)).collect();
    // The timings' buffers before the baseline: what is counted is the index alone.
    let mut first = Vec::with_capacity(hits.len());
    let mut hit = Vec::with_capacity(LOOKUPS);
    let mut miss = Vec::with_capacity(misses.len());
    let base = LIVE.load(Ordering::Relaxed);
    let mut index: Box<dyn Index> = match which {
        "kvroute" => Box::new(Kvroute {
            index: BlockIndex::new(usize::MAX),
            pods: (0..engines)
                .map(|e| PodId {
                    endpoint: format!("e{e}").into(),
                    dp_rank: 0,
                })
                .collect(),
        }),
        "dynamo" => Box::new(Dynamo::new()),
        other => panic!("unknown index {other:?}"),
    };
    // Events round-robin across engines, as a fleet publishes them.
    let longest = fleet.events.iter().map(Vec::len).max().unwrap_or(0);
    let mut events = Vec::with_capacity(fleet.events.iter().map(Vec::len).sum());
    for i in 0..longest {
        for (e, ev) in fleet.events.iter().enumerate() {
            if let Some(x) = ev.get(i) {
                events.push((e, x.clone()));
            }
        }
    }
    let t = Instant::now();
    index.ingest(events);
    let ingest = entries as f64 / t.elapsed().as_secs_f64() / 1e6;
    // The events are consumed: what is left is the index (and, for Dynamo, its worker's
    // hash -> node map, part of its footprint).
    let after_ingest = LIVE.load(Ordering::Relaxed) - base;

    // The first lookup of each query (kvroute builds its runs there), every answer checked.
    for (q, want) in &hits {
        let t = Instant::now();
        let got = index.lookup(q);
        first.push(t.elapsed());
        assert_eq!(&got, want, "{which} answers differently");
    }
    first.sort();
    for i in 0..LOOKUPS {
        let q = &hits[(i * 7919) % hits.len()].0;
        let t = Instant::now();
        let got = index.lookup(q);
        hit.push(t.elapsed());
        std::hint::black_box(got);
    }
    hit.sort();
    for q in &misses {
        let t = Instant::now();
        let got = index.lookup(q);
        miss.push(t.elapsed());
        assert!(got.is_empty());
    }
    miss.sort();
    // The footprint after the lookups too (kvroute's runs, built by lookups): the larger.
    let bytes = after_ingest.max(LIVE.load(Ordering::Relaxed) - base) as f64;
    let mut clears: Vec<Duration> = (0..CLEARS.min(engines))
        .map(|i| {
            let t = Instant::now();
            index.clear(i * engines / CLEARS.min(engines));
            t.elapsed()
        })
        .collect();
    clears.sort();
    Row {
        ingest_m_per_s: ingest,
        hit_p50_us: percentile(&hit, 0.5),
        hit_p99_us: percentile(&hit, 0.99),
        miss_p50_us: percentile(&miss, 0.5),
        bytes_per_entry: bytes / entries as f64,
        clear_us: percentile(&clears, 0.5),
        first_p50_us: percentile(&first, 0.5),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("one") {
        let row = run_one(&args[2], args[3].parse().expect("engines"));
        let f: Vec<String> = row.fields().iter().map(|x| x.to_string()).collect();
        println!("{}", f.join("\t"));
        return;
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let sizes: Vec<usize> = flag("--engines")
        .unwrap_or_else(|| "8,64".into())
        .split(',')
        .map(|s| s.trim().parse().expect("--engines N,N"))
        .collect();
    let runs: usize = flag("--runs").map_or(3, |r| r.parse().expect("--runs N"));
    let exe = std::env::current_exe().expect("own path");
    println!(
        "| engines | index | ingest (M block events/s) | lookup 112 keys, hit p50 / p99 (us) | first lookup of a query, p50 (us) | miss p50 (us) | bytes per (block, engine) | clear one engine (us) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &engines in &sizes {
        for which in ["kvroute", "dynamo"] {
            let mut samples: Vec<[f64; FIELDS]> = Vec::new();
            for _ in 0..runs {
                let out = std::process::Command::new(&exe)
                    .args(["one", which, &engines.to_string()])
                    .output()
                    .expect("run");
                assert!(
                    out.status.success(),
                    "{which} at {engines}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let line = String::from_utf8_lossy(&out.stdout);
                let f: Vec<f64> = line
                    .trim()
                    .split('\t')
                    .map(|x| x.parse().expect("number"))
                    .collect();
                samples.push(f.try_into().expect("fields"));
            }
            let med: Vec<f64> = (0..FIELDS)
                .map(|i| median(samples.iter().map(|s| s[i]).collect()))
                .collect();
            let r = Row::from_fields(&med);
            println!(
                "| {engines} | {which} | {:.2} | {:.2} / {:.2} | {:.2} | {:.2} | {:.1} | {:.0} |",
                r.ingest_m_per_s,
                r.hit_p50_us,
                r.hit_p99_us,
                r.first_p50_us,
                r.miss_p50_us,
                r.bytes_per_entry,
                r.clear_us
            );
        }
    }
}
