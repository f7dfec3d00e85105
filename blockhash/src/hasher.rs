//! Block hashing, byte-exact to vLLM's prefix-cache hashes.
//!
//! vLLM names each full block of a prompt by `H((parent, tuple(block_tokens), extra_keys))`
//! where `H` hashes a serialization of that triple (canonical CBOR for the `*_cbor`
//! schemes, Python's pickle for vLLM's default `sha256` and for `xxhash`, see
//! [`crate::pickle`]) and `parent` is the previous block's hash (`NONE_HASH = H(seed)` for
//! the first block). A router that is one byte off misses every lookup, so this module
//! reproduces the encodings exactly and is checked against vectors generated with Python's
//! `cbor2`/`pickle`/`hashlib`/`xxhash` and vLLM's own hash functions, and against real vLLM
//! captures.
//!
//! What each vLLM version does (read in its sources, `vllm/utils`, `kv_cache_utils.py`):
//!
//! | vLLM          | scheme              | chained parent          | published u64                |
//! |---------------|---------------------|-------------------------|------------------------------|
//! | 0.10.0-0.10.1 | `sha256_cbor_64bit` | `int(digest) & 2^64-1`  | that int                     |
//! | 0.10.2+       | `sha256_cbor`       | 32-byte digest          | `int(digest) & 2^64-1`       |
//! | 0.20+ (a)     | `xxhash_cbor`       | 16-byte xxh3-128 digest | `int(digest) & 2^64-1`       |
//! | 0.10.2+ (b)   | `sha256` (default)  | 32-byte digest          | `int(digest) & 2^64-1`       |
//! | 0.20+ (a)     | `xxhash`            | 16-byte xxh3-128 digest | `int(digest) & 2^64-1`       |
//!
//! (a) not in 0.12; present by 0.20. (b) `pickle.dumps(triple, protocol=5)`, vLLM's default
//! scheme. `int(digest)` is `int.from_bytes(digest, "big")`, so the u64 is the digest's last
//! 8 bytes read big-endian. `NONE_HASH` is always `H(seed)` over the seed *string* (CBOR
//! text or a pickled `str`); see [`HashConfig`] for when vLLM's seed is reproducible.
//!
//! The CBOR here has a fixed shape (a 3-array of bytes-or-uint, an array of uints, null or
//! an array of strings/arrays), so it is written straight into a reused buffer instead of
//! going through a generic serializer: hashing runs on the filter's hot path, once per
//! 64 tokens. Canonical CBOR for these types is simply the shortest-length encoding.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::extra_keys::{BlockExtraKeys, ExtraKey};
use crate::{pickle, Error};

/// vLLM's default `NONE_HASH` seed when `PYTHONHASHSEED` is unset (today's vLLM).
pub const DEFAULT_SEED: &str = "vllm-none-hash";

/// Which of vLLM's `--prefix-caching-hash-algo` values the engines run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashScheme {
    /// Today's vLLM: sha256 over canonical CBOR, chained as 32-byte digests.
    Sha256Cbor,
    /// vLLM 0.10.0-0.10.1: the same, truncated to a 64-bit int that is chained.
    Sha256Cbor64Bit,
    /// xxh3-128 over canonical CBOR, chained as 16-byte digests.
    XxhashCbor,
    /// vLLM's default: sha256 over `pickle.dumps(triple, protocol=5)`.
    Sha256,
    /// xxh3-128 over `pickle.dumps(triple, protocol=5)`.
    Xxhash,
}

/// What a scheme serializes before digesting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serialization {
    Cbor,
    Pickle,
}

