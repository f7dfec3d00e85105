//! The one loader of the repository's test data, for every crate's tests.
//!
//! Test data lives beside this file: real vLLM 0.32 captures (`vllm-0.32/<run>/`), frames
//! generated with vLLM's own msgspec classes (`kv-frames/<run>/`), and the real tokenizer
//! folders `scripts/setup.sh` installs (`tokenizers/<model>/`, or `$KVROUTE_TOKENIZERS`).
//! Each run is an `index.json` naming per message its frame files and what vLLM sent; this
//! crate reads both layouts into one [`Run`], so a test states what it checks, not how the
//! files are laid out. Test support: a missing or malformed file panics with its path.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testdata/ has a parent")
        .to_path_buf()
}

/// This folder: the repository's `testdata/`.
pub fn testdata_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The folder of real tokenizer folders: `$KVROUTE_TOKENIZERS`, else `testdata/tokenizers`.
pub fn tokenizers_dir() -> PathBuf {
    std::env::var_os("KVROUTE_TOKENIZERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| testdata_dir().join("tokenizers"))
}

/// One model's tokenizer folder (`qwen3`, `llama3`, `deepseek_v3`, `gemma3`).
pub fn tokenizer_dir(model: &str) -> PathBuf {
    tokenizers_dir().join(model)
}

/// A real vLLM 0.32 engine's `GET /metrics` page (`vllm-0.32/metrics.txt`: the engine of
/// the captures, idle after three requests).
pub fn vllm_metrics_page() -> String {
    std::fs::read_to_string(testdata_dir().join("vllm-0.32/metrics.txt"))
        .expect("vllm-0.32/metrics.txt")
}

/// The requests the vLLM 0.32 captures were made with (`vllm-0.32/requests.json`).
pub fn vllm_requests() -> Value {
    read_json(&testdata_dir().join("vllm-0.32/requests.json"))
}

/// One of [`vllm_requests`] by name (`round1`, `round2`, ...).
pub fn vllm_request(name: &str) -> Value {
    vllm_requests()["requests"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("requests.json has no request {name:?}"))
}

/// The token ids vLLM computed for one of [`vllm_requests`].
pub fn vllm_request_token_ids(name: &str) -> Vec<u32> {
    vllm_request(name)["prompt_token_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("request {name:?} has no prompt_token_ids"))
        .iter()
        .map(|v| v.as_u64().expect("token id") as u32)
        .collect()
}

/// One captured or generated run.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    /// The run's description: `kv-frames` runs: index.json's generation, hash, seed,
    /// block size; `vllm-0.32` runs: `run.json` (the engine's flags, its hash seed) where the run has
    /// one, else `Null` (`sha256_cbor_seed42`: its settings are in the folder's README).
    pub meta: Value,
    pub messages: Vec<Message>,
}

/// One ZeroMQ message as it went over the wire, and what index.json says about it.
#[derive(Debug, Clone)]
pub struct Message {
    /// The multipart frames (topic, sequence, payload), byte for byte.
    pub frames: Vec<Vec<u8>>,
    /// The index.json entry: `topic`, `seq`, `batch` (what vLLM sent, decoded by Python).
    pub entry: Value,
}

impl Message {
    /// The frames as slices, as decoders take them.
    pub fn frame_refs(&self) -> Vec<&[u8]> {
        self.frames.iter().map(Vec::as_slice).collect()
    }
}

/// The folder of a real vLLM 0.32 capture (its README and run configuration beside the frames).
pub fn vllm_capture_dir(run: &str) -> PathBuf {
    testdata_dir().join("vllm-0.32").join(run)
}

/// A real vLLM 0.32 capture: `testdata/vllm-0.32/<run>` (`sha256_default`, `xxhash_seed42`, ...).
pub fn vllm_capture(run: &str) -> Run {
    let dir = vllm_capture_dir(run);
    let run_json = dir.join("run.json");
    let meta = if run_json.exists() {
        read_json(&run_json)
    } else {
        Value::Null
    };
    let entries = match read_json(&dir.join("index.json")) {
        Value::Array(entries) => entries,
        _ => panic!("{}: index.json is not a list of messages", dir.display()),
    };
    load(dir, meta, entries)
}

/// Frames generated with vLLM's msgspec classes: `testdata/kv-frames/<run>`.
pub fn generated_frames(run: &str) -> Run {
    let dir = testdata_dir().join("kv-frames").join(run);
    let mut index = read_json(&dir.join("index.json"));
    let entries = match index.get_mut("messages").map(Value::take) {
        Some(Value::Array(entries)) => entries,
        _ => panic!("{}: index.json has no messages", dir.display()),
    };
    load(dir, index, entries)
}

fn load(dir: PathBuf, meta: Value, entries: Vec<Value>) -> Run {
    let messages = entries
        .into_iter()
        .map(|entry| {
            let frames = entry["frames"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: a message without frames", dir.display()))
                .iter()
                .map(|f| read(&dir.join(f.as_str().expect("frame file name"))))
                .collect();
            Message { frames, entry }
        })
        .collect();
    Run {
        dir,
        meta,
        messages,
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Read and parse one JSON file.
pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&read(path))
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_load_with_their_frames() {
        let capture = vllm_capture("sha256_default");
        assert!(!capture.messages.is_empty());
        assert!(capture.messages.iter().all(|m| m.frames.len() == 3));
        assert_eq!(capture.meta["prefix_caching_hash_algo"], "sha256");
        let generated = generated_frames("vllm-0.32.0_int_hashes");
        assert_eq!(generated.meta["generation"], "V03xMaps");
        assert!(!generated.messages.is_empty());
        assert!(generated.meta.get("messages").is_none_or(Value::is_null));
    }
}
