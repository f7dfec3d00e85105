//! The simulated vLLM engine (`kvroute-engine-sim`, a real process) seen from a client:
//! the prefix cache reported as vLLM reports it (`usage.prompt_tokens_details.cached_tokens`),
//! checked against real vLLM 0.32's answers to the seed's requests and against the blocks
//! the shared crate computes; streaming with the usage chunk; vLLM's metric names; OpenAI
//! errors for bad bodies.

use std::net::Ipv4Addr;

use kvroute_blockhash::{Endpoint, HashConfig, Request, RequestExtras, RequestKeys};
use kvroute_harness::http;
use kvroute_harness::kv_engine::KvModel;
use kvroute_harness::paths;
use kvroute_harness::ports::free_port;
use kvroute_harness::sim_engine::{
    cached_tokens, seed_requests, sse_events, SimEngine, SimEngineArgs,
};
use serde_json::{json, Value};

fn start(extra: &[(&str, &str)]) -> SimEngine {
    let dir = std::env::temp_dir();
    let mut args = SimEngineArgs::qwen3(Ipv4Addr::LOCALHOST, free_port().unwrap())
        .time_scale(50.0)
        .hash_seed("42");
    for (flag, value) in extra {
        args = args.arg(flag, value);
    }
    SimEngine::start(&args, &dir).unwrap()
}

fn long_prompt() -> String {
    (0..300)
        .map(|i| {
            format!(
                "Record {i}: customer {} ordered {} units of part {}.\n",
                i * 7 % 101,
                i % 13 + 1,
                i * 31 % 997
            )
        })
        .collect()
}

/// Prompt token count by the shared crate, independently of the engine.
fn prompt_tokens(endpoint: Endpoint, body: &Value) -> usize {
    let model = KvModel::load(
        "Qwen3-32B",
        &paths::tokenizers_dir().join("qwen3"),
        HashConfig::default(),
    )
    .unwrap();
    let request = Request::parse(body.to_string().as_bytes(), Some(endpoint)).unwrap();
    RequestKeys::compute(
        &model.encoder,
        &model.hasher,
        &request,
        &RequestExtras::default(),
    )
    .unwrap()
    .prompt_tokens
}