impl HashScheme {
    /// The name vLLM's `--prefix-caching-hash-algo` uses.
    pub fn name(&self) -> &'static str {
        match self {
            HashScheme::Sha256Cbor => "sha256_cbor",
            HashScheme::Sha256Cbor64Bit => "sha256_cbor_64bit",
            HashScheme::XxhashCbor => "xxhash_cbor",
            HashScheme::Sha256 => "sha256",
            HashScheme::Xxhash => "xxhash",
        }
    }

    pub const ALL: [HashScheme; 5] = [
        HashScheme::Sha256Cbor,
        HashScheme::Sha256Cbor64Bit,
        HashScheme::XxhashCbor,
        HashScheme::Sha256,
        HashScheme::Xxhash,
    ];

    /// Whether vLLM counts the scheme collision resistant: only those fall back to the fixed
    /// `"vllm-none-hash"` seed without `PYTHONHASHSEED` (vLLM >= 0.29,
    /// `resolve_none_hash_seed`); the others draw a random per-process seed.
    pub fn is_cryptographic(&self) -> bool {
        matches!(self, HashScheme::Sha256Cbor | HashScheme::Sha256)
    }

    fn serialization(&self) -> Serialization {
        match self {
            HashScheme::Sha256Cbor | HashScheme::Sha256Cbor64Bit | HashScheme::XxhashCbor => {
                Serialization::Cbor
            }
            HashScheme::Sha256 | HashScheme::Xxhash => Serialization::Pickle,
        }
    }
}

impl fmt::Display for HashScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashScheme {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        HashScheme::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unsupported hash algo {s:?} (expected sha256, sha256_cbor, xxhash, xxhash_cbor or sha256_cbor_64bit)"
                ))
            })
    }
}

/// How to hash: scheme, block size and the `NONE_HASH` seed.
///
/// `NONE_HASH` is `H(seed)` with `seed` a Python `str`, in every vLLM version. Only vLLM >=
/// 0.29 with a cryptographic scheme (`sha256`, vLLM's default, or `sha256_cbor`) falls back
/// to a fixed `"vllm-none-hash"` when `PYTHONHASHSEED` is unset; vLLM 0.10-0.28 (every
/// scheme) and the `xxhash` schemes in every version draw a random per-process seed
/// instead, which no router can reproduce. [`HashConfig::check`] refuses those
/// configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashConfig {
    pub scheme: HashScheme,
    pub block_size: usize,
    /// vLLM's `PYTHONHASHSEED`; `None` means vLLM's default `"vllm-none-hash"`.
    pub seed: Option<String>,
}

impl HashConfig {
    /// The seed string `NONE_HASH` is derived from.
    pub fn effective_seed(&self) -> &str {
        self.seed.as_deref().unwrap_or(DEFAULT_SEED)
    }

    /// Refuses configurations whose hashes cannot equal any vLLM engine's: a zero block
    /// size, or no seed for a scheme where vLLM then uses a random `NONE_HASH`.
    pub fn check(&self) -> Result<(), Error> {
        if self.block_size == 0 {
            return Err(Error::Config("block size must be at least 1".into()));
        }
        if self.seed.is_none() && !self.scheme.is_cryptographic() {
            return Err(Error::Config(format!(
                "{} needs the engines' PYTHONHASHSEED: without it vLLM seeds NONE_HASH randomly",
                self.scheme
            )));
        }
        Ok(())
    }
}

impl Default for HashConfig {
    fn default() -> Self {
        Self {
            scheme: HashScheme::Sha256Cbor,
            block_size: 64,
            seed: None,
        }
    }
}

/// One block's full hash, as vLLM chains it (the parent of the next block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockDigest {
    Sha256([u8; 32]),
    Xxh128([u8; 16]),
    U64(u64),
}

impl BlockDigest {
    /// The 64-bit value vLLM publishes in KV events for this block:
    /// `int.from_bytes(digest, "big") & ((1 << 64) - 1)`, i.e. the digest's last 8 bytes
    /// read big-endian (vLLM >= 0.10.2); the chained int itself for the 64-bit scheme.
    pub fn event_value(&self) -> u64 {
        match self {
            BlockDigest::Sha256(d) => low_u64(d),
            BlockDigest::Xxh128(d) => low_u64(d),
            BlockDigest::U64(v) => *v,
        }
    }

    /// The digest bytes as vLLM publishes them with `VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0`.
    pub fn as_bytes(&self) -> Vec<u8> {
        match self {
            BlockDigest::Sha256(d) => d.to_vec(),
            BlockDigest::Xxh128(d) => d.to_vec(),
            BlockDigest::U64(v) => v.to_be_bytes().to_vec(),
        }
    }
}

