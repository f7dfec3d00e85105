//! The whole chain against real vLLM: every request of the vLLM 0.32 capture set, parsed,
//! rendered with the real Qwen3 template, tokenized with the real Qwen3 tokenizer and
//! hashed, must give vLLM's exact prompt token ids and the block hashes it published.

use kvroute_blockhash::request::Endpoint;
use kvroute_blockhash::{
    BlockHasher, HashConfig, HashScheme, PromptEncoder, Request, RequestExtras, RequestKeys,
};

fn qwen3(cache_bytes: usize) -> PromptEncoder {
    let dir = kvroute_testdata::tokenizer_dir("qwen3");
    PromptEncoder::with_cache_bytes(
        &std::fs::read(dir.join("tokenizer.json")).expect("run scripts/setup.sh"),
        &std::fs::read(dir.join("tokenizer_config.json")).unwrap(),
        None,
        cache_bytes,
    )
    .unwrap()
}

#[test]
fn captured_requests_give_vllms_tokens_and_hashes() {
    let doc = kvroute_testdata::vllm_requests();
    let run = &doc["runs"]["sha256_cbor_seed42"];
    let hasher = BlockHasher::new(HashConfig {
        scheme: HashScheme::Sha256Cbor,
        block_size: 64,
        seed: Some("42".into()),
    });
    for cache_bytes in [0, 1 << 20] {
        let encoder = qwen3(cache_bytes);
        let mut checked = 0;
        for r in doc["requests"].as_array().unwrap() {
            let Some(body) = r.get("request") else {
                continue;
            };
            let endpoint = Endpoint::from_path(r["endpoint"].as_str().unwrap());
            let request = Request::parse(body.to_string().as_bytes(), endpoint).unwrap();
            let extras = RequestExtras {
                cache_salt: request.cache_salt.clone(),
                ..Default::default()
            };
            let keys = RequestKeys::compute(&encoder, &hasher, &request, &extras).unwrap();
            let want_ids: Vec<u32> = r["prompt_token_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let name = r["name"].as_str().unwrap();
            assert_eq!(keys.token_ids, want_ids, "token ids of {name}");
            let want: Vec<u64> = run["prompt_block_hashes"][name]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(keys.block_hashes, want, "block hashes of {name}");
            checked += 1;
        }
        assert!(checked >= 10);
    }
}
