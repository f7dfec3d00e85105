//! The simulated engine's KV events, ingested by the real `kvroute serve` over real ZeroMQ:
//! after an engine serves a prompt, the indexer routes that prompt to it with every full
//! block matched; an eviction on the engine shows in the route as exactly the prefix the
//! engine still reuses; the 0.10 arrays generation (the indexer dialing bound engines,
//! another hash scheme so keys are recomputed from the events' tokens and parents) routes
//! the same; the replay socket answers vLLM's layout; the load scraper reads the engine's
//! `/metrics`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use kvroute_blockhash::{Endpoint, HashConfig, Request, RequestExtras, RequestKeys};
use kvroute_harness::kv_engine::KvModel;
use kvroute_harness::kvroute_serve::KvrouteServe;
use kvroute_harness::paths;
use kvroute_harness::ports::free_port;
use kvroute_harness::sim_engine::{cached_tokens, KvLink, SimEngine, SimEngineArgs};
use kvroute_kvevents::{decode_payload, KvEvent};
use serde_json::{json, Value};

fn qwen3_dir() -> String {
    paths::tokenizers_dir().join("qwen3").display().to_string()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A chat prompt of about `records` x 20 tokens, distinct per `tag`.
fn chat(tag: &str, records: usize) -> Value {
    let text: String = (0..records)
        .map(|i| {
            format!(
                "{tag} record {i}: part {} in bin {}.\n",
                i * 37 % 1009,
                i * 11 % 97
            )
        })
        .collect();
    json!({"model": "Qwen3-32B", "messages": [{"role": "user", "content": text}], "max_tokens": 2})
}

/// Full blocks of a chat body, by the shared crate (vLLM 0.32's hashes, seed 42).
fn full_blocks(body: &Value) -> usize {
    let model = KvModel::load(
        "Qwen3-32B",
        &paths::tokenizers_dir().join("qwen3"),
        HashConfig::default(),
    )
    .unwrap();
    let request =
        Request::parse(body.to_string().as_bytes(), Some(Endpoint::ChatCompletions)).unwrap();
    RequestKeys::compute(
        &model.encoder,
        &model.hasher,
        &request,
        &RequestExtras::default(),
    )
    .unwrap()
    .block_hashes
    .len()
}

/// Polls the route of `body` until `check` accepts it (events travel asynchronously).
/// Each poll's decision is reported complete at once, which ends its holdings and pending
/// work, so polling does not load or teach the index anything.
fn route_until(indexer: &KvrouteServe, body: &Value, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let route = indexer.route_prompt("/v1/chat/completions", body).unwrap();
        indexer.complete(&route).unwrap();
        if check(&route) {
            return route;
        }
        if Instant::now() > deadline {
            panic!("route never matched: {route}\n{}", indexer.log_tail(3000));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn matched_on(route: &Value, endpoint: &str) -> u64 {
    route["candidates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["endpoint"] == endpoint))
        .and_then(|c| c["matched_blocks"].as_u64())
        .unwrap_or(0)
}

fn ips(first: u8, n: u8) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| Ipv4Addr::new(127, 0, 0, first + i))
        .collect()
}

#[test]
fn maps_from_connected_engines_route_each_prompt_to_its_engine_and_follow_evictions() {
    let dir = std::env::temp_dir();
    let zmq = free_port().unwrap();
    let port = free_port().unwrap();
    let engines_ips = ips(21, 3);
    let mut serve = args(&[
        "--zmq-bind",
        &format!("tcp://127.0.0.1:{zmq}"),
        "--engine-port",
        &port.to_string(),
        "--model",
        &format!("Qwen3-32B={}", qwen3_dir()),
        "--hash-seed",
        "42",
    ]);
    for ip in &engines_ips {
        serve.extend(args(&["--engine", &ip.to_string()]));
    }
    let indexer = KvrouteServe::start(&serve, &dir).unwrap();
    // 40 blocks of cache: the second prompt below must evict part of the first.
    let engines: Vec<SimEngine> = engines_ips
        .iter()
        .map(|ip| {
            let a = SimEngineArgs::qwen3(*ip, port)
                .kv(KvLink::Connect(format!("tcp://127.0.0.1:{zmq}")))
                .time_scale(50.0)
                .hash_seed("42")
                .arg("--kv-capacity-tokens", "2560");
            SimEngine::start(&a, &dir).unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let first = chat("alpha", 100);
    let second = chat("beta", 60);
    let n_first = full_blocks(&first) as u64;
    let n_second = full_blocks(&second) as u64;
    assert!(n_first > 10 && n_second > 10, "{n_first} {n_second}");
    for (body, engine, n) in [
        (&first, &engines[1], n_first),
        (&second, &engines[2], n_second),
    ] {
        let r = engine.post("/v1/chat/completions", body).unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let route = route_until(&indexer, body, |r| r["matched_blocks"].as_u64() == Some(n));
        assert_eq!(route["endpoint"], engine.name, "{route}");
        assert_eq!(route["reason"], "cache_hit");
    }
    let pod = indexer.pod(&engines[1].name).unwrap().unwrap();
    assert_eq!(pod["key_mode"], "native", "{pod}");

    // A third prompt on engine 1 needs more than its free blocks: vLLM evicts the least
    // recently freed blocks, the first prompt's tail first, and publishes BlockRemoved.
    let third = chat("gamma", 100);
    let n_third = full_blocks(&third) as u64;
    assert!(
        n_first + n_third + 2 > 40,
        "{n_first} + {n_third} fits without eviction"
    );
    assert_eq!(
        engines[1]
            .post("/v1/chat/completions", &third)
            .unwrap()
            .status,
        200
    );
    let route = route_until(&indexer, &first, |r| {
        matched_on(r, &engines[1].name) < n_first
    });
    let kept = matched_on(&route, &engines[1].name);
    // What the index says the engine kept is what the engine then reuses.
    let again = engines[1]
        .post("/v1/chat/completions", &first)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(cached_tokens(&again), Some(kept * 64), "{route}");
}

#[test]
fn arrays_from_bound_engines_are_rekeyed_from_their_tokens_and_replayed() {
    let dir = std::env::temp_dir();
    let zmq = free_port().unwrap();
    let replay = free_port().unwrap();
    let port = free_port().unwrap();
    let engines_ips = ips(31, 2);
    // The engines run vLLM 0.10's 64-bit scheme; the indexer hashes sha256_cbor with
    // another seed, so it can only match by recomputing keys from tokens and parents.
    let mut serve = args(&[
        "--engine-port",
        &port.to_string(),
        "--replay-port",
        &replay.to_string(),
        "--model",
        &format!("Qwen3-32B={}", qwen3_dir()),
        "--hash-seed",
        "7",
    ]);
    for ip in &engines_ips {
        serve.extend(args(&["--engine", &format!("{ip}:{zmq}")]));
    }
    let engines: Vec<SimEngine> = engines_ips
        .iter()
        .map(|ip| {
            let a = SimEngineArgs::qwen3(*ip, port)
                .kv(KvLink::Bind(format!("tcp://{ip}:{zmq}")))
                .kv_wire("0.10")
                .replay_port(replay)
                .time_scale(50.0)
                .hash_seed("42")
                .arg("--hash-algo", "sha256_cbor_64bit")
                .arg("--extra-keys", "bare");
            SimEngine::start(&a, &dir).unwrap()
        })
        .collect();
    let indexer = KvrouteServe::start(&serve, &dir).unwrap();
    let subscribed = kvroute_harness::process::wait_until(Duration::from_secs(10), || {
        indexer
            .log_tail(1 << 20)
            .matches("subscribed to engine")
            .count()
            >= 2
    });
    assert!(subscribed, "{}", indexer.log_tail(3000));
    std::thread::sleep(Duration::from_millis(300));

    // Served in two turns: the second stores blocks whose parent is the first's last.
    let base = chat("delta", 30);
    let mut longer = base.clone();
    longer["messages"][0]["content"] = json!(format!(
        "{}{}",
        base["messages"][0]["content"].as_str().unwrap(),
        chat("epsilon", 30)["messages"][0]["content"]
            .as_str()
            .unwrap()
    ));
    let target = &engines[1];
    for body in [&base, &longer] {
        assert_eq!(
            target.post("/v1/chat/completions", body).unwrap().status,
            200
        );
    }
    let n = full_blocks(&longer) as u64;
    let route = route_until(&indexer, &longer, |r| {
        r["matched_blocks"].as_u64() == Some(n)
    });
    assert_eq!(route["endpoint"], target.name, "{route}");
    let pod = indexer.pod(&target.name).unwrap().unwrap();
    assert_eq!(pod["key_mode"], "rekey", "{pod}");
    assert_eq!(pod["orphans_dropped"], 0, "{pod}");

    // The replay socket answers [b"", seq, payload] per buffered message, then seq -1.
    let replayed = replay_all(SocketAddr::from((engines_ips[1], replay)));
    assert_eq!(
        replayed.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![0, 1]
    );
    let stored: usize = replayed
        .iter()
        .flat_map(|(_, events)| events)
        .map(|e| match e {
            KvEvent::BlockStored(s) => s.block_hashes.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(stored as u64, n);
}

/// Asks a replay ROUTER for everything from sequence 0, as the indexer does.
fn replay_all(addr: SocketAddr) -> Vec<(u64, Vec<KvEvent>)> {
    use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut dealer = zeromq::DealerSocket::new();
        dealer.connect(&format!("tcp://{addr}")).await.unwrap();
        let mut request = ZmqMessage::from(Vec::<u8>::new());
        request.push_back(0u64.to_be_bytes().to_vec().into());
        dealer.send(request).await.unwrap();
        let mut out = Vec::new();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), dealer.recv())
                .await
                .unwrap()
                .unwrap();
            let frames: Vec<Vec<u8>> = msg.iter().map(|f| f.to_vec()).collect();
            assert_eq!(frames.len(), 3, "[b\"\", seq, payload]: {frames:?}");
            assert!(frames[0].is_empty());
            let seq = i64::from_be_bytes(frames[1].as_slice().try_into().unwrap());
            if seq == -1 {
                return out;
            }
            out.push((seq as u64, decode_payload(&frames[2]).unwrap().events));
        }
    })
}

#[test]
fn the_indexer_scrapes_running_requests_from_the_engine_metrics() {
    let dir = std::env::temp_dir();
    let zmq = free_port().unwrap();
    let port = free_port().unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 41);
    let indexer = KvrouteServe::start(
        &args(&[
            "--zmq-bind",
            &format!("tcp://127.0.0.1:{zmq}"),
            "--engine-port",
            &port.to_string(),
            "--engine",
            &ip.to_string(),
            "--model",
            &format!("Qwen3-32B={}", qwen3_dir()),
            "--scrape-interval-ms",
            "100",
        ]),
        &dir,
    )
    .unwrap();
    // Real time: 150 decode steps of ~15 ms keep the request running for ~2 s.
    let engine = SimEngine::start(
        &SimEngineArgs::qwen3(ip, port).kv(KvLink::Connect(format!("tcp://127.0.0.1:{zmq}"))),
        &dir,
    )
    .unwrap();
    let addr = engine.addr;
    let client = std::thread::spawn(move || {
        kvroute_harness::http::post_json(
            addr,
            "/v1/completions",
            json!({"prompt": "count", "max_tokens": 150})
                .to_string()
                .as_bytes(),
        )
    });
    let running = kvroute_harness::process::wait_until(Duration::from_secs(5), || {
        indexer
            .pod(&engine.name)
            .ok()
            .flatten()
            .is_some_and(|p| p["load"]["running"] == 1.0)
    });
    assert!(running, "{:?}", indexer.pod(&engine.name));
    assert_eq!(client.join().unwrap().unwrap().status, 200);
    let idle = kvroute_harness::process::wait_until(Duration::from_secs(3), || {
        indexer
            .pod(&engine.name)
            .ok()
            .flatten()
            .is_some_and(|p| p["load"]["running"] == 0.0)
    });
    assert!(idle);
}