fn low_u64(digest: &[u8]) -> u64 {
    let mut tail = [0u8; 8];
    tail.copy_from_slice(&digest[digest.len() - 8..]);
    u64::from_be_bytes(tail)
}

/// Chains block hashes for one [`HashConfig`]. Cheap to clone; holds `NONE_HASH`.
#[derive(Debug, Clone)]
pub struct BlockHasher {
    config: HashConfig,
    none_hash: BlockDigest,
}

impl BlockHasher {
    /// A hasher for `config` as given; see [`BlockHasher::try_new`] for one that refuses
    /// configurations no vLLM engine can match.
    pub fn new(config: HashConfig) -> Self {
        let seed = config.effective_seed();
        let mut buf = Vec::with_capacity(seed.len() + 24);
        match config.scheme.serialization() {
            Serialization::Cbor => cbor_text(&mut buf, seed),
            Serialization::Pickle => pickle::pickle_str(&mut buf, seed),
        }
        let none_hash = digest(config.scheme, &buf);
        Self { config, none_hash }
    }

    /// [`BlockHasher::new`] after [`HashConfig::check`].
    pub fn try_new(config: HashConfig) -> Result<Self, Error> {
        config.check()?;
        Ok(Self::new(config))
    }

    pub fn config(&self) -> &HashConfig {
        &self.config
    }

    pub fn block_size(&self) -> usize {
        self.config.block_size
    }

    /// `NONE_HASH`: the parent of the first block.
    pub fn none_hash(&self) -> BlockDigest {
        self.none_hash
    }

    /// `H((parent, tuple(tokens), extra_keys_or_None))` for one full block.
    pub fn hash_block(
        &self,
        parent: &BlockDigest,
        tokens: &[u32],
        extra: Option<&BlockExtraKeys>,
    ) -> BlockDigest {
        let mut buf = Vec::with_capacity(64 + tokens.len() * 5);
        self.hash_block_into(&mut buf, parent, tokens, extra)
    }

    /// The bytes vLLM hashes for one block (what [`BlockHasher::hash_block`] digests:
    /// canonical CBOR or pickle, by scheme), exposed so tests can compare them with
    /// `cbor2`'s and `pickle`'s output byte for byte.
    pub fn block_bytes(
        &self,
        parent: &BlockDigest,
        tokens: &[u32],
        extra: Option<&BlockExtraKeys>,
    ) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64 + tokens.len() * 5);
        self.encode_block(&mut buf, parent, tokens, extra);
        buf
    }

    fn encode_block(
        &self,
        buf: &mut Vec<u8>,
        parent: &BlockDigest,
        tokens: &[u32],
        extra: Option<&BlockExtraKeys>,
    ) {
        match self.config.scheme.serialization() {
            Serialization::Cbor => encode_block(buf, parent, tokens, extra),
            Serialization::Pickle => pickle_block(buf, parent, tokens, extra),
        }
    }

    fn hash_block_into(
        &self,
        buf: &mut Vec<u8>,
        parent: &BlockDigest,
        tokens: &[u32],
        extra: Option<&BlockExtraKeys>,
    ) -> BlockDigest {
        buf.clear();
        self.encode_block(buf, parent, tokens, extra);
        digest(self.config.scheme, buf)
    }

    /// Digests of every full block of `tokens`, chained from `parent` (or `NONE_HASH`).
    /// `extra_for_block(i)` gives block i's extra keys. A trailing partial block is not
    /// hashed: vLLM only caches full blocks.
    pub fn chain(
        &self,
        parent: Option<&BlockDigest>,
        tokens: &[u32],
        extra_for_block: &dyn Fn(usize) -> Option<BlockExtraKeys>,
    ) -> Vec<BlockDigest> {
        let block_size = self.config.block_size.max(1);
        let mut out = Vec::with_capacity(tokens.len() / block_size);
        let mut buf = Vec::with_capacity(64 + block_size * 5);
        let mut prev = parent.copied().unwrap_or(self.none_hash);
        for (i, block) in tokens.chunks_exact(block_size).enumerate() {
            let extra = extra_for_block(i);
            prev = self.hash_block_into(&mut buf, &prev, block, extra.as_ref());
            out.push(prev);
        }
        out
    }

    /// Event values (what vLLM publishes) of every full block, without extra keys.
    pub fn event_values(&self, tokens: &[u32]) -> Vec<u64> {
        self.chain(None, tokens, &|_| None)
            .iter()
            .map(BlockDigest::event_value)
            .collect()
    }
}

