//! Two indexer replicas behind the filter's indexer cluster (issue 13): the engines bind
//! their KV-event sockets and both `kvroute serve` replicas dial every engine, so each holds
//! the full index and answers alone. One replica is killed while clients keep sending second
//! turns through the real Envoy and filter: no client request fails, and every second turn
//! still lands on the engine holding its first turn (the filter asks the other replica when
//! its call finds a dead one; Envoy's outlier detection and /readyz check take it out).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvroute_harness::http;
use kvroute_harness::process::wait_until;
use kvroute_harness::stack::{
    kvroute_serve, IndexerSpec, KvWiring, SimEngineOptions, Stack, QWEN3_MODEL,
};

const ENGINES: usize = 4;
const CUSTOMERS: usize = 8;
const CLIENTS: usize = 3;
/// Second turns answered before the kill, and after it.
const BEFORE_KILL: usize = 20;
const AFTER_KILL: usize = 60;

/// Customer `c`'s conversation: its own system prompt (about 10 blocks), then `question`.
fn chat(c: usize, question: &str) -> serde_json::Value {
    let handbook: Vec<String> = (0..120)
        .map(|i| format!("rule {i} of customer {c}: keep item {} dry.", c * 131 + i))
        .collect();
    serde_json::json!({
        "model": QWEN3_MODEL, "max_tokens": 8,
        "messages": [
            {"role": "system", "content": format!("Customer {c} handbook. {}", handbook.join(" "))},
            {"role": "user", "content": question},
        ],
    })
}

/// One second turn as the client saw it.
struct Turn {
    customer: usize,
    status: u16,
    served_by: Option<String>,
    routed_to: Option<String>,
    after_kill: bool,
}

