//! Precise routing end to end: the real Envoy with the filter, the real `kvroute serve`,
//! the real Qwen3 tokenizer, and backends that publish vLLM-format KV events of every
//! prompt they serve. Follow-up requests must land on the backend that holds their prefix.

use std::collections::HashMap;
use std::time::Duration;

use kvroute_harness::paths;
use kvroute_harness::prompts::customer_handbook as prefix;
use kvroute_harness::stack::{kvroute_serve, IndexerSpec, Stack, QWEN3_MODEL};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

fn capture(name: &str) -> serde_json::Value {
    let all: serde_json::Value = serde_json::from_slice(
        &std::fs::read(paths::repo_root().join("testdata/vllm-0.32/requests.json")).expect("read"),
    )
    .expect("json");
    let req = all["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .find(|r| r["name"] == name)
        .expect(name);
    let mut body = req["request"].clone();
    // As in the seed's "Verifying Deployment": streamed, with usage.
    body["stream"] = serde_json::json!(true);
    body["stream_options"] = serde_json::json!({"include_usage": true});
    body
}

fn matched(r: &kvroute_harness::http::Response) -> u64 {
    r.header("x-kvroute-matched-blocks")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn seed_round2_follows_round1_and_the_killed_indexer_fails_open() {
    let mut stack = Stack::builder()
        .backends(3)
        .qwen3()
        .kv_engines()
        .indexer(IndexerSpec::Kvroute(kvroute_serve(&[])))
        .start()
        .expect("stack");
    let r1 = stack.chat(&capture("round1")).expect("round1");
    assert_eq!(r1.status, 200, "{}", stack.logs());
    let first = Stack::served_by(&r1).expect("served");
    assert!(
        r1.header("x-kvroute-endpoint").is_some(),
        "round1 not routed\n{}",
        stack.logs()
    );
    std::thread::sleep(Duration::from_millis(300));
    let r2 = stack.chat(&capture("round2")).expect("round2");
    assert_eq!(
        Stack::served_by(&r2).expect("served"),
        first,
        "round2 left round1's backend\n{}",
        stack.logs()
    );
    assert!(matched(&r2) >= 2, "round2 matched {} blocks", matched(&r2));

    // The indexer dies: every request is still served, none waits past the call timeout.
    stack.kill_indexer();
    for _ in 0..5 {
        let r = stack.chat(&capture("round2")).expect("request");
        assert_eq!(r.status, 200);
        assert!(
            r.elapsed < Duration::from_millis(50 + 150),
            "took {:?}",
            r.elapsed
        );
        assert!(r.header("x-kvroute-endpoint").is_none());
    }
    assert_eq!(
        stack
            .envoy
            .filter_stat("kvroute_fail_open_indexer_unavailable")
            .expect("stat"),
        5
    );
}

fn ask(stack: &Stack, customer: u64, question: &str) -> kvroute_harness::http::Response {
    let body = serde_json::json!({
        "model": QWEN3_MODEL, "max_tokens": 16,
        "messages": [
            {"role": "system", "content": prefix(customer)},
            {"role": "user", "content": question},
        ],
    });
    let r = stack.chat(&body).expect("request");
    assert_eq!(r.status, 200, "{}", stack.logs());
    r
}

#[test]
fn eight_backends_twenty_prefixes_each_follow_up_finds_its_prefix() {
    let stack = Stack::builder()
        .backends(8)
        .qwen3()
        .kv_engines()
        .indexer(IndexerSpec::Kvroute(kvroute_serve(&[])))
        .start()
        .expect("stack");
    let mut rng = StdRng::seed_from_u64(7);
    let mut customers: Vec<u64> = (0..20).collect();
    customers.shuffle(&mut rng);
    let mut holder: HashMap<u64, String> = HashMap::new();
    for &c in &customers {
        let r = ask(
            &stack,
            c,
            &format!("First question of customer {c}: what is the refund policy?"),
        );
        assert!(
            r.header("x-kvroute-endpoint").is_some(),
            "not routed\n{}",
            stack.logs()
        );
        holder.insert(c, Stack::served_by(&r).expect("served"));
    }
    let used: std::collections::BTreeSet<&String> = holder.values().collect();
    std::thread::sleep(Duration::from_millis(500));
    customers.shuffle(&mut rng);
    for &c in &customers {
        let r = ask(
            &stack,
            c,
            &format!("Second question of customer {c}: and for pallets?"),
        );
        assert_eq!(
            Stack::served_by(&r).expect("served"),
            holder[&c],
            "customer {c}\n{}",
            stack.logs()
        );
        assert!(
            matched(&r) >= 10,
            "customer {c}: matched {} blocks",
            matched(&r)
        );
    }
    assert!(
        used.len() >= 2,
        "first requests all went to one backend: {used:?}"
    );
}
