//! Precise mode end to end: the filter, inside the real Envoy with the real Qwen3
//! tokenizer fetched over HTTP, sends the indexer exactly the block hashes a real vLLM 0.32
//! published for the same requests (testdata/vllm-0.32: chat and completions requests,
//! `PYTHONHASHSEED=42`, block size 64, a cache salt). The indexer here is the scripted
//! stand-in, which records what it is asked.

use kvroute_harness::scripted_indexer::RouteScript;
use kvroute_harness::stack::{IndexerSpec, Stack};

#[test]
fn the_filter_sends_the_hashes_vllm_published() {
    let captures = kvroute_testdata::vllm_requests();
    let run = &captures["runs"]["sha256_cbor_seed42"];
    assert_eq!(run["PYTHONHASHSEED"], "42");
    let stack = Stack::builder()
        .backends(3)
        .qwen3()
        .plugin(
            serde_json::json!({"hash_seed": "42", "block_size": 64, "hash_scheme": "sha256_cbor"}),
        )
        .indexer(IndexerSpec::Scripted(RouteScript::CycleBackends))
        .start()
        .expect("stack");
    let indexer = stack.scripted_indexer().expect("scripted");
    let mut checked = 0;
    for req in captures["requests"].as_array().expect("requests") {
        let endpoint = req["endpoint"].as_str().unwrap_or_default();
        let name = req["name"].as_str().unwrap_or_default();
        let Some(expected) = run["prompt_block_hashes"].get(name) else {
            continue;
        };
        if !endpoint.starts_with("/v1/") {
            continue;
        }
        let body = req["request"].to_string();
        let r = stack
            .send(
                "POST",
                endpoint,
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
            .expect("send");
        assert_eq!(r.status, 200, "{name}");
        assert!(
            r.header("x-kvroute-endpoint").is_some(),
            "{name} not routed\n{}",
            stack.logs()
        );
        let call = indexer
            .calls()
            .into_iter()
            .rev()
            .find(|c| c.path == "/v1/route")
            .expect("route call");
        let sent: serde_json::Value = serde_json::from_slice(&call.body).expect("route body");
        assert_eq!(sent["model"], "Qwen3-32B");
        assert_eq!(
            &sent["block_hashes"], expected,
            "{name}: block hashes differ from vLLM's"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} captured requests checked");
    assert_eq!(
        stack.envoy.filter_stat("kvroute_routed").expect("stat"),
        checked
    );
}
