//! Ingestion over real ZeroMQ sockets on 127.0.0.1, in both wirings, with frames written by
//! vLLM's own msgspec classes (testdata/kv-frames, scripts/gen_kv_frames.py): the indexer
//! binds and engines connect (identity from the topic, unknown publishers dropped), and the
//! indexer dials an engine that binds (identity = the endpoint dialed). The other tests feed
//! `Ingest::handle` directly; these prove the socket loops deliver the same result.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvroute_blockhash::{BlockHasher, ExtraKeysStyle, HashConfig, HashScheme};
use kvroute_indexer::index::{BlockIndex, PodIndex};
use kvroute_indexer::ingest::{Ingest, IngestConfig};
use kvroute_indexer::metrics::Metrics;
use kvroute_indexer::pods::PodRegistry;
use kvroute_indexer::types::{KeyMode, PodId};
use kvroute_testdata::Run;
use serde_json::Value;
use zeromq::{Socket, SocketSend, ZmqMessage};

/// One generated run: messages as frames, and the run describing them.
fn run(name: &str) -> (Vec<Vec<Vec<u8>>>, Run) {
    let run = kvroute_testdata::generated_frames(name);
    let messages = run.messages.iter().map(|m| m.frames.clone()).collect();
    (messages, run)
}

/// The u64 event values of one BlockStored in index.json (ints, or digests' low 64 bits).
fn event_values(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| match h.as_u64() {
            Some(x) => x,
            None => {
                let hex = h["$bytes_hex"].as_str().unwrap();
                u64::from_str_radix(&hex[hex.len() - 16..], 16).unwrap()
            }
        })
        .collect()
}

