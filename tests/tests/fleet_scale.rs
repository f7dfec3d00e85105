//! One indexer, 100 engines (issue 13: the index used to stop at 64 engines, and the ones
//! past it were never routed to). The real Envoy with the filter, the real `kvroute
//! serve`, the real Qwen3 tokenizer, and 100 minimal engines on their own loopback IPs,
//! each publishing vLLM-format KV events of the prompts it serves. Every engine first
//! caches its own customer's prefix (a request sent to it directly, as if routed there
//! earlier); then each customer's follow-up, through Envoy, must land on that engine.

use std::time::Duration;

use kvroute_harness::http;
use kvroute_harness::process::wait_until;
use kvroute_harness::stack::{kvroute_serve, IndexerSpec, Stack, QWEN3_MODEL};

const ENGINES: usize = 100;

/// Customer `c`'s conversation: its own system prompt (about 10 blocks), then `question`.
fn chat(c: usize, question: &str) -> serde_json::Value {
    let handbook: Vec<String> = (0..120)
        .map(|i| format!("rule {i} of customer {c}: keep item {} dry.", c * 131 + i))
        .collect();
    serde_json::json!({
        "model": QWEN3_MODEL, "max_tokens": 16,
        "messages": [
            {"role": "system", "content": format!("Customer {c} handbook. {}", handbook.join(" "))},
            {"role": "user", "content": question},
        ],
    })
}

#[test]
fn a_hundred_engines_every_prefix_is_followed() {
    let stack = Stack::builder()
        .backends(ENGINES)
        .qwen3()
        .kv_engines()
        .indexer(IndexerSpec::Kvroute(kvroute_serve(&[])))
        .start()
        .expect("stack");
    for (c, pod) in stack.pods.iter().enumerate() {
        let body = chat(c, "First question: what is the refund policy?").to_string();
        let r = http::post_json(*pod, "/v1/chat/completions", body.as_bytes()).expect("direct");
        assert_eq!(r.status, 200);
    }
    // Every engine's blocks indexed (events travel over ZeroMQ).
    let all_indexed = wait_until(Duration::from_secs(20), || {
        http::send(stack.indexer_addr, "GET", "/v1/pods", &[], b"")
            .and_then(|r| r.json())
            .is_ok_and(|pods| {
                pods["pods"].as_array().is_some_and(|all| {
                    all.len() == ENGINES && all.iter().all(|p| p["gpu_blocks"].as_u64() >= Some(5))
                })
            })
    });
    assert!(all_indexed, "not every engine indexed\n{}", stack.logs());
    // Follow-ups in another order than the engines': each finds its customer's engine.
    for i in 0..ENGINES {
        let c = (i * 37) % ENGINES;
        let r = stack
            .chat(&chat(c, "Second question: and for pallets?"))
            .expect("follow-up");
        assert_eq!(r.status, 200, "{}", stack.logs());
        assert_eq!(
            Stack::served_by(&r).expect("served"),
            format!("backend-{c}"),
            "customer {c}\n{}",
            stack.logs()
        );
        let matched: u64 = r
            .header("x-kvroute-matched-blocks")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(matched >= 5, "customer {c}: matched {matched} blocks");
    }
}
