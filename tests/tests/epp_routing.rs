//! The endpoint picker path end to end: the real Envoy with its ext_proc filter
//! (`envoy/epp.yaml.tmpl`) asking the real `kvroute serve --epp-listen` for every request,
//! with the real Qwen3 tokenizer. The seed's round1/round2 on simulated vLLM engines reuse
//! exactly real vLLM's cached tokens; 8 backends x 20 long prefixes follow their prefix;
//! streams pass unharmed; with the picker killed every request is still served.

use std::collections::HashMap;
use std::time::Duration;

use kvroute_harness::http;
use kvroute_harness::prompts::customer_handbook;
use kvroute_harness::sim_engine::{cached_tokens, seed_request, seed_requests, sse_events};
use kvroute_harness::stack::{
    kvroute_serve, EppOptions, IndexerSpec, KvWiring, SimEngineOptions, Stack, QWEN3_MODEL,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// `kvroute_epp_requests_total{reason="<outcome>"}` from the indexer's /metrics.
fn epp_count(stack: &Stack, outcome: &str) -> u64 {
    stack
        .indexer_metric(&format!(
            "kvroute_epp_requests_total{{reason=\"{outcome}\"}}"
        ))
        .expect("metrics")
}

#[test]
fn seed_round2_follows_round1_through_the_picker_with_vllms_cached_tokens() {
    let mut sim = SimEngineOptions::new(3);
    sim.hash_seed = Some("42".into());
    sim.wiring = KvWiring::EnginesConnect;
    let stack = Stack::builder()
        .qwen3()
        .sim_engines(sim)
        .indexer(IndexerSpec::Kvroute(kvroute_serve(&["--hash-seed", "42"])))
        .epp(EppOptions::default())
        .start()
        .expect("stack");
    let real = seed_requests().expect("captures");
    let real_of = |name: &str| real.iter().find(|r| r["name"] == name).expect(name).clone();

    let r1 = stack
        .chat(&seed_request("round1").unwrap())
        .expect("round1");
    assert_eq!(r1.status, 200, "{}", stack.logs());
    let first = Stack::served_by(&r1).expect("served");
    assert_eq!(cached_tokens(&r1.json().unwrap()), Some(0));
    assert!(stack.wait_for_blocks(&first), "{}", stack.logs());

    let r2 = stack
        .chat(&seed_request("round2").unwrap())
        .expect("round2");
    assert_eq!(r2.status, 200, "{}", stack.logs());
    assert_eq!(Stack::served_by(&r2).unwrap(), first, "{}", stack.logs());
    let answer = r2.json().unwrap();
    assert_eq!(
        answer["usage"]["prompt_tokens"],
        real_of("round2")["prompt_tokens"]
    );
    assert_eq!(
        cached_tokens(&answer),
        real_of("round2")["cached_tokens"].as_u64()
    );
    assert!(cached_tokens(&answer) > Some(0));

    // The same request streamed: same engine, every event intact up to [DONE].
    let mut streamed = seed_request("round2").unwrap();
    streamed["stream"] = serde_json::json!(true);
    streamed["stream_options"] = serde_json::json!({"include_usage": true});
    let r3 = stack.chat(&streamed).expect("stream");
    assert_eq!(r3.status, 200);
    assert_eq!(Stack::served_by(&r3).unwrap(), first);
    let (events, done) = sse_events(&r3.body).expect("sse");
    assert!(done, "stream cut: {}", String::from_utf8_lossy(&r3.body));
    assert!(events.len() > 2);
    let usage = events
        .iter()
        .rev()
        .find(|e| e["usage"].is_object())
        .expect("usage chunk");
    assert!(cached_tokens(usage) >= real_of("round2")["cached_tokens"].as_u64());

    assert_eq!(epp_count(&stack, "routed"), 3, "{}", stack.logs());
}

fn ask(stack: &Stack, customer: u64, question: &str) -> http::Response {
    let body = serde_json::json!({
        "model": QWEN3_MODEL, "max_tokens": 16,
        "messages": [
            {"role": "system", "content": customer_handbook(customer)},
            {"role": "user", "content": question},
        ],
    });
    let r = stack.chat(&body).expect("request");
    assert_eq!(r.status, 200, "{}", stack.logs());
    r
}

/// What the engine was told by the picker (the GIE header, first endpoint).
fn picked(stack: &Stack, backend: &str, nth: usize) -> Option<String> {
    let b = stack.backends.iter().find(|b| b.name == backend)?;
    let hit = b.hits().into_iter().nth(nth)?;
    hit.headers
        .iter()
        .find(|(k, _)| k == "x-gateway-destination-endpoint")
        .map(|(_, v)| v.split(',').next().unwrap_or_default().to_owned())
}

#[test]
fn eight_backends_twenty_prefixes_follow_their_prefix_through_the_picker() {
    let stack = picker_stack(8);
    let mut rng = StdRng::seed_from_u64(11);
    let mut customers: Vec<u64> = (100..120).collect();
    customers.shuffle(&mut rng);
    let mut holder: HashMap<u64, String> = HashMap::new();
    for &c in &customers {
        let r = ask(
            &stack,
            c,
            &format!("First question of customer {c}: refunds?"),
        );
        holder.insert(c, Stack::served_by(&r).expect("served"));
    }
    let used: std::collections::BTreeSet<&String> = holder.values().collect();
    assert!(
        used.len() >= 2,
        "first requests all on one backend: {used:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    customers.shuffle(&mut rng);
    for &c in &customers {
        let r = ask(
            &stack,
            c,
            &format!("Second question of customer {c}: pallets?"),
        );
        assert_eq!(
            Stack::served_by(&r).expect("served"),
            holder[&c],
            "customer {c}\n{}",
            stack.logs()
        );
    }
    assert_eq!(epp_count(&stack, "routed"), 40, "{}", stack.logs());
    // The engines saw the picker's choice as the GIE header, naming themselves first.
    for b in &stack.backends {
        for (i, hit) in b.hits().iter().enumerate() {
            if hit.path.ends_with("/chat/completions") {
                let addr = b.addr.to_string();
                assert_eq!(picked(&stack, &b.name, i).as_deref(), Some(addr.as_str()));
            }
        }
    }
}

#[test]
fn with_the_picker_killed_every_request_is_still_served() {
    let mut stack = picker_stack(3);
    let r = ask(&stack, 1, "before");
    assert!(Stack::served_by(&r).is_ok());
    assert_eq!(epp_count(&stack, "routed"), 1);
    stack.kill_indexer();
    for i in 0..6 {
        let started = std::time::Instant::now();
        let r = ask(&stack, i, "after the picker died");
        assert!(Stack::served_by(&r).is_ok());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
    let served: usize = stack.backends.iter().map(|b| b.hit_count()).sum();
    assert_eq!(served, 7);
}

/// `backends` engines publishing KV events, the real `kvroute serve`, and Envoy asking it
/// as the endpoint picker.
fn picker_stack(backends: usize) -> Stack {
    Stack::builder()
        .backends(backends)
        .qwen3()
        .kv_engines()
        .indexer(IndexerSpec::Kvroute(kvroute_serve(&[])))
        .epp(EppOptions::default())
        .start()
        .expect("stack")
}