#[test]
fn the_seed_requests_get_the_cached_tokens_real_vllm_reported() {
    // The capture's engine: num_gpu_blocks_override x block_size tokens of KV cache.
    let run: Value = serde_json::from_slice(
        &std::fs::read(
            paths::repo_root().join("testdata/vllm-0.32/sha256_cbor_seed42/run_config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let capacity =
        run["num_gpu_blocks_override"].as_u64().unwrap() * run["block_size"].as_u64().unwrap();
    let engine = start(&[("--kv-capacity-tokens", &capacity.to_string())]);
    let mut checked = 0;
    for r in seed_requests().unwrap() {
        let name = r["name"].as_str().unwrap();
        let path = r["endpoint"].as_str().unwrap();
        if path == "/reset_prefix_cache" {
            let reset = http::post_json(engine.addr, path, b"").unwrap();
            assert_eq!(reset.json().unwrap()["cleared"], true);
            continue;
        }
        let answer = engine.post(path, &r["request"]).unwrap();
        assert_eq!(
            answer.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        let answer = answer.json().unwrap();
        assert_eq!(
            answer["usage"]["prompt_tokens"], r["prompt_tokens"],
            "{name}"
        );
        assert_eq!(
            cached_tokens(&answer),
            r["cached_tokens"].as_u64(),
            "{name}"
        );
        assert_eq!(
            answer["usage"]["completion_tokens"], r["request"]["max_tokens"],
            "{name}"
        );
        checked += 1;
    }
    // round2 shares round1's first blocks: the one hit that is not zero, and it is.
    assert!(checked >= 10, "only {checked} requests");
}

#[test]
fn a_long_prompt_streamed_twice_is_cached_in_whole_blocks() {
    let engine = start(&[]);
    let body = json!({
        "model": "Qwen3-32B",
        "messages": [{"role": "user", "content": long_prompt()}],
        "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true},
    });
    let expected_prompt = prompt_tokens(Endpoint::ChatCompletions, &body);
    assert!(expected_prompt > 3_000, "{expected_prompt}");
    let mut cached = Vec::new();
    for _ in 0..2 {
        let r = engine.post("/v1/chat/completions", &body).unwrap();
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream"));
        let (events, done) = sse_events(&r.body).unwrap();
        assert!(done, "no [DONE]");
        assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
        let text_chunks: Vec<&Value> = events
            .iter()
            .filter(|e| {
                e["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
            })
            .collect();
        assert_eq!(text_chunks.len(), 5);
        assert_eq!(text_chunks[4]["choices"][0]["finish_reason"], "length");
        let usage = events.last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["prompt_tokens"], expected_prompt);
        assert_eq!(usage["usage"]["completion_tokens"], 5);
        cached.push(cached_tokens(usage).unwrap() as usize);
    }
    // vLLM reuses whole blocks within all but the last prompt token.
    assert_eq!(cached, vec![0, (expected_prompt - 1) / 64 * 64]);

    // The counters count exactly that, under vLLM's names and labels.
    let page = engine.metrics().unwrap();
    let value = |name: &str| -> f64 {
        page.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains("model_name=\"Qwen3-32B\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{page}"))
    };
    assert_eq!(
        value("vllm:prefix_cache_queries_total"),
        2.0 * expected_prompt as f64
    );
    assert_eq!(value("vllm:prefix_cache_hits_total"), cached[1] as f64);
    assert_eq!(value("vllm:num_requests_running"), 0.0);
    assert_eq!(value("vllm:num_requests_waiting"), 0.0);
    assert!(value("vllm:kv_cache_usage_perc") >= 0.0);
    assert!(page.contains("# TYPE vllm:prefix_cache_hits counter"));
    // Both first tokens are in vLLM's TTFT histogram, in vLLM's buckets.
    assert_eq!(value("vllm:time_to_first_token_seconds_count"), 2.0);
    assert!(value("vllm:time_to_first_token_seconds_sum") > 0.0);
    assert!(page.contains("# TYPE vllm:time_to_first_token_seconds histogram"));
    assert!(page.contains("le=\"2560.0\""), "{page}");
}

#[test]
fn completions_models_and_token_ids_look_like_vllm() {
    let engine = start(&[("--default-max-tokens", "3")]);
    let body = json!({"model": "Qwen3-32B", "prompt": long_prompt(), "return_token_ids": true});
    let r = engine
        .post("/v1/completions", &body)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["object"], "text_completion");
    assert_eq!(r["usage"]["completion_tokens"], 3);
    let prompt_ids = r["choices"][0]["prompt_token_ids"].as_array().unwrap();
    assert_eq!(
        prompt_ids.len(),
        prompt_tokens(Endpoint::Completions, &body)
    );
    assert_eq!(r["choices"][0]["token_ids"].as_array().unwrap().len(), 3);
    let models = http::send(engine.addr, "GET", "/v1/models", &[], b"")
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(models["data"][0]["id"], "Qwen3-32B");
    let served = engine
        .post(
            "/v1/completions",
            &json!({"prompt": "hi", "max_completion_tokens": 2}),
        )
        .unwrap();
    assert_eq!(served.header("x-served-by"), Some(engine.name.as_str()));
    let streamed = engine
        .post(
            "/v1/completions",
            &json!({"prompt": "hi", "max_tokens": 4, "stream": true}),
        )
        .unwrap();
    let (chunks, done) = sse_events(&streamed.body).unwrap();
    assert!(done);
    assert_eq!(chunks.len(), 4, "no usage chunk unless asked");
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text.split_whitespace().count(), 4, "{text}");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
    assert_eq!(served.json().unwrap()["usage"]["completion_tokens"], 2);
}

#[test]
fn bad_requests_get_openai_errors_and_the_engine_keeps_serving() {
    let mut engine = start(&[("--max-model-len", "1000")]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("/v1/chat/completions", b"{not json".to_vec(), 400),
        ("/v1/chat/completions", b"[1, 2]".to_vec(), 400),
        (
            "/v1/chat/completions",
            br#"{"messages": "hi"}"#.to_vec(),
            400,
        ),
        (
            "/v1/chat/completions",
            br#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}"#.to_vec(),
            400,
        ),
        (
            "/v1/completions",
            br#"{"prompt": "hi", "stream": "yes"}"#.to_vec(),
            400,
        ),
        (
            "/v1/completions",
            br#"{"model": "other", "prompt": "hi"}"#.to_vec(),
            404,
        ),
        (
            "/v1/completions",
            json!({"prompt": long_prompt()}).to_string().into_bytes(),
            400,
        ),
        ("/v1/completions", Vec::new(), 400),
        (
            "/v1/completions",
            br#"{"prompt": "hi", "max_tokens": 18446744073709551615}"#.to_vec(),
            400,
        ),
        (
            "/v1/completions",
            br#"{"prompt": ["a", "b"]}"#.to_vec(),
            400,
        ),
        (
            "/v1/completions",
            br#"{"prompt": "hi", "session_id": 7}"#.to_vec(),
            400,
        ),
    ];
    for (path, body, status) in cases {
        let r = http::post_json(engine.addr, path, &body).unwrap();
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&body));
        let e = r.json().unwrap();
        assert_eq!(e["error"]["code"], status);
        assert!(e["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    assert!(engine.is_running());
    let ok = engine
        .post("/v1/completions", &json!({"prompt": "hi"}))
        .unwrap();
    assert_eq!(ok.status, 200);
}

#[test]
fn a_10000_token_prompt_takes_the_calibrated_time_divided_by_the_time_scale() {
    // 4.3 s cold and 0.6 s cached at real speed: the seed's single-instance figures, the
    // profile kept under that name.
    let scale = 10.0;
    let engine = SimEngine::start(
        &SimEngineArgs::qwen3(Ipv4Addr::LOCALHOST, free_port().unwrap())
            .time_scale(scale)
            .arg("--profile", "seed-single-instance"),
        &std::env::temp_dir(),
    )
    .unwrap();
    let ids: Vec<u32> = (0..10_000u32).map(|i| 1000 + i % 30_000).collect();
    let body = json!({"model": "Qwen3-32B", "prompt": ids, "max_tokens": 1});
    let cold = engine.post("/v1/completions", &body).unwrap();
    let warm = engine.post("/v1/completions", &body).unwrap();
    assert_eq!(cached_tokens(&warm.json().unwrap()), Some(9_984));
    let (cold, warm) = (cold.elapsed.as_secs_f64(), warm.elapsed.as_secs_f64());
    // Never faster than the model; slower only by the machine's own overheads.
    assert!(
        cold >= 4.3 / scale * 0.95 && cold < 4.3 / scale + 0.5,
        "cold {cold}"
    );
    assert!(
        warm >= 0.6 / scale * 0.95 && warm < 0.6 / scale + 0.3,
        "warm {warm}"
    );
}