/// `(parent, tuple(tokens), extra_keys or None)` as canonical CBOR, appended to `buf`.
fn encode_block(
    buf: &mut Vec<u8>,
    parent: &BlockDigest,
    tokens: &[u32],
    extra: Option<&BlockExtraKeys>,
) {
    buf.push(0x83); // array(3)
    match parent {
        BlockDigest::Sha256(d) => cbor_bytes(buf, d),
        BlockDigest::Xxh128(d) => cbor_bytes(buf, d),
        BlockDigest::U64(v) => cbor_head(buf, 0, *v),
    }
    cbor_head(buf, 4, tokens.len() as u64);
    cbor_token_ids(buf, tokens);
    match extra {
        None => buf.push(0xf6), // null
        Some(keys) => cbor_extra_keys(buf, &keys.0),
    }
}

/// `pickle.dumps((parent, tuple(tokens), extra_keys or None), protocol=5)`, appended.
fn pickle_block(
    buf: &mut Vec<u8>,
    parent: &BlockDigest,
    tokens: &[u32],
    extra: Option<&BlockExtraKeys>,
) {
    let mut p = pickle::Pickler::start(buf);
    p.begin_tuple(3);
    match parent {
        BlockDigest::Sha256(d) => p.bytes(d),
        BlockDigest::Xxh128(d) => p.bytes(d),
        BlockDigest::U64(v) => p.int(*v as i64),
    }
    p.tuple_of_ints(tokens);
    match extra {
        None => p.none(),
        Some(keys) => p.extra_keys(&keys.0),
    }
    p.end_tuple(3);
    p.finish();
}

fn digest(scheme: HashScheme, bytes: &[u8]) -> BlockDigest {
    match scheme {
        HashScheme::Sha256Cbor | HashScheme::Sha256 => {
            BlockDigest::Sha256(Sha256::digest(bytes).into())
        }
        // vLLM 0.10.0-0.10.1: `int.from_bytes(sha256(cbor), "big") & ((1 << 64) - 1)`,
        // i.e. the digest's last 8 bytes, the same bytes later versions publish.
        HashScheme::Sha256Cbor64Bit => BlockDigest::U64(low_u64(&Sha256::digest(bytes))),
        HashScheme::XxhashCbor | HashScheme::Xxhash => {
            let v = xxhash_rust::xxh3::xxh3_128(bytes);
            BlockDigest::Xxh128(v.to_be_bytes())
        }
    }
}

