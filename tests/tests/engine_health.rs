//! Engines come and go under load, through the real Envoy, the real filter, the real
//! `kvroute serve` and simulated vLLM engines (real processes, real ZeroMQ, replay sockets):
//!
//! - an engine SIGKILLed while requests flow leaves routing within ~1 s, comes back within
//!   ~1 s of answering again, and no request is routed on the blocks it lost;
//! - an `--engine` that never exists gets no request;
//! - an indexer killed and restarted under load re-learns every engine's cache from the
//!   engines' replay buffers: within seconds, second turns land on their first turn's engine
//!   with their blocks matched (not by a tie-break), and no client request fails meanwhile.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvroute_harness::http;
use kvroute_harness::sim_engine::cached_tokens;
use kvroute_harness::stack::{kvroute_serve, IndexerSpec, KvWiring, SimEngineOptions, Stack};
use serde_json::{json, Value};

/// How soon the indexer must follow an engine's death or return: about a second (health
/// checks every 500 ms; a SIGKILLed engine's port refuses at once), with slack for a
/// loaded machine.
const FOLLOWS_WITHIN: Duration = Duration::from_millis(1500);

fn stack(engines: usize, serve_args: &[&str]) -> Stack {
    wired_stack(KvWiring::IndexerConnects, engines, serve_args)
}

fn wired_stack(wiring: KvWiring, engines: usize, serve_args: &[&str]) -> Stack {
    Stack::builder()
        .qwen3()
        .sim_engines(SimEngineOptions {
            wiring,
            replay: true,
            ..SimEngineOptions::new(engines)
        })
        .indexer(IndexerSpec::Kvroute(kvroute_serve(serve_args)))
        .start()
        .expect("stack")
}

/// A user turn of about `records` x 20 tokens, distinct per `tag`.
fn text(tag: &str, records: usize) -> String {
    (0..records)
        .map(|i| {
            format!(
                "{tag} record {i}: part {} in bin {}.\n",
                i * 37 % 1009,
                i * 11 % 97
            )
        })
        .collect()
}

/// Conversation `tag`'s first turn.
fn first_turn(tag: &str) -> Value {
    json!({"model": "Qwen3-32B", "max_tokens": 2,
        "messages": [{"role": "user", "content": text(tag, 40)}]})
}

/// Conversation `tag`'s second turn: the first, an answer, a new question.
fn second_turn(tag: &str) -> Value {
    json!({"model": "Qwen3-32B", "max_tokens": 2, "messages": [
        {"role": "user", "content": text(tag, 40)},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": format!("What is in bin 7 of {tag}?")},
    ]})
}

/// One request of the load, as the client saw it.
#[derive(Debug, Clone)]
struct Sample {
    sent: Instant,
    status: u16,
    /// The engine that answered (`x-served-by`).
    served_by: Option<String>,
    /// The indexer's pick and the blocks it claimed there (the filter's debug headers).
    routed_to: Option<String>,
    matched_blocks: u64,
    /// What the engine really had cached.
    cached_tokens: u64,
}

fn send(listen: SocketAddr, body: &Value) -> Sample {
    let sent = Instant::now();
    match http::post_json(listen, "/v1/chat/completions", body.to_string().as_bytes()) {
        Ok(r) => Sample {
            sent,
            status: r.status,
            served_by: r.header("x-served-by").map(str::to_string),
            routed_to: r.header("x-kvroute-endpoint").map(str::to_string),
            matched_blocks: r
                .header("x-kvroute-matched-blocks")
                .and_then(|m| m.parse().ok())
                .unwrap_or(0),
            cached_tokens: r.json().ok().as_ref().and_then(cached_tokens).unwrap_or(0),
        },
        Err(_) => Sample {
            sent,
            status: 0,
            served_by: None,
            routed_to: None,
            matched_blocks: 0,
            cached_tokens: 0,
        },
    }
}

/// Requests at `per_second` through Envoy, cycling over `bodies`, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Load {
    fn start(listen: SocketAddr, bodies: Vec<Value>, per_second: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let period = Duration::from_secs(1) / per_second;
            let mut samples = Vec::new();
            let mut next = Instant::now();
            for body in bodies.iter().cycle() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                samples.push(send(listen, body));
                next += period;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            samples
        });
        Self { stop, thread }
    }

    fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("load thread")
    }
}

/// The indexer's view of `endpoint` (`/v1/pods`).
fn pod(stack: &Stack, endpoint: &str) -> Value {
    let pods = http::send(stack.indexer_addr, "GET", "/v1/pods", &[], b"")
        .and_then(|r| r.json())
        .unwrap_or(Value::Null);
    pods["pods"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["endpoint"] == endpoint))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Polls until `endpoint`'s health is `health`; when it was.
