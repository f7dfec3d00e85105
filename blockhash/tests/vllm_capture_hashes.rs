//! The hasher against real vLLM: for every request of the vLLM 0.32 capture set (seed 42,
//! sha256_cbor), chaining vLLM's exact prompt token ids must give the block hashes vLLM
//! published, both as u64 (default wire) and as 32-byte digests (bytes wire).

use std::path::PathBuf;

use kvroute_blockhash::{BlockHasher, ExtraKeysStyle, HashConfig, HashScheme, RequestExtras};
use serde_json::Value;

fn captures() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/vllm-0.32/requests.json");
    let text = std::fs::read_to_string(&path).expect("testdata/vllm-0.32/requests.json");
    serde_json::from_str(&text).expect("requests.json parses")
}

fn hasher_for(run: &Value) -> BlockHasher {
    assert_eq!(run["prefix_caching_hash_algo"], "sha256_cbor");
    BlockHasher::new(HashConfig {
        scheme: HashScheme::Sha256Cbor,
        block_size: 64,
        seed: run["PYTHONHASHSEED"].as_str().map(str::to_owned),
    })
}

/// (request name, token ids, extras) for every captured request with a prompt.
fn captured_requests(doc: &Value) -> Vec<(String, Vec<u32>, RequestExtras)> {
    doc["requests"]
        .as_array()
        .expect("requests array")
        .iter()
        .filter_map(|r| {
            let ids = r.get("prompt_token_ids")?.as_array()?;
            let ids = ids
                .iter()
                .map(|v| v.as_u64().expect("token id") as u32)
                .collect();
            let extras = RequestExtras {
                cache_salt: r["request"]["cache_salt"].as_str().map(str::to_owned),
                ..Default::default()
            };
            Some((r["name"].as_str().expect("name").to_owned(), ids, extras))
        })
        .collect()
}

#[test]
fn u64_event_values_equal_what_vllm_published() {
    let doc = captures();
    let run = &doc["runs"]["sha256_cbor_seed42"];
    let hasher = hasher_for(run);
    let mut checked = 0;
    for (name, ids, extras) in captured_requests(&doc) {
        let Some(want) = run["prompt_block_hashes"].get(&name) else {
            continue;
        };
        let want: Vec<u64> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let got: Vec<u64> = hasher
            .chain(None, &ids, &|i| {
                extras.block_extra_keys(i, ExtraKeysStyle::Tagged)
            })
            .iter()
            .map(|d| d.event_value())
            .collect();
        assert_eq!(got, want, "request {name}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} requests checked");
}

#[test]
fn digests_equal_what_vllm_published_as_bytes() {
    let doc = captures();
    let run = &doc["runs"]["sha256_cbor_seed42_byteshashes"];
    let hasher = hasher_for(run);
    let none_hex: String = hasher
        .none_hash()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(none_hex, run["none_hash_hex"].as_str().unwrap());
    let mut checked = 0;
    for (name, ids, extras) in captured_requests(&doc) {
        let Some(want) = run["prompt_block_hashes"].get(&name) else {
            continue;
        };
        let got: Vec<Value> = hasher
            .chain(None, &ids, &|i| {
                extras.block_extra_keys(i, ExtraKeysStyle::Tagged)
            })
            .iter()
            .map(|d| Value::String(d.as_bytes().iter().map(|b| format!("{b:02x}")).collect()))
            .collect();
        assert_eq!(&Value::Array(got), want, "request {name}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} requests checked");
}

#[test]
fn a_salted_request_does_not_share_its_first_block() {
    let doc = captures();
    let hasher = hasher_for(&doc["runs"]["sha256_cbor_seed42"]);
    let (_, ids, extras) = captured_requests(&doc)
        .into_iter()
        .find(|(_, _, e)| e.cache_salt.is_some())
        .expect("the capture set has a salted request");
    let salted = hasher.chain(None, &ids, &|i| {
        extras.block_extra_keys(i, ExtraKeysStyle::Tagged)
    });
    let plain = hasher.chain(None, &ids, &|_| None);
    assert_ne!(salted[0], plain[0]);
}
