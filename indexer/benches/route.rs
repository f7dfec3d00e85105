//! The indexer at fleet sizes 8, 64, 256 and 1,024 engines, one table (docs/scaling.md):
//! each engine holds the seed pod's 4,802 blocks with the seed's sharing pattern
//! (`fleet/workload.rs`), and for each size:
//! - memory: heap bytes per (block, engine) entry (counting allocator) and the process RSS;
//! - ingest into the index alone (32-block stores, one core), and through the whole
//!   pipeline (vLLM 0.3x frames decoded, keyed natively, applied) into the full index;
//! - lookup of a 112-key request: hit p50/p99, miss p50 (every answer checked);
//! - restart clear of one engine (median and max of 16);
//! - `/v1/route` over loopback at 1,000 req/s against the real axum app, p50/p99 over 3 s
//!   after a 1 s warm-up on other prefixes (its p99 reported apart), and that daemon's
//!   heap once its index is filled (what `kvroute serve` holds).
//!
//! Run: `cargo bench -p kvroute-indexer --bench route` (all sizes, ~1 min) or with
//! `KVROUTE_BENCH_ENGINES=8,64` for some. Ingest of one engine's frames by wire
//! generation and key mode has its own criterion bench (`--bench ingest`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvroute_blockhash::{BlockHasher, ExtraKeysStyle, HashConfig, HashScheme};
use kvroute_indexer::index::{BlockIndex, IndexOp, Medium, PodIndex};
use kvroute_indexer::ingest::{Ingest, IngestConfig, Source};
use kvroute_indexer::load::parse_vllm_metrics;
use kvroute_indexer::metrics::Metrics;
use kvroute_indexer::pods::PodRegistry;
use kvroute_indexer::serve::{self, ServeConfig};
use kvroute_indexer::types::PodId;
use kvroute_kvevents::{
    encode_message, BlockStored, EngineHash, EventBatch, KvEvent, WireGeneration,
};

#[path = "fleet/workload.rs"]
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

const BLOCK_SIZE: usize = 64;
/// Lookups timed per size (the fleet's checked queries, cycled).
const LOOKUPS: usize = 20_000;
const QUERIES: usize = 2_000;

fn host(i: usize) -> String {
    format!("10.1.{}.{}", i / 256, i % 256)
}

fn pod(i: usize) -> PodId {
    PodId {
        endpoint: format!("{}:8000", host(i)).into(),
        dp_rank: 0,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Every engine's events, round-robin across engines (as a fleet publishes them).
fn interleaved(fleet: &workload::Fleet) -> Vec<(usize, Vec<u64>)> {
    let longest = fleet.events.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| {
            fleet
                .events
                .iter()
                .enumerate()
                .filter_map(move |(e, ev)| ev.get(i).map(|(_, k)| (e, k.clone())))
        })
        .collect()
}

struct Row {
    engines: usize,
    entries: usize,
    keys: usize,
    bytes_per_entry: f64,
    rss_mib: f64,
    ingest_index: f64,
    ingest_pipeline: f64,
    hit: (f64, f64),
    miss_p50: f64,
    clear: (f64, f64),
    http: Http,
    serve_heap_mib: f64,
}

/// `/v1/route` latencies: the measured seconds, and the warm-up before them.
struct Http {
    p50_ms: f64,
    p99_ms: f64,
    answered: usize,
    warm_up_p99_ms: f64,
    /// Share of the machine's CPU time the hypervisor gave to others during the measured
    /// seconds (/proc/stat steal): a virtual machine's tail latency is mostly that.
    steal: Option<f64>,
    /// One decision in process (`Router::route`), p50 / p99 in us.
    decision_us: (f64, f64),
}

/// Decisions in flight while the in-process decisions are timed: each is completed this
/// many decisions later (1,000 decisions a second of ~1 s requests), so the ledger holds
/// what a busy fleet's does.
const DECISIONS_IN_FLIGHT: usize = 1_000;

fn main() {
    let sizes: Vec<usize> = std::env::var("KVROUTE_BENCH_ENGINES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![8, 64, 256, 1024]);
    let mut rows = Vec::new();
    for engines in sizes {
        rows.push(measure(engines));
    }
    println!(
        "| engines | (block, engine) entries | keys | heap per entry | process RSS | ingest, index alone | ingest, whole pipeline | lookup 112 keys, hit p50 / p99 | miss p50 | restart clear of one engine, median / max | /v1/route at 1,000 req/s for 3 s after 1 s of warm-up, p50 / p99 (answered 200 of 3,000); warm-up p99; CPU stolen meanwhile | one decision in process, p50 / p99 ({DECISIONS_IN_FLIGHT} in flight) | `kvroute serve` heap, index filled |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} B | {:.0} MiB | {:.2} M/s | {:.2} M/s | {:.2} / {:.2} us | {:.2} us | {:.0} / {:.0} us | {:.2} / {:.2} ms ({}); {:.1} ms; {} | {:.0} / {:.0} us | {:.0} MiB |",
            r.engines,
            r.entries,
            r.keys,
            r.bytes_per_entry,
            r.rss_mib,
            r.ingest_index,
            r.ingest_pipeline,
            r.hit.0,
            r.hit.1,
            r.miss_p50,
            r.clear.0,
            r.clear.1,
            r.http.p50_ms,
            r.http.p99_ms,
            r.http.answered,
            r.http.warm_up_p99_ms,
            r.http
                .steal
                .map_or("steal unknown".into(), |s| format!("{:.1}% steal", s * 100.0)),
            r.http.decision_us.0,
            r.http.decision_us.1,
            r.serve_heap_mib,
        );
    }
    scrape_parse();
}

/// What a scrape costs the daemon beside the HTTP exchange: parsing one engine's page (a
/// real vLLM 0.32 `/metrics`, `testdata/vllm-0.32/metrics.txt`), times the fleet, a second.
fn scrape_parse() {
    let page = kvroute_testdata::vllm_metrics_page();
    let n = 2_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(parse_vllm_metrics(std::hint::black_box(&page)));
    }
    let per = us(t.elapsed()) / n as f64;
    println!(
        "\nScrape: a real vLLM 0.32 /metrics page ({} B) parses in {per:.1} us; every engine scraped each second: {:.1} ms of CPU a second at 8 engines, {:.0} ms at 1,024 (parsing alone).",
        page.len(),
        per * 8.0 / 1e3,
        per * 1024.0 / 1e3,
    );
}