fn stored(run: &Run, message: usize, event: usize) -> &Value {
    &run.messages[message].entry["batch"][1][event]
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(zmq_bind: Option<String>, engines: Vec<String>) -> IngestConfig {
    IngestConfig {
        zmq_bind,
        ..IngestConfig::with_engines(engines)
    }
}

struct Daemon {
    ingest: Arc<Ingest>,
    index: Arc<BlockIndex>,
    registry: Arc<PodRegistry>,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Sender<bool>,
}

fn daemon(config: IngestConfig, seed: &str) -> Daemon {
    let index = Arc::new(BlockIndex::new(1 << 16));
    let registry = Arc::new(PodRegistry::new(None));
    let metrics = Arc::new(Metrics::new());
    let ingest = Arc::new(
        Ingest::new(
            config,
            index.clone(),
            registry.clone(),
            metrics.clone(),
            HashConfig {
                scheme: HashScheme::Sha256Cbor,
                block_size: 16,
                seed: Some(seed.into()),
            },
            ExtraKeysStyle::Tagged,
        )
        .expect("valid ingestion config"),
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(ingest.clone().run(rx));
    Daemon {
        ingest,
        index,
        registry,
        metrics,
        stop,
    }
}

fn pod() -> PodId {
    PodId {
        endpoint: "127.0.0.1:8000".into(),
        dp_rank: 0,
    }
}

fn gpu_run(d: &Daemon, keys: &[u64]) -> usize {
    d.index
        .match_prefix(keys)
        .iter()
        .find(|m| m.pod == pod())
        .map(|m| m.gpu_blocks)
        .unwrap_or(0)
}

async fn send(socket: &mut zeromq::PubSocket, frames: &[Vec<u8>]) {
    let mut msg = ZmqMessage::from(frames[0].clone());
    for f in &frames[1..] {
        msg.push_back(f.clone().into());
    }
    socket.send(msg).await.unwrap();
}

/// PUB/SUB drops messages until the subscription has travelled: resend the first message
/// (same sequence number: a restart at most, which clears and re-stores the same blocks)
/// until the index shows it.
async fn send_until_seen(
    d: &Daemon,
    socket: &mut zeromq::PubSocket,
    frames: &[Vec<u8>],
    keys: &[u64],
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while gpu_run(d, keys) < keys.len() {
        assert!(Instant::now() < deadline, "first message never arrived");
        send(socket, frames).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_mode_vllm_0_11_arrays_native_keys_and_unknown_publishers_dropped() {
    let (messages, index) = run("vllm-0.11.0_int_hashes");
    let port = free_port();
    let d = daemon(
        config(
            Some(format!("tcp://127.0.0.1:{port}")),
            vec!["127.0.0.1".into()],
        ),
        "42",
    );
    let first = event_values(&stored(&index, 0, 0)["block_hashes"]);
    let second = event_values(&stored(&index, 1, 0)["block_hashes"]);
    let chain: Vec<u64> = first.iter().chain(&second).copied().collect();

    let mut engine = zeromq::PubSocket::new();
    // The bind loop may not be listening yet.
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine
        .connect(&format!("tcp://127.0.0.1:{port}"))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "indexer never bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_until_seen(&d, &mut engine, &messages[0], &first).await;
    // The engine's seed is ours: its own values are the keys.
    assert_eq!(d.registry.key_mode(&pod()), KeyMode::Native);

    // A publisher that is no known engine: same frames, another address in the topic.
    let mut intruder = messages[2].clone();
    intruder[0] = b"kv@10.9.9.9@Qwen3-32B".to_vec();
    send(&mut engine, &intruder).await;
    send(&mut engine, &messages[1]).await;
    wait_for("the continuation", || gpu_run(&d, &chain) == 5).await;
    assert_eq!(d.metrics.unknown_publishers.get(), 1);
    let other = event_values(&stored(&index, 2, 1)["block_hashes"]);
    assert!(d.index.match_prefix(&other).is_empty());

    // Message 2 evicts the continuation's last block and stores another prompt.
    send(&mut engine, &messages[2]).await;
    // One message, two events: wait for both (a lookup may land between them).
    wait_for("the eviction and the store", || {
        gpu_run(&d, &chain) == 4 && gpu_run(&d, &other) == other.len()
    })
    .await;
    // Message 4 is data-parallel rank 1: its own pod, not rank 0's.
    // A new rank needs two messages' word: the rank's next message (the same blocks
    // again) confirms it.
    send(&mut engine, &messages[3]).await;
    send(&mut engine, &messages[4]).await;
    let mut rank1_next = messages[4].clone();
    rank1_next[1] = 5u64.to_be_bytes().to_vec();
    send(&mut engine, &rank1_next).await;
    let rank1 = PodId {
        endpoint: "127.0.0.1:8000".into(),
        dp_rank: 1,
    };
    wait_for("rank 1", || {
        d.index.match_prefix(&first).iter().any(|m| m.pod == rank1)
    })
    .await;
    // AllBlocksCleared clears rank 0 only.
    send(&mut engine, &messages[5]).await;
    wait_for("the clear", || gpu_run(&d, &first) == 0).await;
    let left = d.index.match_prefix(&first);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].pod, rank1);
    assert_eq!(left[0].gpu_blocks, 2);
    let _ = d.stop.send(true);
    drop(d.ingest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_mode_vllm_0_32_bytes_hashes_rekeyed_with_another_seed() {
    let (messages, index) = run("vllm-0.32.0_bytes_hashes");
    let mut engine = zeromq::PubSocket::new();
    let port = free_port();
    engine
        .bind(&format!("tcp://127.0.0.1:{port}"))
        .await
        .unwrap();
    // The engine hashes with seed "42"; this indexer's seed differs, so its keys are
    // recomputed from token ids and must equal what the shared crate computes for a request.
    let d = daemon(config(None, vec![format!("127.0.0.1:{port}")]), "7");
    let tokens = |m: usize| -> Vec<u32> {
        stored(&index, m, 0)["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect()
    };
    let prompt: Vec<u32> = tokens(0).into_iter().chain(tokens(1)).collect();
    let keys = BlockHasher::new(HashConfig {
        scheme: HashScheme::Sha256Cbor,
        block_size: 16,
        seed: Some("7".into()),
    })
    .event_values(&prompt);
    assert_eq!(keys.len(), 5);
    send_until_seen(&d, &mut engine, &messages[0], &keys[..3]).await;
    assert_eq!(d.registry.key_mode(&pod()), KeyMode::Rekey);
    send(&mut engine, &messages[1]).await;
    wait_for("the continuation", || gpu_run(&d, &keys) == 5).await;
    // The engine's own values are not keys here.
    let engine_values = event_values(&stored(&index, 0, 0)["block_hashes"]);
    assert!(d.index.match_prefix(&engine_values).is_empty());
    // The eviction names the engine's hash: mapped back to our key.
    send(&mut engine, &messages[2]).await;
    wait_for("the eviction", || gpu_run(&d, &keys) == 4).await;
    let _ = d.stop.send(true);
}

/// An engine's replay endpoint as vLLM's ZmqEventPublisher serves it: a ROUTER that takes
/// `[b"", start_seq]` and answers each buffered message, then an end marker (seq -1).
/// `with_topic`: vLLM 0.3x layout `[b"", topic, seq, payload]`; else 0.10/0.11's `[b"", seq, payload]`.
/// The buffer holds `buffer`'s messages below `published` (what the engine has published so
/// far); every request's start is sent to `starts`.
async fn serve_replay(
    mut router: zeromq::RouterSocket,
    buffer: Vec<Vec<Vec<u8>>>,
    with_topic: bool,
    published: Arc<AtomicU64>,
    starts: tokio::sync::mpsc::UnboundedSender<u64>,
) {
    use zeromq::SocketRecv;
    while let Ok(request) = router.recv().await {
        let frames: Vec<Vec<u8>> = request.iter().map(|f| f.to_vec()).collect();
        assert_eq!(frames.len(), 3, "[client, b\"\", start]: {frames:?}");
        let start = u64::from_be_bytes(frames[2].as_slice().try_into().unwrap());
        let reply = |parts: Vec<Vec<u8>>| {
            let mut msg = ZmqMessage::from(frames[0].clone());
            msg.push_back(Vec::<u8>::new().into());
            for p in parts {
                msg.push_back(p.into());
            }
            msg
        };
        let end = published.load(Ordering::SeqCst);
        for m in buffer.iter().filter(|m| {
            let seq = u64::from_be_bytes(m[1].as_slice().try_into().unwrap());
            seq >= start && seq < end
        }) {
            let parts = if with_topic {
                m.clone()
            } else {
                m[1..].to_vec()
            };
            router.send(reply(parts)).await.unwrap();
        }
        let end = (-1i64).to_be_bytes().to_vec();
        let parts = if with_topic {
            vec![vec![], end, vec![]]
        } else {
            vec![end, vec![]]
        };
        router.send(reply(parts)).await.unwrap();
        let _ = starts.send(start);
    }
}

/// A replay ROUTER on a free port serving `buffer`: its port, what it has published, and
/// the start of every request it answered.
async fn replayer(
    buffer: Vec<Vec<Vec<u8>>>,
    with_topic: bool,
    published: u64,
) -> (
    u16,
    Arc<AtomicU64>,
    tokio::sync::mpsc::UnboundedReceiver<u64>,
) {
    let mut router = zeromq::RouterSocket::new();
    let port = free_port();
    router
        .bind(&format!("tcp://127.0.0.1:{port}"))
        .await
        .unwrap();
    let published = Arc::new(AtomicU64::new(published));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(serve_replay(
        router,
        buffer,
        with_topic,
        published.clone(),
        tx,
    ));
    (port, published, rx)
}

/// Waits for a replay request starting at `start`, skipping others (re-learning from 0).
async fn replay_asked_from(starts: &mut tokio::sync::mpsc::UnboundedReceiver<u64>, start: u64) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(s) = starts.recv().await {
            if s == start {
                return;
            }
        }
        panic!("replayer gone");
    })
    .await
    .unwrap_or_else(|_| panic!("no replay asked from {start}"));
}

async fn gap_is_replayed(run_name: &str, with_topic: bool) {
    let (messages, index) = run(run_name);
    let mut engine = zeromq::PubSocket::new();
    let port = free_port();
    engine
        .bind(&format!("tcp://127.0.0.1:{port}"))
        .await
        .unwrap();
    // Nothing published yet: the re-learning asked at the first dial finds nothing.
    let (replay_port, published, mut starts) = replayer(messages.clone(), with_topic, 0).await;
    let mut cfg = config(None, vec![format!("127.0.0.1:{port}")]);
    cfg.replay_port = Some(replay_port);
    let d = daemon(cfg, "42");
    let first = event_values(&stored(&index, 0, 0)["block_hashes"]);
    let second = event_values(&stored(&index, 1, 0)["block_hashes"]);
    let chain: Vec<u64> = first.iter().chain(&second).copied().collect();
    replay_asked_from(&mut starts, 0).await;
    send_until_seen(&d, &mut engine, &messages[0], &first).await;
    // Message 1 is lost on the PUB socket; message 2 reveals the gap.
    published.store(3, Ordering::SeqCst);
    send(&mut engine, &messages[2]).await;
    replay_asked_from(&mut starts, 1).await;
    // Replayed message 1 stored the continuation; message 2 then evicted its last block.
    wait_for("the replayed continuation", || gpu_run(&d, &chain) == 4).await;
    assert_eq!(d.metrics.replays.get(), 1);
    assert_eq!(d.metrics.relearns.get(), 1);
    assert_eq!(d.metrics.seq_gaps.get(), 0);
    let status = d.registry.snapshot(&Default::default());
    let me = status
        .iter()
        .find(|s| s.endpoint == "127.0.0.1:8000")
        .unwrap();
    assert!(!me.stale);
    assert_eq!(me.last_seq, Some(2));
    assert_eq!(me.model.as_deref(), Some("Qwen3-32B"));
    let _ = d.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_replayed_from_a_vllm_0_32_router() {
    gap_is_replayed("vllm-0.32.0_int_hashes", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_replayed_from_a_vllm_0_11_router() {
    gap_is_replayed("vllm-0.11.0_int_hashes", false).await;
}

/// An indexer (re)started after its engine published (bind wiring: the engine's
/// connection alone says nothing): what the engine still buffers is learned from its
/// replay socket at start, before any live message. (Connect wiring: at every dial,
/// `gap_is_replayed` sees that request.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexer_started_after_its_engine_relearns_its_buffer() {
    let (messages, index) = run("vllm-0.32.0_int_hashes");
    let first = event_values(&stored(&index, 0, 0)["block_hashes"]);
    let second = event_values(&stored(&index, 1, 0)["block_hashes"]);
    let chain: Vec<u64> = first.iter().chain(&second).copied().collect();
    let (replay_port, _published, mut starts) = replayer(messages.clone(), true, 3).await;
    let mut cfg = config(
        Some(format!("tcp://127.0.0.1:{}", free_port())),
        vec!["127.0.0.1".into()],
    );
    cfg.replay_port = Some(replay_port);
    let d = daemon(cfg, "42");
    replay_asked_from(&mut starts, 0).await;
    // Messages 0..3 replayed: message 1's continuation stored, message 2's eviction applied.
    wait_for("the re-learned buffer", || gpu_run(&d, &chain) == 4).await;
    assert_eq!(d.metrics.relearns.get(), 1);
    let status = d.registry.snapshot(&Default::default());
    assert_eq!(status[0].last_seq, Some(2), "{status:?}");
    let _ = d.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_without_replay_marks_stale_and_relearns() {
    let (messages, index) = run("vllm-0.32.0_int_hashes");
    let mut engine = zeromq::PubSocket::new();
    let port = free_port();
    engine
        .bind(&format!("tcp://127.0.0.1:{port}"))
        .await
        .unwrap();
    let d = daemon(config(None, vec![format!("127.0.0.1:{port}")]), "42");
    let first = event_values(&stored(&index, 0, 0)["block_hashes"]);
    let other = event_values(&stored(&index, 2, 1)["block_hashes"]);
    send_until_seen(&d, &mut engine, &messages[0], &first).await;
    send(&mut engine, &messages[2]).await;
    wait_for("message 2", || gpu_run(&d, &other) == other.len()).await;
    // What was held before the gap is unknown now: cleared, and the pod is stale.
    assert_eq!(gpu_run(&d, &first), 0);
    assert_eq!(d.metrics.seq_gaps.get(), 1);
    let status = d.registry.snapshot(&Default::default());
    assert!(status
        .iter()
        .any(|s| s.endpoint == "127.0.0.1:8000" && s.stale));
    // A restart (sequence back to 0), confirmed by the next message, clears the pod
    // again and re-learns.
    send(&mut engine, &messages[0]).await;
    send(&mut engine, &messages[1]).await;
    wait_for("the restart", || {
        gpu_run(&d, &other) == 0 && gpu_run(&d, &first) == first.len()
    })
    .await;
    assert_eq!(d.metrics.seq_restarts.get(), 1);
    let _ = d.stop.send(true);
}

/// A ZMTP 3.0 greeting: signature, version 3.0, the NULL mechanism, not a server.
fn zmtp_greeting() -> Vec<u8> {
    let mut g = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 3, 0];
    g.extend(b"NULL");
    g.resize(64, 0);
    g
}

/// The frame header of a long frame declaring 2^40 bytes.
fn huge_frame_header() -> Vec<u8> {
    let mut h = vec![0x02];
    h.extend((1u64 << 40).to_be_bytes());
    h
}

/// The attack of issue 10: a greeting, then a frame header declaring 2^40 bytes. The
/// unpatched zeromq crate reserved the declared length and aborted the process.
fn attack_73_bytes() -> Vec<u8> {
    let bytes = [zmtp_greeting(), huge_frame_header()].concat();
    assert_eq!(bytes.len(), 73);
    bytes
}

/// A peer that completes the handshake as a PUB, then declares 2^40 bytes.
fn attack_after_handshake() -> Vec<u8> {
    let mut ready = vec![5];
    ready.extend(b"READY");
    ready.push(11);
    ready.extend(b"Socket-Type");
    ready.extend(3u32.to_be_bytes());
    ready.extend(b"PUB");
    let mut bytes = zmtp_greeting();
    bytes.extend([0x04, ready.len() as u8]);
    bytes.extend(ready);
    bytes.extend(huge_frame_header());
    bytes
}

/// Connect to `port` as a raw TCP peer and write `bytes`; the connection is kept open
/// until the indexer drops it.
fn raw_peer(port: u16, bytes: &[u8]) -> std::net::TcpStream {
    use std::io::Write;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                s.write_all(bytes).unwrap();
                return s;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("indexer never bound: {e}"),
        }
    }
}

/// A fake engine: accepts every connection on `listener` and writes `bytes` to it.
fn hostile_listener(listener: std::net::TcpListener, bytes: Vec<u8>) {
    std::thread::spawn(move || {
        use std::io::Write;
        let mut kept = Vec::new();
        for mut s in listener.incoming().flatten() {
            let _ = s.write_all(&bytes);
            kept.push(s);
        }
    });
}

/// Whether the peer closed the connection (read returns 0 or an error).
fn closed_by_peer(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

async fn connected_pub(port: u16, from: &str) -> zeromq::PubSocket {
    let mut options = zeromq::SocketOptions::default();
    options.local_address(from.parse().unwrap());
    let mut engine = zeromq::PubSocket::with_options(options);
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine
        .connect(&format!("tcp://127.0.0.1:{port}"))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "indexer never bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_on_the_bound_socket_drop_the_peer_and_are_counted() {
    let (messages, index) = run("vllm-0.32.0_int_hashes");
    let port = free_port();
    let d = daemon(
        config(
            Some(format!("tcp://127.0.0.1:{port}")),
            vec!["127.0.0.1".into()],
        ),
        "42",
    );
    // During the handshake, and after a complete one.
    let mut first = raw_peer(port, &attack_73_bytes());
    assert!(closed_by_peer(&mut first), "the peer was not dropped");
    wait_for("the handshake's refusal counted", || {
        d.metrics.oversized_messages.get() == 1
    })
    .await;
    let mut second = raw_peer(port, &attack_after_handshake());
    assert!(closed_by_peer(&mut second), "the peer was not dropped");
    wait_for("the message's refusal counted", || {
        d.metrics.oversized_messages.get() == 2
    })
    .await;
    // The indexer is alive and still ingests what the engine publishes.
    let keys = event_values(&stored(&index, 0, 0)["block_hashes"]);
    let mut engine = connected_pub(port, "127.0.0.1").await;
    send_until_seen(&d, &mut engine, &messages[0], &keys).await;
    let _ = d.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_declares_an_oversized_message_is_dropped_and_counted() {
    let (messages, index) = run("vllm-0.32.0_int_hashes");
    // A hostile "engine" the indexer dials, beside a real one.
    let hostile = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let hostile_port = hostile.local_addr().unwrap().port();
    hostile_listener(hostile, attack_73_bytes());
    let mut engine = zeromq::PubSocket::new();
    let port = free_port();
    engine
        .bind(&format!("tcp://127.0.0.1:{port}"))
        .await
        .unwrap();
    let d = daemon(
        config(
            None,
            vec![
                format!("127.0.0.1:{port}"),
                format!("127.0.0.3:{hostile_port}=8000"),
            ],
        ),
        "42",
    );
    wait_for("the refusal counted", || {
        d.metrics.oversized_messages.get() >= 1
    })
    .await;
    let keys = event_values(&stored(&index, 0, 0)["block_hashes"]);
    send_until_seen(&d, &mut engine, &messages[0], &keys).await;
    let _ = d.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_replay_answer_is_refused_and_counted() {
    let (messages, index) = run("vllm-0.32.0_int_hashes");
    let mut engine = zeromq::PubSocket::new();
    let port = free_port();
    engine
        .bind(&format!("tcp://127.0.0.1:{port}"))
        .await
        .unwrap();
    // The engine's "replay socket" answers a connection with the attack.
    let replay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let replay_port = replay.local_addr().unwrap().port();
    hostile_listener(replay, attack_73_bytes());
    let mut cfg = config(None, vec![format!("127.0.0.1:{port}")]);
    cfg.replay_port = Some(replay_port);
    let d = daemon(cfg, "42");
    let first = event_values(&stored(&index, 0, 0)["block_hashes"]);
    let other = event_values(&stored(&index, 2, 1)["block_hashes"]);
    send_until_seen(&d, &mut engine, &messages[0], &first).await;
    // A gap: the replay is asked for, refused, and the engine re-learned from message 2.
    send(&mut engine, &messages[2]).await;
    wait_for("message 2 after the failed replay", || {
        gpu_run(&d, &other) == other.len()
    })
    .await;
    assert_eq!(d.metrics.replays.get(), 1);
    assert_eq!(d.metrics.relearns.get(), 1);
    // Three attempts each: the re-learning asked at the first dial, and the gap's replay.
    assert_eq!(d.metrics.oversized_messages.get(), 6);
    let _ = d.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_naming_an_engine_from_another_address_is_dropped_and_counted() {
    let (messages, index) = run("vllm-0.32.0_int_hashes");
    let port = free_port();
    // The engine is 127.0.0.2.
    let d = daemon(
        config(
            Some(format!("tcp://127.0.0.1:{port}")),
            vec!["127.0.0.2".into()],
        ),
        "42",
    );
    let keys = event_values(&stored(&index, 0, 0)["block_hashes"]);
    let topic = |frames: &[Vec<u8>]| {
        let mut f = frames.to_vec();
        f[0] = b"kv@127.0.0.2@Qwen3-32B".to_vec();
        f
    };
    let engine_pod = PodId {
        endpoint: "127.0.0.2:8000".into(),
        dp_rank: 0,
    };
    let held_by_engine = |d: &Daemon| {
        d.index
            .match_prefix(&keys)
            .iter()
            .any(|m| m.pod == engine_pod)
    };
    // A spoofer on 127.0.0.1 names the engine: never indexed, counted.
    let mut spoofer = connected_pub(port, "127.0.0.1").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.metrics.spoofed_messages.get() == 0 {
        assert!(Instant::now() < deadline, "spoofed messages never arrived");
        send(&mut spoofer, &topic(&messages[0])).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!held_by_engine(&d));
    assert_eq!(d.registry.snapshot(&Default::default())[0].last_seq, None);
    // The engine itself, from its own address, is believed.
    let mut engine = connected_pub(port, "127.0.0.2").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !held_by_engine(&d) {
        assert!(
            Instant::now() < deadline,
            "the engine's message never arrived"
        );
        send(&mut engine, &topic(&messages[0])).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = d.stop.send(true);
}
