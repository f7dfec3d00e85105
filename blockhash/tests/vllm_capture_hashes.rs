//! The hasher against real vLLM: for every request of the vLLM 0.32 capture set (seed 42,
//! sha256_cbor), chaining vLLM's exact prompt token ids must give the block hashes vLLM
//! published, both as u64 (default wire) and as 32-byte digests (bytes wire).

use kvroute_blockhash::{BlockHasher, ExtraKeysStyle, HashConfig, HashScheme, RequestExtras};
use serde_json::Value;

fn captures() -> Value {
    kvroute_testdata::vllm_requests()
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

/// A published block hash as a map key: the u64 of the default wire, or the digest's hex
/// (`{"$bytes_hex": ...}` in index.json) of the bytes wire.
fn published_key(v: &Value) -> String {
    match v.get("$bytes_hex") {
        Some(hex) => hex.as_str().expect("$bytes_hex is a string").to_owned(),
        None => v.as_u64().expect("u64 block hash").to_string(),
    }
}

fn key_of(digest: &kvroute_blockhash::BlockDigest, bytes_wire: bool) -> String {
    if bytes_wire {
        digest
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    } else {
        digest.event_value().to_string()
    }
}

/// Every `BlockStored` event vLLM published, block by block: rehashing the event's own
/// `token_ids` (prompt and generated tokens alike) from its parent's full digest, with the
/// event's untagged extra keys re-tagged as vLLM hashes them, gives the published hash.
fn every_stored_block_rehashes_to_the_published_hash(run_dir: &str, bytes_wire: bool) {
    let messages = kvroute_testdata::vllm_capture(run_dir).messages;
    let doc = captures();
    let hasher = hasher_for(&doc["runs"][run_dir]);
    // Published hash -> full digest: the parent of a later event is only published as
    // its (possibly truncated) wire value, so the chain continues from what we computed.
    let mut digests = std::collections::HashMap::new();
    let (mut blocks, mut salted) = (0, 0);
    for message in &messages {
        for event in message.entry["batch"][1].as_array().expect("events") {
            if event["type"] != "BlockStored" {
                continue;
            }
            assert!(event["lora_name"].is_null(), "the capture set has no LoRA");
            let mut parent = match &event["parent_block_hash"] {
                Value::Null => hasher.none_hash(),
                p => *digests
                    .get(&published_key(p))
                    .expect("parent was stored by an earlier event"),
            };
            let tokens: Vec<u32> = event["token_ids"]
                .as_array()
                .expect("token_ids")
                .iter()
                .map(|t| t.as_u64().expect("token id") as u32)
                .collect();
            let block_size = event["block_size"].as_u64().expect("block_size") as usize;
            assert_eq!(block_size, hasher.config().block_size);
            let published = event["block_hashes"].as_array().expect("block_hashes");
            assert_eq!(tokens.len(), published.len() * block_size);
            for (i, (block, want)) in tokens.chunks_exact(block_size).zip(published).enumerate() {
                // Events publish `["tenant-a"]` for vLLM's hashed `(("cache_salt", "tenant-a"),)`.
                let extras = match &event["extra_keys"][i] {
                    Value::Null => RequestExtras::default(),
                    Value::Array(keys) => {
                        assert!(parent == hasher.none_hash() && keys.len() == 1);
                        salted += 1;
                        RequestExtras {
                            cache_salt: keys[0].as_str().map(str::to_owned),
                            ..Default::default()
                        }
                    }
                    other => panic!("unexpected extra keys {other}"),
                };
                let keys = extras.block_extra_keys(0, ExtraKeysStyle::Tagged);
                parent = hasher.hash_block(&parent, block, keys.as_ref());
                assert_eq!(key_of(&parent, bytes_wire), published_key(want), "{event}");
                digests.insert(published_key(want), parent);
                blocks += 1;
            }
        }
    }
    assert!(blocks >= 300, "only {blocks} blocks checked");
    assert!(salted >= 1, "the salted request's first block was not seen");
}

#[test]
fn every_published_u64_block_hash_rehashes_from_its_event() {
    every_stored_block_rehashes_to_the_published_hash("sha256_cbor_seed42", false);
}

#[test]
fn every_published_digest_rehashes_from_its_event() {
    every_stored_block_rehashes_to_the_published_hash("sha256_cbor_seed42_byteshashes", true);
}