fn measure(engines: usize) -> Row {
    let fleet = workload::fleet(engines, QUERIES);
    let ops = interleaved(&fleet);
    let entries = fleet.entries();
    let pods: Vec<PodId> = (0..engines).map(pod).collect();

    // --- ingest into the index alone, and its memory ------------------------------------
    // (The lookups' timing buffers first: the heap counted is the index's.)
    let mut hit = Vec::with_capacity(LOOKUPS);
    let mut miss = Vec::with_capacity(fleet.misses.len());
    let before = LIVE.load(Ordering::Relaxed);
    let index = BlockIndex::new(usize::MAX);
    let t = Instant::now();
    for (e, keys) in ops.iter().cloned() {
        index.apply(
            &pods[e],
            IndexOp::Store {
                keys,
                medium: Medium::Gpu,
            },
        );
    }
    let ingest_index = entries as f64 / t.elapsed().as_secs_f64() / 1e6;
    let after_ingest = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(index.pod_entries(), entries);

    // --- lookups, every answer checked ----------------------------------------------------
    for (keys, want) in &fleet.hits {
        let mut got: Vec<(usize, usize)> = index
            .match_prefix(keys)
            .into_iter()
            .map(|m| {
                (
                    pods.iter().position(|p| *p == m.pod).expect("known"),
                    m.gpu_blocks,
                )
            })
            .collect();
        got.sort();
        assert_eq!(&got, want);
    }
    for i in 0..LOOKUPS {
        let keys = &fleet.hits[(i * 7919) % fleet.hits.len()].0;
        let t = Instant::now();
        let m = index.match_prefix(keys);
        hit.push(t.elapsed());
        std::hint::black_box(m);
    }
    hit.sort();
    for keys in &fleet.misses {
        let t = Instant::now();
        let m = index.match_prefix(keys);
        miss.push(t.elapsed());
        assert!(m.is_empty());
    }
    miss.sort();
    // The index's heap after the lookups too (the runs they built): the larger.
    let bytes = after_ingest.max(LIVE.load(Ordering::Relaxed) - before) as f64;
    drop(ops); // (after the count: it was allocated before the baseline)
    let rss = rss_mib();

    // --- the whole pipeline into the full index ----------------------------------------
    let index = Arc::new(index);
    let ingest_pipeline = pipeline(engines, index.clone());

    // --- restart clear of one engine -------------------------------------------------------
    let mut clears: Vec<Duration> = (0..16.min(engines))
        .map(|e| {
            let t = Instant::now();
            index.apply(&pods[e * engines / 16.min(engines)], IndexOp::ClearPod);
            t.elapsed()
        })
        .collect();
    clears.sort();
    let keys = index.entries();
    drop(index);

    let (http, serve_heap_mib) = http_bench(&fleet);
    Row {
        engines,
        entries,
        keys,
        bytes_per_entry: bytes / entries as f64,
        rss_mib: rss,
        ingest_index,
        ingest_pipeline,
        hit: (us(percentile(&hit, 0.5)), us(percentile(&hit, 0.99))),
        miss_p50: us(percentile(&miss, 0.5)),
        clear: (us(clears[clears.len() / 2]), us(clears[clears.len() - 1])),
        http,
        serve_heap_mib,
    }
}

