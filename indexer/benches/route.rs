//! The indexer's numbers, printed as a table (docs/indexer.md records them):
//! - route lookup: 112 keys over 1M keys held by 8 pods, p50/p99 in process;
//! - memory: heap bytes per (block, pod) entry at 1M keys (counting allocator);
//! - HTTP: `/v1/route` over loopback at 1,000 requests per second, p50/p99.
//!
//! Ingest throughput has its own criterion bench (`--bench ingest`).
//!
//! Run: `cargo bench -p kvroute-indexer --bench route`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use kvroute_indexer::index::{BlockIndex, IndexOp, Medium, PodIndex};
use kvroute_indexer::ingest::IngestConfig;
use kvroute_indexer::serve::{self, ServeConfig};
use kvroute_indexer::types::PodId;

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

fn pod(i: usize) -> PodId {
    PodId {
        endpoint: format!("10.0.0.{i}:8000").into(),
        dp_rank: 0,
    }
}

/// A cheap deterministic key stream (keys are hash values: uniform).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // --- index: 1M keys, 8 pods, in chains of 112 (one request prefix each) -------------
    const KEYS: usize = 1_000_000;
    const PODS: usize = 8;
    let before = LIVE.load(Ordering::Relaxed);
    let index = BlockIndex::new(KEYS * 2);
    let mut state = 1u64;
    let mut chains: Vec<Vec<u64>> = Vec::new();
    let mut pod_entries = 0usize;
    for c in 0..KEYS / 112 {
        let chain: Vec<u64> = (0..112).map(|_| splitmix(&mut state)).collect();
        // Most prefixes live on one pod, every fourth on two (replicated hot prefix).
        let holders = if c % 4 == 0 { 2 } else { 1 };
        for h in 0..holders {
            index.apply(
                &pod((c + h) % PODS),
                IndexOp::Store {
                    keys: chain.clone(),
                    medium: Medium::Gpu,
                },
            );
            pod_entries += chain.len();
        }
        chains.push(chain);
    }
    let bytes =
        (LIVE.load(Ordering::Relaxed) - before) as f64 - (chains.len() * (112 * 8 + 24)) as f64;
    let entries = index.entries();

    let mut lat = Vec::with_capacity(20_000);
    for i in 0..20_000 {
        let chain = &chains[(i * 7919) % chains.len()];
        let t = Instant::now();
        let m = index.match_prefix(chain);
        lat.push(t.elapsed());
        assert!(m.iter().any(|m| m.gpu_blocks == 112));
    }
    lat.sort();

    // --- HTTP over loopback ------------------------------------------------------------------
    let http = http_bench(&chains);

    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| route lookup, 112 keys over {entries} keys x {PODS} pods, p50 | {:.1} us | |",
        percentile(&lat, 0.5).as_secs_f64() * 1e6
    );
    println!(
        "| route lookup p99 | {:.1} us | <= 20 us |",
        percentile(&lat, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "| heap per (block, pod) entry ({pod_entries} entries, {entries} keys) | {:.1} B | <= 64 B |",
        bytes / pod_entries as f64
    );
    println!(
        "| /v1/route over loopback at 1,000 req/s, p50 | {:.3} ms | |",
        http.0
    );
    println!(
        "| /v1/route over loopback at 1,000 req/s, p99 | {:.3} ms | <= 1 ms |",
        http.1
    );
}

/// Paced client at 1,000 req/s for 3 s against the real axum app; (p50, p99) in ms.
fn http_bench(chains: &[Vec<u64>]) -> (f64, f64) {
    // The server gets its own runtime, as in `kvroute serve`; the client runs on another
    // thread so that its timers and the server's tasks do not queue behind each other.
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = server.block_on(async {
        let config = ServeConfig {
            models: vec![format!(
                "m={}/../testdata/tokenizers/qwen3",
                env!("CARGO_MANIFEST_DIR")
            )],
            ingest: IngestConfig::with_engines(["10.0.0.1", "10.0.0.2"]),
            ..ServeConfig::default()
        };
        let daemon = serve::build(&config).expect("build");
        let index = daemon.state.router.index.clone();
        for (i, chain) in chains.iter().take(1000).enumerate() {
            index.apply(
                &pod(1 + i % 2),
                IndexOp::Store {
                    keys: chain.clone(),
                    medium: Medium::Gpu,
                },
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // The daemon's own entry, as `kvroute serve` runs it; it lives as long as the bench.
        tokio::spawn(daemon.run(listener, std::future::pending()));
        addr
    });
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    client_runtime.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/v1/route");
        let bodies: Vec<String> = chains
            .iter()
            .take(1000)
            .map(|c| serde_json::json!({"model": "m", "block_hashes": c}).to_string())
            .collect();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut handles = Vec::new();
        for i in 0..3000 {
            tick.tick().await;
            let (client, url, body) = (
                client.clone(),
                url.clone(),
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
        let mut lat = Vec::new();
        for h in handles {
            if let Ok((d, true)) = h.await {
                lat.push(d);
            }
        }
        lat.sort();
        (
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
        )
    })
}