/// A CBOR head: major type and argument, shortest form (what canonical CBOR requires).
fn cbor_head(buf: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        buf.push(m | arg as u8);
    } else if arg <= u64::from(u8::MAX) {
        buf.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg <= u64::from(u16::MAX) {
        buf.push(m | 25);
        buf.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= u64::from(u32::MAX) {
        buf.push(m | 26);
        buf.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        buf.push(m | 27);
        buf.extend_from_slice(&arg.to_be_bytes());
    }
}

/// The block's token ids as CBOR uints. This is most of the bytes hashed, so it writes
/// into space reserved once instead of growing the buffer token by token.
fn cbor_token_ids(buf: &mut Vec<u8>, tokens: &[u32]) {
    let start = buf.len();
    buf.resize(start + tokens.len() * 5, 0);
    let out = &mut buf[start..];
    let mut n = 0;
    for &t in tokens {
        if t < 24 {
            out[n] = t as u8;
            n += 1;
        } else if t < 0x100 {
            out[n] = 0x18;
            out[n + 1] = t as u8;
            n += 2;
        } else if t < 0x1_0000 {
            out[n] = 0x19;
            out[n + 1..n + 3].copy_from_slice(&(t as u16).to_be_bytes());
            n += 3;
        } else {
            out[n] = 0x1a;
            out[n + 1..n + 5].copy_from_slice(&t.to_be_bytes());
            n += 5;
        }
    }
    buf.truncate(start + n);
}

fn cbor_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    cbor_head(buf, 2, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn cbor_text(buf: &mut Vec<u8>, text: &str) {
    cbor_head(buf, 3, text.len() as u64);
    buf.extend_from_slice(text.as_bytes());
}

/// Python tuples and lists both encode as CBOR arrays.
fn cbor_extra_keys(buf: &mut Vec<u8>, keys: &[ExtraKey]) {
    cbor_head(buf, 4, keys.len() as u64);
    for key in keys {
        match key {
            ExtraKey::Text(s) => cbor_text(buf, s),
            ExtraKey::Int(v) => {
                if *v >= 0 {
                    cbor_head(buf, 0, *v as u64);
                } else {
                    cbor_head(buf, 1, (-1 - *v) as u64);
                }
            }
            ExtraKey::Tuple(items) => cbor_extra_keys(buf, items),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(scheme: HashScheme) -> HashConfig {
        HashConfig {
            scheme,
            block_size: 4,
            seed: Some("42".into()),
        }
    }

    #[test]
    fn cbor_heads_use_the_shortest_form() {
        let cases: [(u64, &[u8]); 6] = [
            (23, &[0x17]),
            (24, &[0x18, 24]),
            (255, &[0x18, 0xff]),
            (256, &[0x19, 0x01, 0x00]),
            (65536, &[0x1a, 0, 1, 0, 0]),
            (1 << 32, &[0x1b, 0, 0, 0, 1, 0, 0, 0, 0]),
        ];
        for (v, want) in cases {
            let mut buf = Vec::new();
            cbor_head(&mut buf, 0, v);
            assert_eq!(buf, want, "{v}");
        }
    }

    #[test]
    fn only_full_blocks_are_hashed() {
        let h = BlockHasher::new(cfg(HashScheme::Sha256Cbor));
        assert_eq!(h.chain(None, &[1, 2, 3], &|_| None).len(), 0);
        assert_eq!(h.chain(None, &[1, 2, 3, 4, 5, 6, 7], &|_| None).len(), 1);
    }

    #[test]
    fn chaining_from_a_parent_continues_the_chain() {
        let h = BlockHasher::new(cfg(HashScheme::XxhashCbor));
        let tokens: Vec<u32> = (0..12).collect();
        let all = h.chain(None, &tokens, &|_| None);
        let tail = h.chain(Some(&all[0]), &tokens[4..], &|_| None);
        assert_eq!(&all[1..], &tail[..]);
    }

    #[test]
    fn configurations_vllm_seeds_randomly_are_refused() {
        let unseeded = |scheme| HashConfig {
            scheme,
            block_size: 64,
            seed: None,
        };
        assert!(BlockHasher::try_new(unseeded(HashScheme::Sha256Cbor)).is_ok());
        assert!(BlockHasher::try_new(unseeded(HashScheme::Sha256Cbor64Bit)).is_err());
        assert!(BlockHasher::try_new(unseeded(HashScheme::XxhashCbor)).is_err());
        assert!(BlockHasher::try_new(unseeded(HashScheme::Sha256)).is_ok());
        assert!(BlockHasher::try_new(unseeded(HashScheme::Xxhash)).is_err());
        assert!(BlockHasher::try_new(cfg(HashScheme::XxhashCbor)).is_ok());
        let mut zero = cfg(HashScheme::Sha256Cbor);
        zero.block_size = 0;
        assert!(zero.check().is_err());
    }

    #[test]
    fn scheme_names_round_trip() {
        for s in HashScheme::ALL {
            assert_eq!(s.name().parse::<HashScheme>().ok(), Some(s));
        }
        assert!("md5".parse::<HashScheme>().is_err());
    }
}
