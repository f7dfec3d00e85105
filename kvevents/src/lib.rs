//! kvroute-kvevents: vLLM's KV-event wire format, in one place.
//!
//! vLLM publishes each batch of KV-cache events as three ZeroMQ frames: the topic, an
//! 8-byte big-endian sequence number, and a msgpack payload `[ts, events, dp_rank]`. The
//! events changed shape between generations: vLLM 0.10 sent msgspec `array_like` tagged
//! arrays (`["BlockStored", hashes, parent, token_ids, block_size, lora_id, medium]`),
//! today's vLLM (0.3x) sends maps tagged by `"type"` with default fields omitted and new
//! fields added over time. Block hashes are ints (the digest's low 64 bits, any msgpack
//! width) or raw digest bytes. The decoder is tolerant: it walks a generic msgpack value,
//! ignores fields it does not know, counts and skips events it cannot read, and refuses
//! only a message whose frames or payload are not vLLM's. It never panics. The encoder
//! writes what vLLM writes (used by the simulated engines and the tests).

mod reader;

use reader::Reader;
use rmpv::Value;

/// Where a cached block lives on its engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Medium {
    #[default]
    Gpu,
    Cpu,
    Storage,
}

impl Medium {
    /// vLLM's medium names ("GPU", "CPU", ...); unknown names are lower tiers.
    pub fn parse(s: &str) -> Medium {
        match s.to_ascii_uppercase().as_str() {
            "GPU" | "CUDA" | "HBM" => Medium::Gpu,
            "CPU" | "CPU_TIER" | "DRAM" => Medium::Cpu,
            _ => Medium::Storage,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Medium::Gpu => "GPU",
            Medium::Cpu => "CPU",
            Medium::Storage => "STORAGE",
        }
    }
}

/// A block hash as the engine published it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EngineHash {
    Int(u64),
    Bytes(Vec<u8>),
}