/// Block events/s through `Ingest::handle` (decode, native keys, index) from every engine:
/// each publishes 32-block `BlockStored`s in vLLM 0.3x's shape with real hashes.
fn pipeline(engines: usize, index: Arc<BlockIndex>) -> f64 {
    let config = HashConfig {
        scheme: HashScheme::Sha256Cbor,
        block_size: BLOCK_SIZE,
        seed: Some("42".into()),
    };
    let hasher = BlockHasher::new(config.clone());
    // At least 64k block events in all, at least 2 events an engine.
    let per_engine = (2048 / engines).max(2);
    let mut frames = Vec::new();
    for e in 0..engines {
        for r in 0..per_engine {
            let tokens: Vec<u32> = (0..(BLOCK_SIZE * workload::EVENT_BLOCKS) as u32)
                .map(|i| (i * 31 + r as u32 * 7919 + e as u32 * 104_729) % 150_000)
                .collect();
            let values = hasher.event_values(&tokens);
            let event = KvEvent::BlockStored(BlockStored {
                block_hashes: values.iter().map(|v| EngineHash::Int(*v)).collect(),
                parent_block_hash: None,
                token_ids: tokens,
                block_size: BLOCK_SIZE as u32,
                lora_id: None,
                medium: Some(Medium::Gpu),
                lora_name: None,
                extra_keys: None,
                group_idx: Some(0),
                kv_cache_spec_kind: Some("full_attention".into()),
                session_id: None,
            });
            let batch = EventBatch {
                ts: 0.0,
                events: vec![event],
                data_parallel_rank: Some(0),
                skipped_unknown: 0,
                skipped_invalid: 0,
            };
            let topic = format!("kv@{}@m", host(e));
            frames.push((
                e,
                encode_message(&topic, r as u64, &batch, WireGeneration::V03xMaps),
            ));
        }
    }
    // Publishing order: round-robin over engines.
    frames.sort_by_key(|(e, f)| (f[1].clone(), *e));
    let ingest = Ingest::new(
        IngestConfig::with_engines((0..engines).map(host)),
        index,
        Arc::new(PodRegistry::new(None)),
        Arc::new(Metrics::new()),
        config,
        ExtraKeysStyle::Tagged,
    )
    .expect("valid ingestion config");
    let endpoints: Vec<String> = (0..engines).map(|e| format!("{}:8000", host(e))).collect();
    let t = Instant::now();
    for (e, f) in &frames {
        let refs: Vec<&[u8]> = f.iter().map(Vec::as_slice).collect();
        ingest.handle(Source::Dialed(&endpoints[*e]), &refs, false);
    }
    (frames.len() * workload::EVENT_BLOCKS) as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// Paced client at 1,000 req/s (1 s of warm-up, then 3 s measured) against the real axum
/// app holding the fleet's index and engines; the latencies, and the daemon's heap in MiB
/// once its index is filled: the index, the tokenizer, the engines' state.
fn http_bench(fleet: &workload::Fleet) -> (Http, f64) {
    let before = LIVE.load(Ordering::Relaxed);
    // The server gets its own runtime, as in `kvroute serve`; the client runs on another
    // thread so that its timers and the server's tasks do not queue behind each other.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (addr, decision_us) = server.block_on(async {
        let config = ServeConfig {
            models: vec![format!(
                "m={}",
                kvroute_testdata::tokenizer_dir("qwen3").display()
            )],
            // The fleet's engines are addresses only: nothing answers a health check.
            // Nor their /metrics: scraping 1,024 addresses where nothing listens (a
            // connection attempt each a second) is not what real engines cost; the scrape's
            // own cost is measured apart (docs/scaling.md). Nor their event streams: the
            // daemon binds on loopback rather than dialing made-up addresses (where a
            // sandbox's network may even accept the TCP connection, every dial then failing
            // the ZeroMQ handshake: 2,000 handshakes a second at 1,024 engines on the
            // server's threads); the index is filled in process below.
            ingest: IngestConfig {
                zmq_bind: Some("tcp://127.0.0.1:0".into()),
                health_interval_ms: 0,
                scrape_interval_ms: 3_600_000,
                ..IngestConfig::with_engines((0..fleet.engines).map(host))
            },
            max_entries: 2 * fleet.entries(),
            ..ServeConfig::default()
        };
        let daemon = serve::build(&config).expect("build");
        let index = daemon.state.router.index.clone();
        for (e, keys) in interleaved(fleet) {
            index.apply(
                &pod(e),
                IndexOp::Store {
                    keys,
                    medium: Medium::Gpu,
                },
            );
        }
        // Before the HTTP requests, on the same queries: those then meet prefixes already
        // looked up (their runs built), the common case of a shared prefix. Every ticket is
        // completed, so the HTTP requests meet an empty ledger.
        let decision_us = decisions_in_process(&daemon.state.router, fleet);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // The daemon's own entry, as `kvroute serve` runs it; it lives as long as the bench.
        tokio::spawn(daemon.run(listener, std::future::pending()));
        (addr, decision_us)
    });
    let serve_heap_mib = (LIVE.load(Ordering::Relaxed) - before) as f64 / (1 << 20) as f64;
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    client_runtime.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/v1/route");
        let body = |(keys, _): &(Vec<u64>, workload::Answer)| {
            serde_json::json!({"model": "m", "block_hashes": keys}).to_string()
        };
        // A second at the same pace on other prefixes first: the client's connections, the
        // server's threads and the blocking pool are made then (the first ~150 requests of
        // a cold start took 5-40 ms each), not in the measured seconds. Reported apart.
        let warm_bodies: Vec<String> = fleet.hits.iter().skip(1000).take(1000).map(body).collect();
        let mut warm = paced(&client, &url, &warm_bodies, 1000).await;
        let bodies: Vec<String> = fleet.hits.iter().take(1000).map(body).collect();
        let before = cpu_times();
        let mut lat = paced(&client, &url, &bodies, 3000).await;
        let steal = before.zip(cpu_times()).and_then(|((t0, s0), (t1, s1))| {
            (t1 > t0).then(|| (s1 - s0) as f64 / (t1 - t0) as f64)
        });
        // An overloaded daemon is a result, not a crash: the table says how many answered.
        let answered = lat.len();
        lat.sort();
        let ms = |lat: &[Duration], p: f64| {
            if lat.is_empty() {
                f64::NAN
            } else {
                percentile(lat, p).as_secs_f64() * 1e3
            }
        };
        warm.sort();
        (
            Http {
                p50_ms: ms(&lat, 0.5),
                p99_ms: ms(&lat, 0.99),
                answered,
                warm_up_p99_ms: ms(&warm, 0.99),
                steal,
                decision_us,
            },
            serve_heap_mib,
        )
    })
}