#[test]
fn bytes_hashes_route_and_a_prefix_cache_reset_clears_the_engine() {
    let dir = std::env::temp_dir();
    let zmq = free_port().unwrap();
    let port = free_port().unwrap();
    let ip = Ipv4Addr::new(127, 0, 0, 45);
    let indexer = KvrouteServe::start(
        &args(&[
            "--zmq-bind",
            &format!("tcp://127.0.0.1:{zmq}"),
            "--engine-port",
            &port.to_string(),
            "--engine",
            &ip.to_string(),
            "--model",
            &format!("Qwen3-32B={}", qwen3_dir()),
        ]),
        &dir,
    )
    .unwrap();
    // vLLM with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0 publishes the 32-byte digests.
    let mut engine_args = SimEngineArgs::qwen3(ip, port)
        .kv(KvLink::Connect(format!("tcp://127.0.0.1:{zmq}")))
        .time_scale(50.0);
    engine_args.extra.push("--kv-bytes-hashes".into());
    let engine = SimEngine::start(&engine_args, &dir).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let body = chat("zeta", 50);
    let n = full_blocks(&body) as u64;
    assert_eq!(
        engine.post("/v1/chat/completions", &body).unwrap().status,
        200
    );
    let route = route_until(&indexer, &body, |r| r["matched_blocks"].as_u64() == Some(n));
    assert_eq!(route["endpoint"], engine.name);
    assert_eq!(
        indexer.pod(&engine.name).unwrap().unwrap()["key_mode"],
        "native"
    );

    // vLLM's /reset_prefix_cache publishes AllBlocksCleared with its next step's events
    // (here another prompt's): the index forgets the engine's blocks, and the engine no
    // longer reuses them.
    let reset = kvroute_harness::http::post_json(engine.addr, "/reset_prefix_cache", b"").unwrap();
    assert_eq!(reset.json().unwrap()["cleared"], true);
    let other = chat("eta", 20);
    assert_eq!(
        engine.post("/v1/chat/completions", &other).unwrap().status,
        200
    );
    route_until(&indexer, &body, |r| r["matched_blocks"] == 0);
    let again = engine
        .post("/v1/chat/completions", &body)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(cached_tokens(&again), Some(0));
}