impl EngineHash {
    /// The 64-bit value: the int, or the digest's low 64 bits (last 8 bytes, big-endian).
    pub fn as_u64(&self) -> u64 {
        match self {
            EngineHash::Int(v) => *v,
            EngineHash::Bytes(b) => {
                let tail = &b[b.len().saturating_sub(8)..];
                tail.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockStored {
    pub block_hashes: Vec<EngineHash>,
    pub parent_block_hash: Option<EngineHash>,
    pub token_ids: Vec<u32>,
    pub block_size: u32,
    pub lora_id: Option<i64>,
    pub medium: Option<Medium>,
    pub lora_name: Option<String>,
    /// One entry per block (usually nil; a cache salt on block 0, untagged).
    pub extra_keys: Option<Vec<Option<Value>>>,
    /// KV-cache group (hybrid models); 0.3x only.
    pub group_idx: Option<u32>,
    /// "full_attention", "sliding_window", ...; 0.3x only.
    pub kv_cache_spec_kind: Option<String>,
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockRemoved {
    pub block_hashes: Vec<EngineHash>,
    pub medium: Option<Medium>,
    pub group_idx: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KvEvent {
    BlockStored(BlockStored),
    BlockRemoved(BlockRemoved),
    AllBlocksCleared,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventBatch {
    pub ts: f64,
    pub events: Vec<KvEvent>,
    pub data_parallel_rank: Option<u32>,
    /// Events of an unknown type, or unreadable, that were skipped.
    pub skipped_unknown: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KvMessage {
    pub topic: String,
    pub seq: u64,
    pub batch: EventBatch,
}

/// Why a message is not vLLM's.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("expected 3 frames [topic, seq, payload], got {0}")]
    FrameCount(usize),
    #[error("sequence frame must be 8 bytes, got {0}")]
    SeqLength(usize),
    #[error("payload is not msgpack: {0}")]
    Msgpack(String),
    #[error("payload shape: {0}")]
    Shape(&'static str),
}

/// Which generation of the wire to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireGeneration {
    /// vLLM 0.10: events as tagged arrays.
    V010Arrays,
    /// vLLM 0.3x: events as maps tagged by "type", defaults omitted.
    V03xMaps,
}

/// Decode `[topic, seq, payload]`.
pub fn decode_message(frames: &[&[u8]]) -> Result<KvMessage, DecodeError> {
    let [topic, seq, payload] = frames else {
        return Err(DecodeError::FrameCount(frames.len()));
    };
    let seq: [u8; 8] = (*seq)
        .try_into()
        .map_err(|_| DecodeError::SeqLength(seq.len()))?;
    Ok(KvMessage {
        topic: String::from_utf8_lossy(topic).into_owned(),
        seq: u64::from_be_bytes(seq),
        batch: decode_payload(payload)?,
    })
}

/// Decode a msgpack payload `[ts, events, dp_rank]` (dp_rank may be absent or nil).
pub fn decode_payload(payload: &[u8]) -> Result<EventBatch, DecodeError> {
    let mut r = Reader::new(payload);
    let n = r
        .array_len()
        .ok_or_else(|| not_msgpack_or(&r, "payload is not an array"))?;
    if n == 0 {
        return Err(DecodeError::Shape("empty payload"));
    }
    let ts = r
        .f64()
        .ok_or(DecodeError::Shape("timestamp is not a number"))?;
    if n < 2 {
        return Err(DecodeError::Shape("events are not an array"));
    }
    let count = r
        .array_len()
        .ok_or_else(|| not_msgpack_or(&r, "events are not an array"))?;
    let mut batch = EventBatch {
        ts,
        events: Vec::with_capacity(count.min(r.remaining())),
        data_parallel_rank: None,
        skipped_unknown: 0,
    };
    for _ in 0..count {
        let start = r.pos();
        match decode_event(&mut r) {
            Some(e) => batch.events.push(e),
            None => {
                // Unreadable as an event: skip it whole if it is msgpack at all.
                r.set_pos(start);
                r.skip().ok_or_else(truncated)?;
                batch.skipped_unknown += 1;
            }
        }
    }
    if n >= 3 {
        batch.data_parallel_rank = r
            .value()
            .ok_or_else(truncated)?
            .as_u64()
            .and_then(|v| u32::try_from(v).ok());
    }
    Ok(batch)
}

fn truncated() -> DecodeError {
    DecodeError::Msgpack("truncated or invalid msgpack".into())
}

/// A value of the wrong type is a shape error; no value at all is a msgpack error.
fn not_msgpack_or(r: &Reader<'_>, shape: &'static str) -> DecodeError {
    if r.remaining() == 0 {
        truncated()
    } else {
        DecodeError::Shape(shape)
    }
}

/// The fields of one event as read, whatever its generation.
#[derive(Default)]
struct RawEvent<'a> {
    kind: Option<&'a str>,
    block_hashes: Option<Vec<EngineHash>>,
    parent_block_hash: Option<EngineHash>,
    token_ids: Option<Vec<u32>>,
    block_size: Option<u32>,
    lora_id: Option<i64>,
    medium: Option<Medium>,
    lora_name: Option<String>,
    extra_keys: Option<Vec<Option<Value>>>,
    group_idx: Option<u32>,
    kv_cache_spec_kind: Option<String>,
    session_id: Option<String>,
}

/// vLLM 0.10's positional layouts (msgspec array_like, tag first).
fn positional_names(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "BlockStored" => Some(&[
            "block_hashes",
            "parent_block_hash",
            "token_ids",
            "block_size",
            "lora_id",
            "medium",
            "lora_name",
        ]),
        "BlockRemoved" => Some(&["block_hashes", "medium"]),
        "AllBlocksCleared" => Some(&[]),
        _ => None,
    }
}

/// Reads one event; `None` if it is not one this decoder knows (the caller skips it).
fn decode_event<'a>(r: &mut Reader<'a>) -> Option<KvEvent> {
    let mut raw = RawEvent::default();
    if let Some(n) = r.map_len() {
        for _ in 0..n {
            match r.str() {
                Some("type") => raw.kind = Some(r.str()?),
                Some(name) => read_field(r, name, &mut raw)?,
                None => {
                    r.skip()?;
                    r.skip()?;
                }
            }
        }
    } else {
        let n = r.array_len()?.checked_sub(1)?;
        let kind = r.str()?;
        raw.kind = Some(kind);
        let names = positional_names(kind)?;
        for i in 0..n {
            match names.get(i) {
                Some(name) => read_field(r, name, &mut raw)?,
                None => r.skip()?,
            }
        }
    }
    match raw.kind? {
        "BlockStored" => Some(KvEvent::BlockStored(BlockStored {
            block_hashes: raw.block_hashes?,
            parent_block_hash: raw.parent_block_hash,
            token_ids: raw.token_ids?,
            block_size: raw.block_size?,
            lora_id: raw.lora_id,
            medium: raw.medium,
            lora_name: raw.lora_name,
            extra_keys: raw.extra_keys,
            group_idx: raw.group_idx,
            kv_cache_spec_kind: raw.kv_cache_spec_kind,
            session_id: raw.session_id,
        })),
        "BlockRemoved" => Some(KvEvent::BlockRemoved(BlockRemoved {
            block_hashes: raw.block_hashes?,
            medium: raw.medium,
            group_idx: raw.group_idx,
        })),
        "AllBlocksCleared" => Some(KvEvent::AllBlocksCleared),
        _ => None,
    }
}

/// Reads the value of field `name`. `None` only if a field the event cannot do without
/// is unreadable; optional fields of an unexpected type read as absent.
fn read_field<'a>(r: &mut Reader<'a>, name: &str, raw: &mut RawEvent<'a>) -> Option<()> {
    if r.nil() {
        return Some(());
    }
    match name {
        "block_hashes" => raw.block_hashes = Some(read_hashes(r)?),
        "parent_block_hash" => raw.parent_block_hash = Some(read_hash(r)?),
        "token_ids" => {
            let n = r.array_len()?;
            let mut ids = Vec::with_capacity(n.min(r.remaining()));
            for _ in 0..n {
                ids.push(r.u32()?);
            }
            raw.token_ids = Some(ids);
        }
        "block_size" => raw.block_size = Some(r.u32()?),
        "medium" => match r.str() {
            Some(s) => raw.medium = Some(Medium::parse(s)),
            None => r.skip()?,
        },
        "lora_id" => raw.lora_id = r.value()?.as_i64(),
        "lora_name" => raw.lora_name = r.value()?.as_str().map(str::to_owned),
        "kv_cache_spec_kind" => raw.kv_cache_spec_kind = r.str().map(str::to_owned),
        "session_id" => raw.session_id = r.value()?.as_str().map(str::to_owned),
        "group_idx" => raw.group_idx = r.value()?.as_u64().and_then(|v| u32::try_from(v).ok()),
        "extra_keys" => {
            raw.extra_keys = match r.value()? {
                Value::Array(per_block) => Some(
                    per_block
                        .into_iter()
                        .map(|v| (!v.is_nil()).then_some(v))
                        .collect(),
                ),
                _ => None,
            }
        }
        _ => r.skip()?,
    }
    // A kv_cache_spec_kind that was not a string is still to be consumed.
    if name == "kv_cache_spec_kind" && raw.kv_cache_spec_kind.is_none() {
        r.skip()?;
    }
    Some(())
}

fn read_hashes(r: &mut Reader<'_>) -> Option<Vec<EngineHash>> {
    let n = r.array_len()?;
    let mut out = Vec::with_capacity(n.min(r.remaining()));
    for _ in 0..n {
        out.push(read_hash(r)?);
    }
    Some(out)
}

fn read_hash(r: &mut Reader<'_>) -> Option<EngineHash> {
    match r.peek()? {
        0xc4..=0xc6 => r.bin().map(|b| EngineHash::Bytes(b.to_vec())),
        // Python's hash() of 0.10's builtin scheme can be negative: same 64 bits.
        _ => r.int().map(|(v, _)| EngineHash::Int(v)),
    }
}

fn hash_array(hashes: &[EngineHash]) -> Value {
    Value::Array(hashes.iter().map(hash_value).collect())
}

fn hash_value(h: &EngineHash) -> Value {
    match h {
        EngineHash::Int(v) => Value::from(*v),
        EngineHash::Bytes(b) => Value::Binary(b.clone()),
    }
}

/// A field as written: name, value, and whether it is written as nil when absent.
type WireField = (&'static str, Option<Value>, bool);

fn event_value(event: &KvEvent, generation: WireGeneration) -> Value {
    let s = |x: &str| Value::from(x);
    // (name, value, written even when None): vLLM 0.3x writes its required fields as nil
    // and omits those whose default is None (msgspec omit_defaults).
    let (kind, fields): (&str, Vec<WireField>) = match event {
        KvEvent::BlockStored(e) => (
            "BlockStored",
            vec![
                ("block_hashes", Some(hash_array(&e.block_hashes)), true),
                (
                    "parent_block_hash",
                    e.parent_block_hash.as_ref().map(hash_value),
                    true,
                ),
                (
                    "token_ids",
                    Some(Value::Array(
                        e.token_ids.iter().map(|t| Value::from(*t)).collect(),
                    )),
                    true,
                ),
                ("block_size", Some(Value::from(e.block_size)), true),
                ("lora_id", e.lora_id.map(Value::from), true),
                ("medium", e.medium.map(|m| s(m.as_str())), true),
                ("lora_name", e.lora_name.as_deref().map(s), true),
                (
                    "extra_keys",
                    e.extra_keys.as_ref().map(|k| {
                        Value::Array(k.iter().map(|v| v.clone().unwrap_or(Value::Nil)).collect())
                    }),
                    false,
                ),
                ("group_idx", e.group_idx.map(Value::from), false),
                (
                    "kv_cache_spec_kind",
                    e.kv_cache_spec_kind.as_deref().map(s),
                    false,
                ),
                ("session_id", e.session_id.as_deref().map(s), false),
            ],
        ),
        KvEvent::BlockRemoved(e) => (
            "BlockRemoved",
            vec![
                ("block_hashes", Some(hash_array(&e.block_hashes)), true),
                ("medium", e.medium.map(|m| s(m.as_str())), true),
                ("group_idx", e.group_idx.map(Value::from), false),
            ],
        ),
        KvEvent::AllBlocksCleared => ("AllBlocksCleared", vec![]),
    };
    match generation {
        WireGeneration::V03xMaps => {
            let mut entries = vec![(s("type"), s(kind))];
            entries.extend(fields.into_iter().filter_map(|(k, v, always)| match v {
                Some(v) => Some((s(k), v)),
                None => always.then(|| (s(k), Value::Nil)),
            }));
            Value::Map(entries)
        }
        WireGeneration::V010Arrays => {
            let names = positional_names(kind).unwrap_or(&[]);
            let mut items = vec![s(kind)];
            // 0.10 had no lora_name/extra_keys: positional fields only, nil for None.
            for name in names {
                let v = fields
                    .iter()
                    .find(|(k, _, _)| k == name)
                    .and_then(|(_, v, _)| v.clone())
                    .unwrap_or(Value::Nil);
                items.push(v);
            }
            // Trailing optional fields arrived over 0.10.x-0.11 (medium, lora_name): a
            // None there is written as vLLM versions without the field wrote it, absent.
            let required = if kind == "BlockStored" { 6 } else { 2 };
            while items.len() > required && items.last() == Some(&Value::Nil) {
                items.pop();
            }
            Value::Array(items)
        }
    }
}

/// The msgpack payload `[ts, events, dp_rank]` as vLLM writes it.
pub fn encode_payload(batch: &EventBatch, generation: WireGeneration) -> Vec<u8> {
    let events = batch
        .events
        .iter()
        .map(|e| event_value(e, generation))
        .collect();
    let value = Value::Array(vec![
        Value::F64(batch.ts),
        Value::Array(events),
        batch
            .data_parallel_rank
            .map(Value::from)
            .unwrap_or(Value::Nil),
    ]);
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &value);
    out
}

/// The three frames `[topic, seq, payload]` of one message.
pub fn encode_message(
    topic: &str,
    seq: u64,
    batch: &EventBatch,
    generation: WireGeneration,
) -> [Vec<u8>; 3] {
    [
        topic.as_bytes().to_vec(),
        seq.to_be_bytes().to_vec(),
        encode_payload(batch, generation),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> KvEvent {
        KvEvent::BlockStored(BlockStored {
            block_hashes: vec![EngineHash::Int(u64::MAX - 1), EngineHash::Int(7)],
            parent_block_hash: None,
            token_ids: (0..128).collect(),
            block_size: 64,
            lora_id: None,
            medium: Some(Medium::Gpu),
            lora_name: None,
            extra_keys: None,
            group_idx: Some(0),
            kv_cache_spec_kind: Some("full_attention".into()),
            session_id: None,
        })
    }

    #[test]
    fn both_generations_round_trip() {
        let batch = EventBatch {
            ts: 1.5,
            events: vec![
                stored(),
                KvEvent::BlockRemoved(BlockRemoved {
                    block_hashes: vec![EngineHash::Bytes(vec![9; 32])],
                    medium: Some(Medium::Cpu),
                    group_idx: Some(0),
                }),
                KvEvent::AllBlocksCleared,
            ],
            data_parallel_rank: Some(1),
            skipped_unknown: 0,
        };
        for generation in [WireGeneration::V03xMaps, WireGeneration::V010Arrays] {
            let frames = encode_message("kv@10.0.0.1@m", 42, &batch, generation);
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let msg = decode_message(&refs).unwrap();
            assert_eq!((msg.topic.as_str(), msg.seq), ("kv@10.0.0.1@m", 42));
            let mut want = batch.clone();
            if generation == WireGeneration::V010Arrays {
                // 0.10 had no hybrid-model fields.
                for e in &mut want.events {
                    match e {
                        KvEvent::BlockStored(s) => {
                            s.group_idx = None;
                            s.kv_cache_spec_kind = None;
                        }
                        KvEvent::BlockRemoved(r) => r.group_idx = None,
                        KvEvent::AllBlocksCleared => {}
                    }
                }
            }
            assert_eq!(msg.batch, want, "{generation:?}");
        }
    }

    #[test]
    fn unknown_events_are_counted_and_skipped() {
        let value = Value::Array(vec![
            Value::F64(0.0),
            Value::Array(vec![
                Value::Map(vec![(Value::from("type"), Value::from("SomethingNew"))]),
                Value::Map(vec![
                    (Value::from("type"), Value::from("BlockRemoved")),
                    (
                        Value::from("block_hashes"),
                        Value::Array(vec![Value::from(5u64)]),
                    ),
                    (Value::from("new_field"), Value::from(true)),
                ]),
                Value::from("garbage"),
            ]),
        ]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &value).unwrap();
        let batch = decode_payload(&buf).unwrap();
        assert_eq!((batch.events.len(), batch.skipped_unknown), (1, 2));
        assert_eq!(batch.data_parallel_rank, None);
    }

    #[test]
    fn garbage_never_panics() {
        let frames = encode_message(
            "t",
            1,
            &EventBatch {
                events: vec![stored()],
                ..Default::default()
            },
            WireGeneration::V03xMaps,
        );
        let payload = &frames[2];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..3000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = payload.clone();
            if round % 2 == 0 {
                bytes.truncate((state as usize) % (payload.len() + 1));
            } else {
                let i = (state as usize) % bytes.len();
                bytes[i] = (state >> 32) as u8;
            }
            let _ = decode_payload(&bytes);
            let _ = decode_message(&[b"t", &bytes[..bytes.len().min(8)], &bytes]);
        }
        assert!(decode_message(&[b"t"]).is_err());
        assert!(decode_message(&[b"t", b"123", payload]).is_err());
    }
}