/// `Router::route` alone on the fleet's queries (20,000, after 2,000 untimed), each
/// decision completed [`DECISIONS_IN_FLIGHT`] decisions later; p50 / p99 in us. All of it is
/// per pod except the index lookup (~1 us) and the ledger's bounded confirmation.
fn decisions_in_process(
    router: &kvroute_indexer::router::Router,
    fleet: &workload::Fleet,
) -> (f64, f64) {
    let mut in_flight = std::collections::VecDeque::with_capacity(DECISIONS_IN_FLIGHT + 1);
    let mut took = Vec::with_capacity(20_000);
    for i in 0..22_000 {
        let keys = &fleet.hits[(i * 7919) % fleet.hits.len()].0;
        let t = Instant::now();
        let answer = router.route("m", keys).expect("a decision");
        if i >= 2_000 {
            took.push(t.elapsed());
        }
        in_flight.push_back(answer.ticket);
        if in_flight.len() > DECISIONS_IN_FLIGHT {
            let done = in_flight.pop_front().expect("a ticket");
            router.complete(done, None, false);
        }
    }
    for ticket in in_flight {
        router.complete(ticket, None, false);
    }
    took.sort();
    (us(percentile(&took, 0.5)), us(percentile(&took, 0.99)))
}

/// The machine's CPU time so far and the part of it stolen by the hypervisor, in ticks
/// (the first line of /proc/stat); None where there is no such file.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    Some((ticks.iter().sum(), *ticks.get(7)?))
}

/// `n` POSTs of `bodies` (cycled) at 1,000 a second; the latencies of those answered 200.
async fn paced(client: &reqwest::Client, url: &str, bodies: &[String], n: usize) -> Vec<Duration> {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        tick.tick().await;
        let (client, url, body) = (
            client.clone(),
            url.to_string(),
            bodies[i % bodies.len()].clone(),
        );
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client.post(url).body(body).send().await;
            let ok = matches!(r, Ok(ref r) if r.status().as_u16() == 200);
            if let Ok(r) = r {
                let _ = r.bytes().await;
            }
            (t.elapsed(), ok)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for h in handles {
        if let Ok((d, true)) = h.await {
            lat.push(d);
        }
    }
    lat
}
