//! A picked pod that died costs no request, on both paths through the real Envoy: the seed's
//! round1 lands on an engine, the engine is SIGKILLed, and round2 (which the indexer still
//! sends to that engine: it holds round1's blocks, and nothing told the indexer yet) and a
//! burst after it are all served by the other engines. Envoy's connection-failure retry
//! leaves the dead pod: `kvroute_pods`' override_host policy takes the next listed pod, then
//! its fallback balancer, never a host already tried.

use kvroute_harness::sim_engine::seed_request;
use kvroute_harness::stack::{
    kvroute_serve, EppOptions, IndexerSpec, KvWiring, SimEngineOptions, Stack,
};

fn dead_pod_costs_no_request(epp: bool) {
    let mut sim = SimEngineOptions::new(3);
    sim.hash_seed = Some("42".into());
    sim.wiring = KvWiring::EnginesConnect;
    let mut builder = Stack::builder()
        .qwen3()
        .plugin(serde_json::json!({"hash_seed": "42"}))
        .sim_engines(sim)
        .indexer(IndexerSpec::Kvroute(kvroute_serve(&["--hash-seed", "42"])));
    if epp {
        builder = builder.epp(EppOptions::default());
    }
    let mut stack = builder.start().expect("stack");
    let r1 = stack
        .chat(&seed_request("round1").unwrap())
        .expect("round1");
    assert_eq!(r1.status, 200, "{}", stack.logs());
    let first = Stack::served_by(&r1).expect("served");
    assert!(stack.wait_for_blocks(&first), "{}", stack.logs());
    let dead = stack
        .pods
        .iter()
        .position(|p| p.to_string() == first)
        .expect("a stack engine");
    stack.sim_engines[dead].kill();

    let round2 = seed_request("round2").unwrap();
    for i in 0..10 {
        let r = stack.chat(&round2).expect("request");
        assert_eq!(
            r.status,
            200,
            "request {i}: {}\n{}",
            String::from_utf8_lossy(&r.body),
            stack.logs()
        );
        let served = Stack::served_by(&r).expect("served");
        assert_ne!(served, first, "request {i} served by the dead engine?");
    }
    // It was picked and refused: Envoy retried the connection elsewhere.
    let retried = stack
        .envoy
        .stat("cluster.kvroute_pods.upstream_rq_retry_success")
        .expect("stat");
    let refused = stack
        .envoy
        .stat("cluster.kvroute_pods.upstream_cx_connect_fail")
        .expect("stat");
    assert!(
        retried >= 1 && refused >= 1,
        "retried {retried}, refused {refused}"
    );
    if !epp {
        assert!(
            stack.envoy.filter_stat("kvroute_routed").expect("stat") >= 2,
            "the filter routed round2"
        );
    }
}

#[test]
fn wasm_path_a_dead_picked_pod_costs_no_request() {
    dead_pod_costs_no_request(false);
}

#[test]
fn picker_path_a_dead_picked_pod_costs_no_request() {
    dead_pod_costs_no_request(true);
}