#[test]
fn a_replica_killed_under_load_costs_no_request_and_no_routing() {
    let mut sim = SimEngineOptions::new(ENGINES);
    sim.wiring = KvWiring::IndexerConnects;
    let mut stack = Stack::builder()
        .qwen3()
        .sim_engines(sim)
        .indexer(IndexerSpec::Kvroute(kvroute_serve(&[])))
        .indexer_replicas(2)
        // The 50 ms default is a production figure; this test is about a dead replica, not
        // about the latency of a loaded 2-core CI machine running everything at once.
        .plugin(serde_json::json!({"call_timeout_ms": 1000}))
        .start()
        .expect("stack");
    let replicas = stack.indexer_addrs();
    assert_eq!(replicas.len(), 2);
    // First turns, each sent straight to its engine (as if routed there earlier).
    let pods = stack.pods.clone();
    let owner = |c: usize| pods[c % ENGINES];
    for c in 0..CUSTOMERS {
        let body = chat(c, "First question: what is the refund policy?").to_string();
        let r = http::post_json(owner(c), "/v1/chat/completions", body.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{}", stack.logs());
    }
    // Both replicas learn every engine's blocks from the engines' own sockets.
    let indexed = wait_until(Duration::from_secs(20), || {
        replicas.iter().all(|addr| {
            http::send(*addr, "GET", "/v1/pods", &[], b"")
                .and_then(|r| r.json())
                .is_ok_and(|pods| {
                    pods["pods"].as_array().is_some_and(|all| {
                        all.len() == ENGINES
                            && all.iter().all(|p| p["gpu_blocks"].as_u64() >= Some(10))
                    })
                })
        })
    });
    assert!(indexed, "not every replica indexed\n{}", stack.logs());
    // Envoy's /readyz check found both replicas (the deployment's starting point).
    let healthy = wait_until(Duration::from_secs(10), || {
        stack
            .envoy
            .stat("cluster.kvroute_indexer.membership_healthy")
            .is_ok_and(|n| n == 2)
    });
    assert!(
        healthy,
        "Envoy never saw both replicas healthy\n{}",
        stack.logs()
    );

    // Calls so far (tokenizer fetches): only the second turns' calls count below.
    let calls_at_start = route_calls_per_replica(&stack);
    let listen = stack.listen();
    let turns = Arc::new(Mutex::new(Vec::<Turn>::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let (turns, killed, stop) = (turns.clone(), killed.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = k;
                while !stop.load(Ordering::Relaxed) {
                    let customer = (i * 5) % CUSTOMERS;
                    i += CLIENTS;
                    let after_kill = killed.load(Ordering::Relaxed);
                    let body = chat(customer, "Second question: and for pallets?").to_string();
                    let turn =
                        match http::post_json(listen, "/v1/chat/completions", body.as_bytes()) {
                            Ok(r) => Turn {
                                customer,
                                status: r.status,
                                served_by: r.header("x-served-by").map(str::to_string),
                                routed_to: r.header("x-kvroute-endpoint").map(str::to_string),
                                after_kill,
                            },
                            Err(_) => Turn {
                                customer,
                                status: 0,
                                served_by: None,
                                routed_to: None,
                                after_kill,
                            },
                        };
                    turns.lock().unwrap().push(turn);
                }
            })
        })
        .collect();
    let count = |after: bool| {
        turns
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.after_kill == after)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(false) < BEFORE_KILL && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The failover below starts from both replicas answering: Envoy's workers spread the
    // route calls over both. (A replica the workers left out would make the kill of the
    // other one cost every call until the ejection reached them.)
    let calls: Vec<u64> = route_calls_per_replica(&stack)
        .iter()
        .zip(&calls_at_start)
        .map(|(now, start)| now - start)
        .collect();
    assert!(
        calls.len() == 2 && calls.iter().all(|&n| n > 0),
        "Envoy did not spread the calls over both replicas before the kill: {calls:?}\n{}",
        stack.logs()
    );
    stack.kill_indexer_replica(0);
    killed.store(true, Ordering::Relaxed);
    while count(true) < AFTER_KILL && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    let turns = turns.lock().unwrap();
    // What the filter and Envoy's indexer cluster did, for failure messages.
    let filter_stats: String = stack
        .envoy
        .prometheus()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.contains("kvroute_fail_open")
                || l.contains("kvroute_indexer_retries")
                || l.contains("kvroute_routed")
                || l.contains("cluster_name=\"kvroute_indexer\"")
        })
        .filter(|l| !l.ends_with(" 0"))
        .collect::<Vec<_>>()
        .join("\n");
    let hosts = clusters_page(&stack);
    let filter_stats = format!(
        "{filter_stats}\n{}",
        hosts
            .lines()
            .filter(|l| l.starts_with("kvroute_indexer::1"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("{filter_stats}");
    let after = turns.iter().filter(|t| t.after_kill).count();
    assert!(
        after >= AFTER_KILL,
        "only {after} turns after the kill\n{}",
        stack.logs()
    );
    for t in turns.iter() {
        let engine = owner(t.customer).to_string();
        assert_eq!(
            t.status,
            200,
            "customer {}: client error\n{}",
            t.customer,
            stack.logs()
        );
        assert_eq!(
            (t.routed_to.as_deref(), t.served_by.as_deref()),
            (Some(engine.as_str()), Some(engine.as_str())),
            "customer {} (after kill: {}) not routed to its engine\n{filter_stats}\n{}",
            t.customer,
            t.after_kill,
            stack.logs()
        );
    }
    // The survivor answers alone from now on (the dead one is out of the cluster).
    let survivor = http::send(replicas[1], "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(survivor.status, 200);
    assert!(http::send(replicas[0], "GET", "/readyz", &[], b"").is_err());
    // Every decision the survivor made was released when its request ended, although while
    // both replicas were up the filter's completion went to whichever Envoy picked: the
    // filter sends each completion to every replica (`indexer_replicas`).
    let in_flight = || -> u64 {
        http::send(replicas[1], "GET", "/v1/pods", &[], b"")
            .and_then(|r| r.json())
            .map(|pods| {
                pods["pods"].as_array().map_or(0, |all| {
                    all.iter()
                        .map(|p| p["load"]["in_flight"].as_u64().unwrap_or(0))
                        .sum()
                })
            })
            .unwrap_or(u64::MAX)
    };
    assert!(
        wait_until(Duration::from_secs(5), || in_flight() == 0),
        "the survivor still counts {} decisions in flight after the last request ended",
        in_flight()
    );
}

/// Envoy's `/clusters` page: every host's counters and health flags.
fn clusters_page(stack: &Stack) -> String {
    http::send(stack.envoy.admin, "GET", "/clusters", &[], b"")
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .unwrap_or_default()
}

/// Requests Envoy sent to each indexer replica so far (its `/clusters` counters).
fn route_calls_per_replica(stack: &Stack) -> Vec<u64> {
    clusters_page(stack)
        .lines()
        .filter(|l| l.starts_with("kvroute_indexer::") && l.contains("::rq_total::"))
        .filter_map(|l| l.rsplit("::").next()?.parse().ok())
        .collect()
}
