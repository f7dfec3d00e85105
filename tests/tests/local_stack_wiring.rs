//! `Stack` with simulated engines wired the other way: every engine binds its PUB and
//! replay sockets and speaks vLLM 0.10's arrays, the indexer dials them, and it hashes
//! with another seed than the engines (so it re-keys every event from its tokens). The
//! seed's round2 still follows round1 through the real Envoy and filter, with the cached
//! tokens real vLLM reported.

use kvroute_harness::sim_engine::{cached_tokens, seed_requests};
use kvroute_harness::stack::{kvroute_serve, IndexerSpec, KvWiring, SimEngineOptions, Stack};

#[test]
fn bound_engines_speaking_arrays_route_round2_to_round1s_engine() {
    let mut sim = SimEngineOptions::new(3);
    sim.wiring = KvWiring::IndexerConnects;
    sim.kv_wire = "0.10".into();
    sim.replay = true;
    sim.hash_seed = Some("42".into());
    let stack = Stack::builder()
        .qwen3()
        .sim_engines(sim)
        .indexer(IndexerSpec::Kvroute(kvroute_serve(&["--hash-seed", "7"])))
        .plugin(serde_json::json!({"hash_seed": "7"}))
        .start()
        .expect("stack");
    assert_eq!(stack.sim_engines.len(), 3);
    let requests = seed_requests().unwrap();
    let entry = |name: &str| requests.iter().find(|r| r["name"] == name).unwrap().clone();
    let r1 = stack.chat(&entry("round1")["request"]).unwrap();
    assert_eq!(r1.status, 200, "{}", stack.logs());
    let first = Stack::served_by(&r1).unwrap();
    assert!(stack.pods.iter().any(|p| p.to_string() == first));
    // round1's blocks reach the index through the engine's bound socket, re-keyed.
    let learned = kvroute_harness::process::wait_until(std::time::Duration::from_secs(5), || {
        kvroute_harness::http::send(stack.indexer_addr, "GET", "/v1/pods", &[], b"")
            .and_then(|r| r.json())
            .is_ok_and(|p| {
                p["pods"].as_array().is_some_and(|all| {
                    all.iter().any(|p| {
                        p["endpoint"] == first.as_str()
                            && p["key_mode"] == "rekey"
                            && p["gpu_blocks"].as_u64() > Some(0)
                    })
                })
            })
    });
    assert!(learned, "{}", stack.logs());
    let round2 = entry("round2");
    let r2 = stack.chat(&round2["request"]).unwrap();
    assert_eq!(Stack::served_by(&r2).unwrap(), first, "{}", stack.logs());
    assert_eq!(r2.header("x-kvroute-endpoint"), Some(first.as_str()));
    assert_eq!(
        cached_tokens(&r2.json().unwrap()),
        round2["cached_tokens"].as_u64()
    );
}