fn wait_health(stack: &Stack, endpoint: &str, health: &str, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if pod(stack, endpoint)["health"] == health {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{endpoint} never became {health}: {}\n{}",
            pod(stack, endpoint),
            stack.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The indexer's decision for `body`, reported complete at once (no load left behind).
fn route(stack: &Stack, body: &Value) -> Value {
    let answer = http::post_json(
        stack.indexer_addr,
        "/v1/route/prompt?path=/v1/chat/completions",
        body.to_string().as_bytes(),
    )
    .and_then(|r| r.json())
    .unwrap_or(Value::Null);
    if let Some(ticket) = answer["ticket"].as_u64() {
        let _ = http::post_json(
            stack.indexer_addr,
            "/v1/route/complete",
            json!({ "ticket": ticket }).to_string().as_bytes(),
        );
    }
    answer
}

/// The indexer's `/metrics` page, kvroute's own series only (for a failure's message).
fn indexer_metrics(stack: &Stack) -> String {
    http::send(stack.indexer_addr, "GET", "/metrics", &[], b"")
        .map(|r| {
            String::from_utf8_lossy(&r.body)
                .lines()
                .filter(|l| l.starts_with("kvroute_"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn candidates(answer: &Value) -> Vec<String> {
    answer["candidates"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c["endpoint"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// First turns of `tags` through Envoy; the engine that served each.
fn first_turns(stack: &Stack, tags: &[String]) -> Vec<String> {
    tags.iter()
        .map(|tag| {
            let r = stack.chat(&first_turn(tag)).expect("first turn");
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            Stack::served_by(&r).expect("served by")
        })
        .collect()
}

/// Polls until the indexer routes every second turn to its first turn's engine on matched
/// blocks; how long that took.
fn wait_learned(stack: &Stack, tags: &[String], engines: &[String], timeout: Duration) -> Duration {
    let started = Instant::now();
    for (tag, engine) in tags.iter().zip(engines) {
        loop {
            let answer = route(stack, &second_turn(tag));
            if answer["endpoint"] == engine.as_str()
                && answer["reason"] == "cache_hit"
                && answer["matched_blocks"].as_u64() > Some(0)
            {
                break;
            }
            assert!(
                started.elapsed() < timeout,
                "{tag} not routed on its blocks to {engine}: {answer}\nindexer metrics:\n{}\n{}",
                indexer_metrics(stack),
                stack.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    started.elapsed()
}

#[test]
fn an_engine_killed_under_load_leaves_routing_within_a_second_and_comes_back_empty() {
    let mut stack = stack(3, &[]);
    let tags: Vec<String> = (0..9).map(|i| format!("kill-{i}")).collect();
    let engines = first_turns(&stack, &tags);
    wait_learned(&stack, &tags, &engines, Duration::from_secs(10));
    // The victim holds the most first turns.
    let victim_index = (0..stack.sim_engines.len())
        .max_by_key(|&i| {
            engines
                .iter()
                .filter(|e| **e == stack.sim_engines[i].name)
                .count()
        })
        .unwrap();
    let victim = stack.sim_engines[victim_index].name.clone();
    assert!(engines.contains(&victim));

    let load = Load::start(
        stack.listen(),
        tags.iter().map(|t| second_turn(t)).collect(),
        10,
    );
    std::thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    stack.sim_engines[victim_index].kill();
    let out = wait_health(&stack, &victim, "down", Duration::from_secs(10));
    assert!(
        out - killed <= FOLLOWS_WITHIN,
        "{victim} left routing {:?} after SIGKILL",
        out - killed
    );
    let candidates_while_down = candidates(&route(&stack, &second_turn(&tags[0])));
    std::thread::sleep(Duration::from_secs(2));

    stack.sim_engines[victim_index].restart().expect("restart");
    // `restart` returns once the engine answers /health.
    let answers = Instant::now();
    let back = wait_health(&stack, &victim, "up", Duration::from_secs(10));
    assert!(
        back - answers <= FOLLOWS_WITHIN,
        "{victim} back in routing {:?} after it answered again",
        back - answers
    );
    let candidates_when_back = candidates(&route(&stack, &first_turn("brand new")));
    std::thread::sleep(Duration::from_secs(3));
    let samples = load.stop();

    assert!(
        !candidates_while_down.contains(&victim),
        "{victim} still a candidate while down: {candidates_while_down:?}"
    );
    assert!(
        candidates_when_back.contains(&victim),
        "{victim} not a candidate once back: {candidates_when_back:?}"
    );
    // Out of routing: from ~2 s after the kill until it answers again, every request is
    // routed elsewhere and served.
    let settled = killed + FOLLOWS_WITHIN;
    let while_gone: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent > settled && s.sent < answers)
        .collect();
    assert!(
        while_gone.len() >= 10,
        "load too thin: {} samples",
        while_gone.len()
    );
    for s in &while_gone {
        assert_eq!(
            s.status, 200,
            "request failed while {victim} was out: {s:?}"
        );
        assert_ne!(s.routed_to.as_deref(), Some(victim.as_str()), "{s:?}");
    }
    // Back empty: nothing routed to it on blocks it claimed but no longer had.
    for s in samples.iter().filter(|s| s.sent > answers) {
        if s.served_by.as_deref() == Some(victim.as_str()) {
            assert!(
                s.matched_blocks == 0 || s.cached_tokens > 0,
                "routed to {victim} on {} blocks it lost: {s:?}",
                s.matched_blocks
            );
        }
    }
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.status != 200).collect();
    eprintln!(
        "{} requests, {} failed (all within {:?} of the kill: before the indexer saw it); \
         out of routing {:?} after the kill, back {:?} after answering",
        samples.len(),
        failed.len(),
        out - killed,
        out - killed,
        back - answers
    );
    for s in &failed {
        assert!(
            s.sent >= killed - Duration::from_millis(500) && s.sent <= out,
            "a request failed outside the detection window: {s:?}"
        );
    }
}

#[test]
fn an_engine_that_never_exists_gets_no_requests() {
    // 127.0.0.250 runs nothing: no events, no /health.
    let ghost_ip = "127.0.0.250";
    let stack = stack(2, &["--engine", ghost_ip]);
    let ghost = format!("{ghost_ip}:{}", stack.pods[0].port());
    wait_health(&stack, &ghost, "down", Duration::from_secs(5));
    for i in 0..8 {
        let r = stack
            .chat(&first_turn(&format!("ghost-{i}")))
            .expect("chat");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_ne!(r.header("x-kvroute-endpoint"), Some(ghost.as_str()));
        let answer = route(&stack, &first_turn(&format!("ghost-{i}")));
        assert!(!candidates(&answer).contains(&ghost), "{answer}");
    }
}

#[test]
fn an_indexer_restarted_under_load_relearns_every_engine_within_seconds() {
    indexer_restarted_under_load(KvWiring::IndexerConnects);
}

/// The same with the engines connecting to the indexer (the seed's wiring): they re-dial
/// the restarted indexer on their own, and it asks every listed engine's replay socket at
/// start.
#[test]
fn an_indexer_restarted_under_load_relearns_engines_that_connect_to_it() {
    indexer_restarted_under_load(KvWiring::EnginesConnect);
}

fn indexer_restarted_under_load(wiring: KvWiring) {
    let mut stack = wired_stack(wiring, 3, &[]);
    let tags: Vec<String> = (0..9).map(|i| format!("restart-{i}")).collect();
    let engines = first_turns(&stack, &tags);
    wait_learned(&stack, &tags, &engines, Duration::from_secs(10));

    let fresh: Vec<Value> = (0..50).map(|i| first_turn(&format!("load-{i}"))).collect();
    let load = Load::start(stack.listen(), fresh, 10);
    std::thread::sleep(Duration::from_secs(1));
    stack.kill_indexer();
    std::thread::sleep(Duration::from_secs(1));
    stack.restart_indexer().expect("indexer restart");
    let relearned = wait_learned(&stack, &tags, &engines, Duration::from_secs(10));
    // Learned from the engines' replay buffers (nothing else would tell the new indexer
    // about the first turns): one re-learning per engine dialed.
    let metrics = http::send(stack.indexer_addr, "GET", "/metrics", &[], b"").expect("metrics");
    let relearns = String::from_utf8_lossy(&metrics.body)
        .lines()
        .find_map(|l| l.strip_prefix("kvroute_kv_relearns_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(relearns >= Some(3.0), "re-learnings: {relearns:?}");
    assert!(
        relearned <= Duration::from_secs(5),
        "re-learned in {relearned:?}"
    );
    // Through Envoy: every second turn on its first turn's engine, on cached blocks.
    for (tag, engine) in tags.iter().zip(&engines) {
        let s = send(stack.listen(), &second_turn(tag));
        assert_eq!(s.status, 200, "{s:?}");
        assert_eq!(
            s.served_by.as_deref(),
            Some(engine.as_str()),
            "{tag}: {s:?}"
        );
        assert!(s.matched_blocks > 0 && s.cached_tokens > 0, "{tag}: {s:?}");
    }
    let samples = load.stop();
    // The filter fails open while the indexer is away: no client sees it.
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        samples.len()
    );
    eprintln!(
        "indexer re-learned in {relearned:?}; {} requests, 0 failed",
        samples.len()
    );
}
