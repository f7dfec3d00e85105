//! The filter as Envoy starts it: tokenizers are fetched when the plugin starts, so the
//! first request of every worker is routed; the configuration takes what a person writes
//! (`"hash_seed": 42`); and a configuration the plugin cannot use loads anyway, routing
//! nothing, counted and logged, instead of failing every request closed.

use std::time::Duration;

use kvroute_harness::process::wait_until;
use kvroute_harness::scripted_indexer::RouteScript;
use kvroute_harness::stack::{IndexerSpec, Stack, QWEN3_MODEL};

const CONCURRENCY: usize = 2;

fn chat(i: usize) -> serde_json::Value {
    serde_json::json!({"model": QWEN3_MODEL, "messages": [{"role": "user", "content": format!("first question {i}")}]})
}

fn stack(plugin: serde_json::Value) -> Stack {
    Stack::builder()
        .backends(2)
        .qwen3()
        .concurrency(CONCURRENCY)
        .plugin(plugin)
        .indexer(IndexerSpec::Scripted(RouteScript::CycleBackends))
        // No warm-up requests: whatever loads, loads without traffic.
        .no_tokenizer_wait()
        .start()
        .expect("stack")
}

fn loads(stack: &Stack) -> u64 {
    stack
        .envoy
        .filter_stat("kvroute_tokenizer_loads")
        .unwrap_or(0)
}

#[test]
fn tokenizers_load_at_start_and_the_first_requests_are_routed() {
    // `hash_seed` as a JSON number, as people write PYTHONHASHSEED.
    let stack = stack(serde_json::json!({"hash_seed": 42, "call_timeout_ms": "200"}));
    // Every worker's VM (and the main thread's) loads before any request is sent.
    let workers = CONCURRENCY as u64;
    assert!(
        wait_until(Duration::from_secs(60), || loads(&stack) > workers),
        "{} tokenizer loads without traffic\n{}",
        loads(&stack),
        stack.logs()
    );
    for i in 0..CONCURRENCY * 2 {
        let r = stack.chat(&chat(i)).expect("request");
        assert_eq!(r.status, 200, "{}", stack.logs());
        assert!(
            r.header("x-kvroute-endpoint").is_some(),
            "request {i} went unrouted\n{}",
            stack.logs()
        );
    }
    assert_eq!(
        stack
            .envoy
            .filter_stat("kvroute_fail_open_tokenizer_not_loaded")
            .expect("stat"),
        0
    );
}

#[test]
fn with_preload_off_nothing_loads_until_traffic() {
    // The opt-out keeps the old behaviour, which is what makes the test above meaningful.
    let stack = stack(serde_json::json!({"preload_tokenizers": false}));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(loads(&stack), 0, "{}", stack.logs());
    let r = stack.chat(&chat(0)).expect("request");
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-kvroute-endpoint").is_none(),
        "first request unrouted"
    );
    assert!(wait_until(Duration::from_secs(60), || loads(&stack) >= 1));
}

#[test]
fn an_unusable_configuration_loads_inert_and_serves_everything() {
    let stack = stack(serde_json::json!({"hash_scheme": "md5", "debug_headers": true}));
    let n = 4;
    for i in 0..n {
        let r = stack.chat(&chat(i)).expect("request");
        assert_eq!(r.status, 200, "{}", stack.logs());
        Stack::served_by(&r).expect("served by a pod");
        assert!(r.header("x-kvroute-endpoint").is_none());
    }
    // Untouched requests (not a routed path) are not counted.
    let r = stack.send("GET", "/v1/models", &[], b"").expect("get");
    assert_eq!(r.status, 200);
    assert_eq!(
        stack
            .envoy
            .filter_stat("kvroute_fail_open_config_invalid")
            .expect("stat"),
        n as u64
    );
    let log = stack.envoy.log_tail();
    assert!(
        log.contains("md5") && log.contains("routes nothing"),
        "the reason is logged:\n{log}"
    );
    assert!(
        stack
            .scripted_indexer()
            .expect("scripted")
            .calls()
            .is_empty(),
        "an inert filter calls nobody"
    );
}
